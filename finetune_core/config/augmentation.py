"""Configuration of training-set augmentation (`augmentation`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune_core.config.base import Strict


class OperationProbabilities(Strict):
    synonym: float = Field(
        0.1, ge=0, le=1, description="Share of words replaced (synonym source: `augmentation.synonyms`)."
    )
    insert: float = Field(
        0.1, ge=0, le=1, description="Share of words for which a synonym of a random word is inserted."
    )
    swap: float = Field(0.1, ge=0, le=1, description="Share of words swapped with another random word.")
    delete: float = Field(0.1, ge=0, le=1, description="Probability that each word is deleted.")


class AugmentationConfig(Strict):
    enabled: bool = Field(False, description="Add augmented copies of training rows (never validation or test).")
    copies_per_example: int = Field(1, ge=1, le=32, description="Augmented copies per training row (uniform mode).")
    balance: bool = Field(
        False, description="Instead of uniform copies, augment minority classes up to the majority count."
    )
    operations: OperationProbabilities = Field(
        default_factory=OperationProbabilities, description="EDA operation rates (Wei & Zou 2019)."
    )
    synonyms: Literal["masked-lm", "none"] = Field(
        "none",
        description="Source of replacements for synonym/insert: masked-lm (contextual, `augmentation.masked_lm`) "
        "or none (synonym and insert are skipped). No offline synonym dictionary ships with a package here.",
    )
    masked_lm: str | None = Field(None, description="Masked-LM id or local path for contextual replacement.")
    seed: int | None = Field(None, ge=0, description="Augmentation seed (default: training.seed).")
    swap_pairs: bool = Field(
        False,
        description="Sentence pairs whose relation is symmetric (paraphrase, similarity): add every training pair "
        "again with its two texts swapped, whether or not `enabled` adds EDA copies. Not for relations with a "
        "direction (entailment).",
    )

    @model_validator(mode="after")
    def _masked_lm_given(self) -> AugmentationConfig:
        if self.enabled and self.synonyms == "masked-lm" and not self.masked_lm:
            raise ValueError("synonyms: masked-lm needs augmentation.masked_lm (a masked-LM id or path)")
        return self
