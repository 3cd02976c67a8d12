"""The head table: native pooling equals each family's own forward; `backbone.pooling: auto` for a
hub id: the sentence-transformers pooling file is read from the Hugging Face cache (laid out here
as the hub lays it out, so everything runs offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from finetune_core.model.heads import forward_logits, head_spec, pooling_file, resolve_pooling
from tests.hub_cache import fake_hub_cache


def test_a_hub_id_gets_the_pooling_its_checkpoint_was_trained_with(hub_cache):
    fake_hub_cache(hub_cache, "sentence-transformers/mean-model", {"pooling_mode_mean_tokens": True})
    fake_hub_cache(hub_cache, "org/cls-model", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    assert resolve_pooling("auto", "sentence-transformers/mean-model") == "mean"
    assert resolve_pooling("auto", "org/cls-model") == "cls"
    assert resolve_pooling("native", "sentence-transformers/mean-model") == "native"  # explicit wins


def test_the_bundled_backbone_is_read_at_unit_length_as_it_was_trained():
    """The default backbone (all-MiniLM-L6-v2) ends in a Normalize module: `auto` is its mean at unit length."""
    from finetune_core.model.backbone import resolve_backbone

    assert resolve_pooling("auto", resolve_backbone("bundled:all-MiniLM-L6-v2")) == "normalized-mean"


def test_a_hub_ids_normalize_module_is_read_from_the_cache(hub_cache):
    repo = fake_hub_cache(hub_cache, "sentence-transformers/unit-model", {"pooling_mode_mean_tokens": True})
    modules = [{"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (next((repo / "snapshots").iterdir()) / "modules.json").write_text(json.dumps(modules))
    assert resolve_pooling("auto", "sentence-transformers/unit-model") == "normalized-mean"


def test_without_a_pooling_file_a_hub_id_stays_native_offline(hub_cache):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the tests never reach the hub: no download attempt succeeds
    fake_hub_cache(hub_cache, "org/plain-bert", None)
    assert resolve_pooling("auto", "org/plain-bert") == "native"  # the cache knows it has none
    assert resolve_pooling("auto", "org/never-downloaded") == "native"  # not cached, hub switched off
    assert resolve_pooling("auto", "bert-base-uncased") == "native"


def test_local_folders_keep_their_own_pooling_file(tmp_path, hub_cache):
    fake_hub_cache(hub_cache, "org/model", {"pooling_mode_mean_tokens": True})
    local = tmp_path / "org" / "model"  # a folder that happens to look like a hub id: the folder wins
    local.mkdir(parents=True)
    assert pooling_file(str(local)) is None
    assert resolve_pooling("auto", str(tmp_path / "missing" / "deeper" / "path")) == "native"


def test_a_hub_id_resolves_in_a_fresh_process_from_HF_HUB_CACHE(tmp_path, tiny_backbone):
    """As a user runs it: HF_HUB_CACHE in the environment, the backbone a hub id, nothing local."""
    cache = tmp_path / "hf-cache"
    fake_hub_cache(cache, "sentence-transformers/tiny-mean", {"pooling_mode_mean_tokens": True}, tiny_backbone)
    script = (
        "from finetune_core.model.heads import resolve_pooling;"
        "from finetune_core.model.backbone import load_for_task;"
        "load_for_task('sentence-transformers/tiny-mean', 'classification', ['a', 'b']);"
        "print(resolve_pooling('auto', 'sentence-transformers/tiny-mean'))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "mean"


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra"])
def test_head_table_matches_each_familys_own_forward(family):
    """Native pooling through the table must equal the model's own forward, so cached
    features feed exactly what stage 2 computes."""
    import transformers

    small = dict(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=3,
    )
    configs = {
        "bert": transformers.BertConfig(**small),
        "roberta": transformers.RobertaConfig(**small, pad_token_id=1),
        "distilbert": transformers.DistilBertConfig(
            vocab_size=100, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64, num_labels=3
        ),
        "electra": transformers.ElectraConfig(**small, embedding_size=16),
    }
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(configs[family]).eval()
    batch = {"input_ids": torch.randint(5, 100, (3, 7)), "attention_mask": torch.ones(3, 7, dtype=torch.long)}
    batch["attention_mask"][0, 5:] = 0
    spec = head_spec(model, "native")
    assert spec is not None
    with torch.inference_mode():
        assert torch.allclose(forward_logits(model, spec, batch), model(**batch).logits, atol=1e-6)
