"""Device and precision: auto picks what the hardware does best, explicit settings are obeyed."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX-512 BF16 or AMX); without them bf16 autocast is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    from accelerate.state import PartialState  # cuda, then mps, then cpu; honours distributed launches

    return PartialState().device


def resolve_precision(requested: str, device: torch.device) -> str:
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str

    def autocast(self):
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


def runtime_for(training) -> Runtime:
    device = resolve_device(training.device)
    if training.num_threads:
        torch.set_num_threads(training.num_threads)
    return Runtime(device=device, precision=resolve_precision(training.precision, device))
