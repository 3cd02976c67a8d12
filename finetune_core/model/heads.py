"""Backbone knowledge as data: where the task head reads its input, and how layers are named.

For each model family: ``features`` computes what the head sees from the backbone (this is
what the frozen stage caches), ``head`` maps those features to outputs, and ``layer_pattern``
maps parameter names to depth for layer-wise learning rates and gradual unfreezing.
A family not in the table still trains (full forward passes in the frozen stage); it only
misses the feature cache and the choice of pooling.

Pooling: ``native`` is the architecture's own head input (BERT's pooler over [CLS], RoBERTa's
first token); ``mean`` averages the last hidden states over real tokens; ``cls`` takes the
first token's hidden state; ``normalized-mean`` and ``normalized-cls`` are those at unit length
(what a cosine-similarity loss tunes: only their direction carries meaning). ``auto`` uses the
pooling a sentence-transformers checkpoint was trained with (its ``1_Pooling/config.json``, in a
local folder or a hub repository), else ``native``; a ``Normalize`` module in its ``modules.json``
(all-MiniLM-L6-v2 has one), or ``"normalize": true`` in the pooling file (our key, which the
contrastive stage writes), selects the unit-length variant. For sentence pairs ``auto`` is
``native`` unless that file says it was tuned on pairs (``"pairs": true``, ours too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

Features = Callable[[torch.nn.Module, dict], torch.Tensor]
Head = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HeadSpec:
    features: Features
    head: Head
    layer_pattern: str = r"\.layer\.(\d+)\."  # parameter-name pattern capturing the block index
    embeddings: str = "embeddings"


def _bert_features(model, batch):  # BERT pools [CLS] through its pretrained pooler
    return model.base_model(**batch).pooler_output


def _bert_head(model, features):
    return model.classifier(model.dropout(features))


def _first_token_features(model, batch):
    return model.base_model(**batch).last_hidden_state[:, 0]


def _mean_features(model, batch):
    hidden = model.base_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _sequence_head(model, features):  # RoBERTa's and ELECTRA's heads read [:, 0] themselves
    return model.classifier(features[:, None, :])


def _distilbert_head(model, features):
    hidden = torch.relu(model.pre_classifier(features))
    return model.classifier(model.dropout(hidden))


HEADS: dict[str, HeadSpec] = {
    "bert": HeadSpec(_bert_features, _bert_head),
    "roberta": HeadSpec(_first_token_features, _sequence_head),
    "xlm-roberta": HeadSpec(_first_token_features, _sequence_head),
    "camembert": HeadSpec(_first_token_features, _sequence_head),
    "distilbert": HeadSpec(_first_token_features, _distilbert_head),
    "electra": HeadSpec(_first_token_features, _sequence_head),
}


def _unit(features: Features) -> Features:
    def unit_length(model, batch):
        return torch.nn.functional.normalize(features(model, batch), dim=-1)

    return unit_length


POOLINGS: dict[str, Features] = {"mean": _mean_features, "cls": _first_token_features}
POOLINGS.update({f"normalized-{name}": _unit(features) for name, features in list(POOLINGS.items())})


def head_spec(model, pooling: str = "native") -> HeadSpec | None:
    spec = HEADS.get(getattr(model.config, "model_type", ""))
    if spec is None:
        if pooling != "native":
            raise ValueError(
                f"pooling {pooling!r} is not available for model type {model.config.model_type!r}; use native"
            )
        return None
    return replace(spec, features=POOLINGS[pooling]) if pooling in POOLINGS else spec


POOLING_FILE = "1_Pooling/config.json"
MODULES_FILE = "modules.json"  # a sentence-transformers checkpoint's module list


def _hub_file(repo_id: str, filename: str) -> Path | None:
    """A hub model's sentence-transformers file: from the local Hugging Face cache, else
    downloaded (when the hub is reachable and not switched off by HF_HUB_OFFLINE); None when it
    has none. Loading a hub id through transformers caches only the files transformers needs, so
    these are usually fetched on their own the first time."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return Path(cached)
    if cached is not None:  # the cache recorded that the repository has no such file
        return None
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception:  # no such file, offline, unreachable: `auto` falls back to native, and
        return None  # loading the backbone next reports a real access problem by itself


def pooling_file(backbone: str, filename: str = POOLING_FILE) -> Path | None:
    """Where ``backbone``'s sentence-transformers pooling config (or another of its files) is: a
    local folder's own, or a hub id's (cache or hub)."""
    local = Path(backbone).expanduser()
    if local.is_dir():
        found = local / filename
        return found if found.is_file() else None
    if backbone.startswith((".", "/", "~")) or backbone.count("/") > 1:
        return None  # a local path that does not exist: the backbone loader names it
    return _hub_file(backbone, filename)


def _normalizes(backbone: str) -> bool:
    """Whether the checkpoint's sentence-transformers pipeline ends its embedding at unit length."""
    modules = pooling_file(backbone, MODULES_FILE)
    try:
        listed = json.loads(modules.read_text()) if modules is not None else []
    except (OSError, ValueError):  # unreadable: the pooling file alone decides
        return False
    return any(str(m.get("type", "")).endswith(".Normalize") for m in listed if isinstance(m, dict))


def resolve_pooling(requested: str, backbone: str, pairs: bool = False) -> str:
    """``auto``: the pooling a sentence-transformers checkpoint was trained with (its local
    folder's or hub repository's ``1_Pooling/config.json``), else native. With ``pairs`` (two texts
    encoded together) a checkpoint's pooling counts only if it was tuned on pairs (our contrastive
    stage says so in the file); otherwise native: a sentence-embedding checkpoint's mean pooling
    was trained on one text at a time, while BERT's pooler over [CLS] was pretrained on pairs (next
    sentence prediction; docs/concepts/pairs.md). The unit-length variant when the checkpoint
    normalises (docs/decisions/pooling.md)."""
    if requested != "auto":
        return requested
    config = pooling_file(backbone)
    modes = json.loads(config.read_text()) if config is not None else {}
    if pairs and not modes.get("pairs"):
        return "native"
    unit = "normalized-" if modes and (modes.get("normalize") or _normalizes(backbone)) else ""
    if modes.get("pooling_mode_mean_tokens"):
        return unit + "mean"
    if modes.get("pooling_mode_cls_token"):
        return unit + "cls"
    return "native"


def forward_logits(model, spec: HeadSpec | None, batch: dict):
    """The model's outputs through the chosen pooling; without a spec, the model's own forward."""
    if spec is None:
        return model(**batch).logits
    return spec.head(model, spec.features(model, batch))


def num_layers(model) -> int:
    config = model.config
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers", 0) or 0)


def layer_depth(name: str, model, spec: HeadSpec | None) -> int:
    """0 = embeddings, 1..L = transformer blocks, L+1 = everything above (pooler, head)."""
    spec = spec or HEADS["bert"]  # the naming most encoder families share
    match = re.search(spec.layer_pattern, name)
    if match:
        return int(match.group(1)) + 1
    if spec.embeddings in name:
        return 0
    return num_layers(model) + 1
