import numpy as np
import pytest

from finetune_core.metrics.per_label import metric_safe
from finetune_core.metrics.scores import classification_metrics, regression_metrics, score_outputs
from finetune_core.model.batching import BatchLimit, Encoded, collate, length_grouped_batches, sorted_batches


def test_length_grouped_batches_cover_every_row_once_and_are_seeded():
    lengths = np.random.default_rng(0).integers(1, 120, size=1003)
    batches = length_grouped_batches(lengths, 16, np.random.default_rng(7))
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    again = length_grouped_batches(lengths, 16, np.random.default_rng(7))
    assert all((a == b).all() for a, b in zip(batches, again))
    other = length_grouped_batches(lengths, 16, np.random.default_rng(8))
    assert any(len(a) != len(b) or (a != b).any() for a, b in zip(batches, other))


def test_length_grouping_cuts_padding():
    lengths = np.random.default_rng(0).integers(1, 120, size=2000)
    rng = np.random.default_rng(0)
    grouped = sum(len(b) * lengths[b].max() for b in length_grouped_batches(lengths, 32, rng))
    shuffled = rng.permutation(2000)
    random_batches = sum(32 * lengths[shuffled[i : i + 32]].max() for i in range(0, 2000, 32))
    assert grouped < 0.6 * random_batches


def test_sorted_batches_and_collate():
    encoded = Encoded(input_ids=[[1, 5, 2], [1, 2], [1, 7, 8, 9, 2]], pad_id=0)
    batches = sorted_batches(encoded.lengths, 2)
    assert [b.tolist() for b in batches] == [[2, 0], [1]]
    batch = collate(encoded, [1, 2])
    assert batch["input_ids"].tolist() == [[1, 2, 0, 0, 0], [1, 7, 8, 9, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]


def test_token_capped_batches_cover_every_row_once_longest_first_within_both_caps():
    lengths = np.random.default_rng(0).integers(1, 120, size=1003)
    lengths[5] = 2000  # longer than the token cap: a batch of its own
    batches = sorted_batches(lengths, BatchLimit(rows=64, tokens=1024))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1003))
    assert batches[0].tolist() == [5]
    for batch in batches[1:]:
        assert len(batch) <= 64 and len(batch) * lengths[batch].max() <= 1024
        assert lengths[batch[0]] == lengths[batch].max()  # each batch pads to its first row
    widths = [lengths[b[0]] for b in batches]
    assert widths == sorted(widths, reverse=True)
    # short rows fill to the row cap, long rows go in small batches
    assert len(batches[-1]) <= 64 and max(len(b) for b in batches) == 64 and len(batches[1]) < 10
    # without a token cap, the plain row count
    assert [b.tolist() for b in sorted_batches(lengths, BatchLimit(64))] == [
        b.tolist() for b in sorted_batches(lengths, 64)
    ]


def test_classification_metrics():
    targets = np.array([0, 0, 1, 1, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 0]] * 5.0
    metrics = classification_metrics(targets, logits, ["neg", "pos", "mixed feelings"])
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["precision_pos"] == pytest.approx(2 / 3) and metrics["recall_pos"] == 1.0
    assert metrics["recall_mixed_feelings"] == 0.0 and metrics["support_neg"] == 2
    assert metrics["f1_macro"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert metrics["loss"] > 0


def test_regression_metrics_and_destandardisation():
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    metrics = regression_metrics(targets, targets + 0.5)
    assert metrics["mse"] == pytest.approx(0.25) and metrics["mae"] == pytest.approx(0.5)
    assert metrics["spearman"] == pytest.approx(1.0)
    standardised = ((targets - 2.5) / 2.0).reshape(-1, 1)
    assert score_outputs("regression", standardised, targets, mean=2.5, std=2.0)["mse"] == pytest.approx(0.0)
    assert regression_metrics(targets, np.ones(4))["spearman"] == 0.0


def test_metric_safe_names():
    assert metric_safe("very good!") == "very_good" and metric_safe("???") == "class"
