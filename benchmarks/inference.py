"""Inference rows of `python -m benchmarks.train_step`: a member's batched whole-image probabilities (what predict
writes) and slide inference on one large photo, timed as the training rows are (benchmarks/measure.py)."""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from benchmarks.measure import Runner, interleaved, median, rounded
from seg_p2p.config import Config, InferenceConfig
from seg_p2p.data.dataset import SegmentationDataset
from seg_p2p.data.prepare import PreparedData
from seg_p2p.data.transforms import build_transform
from seg_p2p.device import Precision, to_device
from seg_p2p.inference import Inference, window_starts
from seg_p2p.metrics import flops_per_image
from seg_p2p.models.member import SegModel


def bench_inference(model: SegModel, cfg: Config, data: PreparedData, args: argparse.Namespace, precision: Precision,
                    enter, sync) -> dict:
    """Ours, batched, no_grad, eval mode, the member's probabilities (what predict writes); then slide inference."""
    cuda = next(model.parameters()).device.type == "cuda"
    device = next(model.parameters()).device
    transform = build_transform(cfg.data, cfg.inference.mode, train=False)
    eval_set = SegmentationDataset(data, "train", transform, args.seed)
    eval_batch = to_device(next(iter(DataLoader(eval_set, batch_size=cfg.train.batch_size))), device,
                           cfg.train.channels_last)
    infer_flops = flops_per_image(model.inference_network(), eval_batch["photo"])
    enter()
    model.eval()

    def infer() -> None:
        with torch.no_grad(), precision.autocast():
            model.probabilities(model(eval_batch))

    rates = interleaved([Runner("inference", eval_batch["photo"].shape[0], infer, enter)],
                        warmup=1, repeats=3, steps_per_block=args.inference_steps, sync=sync)["inference"]
    model.train()
    rate = median(rates)
    inference = {"batch": eval_batch["photo"].shape[0], "images_per_s": rounded(rate),
                 "images_per_s_repeats": [rounded(r) for r in rates],
                 "gflop_per_image": rounded(infer_flops / 1e9), "gflop_per_s": rounded(infer_flops * rate / 1e9)}
    if cuda:
        inference["model_flops_utilisation"] = rounded(infer_flops * rate / (args.peak_tflops * 1e12))
    inference["slide"] = bench_slide(model, cfg, args, precision, enter, sync, rate)
    return inference


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
            "images_per_s_repeats": [rounded(r) for r in rates], "windows_per_s": rounded(rate * windows),
            "window_throughput_vs_whole": rounded(rate * windows / resize_rate)}
