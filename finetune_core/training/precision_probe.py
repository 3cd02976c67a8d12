"""``precision: auto`` on CPUs: the rule, and the short measurement it needs on some machines.

bf16 pays on CPUs only where the whole training step gets faster, not one matrix product: with
AMX it does; with AVX-512 BF16 alone it may not (a whole MiniLM step measured 0.65x fp32 while
its feed-forward layer alone was 1.18x, docs/benchmarks/precision.md). There, the backbone cut
to one block is timed at the run's batch and length in both precisions, once per machine, torch
version and shape; the answer is cached as a small JSON file. See docs/concepts/precision.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from finetune_core.durable import read_json_or_none, write_json_atomic

# bf16 trades precision for speed: it is chosen only when it is clearly faster, not within noise
BF16_MIN_SPEEDUP = 1.10
PROBE_SECONDS = 0.5  # per kind of step (training, inference): the whole probe stays ~2 s
# rows per timed step are cut to this many tokens (the length is kept: attention's share depends on it)
PROBE_TOKENS = 512
PROBE_VOCABULARY = 1000
PROBE_VERSION = 1  # bump when the probe's block or timing changes: older answers are not reused


@dataclass(frozen=True)
class CpuBf16:
    """The instructions that make bf16 native on a CPU (``avx512_bf16``, ``amx``) and the model
    and flags that name the machine in the cache key."""

    avx512_bf16: bool
    amx: bool
    model: str = ""
    flags: str = ""

    @property
    def native(self) -> bool:
        return self.avx512_bf16 or self.amx


@dataclass(frozen=True)
class PrecisionChoice:
    """What ``training.precision`` resolved to, why, and the bf16/fp32 speed ratio behind it
    (None when nothing was measured)."""

    precision: str
    reason: str
    bf16_ratio: float | None = None

    def params(self, prefix: str = "training.precision") -> dict[str, str]:
        """Run parameters: ``<prefix>_resolved``, ``<prefix>_reason``, ``<prefix>_bf16_ratio``."""
        values = {f"{prefix}_resolved": self.precision, f"{prefix}_reason": self.reason}
        if self.bf16_ratio is not None:
            values[f"{prefix}_bf16_ratio"] = f"{self.bf16_ratio:.3f}"
        return values


@dataclass(frozen=True)
class StepShape:
    """What the probe times: one encoder block of the backbone (its family, hidden size, heads,
    feed-forward width) on ``batch`` rows of ``length`` tokens; ``backward``: a training step, else
    inference."""

    hidden: int
    heads: int
    intermediate: int
    batch: int
    length: int
    backward: bool = True
    family: str = ""


def needs_measurement(requested: str, device_type: str, cpu: CpuBf16) -> bool:
    """Only ``auto`` on a CPU with AVX-512 BF16 but no AMX is measured."""
    return requested == "auto" and device_type == "cpu" and cpu.avx512_bf16 and not cpu.amx


def decide_precision(
    requested: str, device_type: str, *, cpu: CpuBf16, cuda_bf16: bool = False, bf16_ratio: float | None = None
) -> PrecisionChoice:
    """The rule, a pure function: an explicit setting is obeyed; ``auto`` takes bf16 on GPUs that
    support it and CPUs with AMX, fp32 without native bf16, and on AVX-512 BF16 alone bf16 only
    when ``bf16_ratio`` (bf16 speed / fp32 speed of the measured step) is at least BF16_MIN_SPEEDUP."""
    if requested != "auto":
        return PrecisionChoice(requested, f"set to {requested} in the configuration")
    if device_type == "cuda":
        if cuda_bf16:
            return PrecisionChoice("bf16", "GPU supports bf16")
        return PrecisionChoice("fp32", "GPU without bf16")
    if device_type != "cpu":
        return PrecisionChoice("fp32", f"{device_type}: bf16 not measured there")
    if cpu.amx:
        return PrecisionChoice("bf16", "CPU with AMX")
    if not cpu.avx512_bf16:
        return PrecisionChoice("fp32", "CPU without native bf16 (no AVX-512 BF16, no AMX)")
    if bf16_ratio is None:
        return PrecisionChoice("fp32", "AVX-512 BF16 without AMX, step not measured")
    faster = bf16_ratio >= BF16_MIN_SPEEDUP
    verdict = "at least" if faster else "below"
    reason = f"AVX-512 BF16 without AMX: measured bf16 {bf16_ratio:.2f}x fp32, {verdict} {BF16_MIN_SPEEDUP:.2f}x"
    return PrecisionChoice("bf16" if faster else "fp32", reason, bf16_ratio)


def _cpuinfo() -> tuple[str, str]:
    """The CPU model and the bf16-related flags, as /proc/cpuinfo names them (empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set()
    for line in info.read_text().splitlines() if info.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    relevant = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "fma"))
    return model, " ".join(relevant)


def cpu_bf16(avx512_bf16: bool, amx: bool) -> CpuBf16:
    """This CPU, given what torch detects of its bf16 instructions."""
    model, flags = _cpuinfo()
    return CpuBf16(avx512_bf16=avx512_bf16, amx=amx, model=model, flags=flags)


def step_shape(model_config, batch: int, length: int, backward: bool = True) -> StepShape | None:
    """The probe's shape for a backbone's transformers config; None when its sizes cannot be read."""
    sizes = [getattr(model_config, name, None) for name in ("hidden_size", "num_attention_heads", "intermediate_size")]
    if not all(isinstance(size, int) and size > 0 for size in sizes):
        return None
    hidden, heads, intermediate = sizes
    family = str(getattr(model_config, "model_type", ""))
    return StepShape(hidden, heads, intermediate, batch, length, backward, family)


def _one_block_backbone(model_config) -> torch.nn.Module:
    """The backbone's own architecture (embeddings, attention, norms, dropout) with one block,
    randomly initialised: the weights do not change the time, the shapes and kernels do. A small
    vocabulary: the token matrix's gradient costs the same in both precisions."""
    from transformers import AutoModel

    config = copy.deepcopy(model_config)
    config.num_hidden_layers = 1
    config.vocab_size = PROBE_VOCABULARY
    return AutoModel.from_config(config)


def _step(model: torch.nn.Module, inputs: dict, backward: bool, bf16: bool) -> None:
    if not backward:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(**inputs)
        return
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(**inputs).last_hidden_state
    out.float().square().mean().backward()
    model.zero_grad(set_to_none=True)


def measure_bf16_ratio(model_config, shape: StepShape, seconds: float = PROBE_SECONDS) -> dict:
    """fp32 and bf16-autocast steps of the backbone cut to one block (at most PROBE_TOKENS tokens
    of the shape's rows), alternated so that load hits both, for about ``seconds`` and at least
    three of each after one untimed warm-up: median milliseconds of each and ``ratio`` = fp32
    time / bf16 time (above 1: bf16 is faster). The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _one_block_backbone(model_config).train(shape.backward)
        rows = max(1, min(shape.batch, PROBE_TOKENS // shape.length))
        ids = torch.randint(0, PROBE_VOCABULARY, (rows, shape.length))
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for bf16 in (False, True):
            _step(model, inputs, shape.backward, bf16)
        deadline = time.perf_counter() + seconds
        while min(len(t) for t in times.values()) < 3 or time.perf_counter() < deadline:
            for bf16 in (False, True):
                started = time.perf_counter()
                _step(model, inputs, shape.backward, bf16)
                times[bf16].append(time.perf_counter() - started)
    fp32_ms, bf16_ms = (statistics.median(times[b]) * 1e3 for b in (False, True))
    return {"fp32_ms": fp32_ms, "bf16_ms": bf16_ms, "ratio": fp32_ms / bf16_ms, "steps": len(times[False])}


def probe_key(cpu: CpuBf16, shape: StepShape) -> dict:
    """What a measurement depends on: the machine, torch and the step's shape."""
    return {"cpu": cpu.model, "flags": cpu.flags, "torch": torch.__version__, **asdict(shape), "probe": PROBE_VERSION}


def probe_cache_file(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"bf16-probe-{digest}.json"


def cached_bf16_ratio(
    cpu: CpuBf16, model_config, shape: StepShape, cache_dir: Path, measure: Callable[..., dict] = measure_bf16_ratio
) -> float:
    """The measured bf16/fp32 ratio for this machine and shape: read from ``cache_dir`` when a
    readable answer for the same key is there, else measured and written atomically (a cut or
    foreign file counts as absent)."""
    key = probe_key(cpu, shape)
    path = probe_cache_file(cache_dir, key)
    saved = read_json_or_none(path)
    if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("ratio"), (int, float)):
        if saved["ratio"] > 0:
            return float(saved["ratio"])
    measured = measure(model_config, shape)
    write_json_atomic(path, {"key": key, **measured, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return float(measured["ratio"])


def default_cache_dir() -> Path:
    """``$FINETUNE_CACHE/precision`` (``~/.cache/finetune/precision`` by default)."""
    return Path(os.environ.get("FINETUNE_CACHE", Path.home() / ".cache" / "finetune")) / "precision"
