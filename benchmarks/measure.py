"""How the benchmark times and sizes things: interleaved blocks, paired speedups, peak memory, restored state.

Every configuration runs in one process; timed blocks alternate A B C, C B A, ... so that load from other jobs on
a shared machine hits all of them alike, and a speedup is the median of ratios within the same repeat.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import random
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.utils.deterministic

MIB = 2**20


def log(message: str) -> None:
    print(f"[benchmarks.train_step] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


class Runner:
    """One configuration: `step()` runs one training step of `images` images; `enter()` sets global flags."""

    def __init__(self, name: str, images: int, step: Callable[[], None], enter: Callable[[], None]):
        self.name, self.images, self.step, self.enter = name, images, step, enter


def interleaved(runners: list[Runner], warmup: int, repeats: int, steps_per_block: int,
                sync: Callable[[], None]) -> dict[str, list[float]]:
    """images/s of each runner per timed block; blocks alternate A B C, C B A, ... so load drift cancels."""
    for runner in runners:
        runner.enter()
        for _ in range(warmup):
            runner.step()
        sync()
    rates: dict[str, list[float]] = {runner.name: [] for runner in runners}
    for repeat in range(repeats):
        for runner in (runners if repeat % 2 == 0 else runners[::-1]):
            runner.enter()
            sync()
            start = time.perf_counter()
            for _ in range(steps_per_block):
                runner.step()
            sync()
            seconds = time.perf_counter() - start
            rates[runner.name].append(steps_per_block * runner.images / seconds)
        log("  repeat {}/{}: {}".format(repeat + 1, repeats, ", ".join(
            f"{name} {values[-1]:.3g} img/s" for name, values in rates.items())))
    return rates


def paired_speedup(ours: list[float], reference: list[float]) -> float:
    """Median over repeats of ours / reference within the same repeat (neighbouring blocks, same load)."""
    return rounded(median([a / b for a, b in zip(ours, reference)]))


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class RssPeak:
    """Peak resident set size while the block runs, sampled every 0.5 ms from /proc/self/statm, minus the RSS
    just before it (after gc and malloc_trim, so memory freed earlier is not counted as already there)."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = self.before = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0005)

    def __enter__(self):
        gc.collect()
        _malloc_trim()
        self.before = self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def increase(self) -> int:
        return self.peak - self.before


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "cuda: torch.cuda.max_memory_allocated over one training step (weights, optimizer state, activations)"
    if Path("/proc/self/statm").exists():
        return ("cpu: peak RSS sampled every 0.5 ms during one training step minus the RSS just before it (after "
                "gc + malloc_trim): the step's transient memory (activations, gradients, workspaces); weights + "
                "optimizer state are state_mib; not ru_maxrss, which is one high-water mark for the whole process")
    return "cpu: ru_maxrss increase over one training step (a process high-water mark: 0 once exceeded before)"


def peak_memory_mib(runner: Runner, device: torch.device) -> float:
    runner.enter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step()
        torch.cuda.synchronize(device)
        return rounded(torch.cuda.max_memory_allocated(device) / MIB)
    if Path("/proc/self/statm").exists():
        with RssPeak() as peak:
            runner.step()
        return rounded(peak.increase / MIB)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    runner.step()
    return rounded((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)  # KiB on Linux


def state_mib(model: torch.nn.Module, optimizers: dict) -> float:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [value for opt in optimizers.values() for state in opt.state.values()
                for value in state.values() if torch.is_tensor(value)]
    return rounded(sum(t.numel() * t.element_size() for t in tensors) / MIB)


@contextlib.contextmanager
def restored_global_state():
    """Put back what the runs change process-wide (flags, threads, RNGs), so a caller (a test) is unaffected."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark, threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.utils.deterministic.fill_uninitialized_memory = fill
        torch.set_num_threads(threads)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
