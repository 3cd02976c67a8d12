"""Backbones derived from a pretrained one, as honest baselines for backbone selection:
the same model with its top layers removed (a genuinely weaker model), and the same
architecture randomly initialised (no pretraining at all). Both keep the tokenizer and any
sentence-transformers pooling config, so every candidate is read the same way."""

from __future__ import annotations

import shutil
from pathlib import Path

_KEEP = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "1_Pooling",
)


def _copy_tokenizer_and_pooling(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in _KEEP:
        item = source / name
        if item.is_dir():
            shutil.copytree(item, target / name, dirs_exist_ok=True)
        elif item.is_file():
            shutil.copy2(item, target / name)


def truncated_copy(source: str | Path, target: str | Path, keep_layers: int) -> Path:
    """The pretrained model with only its lowest ``keep_layers`` transformer layers."""
    from transformers import AutoModel

    source, target = Path(source), Path(target)
    model = AutoModel.from_pretrained(source)
    layers = model.encoder.layer
    if not 0 < keep_layers < len(layers):
        raise ValueError(f"keep_layers must be between 1 and {len(layers) - 1}")
    model.encoder.layer = layers[:keep_layers]
    model.config.num_hidden_layers = keep_layers
    _copy_tokenizer_and_pooling(source, target)
    model.save_pretrained(target)
    return target


def random_copy(source: str | Path, target: str | Path, seed: int = 0) -> Path:
    """The same architecture and tokenizer, randomly initialised."""
    import torch
    from transformers import AutoConfig, AutoModel

    source, target = Path(source), Path(target)
    torch.manual_seed(seed)
    model = AutoModel.from_config(AutoConfig.from_pretrained(source))
    _copy_tokenizer_and_pooling(source, target)
    model.save_pretrained(target)
    return target
