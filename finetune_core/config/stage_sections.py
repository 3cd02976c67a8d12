"""The training stages' sections (frozen head, unfrozen fine-tuning, contrastive tuning) and LoRA's:
what ``TrainingConfig`` (config.sections) holds under ``frozen``, ``unfrozen``, ``contrastive`` and
``lora``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from finetune_core.config.base import Strict


class StageConfig(Strict):
    epochs: int = Field(ge=0, description="Epochs in this stage (0 skips it).")
    learning_rate: float = Field(gt=0, le=1, description="Peak learning rate of this stage.")


class FrozenStageConfig(StageConfig):
    epochs: int = Field(
        20, ge=0, description="Epochs training the head on cached frozen-backbone features (0 skips it); cheap."
    )
    learning_rate: float = Field(1e-2, gt=0, le=1, description="Head learning rate (AdamW).")
    solver: Literal["auto", "adamw", "lbfgs"] = Field(
        "auto",
        description="How the head is fitted on cached features: minibatch AdamW, or full-batch L-BFGS on an "
        "L2-regularised loss (scikit-learn's LogisticRegression); auto: L-BFGS while AdamW would take few "
        "steps. Set it to compare the two heads or to keep an older run's AdamW head.",
    )
    regularization: float = Field(
        1.0, gt=0, description="L-BFGS only: inverse L2 strength, scikit-learn's C on unit-length features."
    )
    max_rows: int | None = Field(
        None,
        gt=0,
        description="Train rows (seeded, stratified) whose features fit the head when the unfrozen stage follows; "
        "the head then only starts stage 2 (with unfrozen.freeze_layers, the other rows fill the layer cache by a "
        "pass that stops after the frozen blocks). None: every row, or 4,096 when "
        "unfrozen.max_minutes is set (a forward pass over every row would otherwise take a large share of a "
        "short budget's wall time).",
    )


class UnfrozenStageConfig(StageConfig):
    epochs: int = Field(3, ge=0, description="Epochs fine-tuning everything (0 skips it).")
    # 1e-4, not run_glue's 5e-5: better on both small sets measured (docs/decisions/stage2-learning-rate.md).
    learning_rate: float = Field(1e-4, gt=0, le=1, description="Peak learning rate of the top layer and head.")
    layer_lr_decay: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Layer-wise decay: each layer below the top learns at this factor of the one above.",
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after warmup.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of stage-2 steps spent warming up.")
    gradual: bool = Field(False, description="Unfreeze top-down, a slice of layers more each epoch (ULMFiT).")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="Time budget of this stage's training steps: the learning rate decays over it and the stage "
        "stops after the batch that passes it. One process only.",
    )
    freeze_layers: int = Field(
        0,
        description="Keep the embeddings and the lowest N transformer blocks frozen in this stage (negative: all "
        "but the top -N); their outputs are computed once and cached, so each epoch runs only the blocks above. "
        "0: every layer trains. BERT, RoBERTa, XLM-R, CamemBERT and ELECTRA only.",
    )
    freeze_after_epochs: int = Field(
        0,
        ge=0,
        description="With freeze_layers: the lowest blocks train with the rest for this many epochs, then freeze "
        "(their outputs cached once at that point, AutoFreeze-style); 0 freezes them from the start.",
    )
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Rate of every dropout layer (backbone and head) while this stage trains; None: the "
        "checkpoint's own (0.1 for BERT-style models). Training only: the saved model is unchanged.",
    )
    # Off by default: a backbone whose token vectors must still learn loses with it, and two data sets
    # are thin evidence for a default; docs/benchmarks/token-rows.md.
    freeze_word_embeddings: bool = Field(
        False,
        description="Keep the token-embedding matrix frozen in this stage (positions, token types and the "
        "embedding LayerNorm still train): its dense gradient and optimizer update over the whole vocabulary "
        "are skipped, and tokens absent from train keep their pretrained vectors.",
    )


class ContrastiveStageConfig(StageConfig):
    """SetFit-style encoder tuning before the head (strategy `contrastive`); defaults follow SetFit's."""

    epochs: int = Field(1, ge=0, description="Epochs over freshly sampled pairs (0 skips the stage).")
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Encoder learning rate while tuning on pairs. None: 6e-5 up to 32 training rows per class (a "
        "few dozen steps, where SetFit's 2e-5 barely moves the encoder), SetFit's 2e-5 above.",
    )
    pairs_per_example: int | None = Field(
        None,
        gt=0,
        description="None: SetFit's default, every pair of two rows once, the smaller of the similar and "
        "dissimilar sets repeated to match; N: per row and epoch, N similar and N dissimilar pairs (SetFit's "
        "num_iterations).",
    )
    batch_size: int = Field(16, gt=0, description="Pairs per training step.")
    max_pairs: int = Field(
        20000, gt=0, description="Cap on the pairs of one epoch (seeded subsample): the stage's time on many rows."
    )
    encode_sides: Literal["auto", "once", "separately"] = Field(
        "auto",
        description="separately: each side of a pair in its own forward pass with its own dropout (SetFit's way); "
        "once: each distinct row of a batch encoded once for both sides (half the work); auto: separately up to "
        "32 training rows per class, once above. Set it to train exactly as SetFit does (separately) at "
        "any size.",
    )
    self_pairs: bool | None = Field(
        None,
        description="Also pair each row with itself as a similar pair (SetFit's combinations with replacement; "
        "only dropout tells the sides apart). None: when sides are encoded separately.",
    )


class LoraConfig(Strict):
    r: int = Field(8, gt=0, description="Adapter rank.")
    alpha: int = Field(16, gt=0, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["query", "value"], min_length=1, description="Module names that get adapters."
    )
