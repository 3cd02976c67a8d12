"""Models and data the benchmarks build for themselves, defined once here and used by the test suite
too (``bench`` never imports ``tests``; tests/tiny_models.py, datasets.py and derived_backbones.py
re-export these): backbones derived from a pretrained one for backbone selection
(its lowest layers only, or randomly initialised), a tiny random BERT and an easy synthetic
sentiment set for the data-parallel bench."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

POSITIVE, NEGATIVE = ["great", "good", "wonderful", "best"], ["bad", "awful", "boring", "worst"]
FILLER = ["the", "movie", "film", "story", "was", "a", "and", "of", "it", "is"]


def easy_sentiment(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, size=5)) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "label": label})
    return pd.DataFrame(rows)


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(
    directory: Path, corpus: list[str], hidden: int = 32, layers: int = 2, vocab_size: int = 2000
) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    words = Counter(w for text in corpus for w in re.findall(r"\w+|[^\w\s]", text.lower()))
    vocab = SPECIAL + [w for w, _ in words.most_common(vocab_size - len(SPECIAL))]
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return directory


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
