"""Stage 2 trains only the token-embedding rows the training split uses
(``embedding_rows.SEEN_ROWS_ONLY``, fixed behaviour) and ends with the weights that training the
whole matrix gives: the seen rows learn the same, the unseen ones take the same weight decay, with
gradual unfreezing too; the saved model is a plain model; a frozen or tied matrix is left alone."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from finetune_core.model import embedding_rows
from finetune_core.model.batching import ArrowTokens
from finetune_core.model.embedding_rows import SeenRowsEmbedding, fold_back, seen_token_ids, use_seen_rows
from finetune_core.model.loading import MODEL_LOADING
from finetune_core.training.encoded_splits import split_tokens
from finetune_core.training.stage_setup import StageInputs
from tests.training.stage_helpers import weights, write_easy_task
from tests.training.test_freeze_layers import _config, _run

MATRIX = "bert.embeddings.word_embeddings.weight"


def test_seen_ids_come_from_lists_and_arrow_buffers_without_padding():
    import pyarrow as pa

    rows = [[2, 7, 7, 3], [2, 9, 0, 3]]
    assert seen_token_ids(rows, padding_idx=0).tolist() == [2, 3, 7, 9]
    column = pa.chunked_array([pa.array(rows[:1], pa.list_(pa.int32())), pa.array(rows[1:], pa.list_(pa.int32()))])
    assert seen_token_ids(ArrowTokens(column), padding_idx=0).tolist() == [2, 3, 7, 9]


def test_forward_matches_the_matrix_and_only_seen_rows_get_gradients():
    torch.manual_seed(0)
    original = torch.nn.Embedding(50, 8, padding_idx=0)
    rows = SeenRowsEmbedding(original, np.array([2, 5, 7]))
    ids = torch.tensor([[2, 5, 11, 0], [7, 7, 40, 2]])
    assert torch.equal(rows(ids), original(ids))
    rows(ids).pow(2).sum().backward()
    assert rows.rows.grad.shape == (3, 8) and rows.rows.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in rows.buffers())
    rows.unseen_scale = 0.5  # unseen ids read the decayed pretrained row, seen ones their own
    assert torch.allclose(rows(torch.tensor([11]))[0], original.weight[11] * 0.5)
    assert torch.equal(rows(torch.tensor([5]))[0], original.weight[5])


def test_a_frozen_or_tied_matrix_is_left_alone(tiny_backbone):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertConfig

    # Built under the library's load lock: transformers ties in the constructor unless another
    # thread is inside from_pretrained at that moment (finetune_core/model/loading.py); in CI, a
    # load in another thread of this process once left the model below untied.
    with MODEL_LOADING:
        model = AutoModelForSequenceClassification.from_pretrained(tiny_backbone, num_labels=2)
        tied = AutoModelForMaskedLM.from_config(
            BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
        )
    model.get_input_embeddings().weight.requires_grad_(False)
    assert use_seen_rows(model, [[2, 3]]) is None
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    assert use_seen_rows(tied, [[2, 3]]) is None
    model.get_input_embeddings().weight.requires_grad_(True)
    replacement = use_seen_rows(model, [[2, 3]])
    assert isinstance(model.get_input_embeddings(), SeenRowsEmbedding)
    fold_back(model, replacement)
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding)


@pytest.mark.parametrize("gradual", [False, True])
def test_seen_rows_give_the_weights_of_training_the_whole_matrix(tmp_path, tiny_backbone, gradual, monkeypatch):
    """Default precision, batch size and decay; ``all`` is what HF Trainer does. Gradual
    unfreezing reaches the embeddings only in the last epoch: their decay starts there too."""
    files = write_easy_task(tmp_path, 160, 60)
    unfrozen = {"freeze_layers": 0, "gradual": gradual, "epochs": 2}
    best = {"keep_best": False} if gradual else {}  # the epoch that trains the embeddings is kept
    prepared, _, seen = _run(_config(files, tiny_backbone, unfrozen=unfrozen, **best), files, "seen")
    monkeypatch.setattr(embedding_rows, "SEEN_ROWS_ONLY", False)  # the whole matrix, as HF Trainer trains it
    _, _, every = _run(_config(files, tiny_backbone, unfrozen=unfrozen, **best), files, "all")
    frozen, a, b = weights(files / "frozen-seen"), weights(files / "model-seen"), weights(files / "model-all")
    assert set(a) == set(b) and 0 < seen.extra["trained_token_rows"] < a[MATRIX].shape[0]
    assert "trained_token_rows" not in every.extra
    for name in a:  # float rounding only: the summation order of the two embedding gradients differs
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), name
    tokens = split_tokens(prepared, "train", AutoTokenizer.from_pretrained(tiny_backbone), 16)[0]
    ids = seen_token_ids(tokens.input_ids, padding_idx=0)
    unseen = np.setdiff1d(np.arange(a[MATRIX].shape[0]), ids)
    moved = (frozen[MATRIX] - b[MATRIX]).abs()
    assert moved[ids].amax(dim=1).min() > 0  # every seen row learned (the whole matrix: in both)
    decay = (b[MATRIX][unseen] / frozen[MATRIX][unseen])[frozen[MATRIX][unseen].abs() > 1e-3]
    assert (decay < 1).all() and decay.std() < 1e-5  # unseen rows: one decay factor, below 1
    assert torch.allclose(a[MATRIX][unseen], b[MATRIX][unseen], atol=1e-7, rtol=1e-6)


def test_the_contrastive_stage_trains_seen_rows_to_the_same_encoder(tmp_path, tiny_backbone, monkeypatch):
    from transformers import AutoModel

    from finetune_core.data.prepare import prepare_splits
    from finetune_core.training.contrastive import train_contrastive
    from tests.training.test_contrastive import make_config

    files = write_easy_task(tmp_path, 36, 40)
    tuned = {}
    for rows in ("seen", "all"):
        monkeypatch.setattr(embedding_rows, "SEEN_ROWS_ONLY", rows == "seen")
        config = make_config(files, tiny_backbone)  # SetFit's pairs at 18 rows per class
        result = train_contrastive(
            StageInputs(config, prepare_splits(config, files / rows), str(tiny_backbone), files / f"t-{rows}")
        )
        assert ("trained_token_rows" in result.extra) == (rows == "seen")
        tuned[rows] = AutoModel.from_pretrained(files / f"t-{rows}").state_dict()
    original = AutoModel.from_pretrained(tiny_backbone).state_dict()
    matrix = "embeddings.word_embeddings.weight"
    assert not torch.equal(tuned["seen"][matrix], original[matrix])
    for name, value in tuned["all"].items():
        assert torch.allclose(tuned["seen"][name], value, atol=2e-5, rtol=1e-4), name
