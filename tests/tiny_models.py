"""Tiny random BERT backbones for fast tests: a real tokenizer over a small vocabulary and a
randomly initialised model, saved to a directory that ``from_pretrained`` loads."""

from __future__ import annotations

from pathlib import Path

from bench.fixtures import SPECIAL, build_tiny_bert  # one definition; bench never imports tests

__all__ = ["SPECIAL", "build_tiny_bert", "build_tiny_masked_lm"]


def build_tiny_masked_lm(directory: Path, corpus: list[str], hidden: int = 32) -> Path:
    """A tiny random BERT with a masked-LM head, for contextual replacement in augmentation."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    build_tiny_bert(directory, corpus, hidden=hidden, layers=1)
    config = BertConfig.from_pretrained(directory)
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(directory)
    return directory
