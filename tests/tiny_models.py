"""Tiny random BERT backbones for fast tests: a real tokenizer over a small vocabulary and a
randomly initialised model, saved to a directory that ``from_pretrained`` loads."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

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


def build_tiny_masked_lm(directory: Path, corpus: list[str], hidden: int = 32) -> Path:
    """A tiny random BERT with a masked-LM head, for contextual replacement in augmentation."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    build_tiny_bert(directory, corpus, hidden=hidden, layers=1)
    config = BertConfig.from_pretrained(directory)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory)
    return directory
