"""Where and at what precision a run computes: device choice, batch transfer, autocast and grad scaling."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from seg_p2p.errors import UserError


def select_device(name: str) -> torch.device:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise UserError("train.device: cuda is not available on this machine; set train.device: auto or cpu")
        if name == "mps" and not torch.backends.mps.is_available():
            raise UserError("train.device: mps is not available on this machine; set train.device: auto or cpu")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """What the report says a cost was measured on: the GPU's name, or `cpu`."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def training_device(settings) -> torch.device:
    """select_device for a training (`settings`: its TrainConfig), refusing before any work what cannot run there."""
    device = select_device(settings.device)
    if settings.precision == "fp16" and device.type != "cuda":
        raise UserError(f"train.precision: fp16 needs CUDA's gradient scaler, and this training runs on {device.type}; "
                        "use bf16 or fp32 there")
    if settings.sync_batchnorm and device.type != "cuda":
        raise UserError(f"train.sync_batchnorm: SyncBatchNorm runs on CUDA only, and this training runs on "
                        f"{device.type}; set it to false")
    return device


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


class Precision:
    """`train.precision` on a device: the autocast context and the grad scaler (active for fp16 on CUDA only;
    bf16 keeps fp32's exponent range and needs none; training_device refuses fp16 elsewhere)."""

    def __init__(self, precision: str, device: torch.device):
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16" and device.type == "cuda")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else nullcontext()
