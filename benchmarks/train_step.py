"""`python -m benchmarks.train_step`: training images/s, seg_p2p's way against the reference way.

For each member of --params (pix2pix, unet_l1, unet_ce, unet_ce_adv; --members picks some) and each --size, three
configurations train the same model class in one process, their timed blocks interleaved (A B C, C B A, A B C, ...)
so a busy machine slows all of them alike:

- `ours`: seg_p2p's own path: the prepared uint8 cache -> SegmentationDataset with the albumentations
  jitter -> DataLoader -> the engine's own `train_step` and `LossLog` with the member's optimizers, no
  per-step host sync (only fit's every-LOG_EVERY-steps one), at --batch; on CUDA with bf16 autocast, channels_last,
  fused Adam, cudnn.benchmark; on CPU fp32, NCHW, as params.yaml (benchmarks/ours.py).
- `ours_same_as_reference`: the same at batch 1, the reference's batch size.
- `ours_compiled` (with --compile): `ours` under torch.compile (inductor), as `train.compile: true` trains.
- `reference`: the reference implementation's way: eager fp32 NCHW, batch 1, every step decodes an
  aligned photo|label JPEG from disk with PIL and applies pix2pix's torchvision/PIL transforms (resize
  to load size, random crop, flip, ToTensor, Normalize), plain Adam, D step then G step, and
  `.item()` of every loss term each step (the reference's logging; benchmarks/reference.py).

How it times (benchmarks/measure.py) and what it prints (benchmarks/report.py): stdout is one JSON document (see
benchmarks/README.md for every key); progress goes to stderr.
"""

from __future__ import annotations

import seg_p2p  # noqa: F401, I001 - first: its import makes the process offline (albumentations, MLflow)

import argparse
import contextlib
import gc
import math
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.inference import bench_inference
from benchmarks.measure import (Runner, interleaved, log, median, paired_speedup, peak_memory_mib,
                                restored_global_state, rounded, state_mib)
from benchmarks.ours import build_config, levers, our_batches, our_flags, our_runner
from benchmarks.reference import (ReferenceDataset, reference_batches, reference_enter, reference_optimizers,
                                  reference_step, write_aligned_jpegs)
from benchmarks.report import header, to_json
from seg_p2p.config import Config
from seg_p2p.data.prepare import PreparedData, prepare
from seg_p2p.device import Precision, select_device, to_device
from seg_p2p.engine import train_step
from seg_p2p.models import build_member, parameter_counts
from seg_p2p.seeding import seed_everything

REPO = Path(__file__).resolve().parents[1]


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


def placed_member(name: str, cfg: Config, data: PreparedData, device: torch.device, seed: int):
    """A member as fit places it (seeded, on the device, in the configured memory format) with its optimizers."""
    torch.manual_seed(seed)
    model = build_member(cfg, name, data.spec)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    return model, model.optimizers()


def reference_runner(name: str, cfg: Config, data: PreparedData, ref_set: ReferenceDataset, device: torch.device):
    """The member as the reference trains it: its own fp32 NCHW copy, plain Adam, JPEG batches decoded per step."""
    ref_model = build_member(cfg, name, data.spec).to(device)
    ref_model.train()
    ref_opts = reference_optimizers(ref_model, cfg.members[name])
    ref_batches = reference_batches(ref_set, cfg.train.num_workers)

    def ref_step() -> None:
        reference_step(ref_model, to_device(next(ref_batches), device, False), ref_opts)

    return ref_model, ref_opts, ref_step


def runner_rows(runners: list[Runner], rates: dict, train_flops: float, device: torch.device,
                peak_tflops: float | None) -> dict:
    """One row per configuration: images/s (median and every repeat), GFLOP/s, peak memory, MFU on a GPU."""
    rows = {}
    for runner in runners:
        rate = median(rates[runner.name])
        rows[runner.name] = {"batch": runner.images, "images_per_s": rounded(rate),
                             "seconds_per_image": rounded(1 / rate),
                             "images_per_s_repeats": [rounded(r) for r in rates[runner.name]],
                             "gflop_per_s": rounded(train_flops * rate / 1e9),
                             "peak_memory_mib": peak_memory_mib(runner, device)}
        if peak_tflops:
            rows[runner.name]["model_flops_utilisation"] = rounded(train_flops * rate / (peak_tflops * 1e12))
    return rows


def compiled_runner(name: str, cfg: Config, data: PreparedData, args: argparse.Namespace, device: torch.device,
                    precision: Precision, flags, sync) -> tuple[Runner, float]:
    """`ours` under torch.compile on its own copy of the model (same initial weights), so the eager rows time eager
    kernels only; its first step (the compilation) is run here, untimed by the rows, and its seconds returned."""
    twin, twin_optimizers = placed_member(name, cfg, data, device, args.seed)
    batch = cfg.train.batch_size
    runner = our_runner("ours_compiled", our_batches(data, cfg, batch, args.seed, device.type == "cuda"),
                        torch.compile(twin), twin_optimizers, precision, device, cfg, batch, flags)
    started = time.perf_counter()
    runner.enter()
    runner.step()
    sync()
    return runner, round(time.perf_counter() - started, 1)


def bench_member(name: str, cfg: Config, data: PreparedData, ref_set: ReferenceDataset, args: argparse.Namespace,
                 device: torch.device, steps: int, repeats: int) -> dict:
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    batch = cfg.train.batch_size
    seed_everything(args.seed, cfg.train.deterministic)  # as fit does; the flags it sets are ours'
    flags = our_flags()
    precision = Precision(cfg.train.precision, device)
    model, optimizers = placed_member(name, cfg, data, device, args.seed)

    ref_model, ref_opts, ref_step = reference_runner(name, cfg, data, ref_set, device)
    ours = our_runner("ours", our_batches(data, cfg, batch, args.seed, cuda), model, optimizers, precision,
                      device, cfg, batch, flags)
    runners = [ours, our_runner("ours_same_as_reference", our_batches(data, cfg, 1, args.seed, cuda), model,
                                optimizers, precision, device, cfg, 1, flags),
               Runner("reference", 1, ref_step, reference_enter)]
    compiled = {}
    if args.compile:
        runner, compiled["compile_seconds"] = compiled_runner(name, cfg, data, args, device, precision, flags, sync)
        runners.append(runner)

    log(f"{name}: {batch=} warmup {args.warmup}, {repeats} interleaved repeats x "
        f"{math.ceil(steps / repeats)} step(s)")
    rates = interleaved(runners, args.warmup, repeats, math.ceil(steps / repeats), sync)

    # Training FLOPs of one full step (forward, both backward passes, optimizer steps), counted on the eager model.
    flop_batches = our_batches(data, cfg, batch, args.seed + 1, cuda)
    ours.enter()
    with FlopCounterMode(display=False) as counter:
        train_step(model, to_device(next(flop_batches), device, cfg.train.channels_last), optimizers, precision)
    train_flops = counter.get_total_flops() / batch

    results = runner_rows(runners, rates, train_flops, device, args.peak_tflops if cuda else None)
    if args.compile:
        results["ours_compiled"] |= compiled
        compiled = {"speedup_compiled": paired_speedup(rates["ours_compiled"], rates["reference"]),
                    "compiled_vs_eager": paired_speedup(rates["ours_compiled"], rates["ours"])}

    out = {
        "params": parameter_counts(model),
        "train_gflop_per_image": rounded(train_flops / 1e9),
        "state_mib": state_mib(model, optimizers),
        **results,
        "speedup": paired_speedup(rates["ours"], rates["reference"]),
        "speedup_same_batch": paired_speedup(rates["ours_same_as_reference"], rates["reference"]),
        **compiled,
        "inference": bench_inference(model, cfg, data, args, precision, ours.enter, sync),
    }
    log(f"{name}: ours {results['ours']['images_per_s']} img/s, batch 1 "
        f"{results['ours_same_as_reference']['images_per_s']}, reference {results['reference']['images_per_s']}; "
        f"speedup {out['speedup']}, same batch {out['speedup_same_batch']}")
    del model, ref_model, optimizers, ref_opts, runners
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


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
    result = header(args, device, batch, steps, repeats, encoder, levers(cfg, device, args))
    for size in args.size:
        result["sizes"][str(size)] = bench_size(size, args, device, batch, steps, repeats)
    result["load_average"] = {"start": [round(v, 2) for v in load_start],
                              "end": [round(v, 2) for v in os.getloadavg()]}
    result["max_rss_mib"] = rounded(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    stdout = sys.stdout
    with contextlib.redirect_stdout(sys.stderr), restored_global_state():  # stdout carries the JSON only
        result = run(args)
    print(to_json(result), file=stdout, flush=True)
    return result


if __name__ == "__main__":
    main()
