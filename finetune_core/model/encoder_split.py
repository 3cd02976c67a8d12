"""The upper part of an encoder: transformer blocks N..L, then pooling and the task head, run on
the hidden states block N-1 produced (``training.unfrozen.freeze_layers``).

While the embeddings and the lowest N blocks stay frozen, their outputs never change, so they are
computed once (finetune_core.model.layer_cache) and each stage-2 step runs only what learns.
``upper_spec`` returns a ``HeadSpec`` whose ``features`` read a batch of cached states
(``{"hidden_states", "attention_mask"}``) instead of token ids: everything that calls
``forward_logits`` (the DDP wrapper included) runs the upper part unchanged.

Supported: encoders whose base model keeps its blocks in ``encoder.layer`` and calls each as
``block(hidden_states, attention_mask)`` with the mask of ``create_bidirectional_mask`` (BERT and
the families transformers derives from it). Others are refused with a ConfigError.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from finetune_core.errors import ConfigError
from finetune_core.model.heads import HeadSpec, num_layers

FIELD = "training.unfrozen.freeze_layers"
# model type -> what its own head reads from the last hidden states (pooling `native`)
NATIVE_POOLING = {
    "bert": "pooler",
    "roberta": "first",
    "xlm-roberta": "first",
    "camembert": "first",
    "electra": "first",
}


def resolve_freeze_layers(requested: int, model) -> int:
    """Blocks kept frozen (with the embeddings): ``requested``, counted from the top when negative.
    A model family without upper-part support, or more blocks than the model has, is a ConfigError."""
    if requested == 0:
        return 0
    model_type = getattr(model.config, "model_type", "")
    if model_type not in NATIVE_POOLING:
        raise ConfigError(
            f"{FIELD}: model type {model_type!r} is not supported (supported: {', '.join(NATIVE_POOLING)}); "
            "use 0 to train every layer"
        )
    layers = num_layers(model)
    frozen = requested if requested > 0 else layers + requested
    if not 0 <= frozen <= layers:
        raise ConfigError(
            f"{FIELD}: {requested} is outside the backbone's {layers} transformer blocks (-{layers}..{layers})"
        )
    return frozen


def _lower_prefixes(model, frozen: int) -> tuple[str, ...]:
    prefix = model.base_model_prefix + "."
    lower = {f"{prefix}embeddings"}  # ELECTRA's embeddings_project too
    return tuple(lower | {f"{prefix}encoder.layer.{i}." for i in range(frozen)})


def frozen_parameter_names(model, frozen: int) -> set[str]:
    """The embeddings' and the lowest ``frozen`` blocks' parameters (names as in ``model``)."""
    if frozen == 0:
        return set()
    return {name for name, _ in model.named_parameters() if name.startswith(_lower_prefixes(model, frozen))}


def freeze_lower(model, frozen: int) -> set[str]:
    """requires_grad off for the embeddings and the lowest ``frozen`` blocks; returns their names."""
    names = frozen_parameter_names(model, frozen)
    for name, parameter in model.named_parameters():
        if name in names:
            parameter.requires_grad_(False)
    return names


def lower_weights_digest(model, frozen: int) -> str:
    """A digest of the frozen part's state (parameters, buffers, extra state such as the seen-rows
    embedding's decay of unseen rows): what keys the layer cache of blocks that trained in this run
    before they froze (``freeze_after_epochs``)."""
    import hashlib

    digest, lower = hashlib.sha256(), _lower_prefixes(model, frozen)
    for name, value in model.state_dict().items():
        if name.startswith(lower) and isinstance(value, torch.Tensor):
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def upper_hidden_states(model, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
    """Blocks ``start``.. of ``model`` on ``hidden`` (the output of block ``start - 1``)."""
    from transformers.masking_utils import create_bidirectional_mask

    base = model.base_model
    mask = create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask)
    for block in base.encoder.layer[start:]:
        hidden = block(hidden, mask)
    return hidden


def pool(model, pooling: str, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """What the head reads from the last hidden states, as ``heads.POOLINGS`` / the native features."""
    if pooling.startswith("normalized-"):
        unit = pool(model, pooling.removeprefix("normalized-"), hidden, attention_mask)
        return torch.nn.functional.normalize(unit, dim=-1)
    if pooling == "mean":  # the same arithmetic as heads._mean_features
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    if pooling == "native" and NATIVE_POOLING[model.config.model_type] == "pooler":
        return model.base_model.pooler(hidden)
    return hidden[:, 0]


def upper_spec(spec: HeadSpec, pooling: str, start: int) -> HeadSpec:
    """``spec`` with features computed from cached block-``start - 1`` states by blocks ``start``..L."""

    def features(model, batch):
        mask = batch["attention_mask"]
        return pool(model, pooling, upper_hidden_states(model, batch["hidden_states"], mask, start), mask)

    return replace(spec, features=features)


class _Captured(Exception):
    """Raised by ``block_output`` to end a forward pass once the wanted block has run."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden


def block_output(model, frozen: int, stop: bool = False):
    """A context manager yielding a list that receives block ``frozen - 1``'s output of each
    forward pass (a hook on the block: the model's own forward computes it, whatever the family
    does between embeddings and blocks). ``stop``: end the pass there (``lower_hidden_states``)."""
    import contextlib

    @contextlib.contextmanager
    def capturing():
        outputs: list[torch.Tensor] = []

        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if stop:
                raise _Captured(hidden)
            outputs.append(hidden)

        handle = model.base_model.encoder.layer[frozen - 1].register_forward_hook(hook)
        try:
            yield outputs
        finally:
            handle.remove()

    return capturing()


def lower_hidden_states(model, inputs: dict, frozen: int) -> torch.Tensor:
    """The output of block ``frozen - 1`` (embeddings, then the lowest ``frozen`` blocks): what
    ``upper_hidden_states(model, ·, mask, frozen)`` continues from. The blocks above do not run."""
    with block_output(model, frozen, stop=True):
        try:
            model.base_model(**inputs)
        except _Captured as captured:
            return captured.hidden
    raise RuntimeError("the frozen block never ran")  # pragma: no cover - the hook always fires
