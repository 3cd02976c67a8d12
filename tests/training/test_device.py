"""Device and precision resolution: the default (`device: auto`, `precision: auto`) resolved from
several threads at once, as the thread task runner's workers do when they score backbone
candidates in parallel.

The race this guards against (accelerate's ``PartialState`` read before it had set its device)
showed only in a process that had resolved nothing yet, so the check runs both in this process
after resetting every cache and singleton, and in a fresh interpreter."""

from __future__ import annotations

import platform
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from finetune_core.config.sections import TrainingConfig
from finetune_core.model.batching import CPU_FP32_BATCH_TOKENS, BatchLimit
from finetune_core.training import device
from finetune_core.training.device import cpu_supports_bf16, resolve_precision, runtime_for

REPO = Path(__file__).resolve().parents[2]


def forget_resolved_state() -> None:
    """As in a process that has resolved nothing yet: no detected device, no accelerate singleton."""
    if "accelerate.state" in sys.modules:  # imported by other libraries (peft); it held the device before
        sys.modules["accelerate.state"].PartialState._reset_state()
    device._detected_device_type.cache_clear()
    device._cpu_instructions.cache_clear()


def resolve_together(workers: int = 8) -> tuple[set, list[BaseException]]:
    """The default runtime resolved by ``workers`` threads released by one barrier: the distinct
    (device, precision) pairs they got and the errors they raised."""
    barrier = threading.Barrier(workers)
    results, errors = [], []

    def resolve() -> None:
        barrier.wait()  # every thread asks at the same moment, as mapped scoring tasks do
        try:
            runtime = runtime_for(TrainingConfig())
            results.append((runtime.device, runtime.precision))
        except BaseException as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return set(results), errors


def expected_device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"


def test_the_default_runtime_resolved_from_threads_released_together_agrees():
    for _ in range(3):
        forget_resolved_state()
        resolved, errors = resolve_together()
        assert errors == []
        assert len(resolved) == 1
        ((resolved_device, precision),) = resolved
        assert resolved_device.type == expected_device_type()
        assert precision == device.resolve_precision("auto", resolved_device)


def test_the_default_runtime_resolved_from_threads_in_a_fresh_process():
    script = (
        "from tests.training.test_device import resolve_together\n"
        "resolved, errors = resolve_together()\n"
        "assert not errors, errors\n"
        "assert len(resolved) == 1, resolved\n"
        "print(resolved.pop()[0].type)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == expected_device_type()


def test_local_rank_picks_the_gpu_of_a_distributed_launch(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    resolved = device.resolve_device("auto")
    if torch.cuda.is_available():
        assert resolved == torch.device("cuda", 1 % torch.cuda.device_count())
    else:  # no GPU: every rank shares the host's device
        assert resolved.type == expected_device_type()


def test_an_explicit_device_and_precision_are_obeyed():
    assert device.resolve_device("cpu") == torch.device("cpu")
    assert runtime_for(TrainingConfig(device="cpu", precision="fp32")) == device.Runtime(torch.device("cpu"), "fp32")


def test_inference_batches_are_capped_in_tokens_on_cpus_at_fp32_by_default():
    cpu_fp32 = device.Runtime(torch.device("cpu"), "fp32")
    assert device.eval_batches(TrainingConfig(), cpu_fp32) == BatchLimit(128, CPU_FP32_BATCH_TOKENS)
    # not measured at bf16 or on GPUs: the row count alone, as before
    assert device.eval_batches(TrainingConfig(), device.Runtime(torch.device("cpu"), "bf16")) == BatchLimit(128)
    assert device.eval_batches(TrainingConfig(), device.Runtime(torch.device("cuda"), "fp32")) == BatchLimit(128)
    assert device.eval_batches(TrainingConfig(eval_batch_tokens=0), cpu_fp32) == BatchLimit(128)
    explicit = TrainingConfig(eval_batch_tokens=4096, eval_batch_size=32)
    assert device.eval_batches(explicit, device.Runtime(torch.device("cuda"), "bf16")) == BatchLimit(32, 4096)
    with pytest.raises(ValidationError, match="eval_batch_tokens"):
        TrainingConfig(eval_batch_tokens=-1)


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not Path("/proc/cpuinfo").is_file(),
    reason="reads the x86 instruction-set flags from /proc/cpuinfo",
)
def test_cpu_bf16_means_the_bf16_instructions_themselves():
    """oneDNN also accepts bf16 on AVX-512 CPUs without AVX-512 BF16, emulating it 5x slower than
    fp32 (bench/precision.py); ``auto`` chose it there until it read the instructions instead."""
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    device._cpu_instructions.cache_clear()
    assert cpu_supports_bf16() == native
    # AMX: bf16; AVX-512 BF16 alone: measured, and fp32 without a backbone to measure (test_precision_auto.py)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if "amx_tile" in cpu_flags() else "fp32")


def test_auto_precision_follows_the_hardware():
    expected = "bf16" if device.cpu_instructions().amx else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
