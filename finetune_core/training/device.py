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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finetune_core.model.batching import BatchLimit, inference_batch_tokens
from finetune_core.training.precision_probe import (
    CpuBf16,
    PrecisionChoice,
    cached_bf16_ratio,
    cpu_bf16,
    decide_precision,
    default_cache_dir,
    needs_measurement,
    step_shape,
)

_X86 = ("x86_64", "amd64", "i386", "i686")
_DETECTION = threading.Lock()  # the first resolution runs once, whatever the number of threads asking
_PROBING = threading.Lock()


@functools.cache
def _cpu_instructions() -> CpuBf16:
    """On x86, the AVX-512 BF16 and AMX instructions themselves. oneDNN's own check
    (``_is_mkldnn_bf16_supported``) also says yes on AVX-512 CPUs without them (Skylake to Ice
    Lake Xeons), where it emulates bf16 through fp32: matrix products measured 5x slower than fp32
    there (docs/benchmarks/precision.md), so ``auto`` must not pick it. Elsewhere (aarch64) oneDNN's
    check looks for the bf16 instructions, which count as vector bf16 (measured, like AVX-512 BF16)."""
    try:
        if platform.machine().lower() in _X86:
            return cpu_bf16(bool(torch.cpu._is_avx512_bf16_supported()), bool(torch.cpu._is_amx_tile_supported()))
        return cpu_bf16(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), False)
    except (AttributeError, RuntimeError):  # a torch without these probes: fp32 is always right
        return CpuBf16(avx512_bf16=False, amx=False)


def cpu_instructions() -> CpuBf16:
    with _DETECTION:
        return _cpu_instructions()


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX-512 BF16 or AMX); without them bf16 autocast is slower than fp32."""
    return cpu_instructions().native


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


def _probe_config(backbone, trust_remote_code: bool):
    """The backbone's transformers config (its sizes shape the probe); None when it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(backbone), trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None


def _measured_ratio(backbone, trust_remote_code: bool, batch: int, length: int, backward: bool, cache_dir):
    model_config = _probe_config(backbone, trust_remote_code) if backbone is not None else None
    shape = step_shape(model_config, batch, length, backward) if model_config is not None else None
    if shape is None:
        return None
    try:
        with _PROBING:  # threads resolving together measure once, then read the cached answer
            return cached_bf16_ratio(cpu_instructions(), model_config, shape, Path(cache_dir or default_cache_dir()))
    except (RuntimeError, ValueError, OSError):  # an architecture that cannot be cut to one block: fp32
        return None


def choose_precision(
    requested: str,
    device: torch.device,
    *,
    backbone=None,
    trust_remote_code: bool = False,
    batch: int = 32,
    length: int = 128,
    backward: bool = True,
    cache_dir=None,
) -> PrecisionChoice:
    """``requested`` resolved on ``device`` (docs/concepts/precision.md): on CPUs with AVX-512 BF16
    but no AMX, ``auto`` measures ``backbone``'s step at ``batch`` x ``length`` (a training step when
    ``backward``), once per machine and shape, cached in ``cache_dir``; without a backbone it stays fp32."""
    cpu = cpu_instructions() if device.type == "cpu" else CpuBf16(avx512_bf16=False, amx=False)
    ratio = None
    if needs_measurement(requested, device.type, cpu):
        ratio = _measured_ratio(backbone, trust_remote_code, batch, length, backward, cache_dir)
    cuda_bf16 = device.type == "cuda" and requested == "auto" and torch.cuda.is_bf16_supported()
    return decide_precision(requested, device.type, cpu=cpu, cuda_bf16=cuda_bf16, bf16_ratio=ratio)


def resolve_precision(requested: str, device: torch.device, **probe) -> str:
    """``choose_precision``'s precision alone."""
    return choose_precision(requested, device, **probe).precision


@dataclass(frozen=True)
class Runtime:
    """The device and the training precision; inference (validation, test, features, caches) runs
    at ``inference_precision`` where its own shapes decided otherwise (None: the same)."""

    device: torch.device
    precision: str
    inference_precision: str | None = None
    choice: PrecisionChoice | None = field(default=None, compare=False)
    inference_choice: PrecisionChoice | None = field(default=None, compare=False)

    def autocast(self):
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def for_inference(self) -> Runtime:
        """The runtime inference batches use (itself when both precisions agree)."""
        if self.inference_precision in (None, self.precision):
            return self
        return Runtime(self.device, self.inference_precision, choice=self.inference_choice)

    def record(self) -> dict:
        """For a stage's results: the precisions, why, and the measured ratios (where measured)."""
        values: dict = {"precision": self.precision, "inference_precision": self.for_inference().precision}
        for prefix, choice in (("precision", self.choice), ("inference_precision", self.inference_choice)):
            if choice is not None:
                values[f"{prefix}_reason"] = choice.reason
                if choice.bf16_ratio is not None:
                    values[f"{prefix}_bf16_ratio"] = round(choice.bf16_ratio, 3)
        return values


def _probe_cache_dir(training) -> Path:
    return Path(training.cache_dir) / "precision" if training.cache_dir else default_cache_dir()


def runtime_for(training, backbone=None, trust_remote_code: bool = False) -> Runtime:
    """Device and precisions for ``training``; ``backbone`` (a path or hub id) shapes the
    measurement ``auto`` takes on CPUs with AVX-512 BF16 but no AMX, for training steps at
    ``batch_size`` and inference batches at ``eval_batch_size``."""
    device = resolve_device(training.device)
    if training.num_threads:
        torch.set_num_threads(training.num_threads)
    probe = dict(backbone=backbone, trust_remote_code=trust_remote_code, cache_dir=_probe_cache_dir(training))
    length = training.max_length
    train = choose_precision(training.precision, device, batch=training.batch_size, length=length, **probe)
    infer = choose_precision(
        training.precision, device, batch=training.eval_batch_size, length=length, backward=False, **probe
    )
    inference_precision = infer.precision if infer.precision != train.precision else None
    return Runtime(device, train.precision, inference_precision, choice=train, inference_choice=infer)


def eval_batches(training, runtime: Runtime) -> BatchLimit:
    """Inference batches (validation, test, features, the layer cache): ``eval_batch_size`` rows, and
    at most ``eval_batch_tokens`` padded tokens where that pays on the device and precision."""
    precision = runtime.for_inference().precision
    tokens = inference_batch_tokens(training.eval_batch_tokens, runtime.device.type, precision)
    return BatchLimit(training.eval_batch_size, tokens)
