"""Timing loops the micro-benchmarks share: seconds per call after untimed warm-up calls, and the
matrix-product rate of a square ``torch.mm`` (the peak MFU is measured against)."""

from __future__ import annotations

import time

import torch


def seconds_per_call(fn, calls: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls


def matmul_flops(dtype: torch.dtype, size: int, calls: int, warmup: int = 1) -> float:
    """FLOP/s of a [size, size] × [size, size] product in ``dtype``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    return 2 * size**3 / seconds_per_call(lambda: torch.mm(a, b), calls, warmup)
