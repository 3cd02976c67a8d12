"""Inference batches capped in tokens (``training.eval_batch_tokens``): other batches, same outputs."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_core.model.batching import BatchLimit, encode, sorted_batches
from finetune_core.model.heads import head_spec
from finetune_core.model.inference import predict_outputs
from tests.tiny_models import build_tiny_bert

WORDS = "the film is a small gem with a plot that drags and actors who shine in every scene".split()


def test_token_capped_batches_give_every_row_its_own_outputs_in_input_order(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    directory = build_tiny_bert(tmp_path / "tiny", [" ".join(WORDS)])
    model = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=3)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(1, 40))) for _ in range(60)]
    encoded = encode(tokenizer, texts, max_length=64)
    spec = head_spec(model, "native")
    capped = BatchLimit(rows=32, tokens=96)
    assert len(sorted_batches(encoded.lengths, capped)) > len(sorted_batches(encoded.lengths, 32))

    one_by_one = np.concatenate([predict_outputs(model, encode(tokenizer, [t], 64), 1, spec=spec) for t in texts])
    by_rows = predict_outputs(model, encoded, 32, spec=spec)
    by_tokens = predict_outputs(model, encoded, capped, spec=spec)
    assert by_tokens.shape == (60, 3)
    assert by_tokens == pytest.approx(one_by_one, abs=1e-5)
    assert by_tokens == pytest.approx(by_rows, abs=1e-5)
