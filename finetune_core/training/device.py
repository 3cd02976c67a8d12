"""Device and precision: auto picks what the hardware does best, explicit settings are obeyed.

``auto`` is detected here, not through accelerate's ``PartialState``: that singleton marks itself
initialised before it has set its device, so the thread task runner's workers, resolving the
runtime together in a fresh process, read ``device`` as None (``finetune run`` with several
backbone candidates exited 1 on a user's first try). Detection is a plain lookup done once per
process under a lock; the flow also resolves the runtime once before it maps candidates.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from dataclasses import dataclass

import torch

from finetune_core.model.batching import BatchLimit, inference_batch_tokens

_X86 = ("x86_64", "amd64", "i386", "i686")
_DETECTION = threading.Lock()  # the first resolution runs once, whatever the number of threads asking


@functools.cache
def _cpu_bf16() -> bool:
    """On x86, the AVX-512 BF16 or AMX instructions themselves. oneDNN's own check
    (``_is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs without them (Skylake to Ice
    Lake Xeons), where it emulates bf16 through fp32: matrix products measured 5x slower than fp32
    there (``bench/precision.py``), so ``auto`` must not pick it. Elsewhere (aarch64) oneDNN's
    check looks for the bf16 instructions."""
    try:
        if platform.machine().lower() in _X86:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: fp32 is always right
        return False


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX-512 BF16 or AMX); without them bf16 autocast is slower than fp32."""
    with _DETECTION:
        return _cpu_bf16()


@functools.cache
def _detected_device_type() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str) -> torch.device:
    """``auto``: cuda, then mps, then cpu. On GPUs a distributed launch's ``LOCAL_RANK`` picks the
    process's GPU (torchrun, accelerate launch); without it, the current one (our own launcher
    sets it per rank)."""
    if requested != "auto":
        return torch.device(requested)
    with _DETECTION:
        kind = _detected_device_type()
    if kind != "cuda":
        return torch.device(kind)
    local_rank = os.environ.get("LOCAL_RANK")
    # modulo: a launcher that shows each process only its own GPU still sets LOCAL_RANK
    index = int(local_rank) % torch.cuda.device_count() if local_rank else torch.cuda.current_device()
    return torch.device("cuda", index)


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


def eval_batches(training, runtime: Runtime) -> BatchLimit:
    """Inference batches (validation, test, features, the layer cache): ``eval_batch_size`` rows, and
    at most ``eval_batch_tokens`` padded tokens where that pays on the device and precision."""
    tokens = inference_batch_tokens(training.eval_batch_tokens, runtime.device.type, runtime.precision)
    return BatchLimit(training.eval_batch_size, tokens)
