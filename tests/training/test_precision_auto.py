"""``precision: auto``: the rule over (instructions, measured ratio), the cached measurement, and
explicit settings obeyed (docs/concepts/precision.md)."""

from __future__ import annotations

import json

import pytest
import torch

from finetune_core.config.sections import TrainingConfig
from finetune_core.evaluation.model_card import _precision_line
from finetune_core.training import device, precision_probe
from finetune_core.training.precision_probe import (
    BF16_MIN_SPEEDUP,
    CpuBf16,
    StepShape,
    cached_bf16_ratio,
    decide_precision,
    needs_measurement,
)

AVX2 = CpuBf16(avx512_bf16=False, amx=False, model="test cpu", flags="avx2")
AVX512_BF16 = CpuBf16(avx512_bf16=True, amx=False, model="test cpu", flags="avx512f avx512_bf16")
AMX = CpuBf16(avx512_bf16=True, amx=True, model="test cpu", flags="amx_bf16 amx_tile avx512_bf16")
SHAPE = StepShape(hidden=32, heads=2, intermediate=64, batch=8, length=16)


@pytest.mark.parametrize(
    ("cpu", "ratio", "expected"),
    [
        (AVX2, None, "fp32"),
        (AVX2, 3.0, "fp32"),  # no native bf16: a ratio is never consulted
        (AMX, None, "bf16"),
        (AVX512_BF16, 0.65, "fp32"),  # the 2-core Xeon: bf16 a third slower
        (AVX512_BF16, BF16_MIN_SPEEDUP - 0.01, "fp32"),  # faster, but within the margin
        (AVX512_BF16, BF16_MIN_SPEEDUP, "bf16"),
        (AVX512_BF16, 1.5, "bf16"),
        (AVX512_BF16, None, "fp32"),  # not measured (no backbone to shape it)
    ],
)
def test_auto_on_cpus_follows_the_instructions_and_the_measured_ratio(cpu, ratio, expected):
    choice = decide_precision("auto", "cpu", cpu=cpu, bf16_ratio=ratio)
    assert choice.precision == expected
    assert choice.reason
    assert choice.bf16_ratio == (ratio if cpu is AVX512_BF16 else None)


def test_only_auto_on_avx512_bf16_without_amx_is_measured():
    assert needs_measurement("auto", "cpu", AVX512_BF16)
    assert not needs_measurement("auto", "cpu", AMX)
    assert not needs_measurement("auto", "cpu", AVX2)
    assert not needs_measurement("fp32", "cpu", AVX512_BF16)
    assert not needs_measurement("bf16", "cpu", AVX512_BF16)
    assert not needs_measurement("auto", "cuda", AVX512_BF16)


def test_auto_on_gpus_reads_their_bf16_support():
    assert decide_precision("auto", "cuda", cpu=AVX2, cuda_bf16=True).precision == "bf16"
    assert decide_precision("auto", "cuda", cpu=AMX, cuda_bf16=False).precision == "fp32"
    assert decide_precision("auto", "mps", cpu=AMX).precision == "fp32"


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
@pytest.mark.parametrize("cpu", [AVX2, AVX512_BF16, AMX])
def test_a_forced_precision_is_never_overridden(forced, cpu):
    for ratio in (None, 0.5, 2.0):
        choice = decide_precision(forced, "cpu", cpu=cpu, bf16_ratio=ratio)
        assert (choice.precision, choice.bf16_ratio) == (forced, None)
        assert "configuration" in choice.reason


def _counting_measure(ratio: float):
    calls = []

    def measure(model_config, shape):
        calls.append(shape)
        return {"fp32_ms": 10.0, "bf16_ms": 10.0 / ratio, "ratio": ratio, "steps": 3}

    return measure, calls


def test_the_cached_measurement_is_reused_and_keyed_by_shape(tmp_path):
    measure, calls = _counting_measure(0.7)
    assert cached_bf16_ratio(AVX512_BF16, None, SHAPE, tmp_path, measure) == pytest.approx(0.7)
    assert cached_bf16_ratio(AVX512_BF16, None, SHAPE, tmp_path, measure) == pytest.approx(0.7)
    assert len(calls) == 1
    (written,) = tmp_path.glob("bf16-probe-*.json")
    saved = json.loads(written.read_text())
    assert saved["key"]["torch"] == torch.__version__ and saved["key"]["cpu"] == "test cpu"
    longer = StepShape(**{**SHAPE.__dict__, "length": 128})
    cached_bf16_ratio(AVX512_BF16, None, longer, tmp_path, measure)
    assert len(calls) == 2 and len(list(tmp_path.glob("bf16-probe-*.json"))) == 2
    other_cpu = CpuBf16(avx512_bf16=True, amx=False, model="another cpu", flags=AVX512_BF16.flags)
    cached_bf16_ratio(other_cpu, None, SHAPE, tmp_path, measure)
    assert len(calls) == 3


@pytest.mark.parametrize("content", ['{"key": {"cpu": "test c', "", '{"key": null, "ratio": 2.0}', "[1, 2]"])
def test_a_cut_or_foreign_cache_file_is_measured_again(tmp_path, content):
    measure, calls = _counting_measure(1.4)
    cached_bf16_ratio(AVX512_BF16, None, SHAPE, tmp_path, measure)
    (written,) = tmp_path.glob("bf16-probe-*.json")
    written.write_text(content)
    assert cached_bf16_ratio(AVX512_BF16, None, SHAPE, tmp_path, measure) == pytest.approx(1.4)
    assert len(calls) == 2
    assert json.loads(written.read_text())["ratio"] == pytest.approx(1.4)  # rewritten whole


@pytest.fixture
def avx512_bf16_cpu(monkeypatch):
    """This process's CPU seen as AVX-512 BF16 without AMX, the class ``auto`` measures on."""
    monkeypatch.setattr(device, "cpu_instructions", lambda: AVX512_BF16)


def test_the_real_probe_on_a_tiny_bert_measures_once_and_reuses(avx512_bf16_cpu, tiny_backbone, tmp_path):
    probe = dict(backbone=tiny_backbone, cache_dir=tmp_path, batch=4, length=16)
    first = device.choose_precision("auto", torch.device("cpu"), **probe)
    assert first.bf16_ratio is not None and first.bf16_ratio > 0
    assert first.precision == ("bf16" if first.bf16_ratio >= BF16_MIN_SPEEDUP else "fp32")
    (written,) = tmp_path.glob("bf16-probe-*.json")
    saved = json.loads(written.read_text())
    assert saved["fp32_ms"] > 0 and saved["bf16_ms"] > 0 and saved["steps"] >= 3
    assert saved["key"]["hidden"] == 32 and saved["key"]["family"] == "bert"
    again = device.choose_precision("auto", torch.device("cpu"), **probe)
    assert again == first
    assert json.loads(written.read_text())["measured_at"] == saved["measured_at"]
    assert list(tmp_path.glob("bf16-probe-*.json")) == [written]


def test_the_probe_leaves_the_global_random_state_alone(tiny_backbone):
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(tiny_backbone)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    precision_probe.measure_bf16_ratio(model_config, precision_probe.step_shape(model_config, 2, 8), seconds=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_a_forced_precision_never_measures(avx512_bf16_cpu, tiny_backbone, tmp_path, forced):
    training = TrainingConfig(device="cpu", precision=forced, cache_dir=str(tmp_path))
    runtime = device.runtime_for(training, tiny_backbone)
    assert (runtime.precision, runtime.for_inference().precision) == (forced, forced)
    assert not list(tmp_path.rglob("bf16-probe-*.json"))
    assert runtime.record()["precision_reason"] == f"set to {forced} in the configuration"


def test_training_and_inference_decide_for_their_own_steps(avx512_bf16_cpu, tiny_backbone, tmp_path, monkeypatch):
    ratios = {True: 1.5, False: 0.6}  # the training step gains from bf16, inference does not
    monkeypatch.setattr(device, "cached_bf16_ratio", lambda cpu, model_config, shape, cache_dir: ratios[shape.backward])
    runtime = device.runtime_for(TrainingConfig(device="cpu", cache_dir=str(tmp_path)), tiny_backbone)
    assert (runtime.precision, runtime.for_inference().precision) == ("bf16", "fp32")
    assert device.eval_batches(TrainingConfig(), runtime) == device.eval_batches(
        TrainingConfig(), device.Runtime(torch.device("cpu"), "fp32")
    )
    record = runtime.record()
    assert record["precision_bf16_ratio"] == 1.5 and record["inference_precision_bf16_ratio"] == 0.6
    line = _precision_line(TrainingConfig(), {"unfrozen": {"extra": record}})
    assert line.startswith("precision auto -> bf16 (AVX-512 BF16 without AMX: measured bf16 1.50x fp32")
    assert "inference fp32" in line


def test_without_a_backbone_auto_stays_fp32_on_avx512_bf16(avx512_bf16_cpu, tmp_path):
    choice = device.choose_precision("auto", torch.device("cpu"), cache_dir=tmp_path)
    assert (choice.precision, choice.bf16_ratio) == ("fp32", None)
    assert not list(tmp_path.iterdir())
