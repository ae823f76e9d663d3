"""What the benchmark prints: one JSON document on stdout (its keys: benchmarks/README.md), every list on one line."""

from __future__ import annotations

import json
import math
import os
import platform
import re
from pathlib import Path

import torch

from benchmarks.measure import memory_method
from benchmarks.reference import JPEG_QUALITY


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(args, device: torch.device, batch: int, steps: int, repeats: int, encoder: str | None,
           levers: dict) -> dict:
    """Where the benchmark ran and with which settings: the part of the document before the measurements."""
    cuda = device.type == "cuda"
    return {
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
            "ours_levers": levers, "compiled_row": args.compile,
            "reference": "eager fp32 NCHW, batch 1, plain Adam, JPEG + PIL/torchvision per step, .item() per loss",
            "peak_tflops": args.peak_tflops if cuda else None,
        },
        "memory_method": memory_method(device),
        "sizes": {},
    }


def to_json(result: dict) -> str:
    """Indented JSON with every list of numbers or strings on one line."""
    text = json.dumps(result, indent=2)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
