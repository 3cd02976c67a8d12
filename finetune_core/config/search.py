"""The ``search:`` section: what ``finetune tune`` varies, how it samples and prunes, and how long it runs
(docs/how-to/tune.md). Keys of the space are dotted configuration paths; they are checked against the
configuration model in ``finetune_core.search.space``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from finetune_core.config.base import Strict


class ParamRange(Strict):
    """One dimension of the space: a numeric range (``low``..``high``, log-uniform with ``log``) or a list
    of ``choices``."""

    low: float | None = Field(None, description="Smallest value tried (with `high`).")
    high: float | None = Field(None, description="Largest value tried (with `low`).")
    log: bool = Field(False, description="Sample on a log scale (learning rates); needs low > 0.")
    step: float | None = Field(None, gt=0, description="Spacing of the values tried (integer keys: 1 if unset).")
    choices: list[str | int | float | bool] | None = Field(
        None, min_length=1, description="Values tried, instead of a range (booleans, strategies)."
    )

    @model_validator(mode="after")
    def _not_empty(self) -> ParamRange:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high (or choices)")
        if self.high < self.low:
            raise ValueError(f"empty range: high {self.high} < low {self.low}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class SearchConfig(Strict):
    space: dict[str, ParamRange | None] = Field(
        default_factory=dict,
        description="Dimensions by dotted configuration key, e.g. `training.unfrozen.learning_rate: {low: 2e-5, "
        "high: 3e-4, log: true}`; they override the default space key by key, `null` drops a default key.",
    )
    default_space: bool = Field(
        True,
        description="Start from the default space (stage-2 learning rate, layer decay, epochs, freeze_layers, "
        "warmup, dropout; the contrastive learning rate under strategy contrastive); false: only `space`.",
    )
    start_from_config: bool = Field(
        True,
        description="The first trial is the configuration as given (each dimension at its configured value, or "
        "the checkpoint's dropout where `dropout` is unset), so the winner scores at least the recipe's validation "
        "score; a dimension whose value lies outside its range is sampled. false: every trial is sampled.",
    )
    n_trials: int = Field(20, gt=0, description="Trials of the study in all (finished ones count on resume).")
    max_minutes: float | None = Field(
        None, gt=0, description="Start no trial after this many minutes of the sweep (running trials finish)."
    )
    parallel: int = Field(1, ge=1, description="Trials at once in this process (threads, or Dask/Ray workers).")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler; seeded by `seed`.")
    seed: int = Field(42, ge=0, description="Sampler seed: the same study asks the same trials.")
    startup_trials: int = Field(
        5, ge=0, description="Trials sampled at random before TPE models the space; the pruner's warm-up trials too."
    )
    pruner: Literal["median", "successive-halving", "none"] = Field(
        "median",
        description="Stops a trial whose per-epoch validation metric trails: median (below the median of earlier "
        "trials at the same epoch) or successive-halving (ASHA rungs); none: every trial runs all its epochs.",
    )
    prune_on: Literal["loss", "metric"] = Field(
        "loss",
        description="What the pruner compares each epoch: the validation loss (mse for regression), which ranks "
        "trials steadier than a metric counted on few validation rows, or the validation metric the study "
        "optimises (`training.metric`). A trial's score is the metric either way.",
    )
    storage: str | None = Field(
        None,
        min_length=1,
        description="Optuna RDB storage URL. Unset: the tracking store's database when it is PostgreSQL or "
        "MySQL, else sqlite:///optuna.db beside the MLflow SQLite store (or the working directory).",
    )
    heartbeat_seconds: int = Field(
        30,
        gt=0,
        description="A running trial records a heartbeat this often; one silent for twice as long belongs to a "
        "dead worker, is marked failed and retried once with the same parameters. Longer: fewer writes to a busy "
        "shared database; shorter: a dead worker's trial is retried sooner.",
    )
    # auto: a classification winner trains on every row: +1.0 point on MRPC, 0.0 on SST-2 (decisions/sweep-refit.md)
    refit_on: Literal["auto", "train", "train+validation"] = Field(
        "auto",
        description="What the winner trains on once the study has chosen it: train (its validation split keeps "
        "the best epoch and fits the temperature, as in every trial), or train+validation (the split's job is "
        "done once the trial is chosen; its rows train too, for the winner's last epoch without early stopping, "
        "with the temperature its trial fitted on them; not for multilabel, whose thresholds are tuned on them). "
        "auto: train+validation for classification, train for regression and multilabel.",
    )
