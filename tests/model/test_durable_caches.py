"""Durable records and cache files (finetune_core.durable): a half-written record reads as "not
done"; a cache file whose index does not match (truncated, another file's bytes) is rebuilt, never
read; a writer SIGKILLed mid-write leaves only its temporary file, which the next writer removes;
two processes writing the same cache key at once each get their own whole features and leave one
whole, indexed file. Tiny random BERT, CPU."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import torch

from finetune_core.durable import index_path, read_json_or_none, verified_cache, write_json_atomic
from finetune_core.faults import VARIABLE
from finetune_core.model.batching import encode
from finetune_core.model.features import FeatureSettings, cached_features, extract_features
from finetune_core.model.layer_cache import cached_layer_states
from finetune_core.run_layout import RunLayout, read_record
from finetune_core.training.checkpoint import Checkpointer, Progress
from finetune_core.training.loop import RESULT_FILE, StageResult, finished_stage, mark_finished

TEXTS = [f"{word} film number {i}, {'really ' * (i % 5)}{word}" for i, word in enumerate(["good", "bad"] * 8)]


def no_autocast():
    return torch.autocast("cpu", enabled=False)


def _model(backbone: str):
    from finetune_core.model.backbone import load_for_task, load_tokenizer
    from finetune_core.model.heads import head_spec

    model = load_for_task(backbone, "classification", ["0", "1"]).eval()
    return model, head_spec(model, "mean"), encode(load_tokenizer(backbone), TEXTS, 16)


def _cached(backbone: str, cache_dir: Path, tap=None):
    model, spec, encoded = _model(backbone)
    args = FeatureSettings(16, 4, "cpu", no_autocast, "fp32", "mean", cache_dir)
    return cached_features(model, spec, encoded, backbone, args, tap=tap)


def test_a_half_written_record_reads_as_not_done(tmp_path):
    result = mark_finished(tmp_path, StageResult(stage="frozen", epochs=1, train_examples=8))
    assert finished_stage(tmp_path, resume=True) == result
    whole = (tmp_path / RESULT_FILE).read_text()
    (tmp_path / RESULT_FILE).write_text(whole[: len(whole) // 2])  # what a plain write cut by a kill leaves
    assert finished_stage(tmp_path, resume=True) is None
    assert read_json_or_none(tmp_path / "missing.json") is None

    layout = RunLayout(tmp_path)
    write_json_atomic(layout.record, {"mlflow_run_id": "abc"})
    assert read_record(layout) == {"mlflow_run_id": "abc"}
    layout.record.write_text('{"mlflow_run_id": "a')
    assert read_record(layout) is None
    assert [p.name for p in tmp_path.glob(".*.tmp")] == []  # atomic writes leave no temporary file

    checkpoints = Checkpointer(tmp_path / "checkpoints")
    checkpoints.save_epoch(Progress(stage="frozen", epoch=1), torch.nn.Linear(2, 2), None, None)
    state = tmp_path / "checkpoints" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    assert Checkpointer(tmp_path / "checkpoints").load_progress() is None  # no epoch counts as done


def test_a_cache_file_that_does_not_match_its_index_is_rebuilt(tiny_backbone, tmp_path):
    backbone = str(tiny_backbone)
    model, spec, encoded = _model(backbone)
    reference = extract_features(model, spec, encoded, 4, "cpu", no_autocast)
    features, hit = _cached(backbone, tmp_path)
    (path,) = tmp_path.glob("*.npy")
    assert not hit and torch.equal(features, reference)
    assert json.loads(index_path(path).read_text())["size"] == path.stat().st_size

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # truncated under its final name
    features, hit = _cached(backbone, tmp_path)
    assert not hit and torch.equal(features, reference) and path.read_bytes() == whole

    np.save(path, np.zeros(reference.shape, dtype=np.float32))  # same size, other bytes
    assert path.stat().st_size == len(whole)
    features, hit = _cached(backbone, tmp_path)
    assert not hit and torch.equal(features, reference)
    index_path(path).unlink()  # a file renamed in by a writer killed before its index
    assert not _cached(backbone, tmp_path)[1]
    assert _cached(backbone, tmp_path)[1]  # and whole again: a hit


def test_a_layer_cache_that_does_not_match_its_index_is_rebuilt(tiny_backbone, tmp_path):
    model, _, encoded = _model(str(tiny_backbone))
    path = tmp_path / "split.layer1.npy"
    first, hit = cached_layer_states(model, 1, encoded, path, 4, "cpu", no_autocast)
    assert not hit
    expected = np.array(first.states)
    whole = path.read_bytes()
    path.write_bytes(whole[:-64])
    again, hit = cached_layer_states(model, 1, encoded, path, 4, "cpu", no_autocast)
    assert not hit and np.array_equal(np.array(again.states), expected)
    assert cached_layer_states(model, 1, encoded, path, 4, "cpu", no_autocast)[1]


def _features_in_child(backbone: str, cache_dir: str, out: str, barrier=None, kill_at: str | None = None) -> None:
    if kill_at:
        os.environ[VARIABLE] = kill_at
    met = []

    def meet(rows, inputs) -> None:  # both writers hold a half-written file at the same time
        if barrier is not None and not met:
            met.append(True)
            barrier.wait(timeout=120)

    features, hit = _cached(backbone, Path(cache_dir), tap=meet)
    np.save(out, features.numpy())
    Path(out).with_suffix(".hit").write_text(str(hit))


def test_a_writer_killed_mid_write_leaves_nothing_a_reader_uses(tiny_backbone, tmp_path):
    context = multiprocessing.get_context("spawn")
    child = context.Process(
        target=_features_in_child,
        args=(str(tiny_backbone), str(tmp_path), str(tmp_path / "never.npy")),
        kwargs={"kill_at": "features"},
    )
    child.start()
    child.join(timeout=300)
    assert child.exitcode == -signal.SIGKILL  # a real SIGKILL, after the first batch was written
    (leftover,) = tmp_path.glob(".*.tmp")
    assert leftover.stat().st_size > 0 and not list(tmp_path.glob("*.npy"))

    features, hit = _cached(str(tiny_backbone), tmp_path)
    model, spec, encoded = _model(str(tiny_backbone))
    assert not hit and torch.equal(features, extract_features(model, spec, encoded, 4, "cpu", no_autocast))
    assert not list(tmp_path.glob(".*.tmp"))  # the dead writer's file is removed (its lock was free)


def test_two_processes_writing_the_same_key_at_once(tiny_backbone, tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    cache, outs = tmp_path / "cache", [tmp_path / f"writer-{i}.npy" for i in range(2)]
    children = [
        context.Process(target=_features_in_child, args=(str(tiny_backbone), str(cache), str(out), barrier))
        for out in outs
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=300)
    assert [child.exitcode for child in children] == [0, 0]
    assert [out.with_suffix(".hit").read_text() for out in outs] == ["False", "False"]  # both wrote

    # the reference from a process started as the writers were: this worker's thread settings may differ
    alone = context.Process(
        target=_features_in_child, args=(str(tiny_backbone), str(tmp_path / "alone"), str(tmp_path / "alone.npy"))
    )
    alone.start()
    alone.join(timeout=300)
    reference = np.load(tmp_path / "alone.npy")
    assert all(np.array_equal(np.load(out), reference) for out in outs)
    (path,) = cache.glob("*.npy")
    assert not list(cache.glob(".*.tmp"))
    with verified_cache(path) as whole:
        assert whole and np.array_equal(np.load(path), reference)
