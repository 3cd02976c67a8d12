"""What stage 2 may change on a loaded model before it trains, beyond freezing whole blocks
(finetune_core.model.encoder_split): the token-embedding matrix kept frozen, and the dropout rate.
Both act on training only; the saved model's weights and config load as any checkpoint does.
"""

from __future__ import annotations

import torch


def freeze_word_embeddings(model) -> set[str]:
    """requires_grad off for the token-embedding matrix (``get_input_embeddings``); returns its name."""
    matrix = model.get_input_embeddings().weight
    names = {name for name, parameter in model.named_parameters() if parameter is matrix}
    matrix.requires_grad_(False)
    return names


def set_dropout(model, rate: float) -> int:
    """Every ``torch.nn.Dropout`` of ``model`` at ``rate`` (attention dropout included: transformers'
    attention reads its module's ``p``); returns how many were set."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for layer in layers:
        layer.p = rate
    return len(layers)


def checkpoint_dropout(backbone: str, trust_remote_code: bool = False) -> float | None:
    """The one rate a checkpoint's dropout layers train with when ``dropout`` is unset (BERT-style
    configs: hidden, attention and classifier dropout alike), else None."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(backbone, trust_remote_code=trust_remote_code)
    names = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
    rates = {getattr(config, name) for name in names if getattr(config, name, None) is not None}
    return float(rates.pop()) if len(rates) == 1 else None
