"""The machine a benchmark ran on, for its results file and its first printed line: the CPU
model, the core count, the instruction-set flags that decide precision and speed (bf16 is native
only with avx512_bf16 or amx; AVX2-only machines run fp32), torch's thread count and the load
average (what else was running)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def cpu_facts() -> dict:
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name") or platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "flags": [flag for flag in PRECISION_FLAGS if flag in flags],
    }


def machine() -> dict:
    """cpu_facts plus torch's threads, versions and the load average now."""
    import torch

    return {
        **cpu_facts(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load": load_average(),
    }
