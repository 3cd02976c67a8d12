"""One validated configuration, loaded from YAML, split by concern.

Every field has a default and a description; unknown keys are rejected; all errors
name the dotted field path (``training.frozen.epochs: ...``). Cross-field checks live in
``FinetuneConfig._check_consistency`` and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from finetune_core.config.augmentation import AugmentationConfig
from finetune_core.config.base import Strict
from finetune_core.config.gates import GatesConfig
from finetune_core.config.retired import with_fixed_values
from finetune_core.config.search import SearchConfig
from finetune_core.config.sections import BackboneConfig, DataConfig, MlflowConfig, ServingConfig, TrainingConfig
from finetune_core.config.validation import ValidationConfig
from finetune_core.metric_table import TASK_METRICS, unknown_metrics
from finetune_core.redaction import redact_values


class FinetuneConfig(Strict):
    task: Literal["classification", "regression", "multilabel"] = Field(
        "classification",
        description="Task head: cross-entropy classification, MSE regression, or multilabel (a sigmoid per label, "
        "binary cross-entropy, one decision threshold per label tuned on validation).",
    )
    data: DataConfig = Field(description="The training, validation and test files and their columns.")
    backbone: BackboneConfig = Field(
        default_factory=BackboneConfig, description="The pretrained backbone(s) and how candidates are ranked."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="The recipe, its stages and how the engine runs them."
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="Great Expectations checks run on every split before training."
    )
    augmentation: AugmentationConfig = Field(
        default_factory=AugmentationConfig, description="Label-preserving text augmentation of the training split."
    )
    gates: GatesConfig = Field(
        default_factory=GatesConfig, description="Evaluation gates a new version must pass to become champion."
    )
    mlflow: MlflowConfig = Field(
        default_factory=MlflowConfig, description="Where runs are tracked and models registered."
    )
    output_dir: Path = Field(Path("runs"), description="Where each run keeps its data, checkpoints and model.")
    serving: ServingConfig = Field(
        default_factory=ServingConfig,
        description="The served forms exported at registration: ONNX, int8 (docs/how-to/serving.md).",
    )
    search: SearchConfig = Field(
        default_factory=SearchConfig,
        description="Hyperparameter search of `finetune tune`: the space, sampler, pruner and budget.",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> FinetuneConfig:
        if self.data.text_column == self.data.label_column:
            raise ValueError("data.text_column and data.label_column must differ")
        if self.data.text_pair_column in (self.data.text_column, self.data.label_column):
            raise ValueError("data.text_pair_column must differ from data.text_column and data.label_column")
        training = self.training
        frozen, unfrozen = training.frozen.epochs, training.unfrozen.epochs
        if training.strategy == "linear-probe" and frozen == 0:
            raise ValueError("training.strategy linear-probe needs training.frozen.epochs > 0")
        if training.strategy == "full" and unfrozen == 0:
            raise ValueError("training.strategy full needs training.unfrozen.epochs > 0")
        if frozen + unfrozen == 0:
            raise ValueError("training.frozen.epochs and training.unfrozen.epochs are both 0: nothing to train")
        if training.unfrozen.gradual and training.strategy not in ("lp-ft", "auto", "contrastive"):
            raise ValueError("training.unfrozen.gradual applies to strategies lp-ft, contrastive and auto only")
        if training.strategy == "contrastive" and self.task != "classification":
            raise ValueError("training.strategy contrastive needs task classification (pairs of same/different class)")
        if training.strategy == "contrastive" and training.frozen.epochs == 0:
            raise ValueError("training.strategy contrastive needs training.frozen.epochs > 0 (the head after pairs)")
        if training.metric is not None and training.metric not in TASK_METRICS[self.task]:
            raise ValueError(
                f"training.metric {training.metric!r} is not a metric of task {self.task} "
                f"(one of: {', '.join(TASK_METRICS[self.task])})"
            )
        if training.class_weights != "none" and self.task != "classification":
            hint = " (multilabel: training.pos_weight)" if self.task == "multilabel" else ""
            raise ValueError(f"training.class_weights needs task classification{hint}")
        if self.task == "multilabel" and (self.data.train_on_validation or self.search.refit_on == "train+validation"):
            key = "data.train_on_validation" if self.data.train_on_validation else "search.refit_on"
            raise ValueError(
                f"{key}: multilabel tunes its decision thresholds on the validation rows, so they cannot train "
                "too (keep search.refit_on: auto or train, data.train_on_validation: false)"
            )
        if training.temperature is not None and self.task != "classification":
            raise ValueError("training.temperature needs task classification (multilabel fits one per label)")
        if training.pos_weight not in (None, "none") and self.task != "multilabel":
            raise ValueError("training.pos_weight needs task multilabel (classification: training.class_weights)")
        if isinstance(training.pos_weight, dict):
            bad = {k: v for k, v in training.pos_weight.items() if not (v > 0 and math.isfinite(v))}
            if bad:
                raise ValueError(f"training.pos_weight must be positive finite numbers: {bad}")
        if self.data.label_separator is not None and self.task != "multilabel":
            raise ValueError("data.label_separator needs task multilabel")
        if isinstance(training.class_weights, dict):
            bad = {k: v for k, v in training.class_weights.items() if not (v > 0 and math.isfinite(v))}
            if bad:
                raise ValueError(f"training.class_weights must be positive finite numbers: {bad}")
        unknown = unknown_metrics(self.task, sorted(self.gates.metrics()))
        if unknown:
            raise ValueError(f"gates name metric(s) {unknown} that task {self.task} does not produce")
        if (training.num_processes > 1 or training.launcher == "torchrun") and training.unfrozen.max_minutes:
            raise ValueError(
                "training.unfrozen.max_minutes is single-process only (ranks would stop at different steps)"
            )
        if training.torchrun_args and training.launcher != "torchrun":
            raise ValueError("training.torchrun_args needs training.launcher: torchrun")
        if training.ray_address and training.launcher != "ray":
            raise ValueError("training.ray_address needs training.launcher: ray")
        if any(arg.startswith(("--nproc-per-node", "--nproc_per_node")) for arg in training.torchrun_args):
            raise ValueError("training.torchrun_args: set the processes per node with training.num_processes")
        if (self.augmentation.enabled or self.augmentation.swap_pairs) and self.task == "multilabel":
            raise ValueError("augmentation is not supported for task multilabel yet (augmentation.enabled: false)")
        if self.augmentation.swap_pairs and not self.data.text_pair_column:
            raise ValueError("augmentation.swap_pairs needs sentence pairs (data.text_pair_column)")
        if self.augmentation.balance and self.task != "classification":
            raise ValueError("augmentation.balance needs task classification (classes to balance)")
        return self

    def for_record(self) -> dict:
        """This configuration as it may be recorded (params, config.yaml, what a command prints): JSON
        values with every credential in a string masked, the tracking URI's above all
        (finetune_core/redaction.py)."""
        return redact_values(self.model_dump(mode="json"))

    def fingerprint(self) -> str:
        """Stable hash of the configuration, for lineage tags. The tracking URI is left out: where a
        run is recorded is not how it trains (the same configuration on two stores hashes the same,
        and resolving the URI from the environment never changes it). The search section is left out
        too: it says what `finetune tune` varies, not how this configuration trains. Retired keys count
        at their fixed values: a run or a study from before their retirement keeps its hash."""
        excluded = {"mlflow": {"tracking_uri"}, "search": True}
        payload = json.dumps(with_fixed_values(self.model_dump(mode="json", exclude=excluded)), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]
