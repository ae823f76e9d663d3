"""`python -m benchmarks.train_step`: training images/s, seg_p2p's way against the reference way.

For each member (pix2pix, unet_l1, unet_ce) and each --size, three configurations train the same
model class in one process, their timed blocks interleaved (A B C, C B A, A B C, ...) so a busy
machine slows all of them alike:

- `ours`: seg_p2p's own path: the prepared uint8 cache -> SegmentationDataset with the albumentations
  jitter -> DataLoader -> the engine's own `train_step` and `LossLog` with the member's optimizers, no
  per-step host sync (only fit's every-LOG_EVERY-steps one), at --batch; on CUDA with bf16 autocast, channels_last,
  fused Adam, cudnn.benchmark (and --compile if asked); on CPU fp32, NCHW, as params.yaml.
- `ours_same_as_reference`: the same at batch 1, the reference's batch size.
- `reference`: the reference implementation's way: eager fp32 NCHW, batch 1, every step decodes an
  aligned photo|label JPEG from disk with PIL and applies pix2pix's torchvision/PIL transforms (resize
  to load size, random crop, flip, ToTensor, Normalize), plain Adam, D step then G step, and
  `.item()` of every loss term each step (the reference's logging).

stdout is one JSON document (see benchmarks/README.md for every key); progress goes to stderr.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would check PyPI on import
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable, Iterator  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.utils.deterministic  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from seg_p2p.config import Config, InferenceConfig, load_config  # noqa: E402
from seg_p2p.data.dataset import SegmentationDataset  # noqa: E402
from seg_p2p.data.prepare import PreparedData, prepare  # noqa: E402
from seg_p2p.data.spec import DatasetSpec, match_palette  # noqa: E402
from seg_p2p.data.transforms import build_transform  # noqa: E402
from seg_p2p.inference import Inference, window_starts  # noqa: E402
from seg_p2p.metrics import flops_per_image  # noqa: E402
from seg_p2p.device import Precision, select_device, to_device  # noqa: E402
from seg_p2p.engine import LOG_EVERY, LossLog, train_step  # noqa: E402
from seg_p2p.models import build_member, parameter_counts  # noqa: E402
from seg_p2p.models.member import SegModel, adam_group, fused_adam  # noqa: E402
from seg_p2p.seeding import epoch_order, seed_everything  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
JPEG_QUALITY = 95  # what the reference's combine_A_and_B.py writes (cv2.imwrite's default)
MIB = 2**20


def log(message: str) -> None:
    print(f"[benchmarks.train_step] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def rounded(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


# --------------------------------------------------------------------------------------------- settings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128], help="crop sizes in px (default 128)")
    parser.add_argument("--batch", type=int, default=None, help="ours' batch size (default 4 on CPU, 16 on CUDA)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per configuration (default 6 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration first (default 2)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved timed blocks the steps are split into (default: one step per block on "
                             "CPU, 3 blocks on CUDA)")
    parser.add_argument("--members", nargs="+", default=None, help="members of --params (default: all)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--ngf", type=int, default=64, help="pix2pix/unet_l1 generator width (the paper: 64)")
    parser.add_argument("--encoder", default=None, help="unet_ce encoder (default: params.yaml's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile ours' model (as train.compile)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="peak of the accelerator for model_flops_utilisation (default 989: H100 bf16 dense)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers for both ways (default: params.yaml's train.num_workers)")
    parser.add_argument("--images", type=int, default=16, help="synthetic training images (and JPEGs) to cycle over")
    parser.add_argument("--data-images", type=int, default=32, help="images per timed data-loading block")
    parser.add_argument("--data-repeats", type=int, default=5, help="interleaved data-loading blocks per way")
    parser.add_argument("--inference-steps", type=int, default=3, help="batches per timed inference block")
    parser.add_argument("--slide-size", type=int, nargs=2, default=[512, 1024], metavar=("H", "W"),
                        help="photo for slide inference, windows of --size (default 512 1024: Cityscapes at half scale)")
    parser.add_argument("--slide-overlap", type=int, default=None, help="slide window overlap in px (default: size/4)")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="params.yaml to build configs from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("batch", "steps", "warmup", "repeats", "images", "data_images", "data_repeats", "inference_steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


def check_members(args: argparse.Namespace, cfg: Config) -> None:
    """--members names members of params.yaml; smp encoders need 64 px (at 32 px the 1x1 bottleneck leaves
    BatchNorm one value per channel at batch 1: ours_same_as_reference and the reference)."""
    args.members = args.members or list(cfg.members)
    unknown = [name for name in args.members if name not in cfg.members]
    if unknown:
        raise SystemExit(f"--members: '{unknown[0]}' is not a member of {args.params} ({', '.join(cfg.members)})")
    encoders = [name for name in args.members if "encoder" in type(cfg.members[name]).model_fields]
    if encoders and min(args.size) < 64:
        raise SystemExit(f"--size: {encoders[0]} (an smp encoder) needs --size >= 64")


def member_overrides(params: Config, args: argparse.Namespace) -> dict:
    """--ngf for members with a pix2pix generator, --encoder for members with an smp encoder (by their settings)."""
    members = {}
    for name, member in params.members.items():
        fields = type(member).model_fields
        if "generator" in fields:
            members[name] = {"generator": {"ngf": args.ngf}}
        elif "encoder" in fields and args.encoder:
            members[name] = {"encoder": args.encoder}
    return members


def build_config(args: argparse.Namespace, size: int, batch: int, device: torch.device) -> Config:
    """params.yaml with the benchmark's data and, on CUDA, the GPU levers (bf16, channels_last, cudnn.benchmark)."""
    cuda = device.type == "cuda"
    params = load_config(args.params)
    train = {"batch_size": batch, "device": device.type, "compile": args.compile,
             "precision": "bf16" if cuda else "fp32", "channels_last": cuda}
    if cuda:
        train["deterministic"] = False  # fit sets cudnn.benchmark = not deterministic
    if args.workers is not None:
        train["num_workers"] = args.workers
    overrides = {
        "data": {"dataset": "synthetic", "load_size": round(size * 286 / 256), "crop_size": size, "flip": True,
                 "synthetic": {"size": size, "num_train": max(args.images, batch), "num_val": 1, "num_test": 1,
                               "seed": args.seed}},
        "train": train,
        "members": member_overrides(params, args),
    }
    return load_config(args.params, overrides=overrides)


# ------------------------------------------------------------------------------------------------ data


def our_batches(data: PreparedData, cfg: Config, batch: int, seed: int, pin: bool) -> Iterator[dict]:
    """Endless batches exactly as fit draws them: set_epoch, a seeded permutation, a DataLoader per epoch."""
    dataset = SegmentationDataset(data, "train", build_transform(cfg, train=True), seed)
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        # drop_last: a short final batch would time a different amount of work (fit keeps it)
        yield from DataLoader(dataset, batch_size=batch, sampler=epoch_order(len(dataset), seed, epoch),
                              num_workers=cfg.train.num_workers,
                              pin_memory=pin, drop_last=True)
        epoch += 1


def write_aligned_jpegs(data: PreparedData, folder: Path) -> list[Path]:
    """The training split as the reference stores datasets: photo | colour label side by side, one JPEG each."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = np.vstack([data.spec.palette, np.zeros((256 - data.spec.num_classes, 3), np.uint8)])  # void black
    paths = []
    for i, (photo, mask) in enumerate(zip(data.photos("train"), data.masks("train"))):
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(np.hstack([photo, palette[mask]])).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


class ReferenceDataset(Dataset):
    """The reference's AlignedDataset + get_transform, per item: PIL decode, split A|B, one set of crop and
    flip parameters for both, torchvision Resize (bicubic) -> crop -> flip -> ToTensor -> Normalize.

    The reference feeds the colour label itself to its L1 loss; seg_p2p's models take class ids, so the
    transformed label is read back to ids by nearest palette colour (seg_p2p's match_palette), the least
    a photo -> labels user of the reference has to add.
    """

    def __init__(self, paths: list[Path], load_size: int, crop_size: int, flip: bool, spec: DatasetSpec):
        self.paths, self.load_size, self.crop_size, self.flip, self.spec = paths, load_size, crop_size, flip, spec

    def __len__(self) -> int:
        return len(self.paths)

    def transform(self, x: int, y: int, flip: bool, normalize: bool):
        from torchvision import transforms

        steps = [transforms.Resize([self.load_size, self.load_size], transforms.InterpolationMode.BICUBIC),
                 transforms.Lambda(lambda img: img.crop((x, y, x + self.crop_size, y + self.crop_size)))]
        if flip:
            steps.append(transforms.Lambda(lambda img: img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        if normalize:
            steps += [transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
        return transforms.Compose(steps)

    def __getitem__(self, index: int) -> dict:
        ab = Image.open(self.paths[index]).convert("RGB")
        w, h = ab.size
        a, b = ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, w, h))
        x = random.randint(0, max(0, self.load_size - self.crop_size))
        y = random.randint(0, max(0, self.load_size - self.crop_size))
        flip = self.flip and random.random() > 0.5
        photo = self.transform(x, y, flip, normalize=True)(a)
        label = self.transform(x, y, flip, normalize=False)(b)
        mask = torch.from_numpy(match_palette(np.asarray(label), self.spec)[0].astype(np.int64))
        return {"photo": photo, "mask": mask, "index": index}


def reference_batches(dataset: ReferenceDataset, workers: int) -> Iterator[dict]:
    while True:
        yield from DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers)


# ------------------------------------------------------------------------------------------ measuring


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


def state_mib(model: SegModel, optimizers: dict) -> float:
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [value for opt in optimizers.values() for state in opt.state.values()
                for value in state.values() if torch.is_tensor(value)]
    return rounded(sum(t.numel() * t.element_size() for t in tensors) / MIB)


# ---------------------------------------------------------------------------------------------- steps


def reference_step(model: SegModel, batch: dict, optimizers: dict) -> dict[str, float]:
    """The reference's optimize_parameters + get_current_losses: forward, D step, G step, then every loss
    term read back to the host (float(loss)) for logging, each step."""
    output = model(batch)
    losses = {}
    if "discriminator" in optimizers:
        d_losses = model.discriminator_losses(batch, output)
        optimizers["discriminator"].zero_grad()
        sum(v for k, v in d_losses.items() if k.startswith("loss_")).backward()
        optimizers["discriminator"].step()
        losses.update(d_losses)
    g_losses = model.generator_losses(batch, output)
    optimizers["generator"].zero_grad()
    sum(v for k, v in g_losses.items() if k.startswith("loss_")).backward()
    optimizers["generator"].step()
    losses.update(g_losses)
    return {key: value.item() for key, value in losses.items()}


def reference_optimizers(model: SegModel, cfg) -> dict[str, torch.optim.Optimizer]:
    """The reference's torch.optim.Adam(net.parameters(), lr, betas): no fused kernels."""
    return {role: torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr, betas=(cfg.optimizer.beta1,
                                                                                 cfg.optimizer.beta2))
            for role, net in model.networks().items()}


def our_runner(name: str, batches: Iterator[dict], step_model, optimizers: dict, precision: Precision,
               device: torch.device, cfg: Config, images: int, flags: Callable[[], None]) -> Runner:
    """fit's loop body from the engine itself: to_device, train_step, LossLog.add, and LossLog.check (fit's host
    sync) every LOG_EVERY steps (not at epoch ends: the benchmark's tiny epochs would add syncs a real one has not)."""
    log = LossLog(name, device, cfg.train.collapse_patience, Path("last.pt"))
    steps = iter(range(1, 2**62))

    def step() -> None:
        log.add(train_step(step_model, to_device(next(batches), device, cfg.train.channels_last), optimizers,
                           precision))
        if next(steps) % LOG_EVERY == 0:
            log.check(1, LOG_EVERY)
            log.start_epoch()

    return Runner(name, images, step, flags)


def our_flags() -> Callable[[], None]:
    """The process-wide flags fit runs under (what seed_everything just set), to restore before each ours block."""
    state = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.utils.deterministic.fill_uninitialized_memory)

    def enter() -> None:
        torch.backends.cudnn.benchmark = state[0]
        torch.use_deterministic_algorithms(state[1], warn_only=state[2])
        torch.utils.deterministic.fill_uninitialized_memory = state[3]

    return enter


def reference_enter() -> None:
    torch.backends.cudnn.benchmark = True  # the reference's BaseModel sets it (fixed-size inputs)
    torch.use_deterministic_algorithms(False)


# --------------------------------------------------------------------------------------------- members


def bench_member(name: str, cfg: Config, data: PreparedData, ref_set: ReferenceDataset, args: argparse.Namespace,
                 device: torch.device, steps: int, repeats: int) -> dict:
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    batch = cfg.train.batch_size
    seed_everything(args.seed, cfg.train.deterministic)  # as fit does; the flags it sets are ours'
    flags = our_flags()
    model = build_member(cfg, name, data.spec)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizers = model.optimizers()
    precision = Precision(cfg.train.precision, device)
    step_model = torch.compile(model) if cfg.train.compile else model
    model.train()

    torch.manual_seed(args.seed)
    ref_model = build_member(cfg, name, data.spec).to(device)  # fp32, NCHW
    ref_model.train()
    ref_opts = reference_optimizers(ref_model, cfg.members[name])
    ref_batches = reference_batches(ref_set, cfg.train.num_workers)

    def ref_step() -> None:
        reference_step(ref_model, to_device(next(ref_batches), device, False), ref_opts)

    ours = our_runner("ours", our_batches(data, cfg, batch, args.seed, cuda), step_model, optimizers, precision,
                      device, cfg, batch, flags)
    ours_b1 = our_runner("ours_same_as_reference", our_batches(data, cfg, 1, args.seed, cuda), step_model,
                         optimizers, precision, device, cfg, 1, flags)
    reference = Runner("reference", 1, ref_step, reference_enter)
    runners = [ours, ours_b1, reference]

    log(f"{name}: {batch=} warmup {args.warmup}, {repeats} interleaved repeats x "
        f"{math.ceil(steps / repeats)} step(s)")
    rates = interleaved(runners, args.warmup, repeats, math.ceil(steps / repeats), sync)

    # Training FLOPs of one full step (forward, both backward passes, optimizer steps), counted on the eager model.
    flop_batches = our_batches(data, cfg, batch, args.seed + 1, cuda)
    ours.enter()
    with FlopCounterMode(display=False) as counter:
        train_step(model, to_device(next(flop_batches), device, cfg.train.channels_last), optimizers, precision)
    train_flops = counter.get_total_flops() / batch

    memory = {runner.name: peak_memory_mib(runner, device) for runner in runners}
    results = {}
    for runner in runners:
        rate = median(rates[runner.name])
        entry = {"batch": runner.images, "images_per_s": rounded(rate), "seconds_per_image": rounded(1 / rate),
                 "images_per_s_repeats": [rounded(r) for r in rates[runner.name]],
                 "gflop_per_s": rounded(train_flops * rate / 1e9), "peak_memory_mib": memory[runner.name]}
        if cuda:
            entry["model_flops_utilisation"] = rounded(train_flops * rate / (args.peak_tflops * 1e12))
        results[runner.name] = entry

    # Inference: ours, batched, no_grad, eval mode, the member's probabilities (what predict writes).
    eval_set = SegmentationDataset(data, "train", build_transform(cfg, train=False), args.seed)
    eval_batch = to_device(next(iter(DataLoader(eval_set, batch_size=batch))), device, cfg.train.channels_last)
    infer_flops = flops_per_image(model.inference_network(), eval_batch["photo"])
    ours.enter()
    model.eval()

    def infer() -> None:
        with torch.no_grad(), precision.autocast():
            model.probabilities(step_model(eval_batch))

    infer_rates = interleaved([Runner("inference", eval_batch["photo"].shape[0], infer, ours.enter)],
                              warmup=1, repeats=3, steps_per_block=args.inference_steps, sync=sync)["inference"]
    model.train()
    infer_rate = median(infer_rates)
    inference = {"batch": eval_batch["photo"].shape[0], "images_per_s": rounded(infer_rate),
                 "images_per_s_repeats": [rounded(r) for r in infer_rates],
                 "gflop_per_image": rounded(infer_flops / 1e9), "gflop_per_s": rounded(infer_flops * infer_rate / 1e9)}
    if cuda:
        inference["model_flops_utilisation"] = rounded(infer_flops * infer_rate / (args.peak_tflops * 1e12))
    inference["slide"] = bench_slide(model, cfg, args, precision, ours.enter, sync, infer_rate)

    out = {
        "params": parameter_counts(model),
        "train_gflop_per_image": rounded(train_flops / 1e9),
        "state_mib": state_mib(model, optimizers),
        **results,
        "speedup": paired_speedup(rates["ours"], rates["reference"]),
        "speedup_same_batch": paired_speedup(rates["ours_same_as_reference"], rates["reference"]),
        "inference": inference,
    }
    log(f"{name}: ours {results['ours']['images_per_s']} img/s, batch 1 "
        f"{results['ours_same_as_reference']['images_per_s']}, reference {results['reference']['images_per_s']}; "
        f"speedup {out['speedup']}, same batch {out['speedup_same_batch']}")
    del model, ref_model, optimizers, ref_opts, step_model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def bench_slide(model: SegModel, cfg: Config, args: argparse.Namespace, precision: Precision, enter, sync,
                resize_rate: float) -> dict:
    """Slide inference (seg_p2p.inference, what `inference.mode: slide` runs) on one --slide-size photo at its native
    scale: windows of the crop size, batched by --batch. `window_throughput_vs_whole` = windows/s over the batched
    whole-image images/s measured just before (same network, same input size): what the sliding costs."""
    size, (height, width) = cfg.data.crop_size, args.slide_size
    overlap = size // 4 if args.slide_overlap is None else args.slide_overlap
    slider = Inference(InferenceConfig(mode="slide", overlap=overlap), size, cfg.train.batch_size)
    device = next(model.parameters()).device
    photo = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(args.seed)).to(device) * 2 - 1
    windows = len(window_starts(height, size, slider.stride)) * len(window_starts(width, size, slider.stride))
    model.eval()

    def slide() -> None:
        with torch.no_grad(), precision.autocast():
            slider.probabilities(model, photo)

    rates = interleaved([Runner("slide", 1, slide, enter)], warmup=1, repeats=3, steps_per_block=1, sync=sync)["slide"]
    model.train()
    rate = median(rates)
    return {"photo": f"{width}x{height}", "window": size, "overlap": overlap, "windows": windows,
            "batch": cfg.train.batch_size, "images_per_s": rounded(rate),
            "images_per_s_repeats": [rounded(r) for r in rates], "windows_per_s": rounded(rate * windows), "window_throughput_vs_whole": rounded(rate * windows / resize_rate)}


def bench_data(cfg: Config, data: PreparedData, ref_set: ReferenceDataset, args: argparse.Namespace) -> dict:
    """Host data pipeline alone, images/s: the cached albumentations path at --batch vs JPEG + PIL at batch 1."""
    batch = cfg.train.batch_size
    ours_batches = our_batches(data, cfg, batch, args.seed, pin=False)
    ref_batches = reference_batches(ref_set, cfg.train.num_workers)
    ours_steps = max(1, math.ceil(args.data_images / batch))

    def ours() -> None:
        for _ in range(ours_steps):
            next(ours_batches)

    def reference() -> None:
        for _ in range(ours_steps * batch):
            next(ref_batches)

    runners = [Runner("ours", ours_steps * batch, ours, lambda: None),
               Runner("reference", ours_steps * batch, reference, lambda: None)]
    log(f"data loading: {args.data_repeats} interleaved repeats x {ours_steps * batch} images")
    rates = interleaved(runners, warmup=1, repeats=args.data_repeats, steps_per_block=1, sync=lambda: None)
    return {"ours": {"batch": batch, "images_per_s": rounded(median(rates["ours"])),
                     "images_per_s_repeats": [rounded(r) for r in rates["ours"]]},
            "reference": {"batch": 1, "images_per_s": rounded(median(rates["reference"])),
                          "images_per_s_repeats": [rounded(r) for r in rates["reference"]]},
            "speedup": paired_speedup(rates["ours"], rates["reference"])}


def bench_size(size: int, args: argparse.Namespace, device: torch.device, batch: int, steps: int,
               repeats: int) -> dict:
    cfg = build_config(args, size, batch, device)
    with tempfile.TemporaryDirectory(prefix="seg_p2p_bench_") as tmp:
        tmp = Path(tmp)
        log(f"size {size}: preparing {cfg.data.synthetic.num_train} synthetic images (load {cfg.data.load_size}, "
            f"crop {cfg.data.crop_size}) and their aligned JPEGs")
        prepare(cfg.data, tmp / "prepared")
        data = PreparedData(tmp / "prepared")
        paths = write_aligned_jpegs(data, tmp / "jpeg")
        ref_set = ReferenceDataset(paths, cfg.data.load_size, cfg.data.crop_size, cfg.data.flip, data.spec)
        random.seed(args.seed)
        out = {"load_size": cfg.data.load_size, "members": {}}
        out["data_loading"] = bench_data(cfg, data, ref_set, args)
        for name in args.members:
            out["members"][name] = bench_member(name, cfg, data, ref_set, args, device, steps, repeats)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def levers(cfg: Config, device: torch.device, args: argparse.Namespace) -> dict:
    """What ours runs with, read from seg_p2p itself (so a later change to fused_adam or seed_everything shows)."""
    probe = fused_adam([adam_group(torch.nn.Linear(1, 1).to(device), next(iter(cfg.members.values())).optimizer)])
    seed_everything(args.seed, cfg.train.deterministic)
    fill = torch.are_deterministic_algorithms_enabled() and torch.utils.deterministic.fill_uninitialized_memory
    return {"precision": cfg.train.precision, "channels_last": cfg.train.channels_last,
            "fused_adam": bool(probe.defaults.get("fused")),
            "cudnn_benchmark": torch.backends.cudnn.benchmark if device.type == "cuda" else None,
            "deterministic": cfg.train.deterministic,
            "nan_fill_of_new_tensors": fill,
            "compile": cfg.train.compile,
            "num_workers": cfg.train.num_workers}


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    load_start = os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (16 if cuda else 4)
    steps = args.steps or (30 if cuda else 6)
    repeats = min(args.repeats or (3 if cuda else steps), steps)
    cfg = build_config(args, args.size[0], batch, device)
    check_members(args, cfg)
    encoder = next((m.encoder for m in cfg.members.values() if "encoder" in type(m).model_fields), None)
    result = {
        "benchmark": "train_step",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "torch": torch.__version__,
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads(),
                    "cpu_count": os.cpu_count()},
        "settings": {
            "sizes": args.size, "batch": batch, "reference_batch": 1, "warmup": args.warmup, "steps": steps,
            "repeats": repeats, "steps_per_block": math.ceil(steps / repeats), "members": args.members,
            "ngf": args.ngf, "unet_ce_encoder": encoder, "dataset": "synthetic", "images": max(args.images, batch),
            "load_size_rule": "round(size * 286 / 256)", "jpeg_quality": JPEG_QUALITY, "seed": args.seed,
            "ours_levers": levers(cfg, device, args),
            "reference": "eager fp32 NCHW, batch 1, plain Adam, JPEG + PIL/torchvision per step, .item() per loss",
            "peak_tflops": args.peak_tflops if cuda else None,
        },
        "memory_method": memory_method(device),
        "sizes": {},
    }
    for size in args.size:
        result["sizes"][str(size)] = bench_size(size, args, device, batch, steps, repeats)
    result["load_average"] = {"start": [round(v, 2) for v in load_start],
                              "end": [round(v, 2) for v in os.getloadavg()]}
    result["max_rss_mib"] = rounded(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


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


def to_json(result: dict) -> str:
    """Indented JSON with every list of numbers or strings on one line."""
    text = json.dumps(result, indent=2)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr), restored_global_state():  # stdout carries the JSON only
        result = run(args)
    print(to_json(result), file=stdout, flush=True)
    return result


if __name__ == "__main__":
    main()
