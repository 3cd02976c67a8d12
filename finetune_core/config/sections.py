"""Configuration sections by concern: data, backbone, training (its stages in config.stage_sections), MLflow.
Cross-field checks are not here: they live in ``FinetuneConfig`` (config.finetune)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from finetune_core.config.base import Strict
from finetune_core.config.stage_sections import (
    ContrastiveStageConfig,
    FrozenStageConfig,
    LoraConfig,
    UnfrozenStageConfig,
)

BUNDLED_BACKBONE = "bundled:all-MiniLM-L6-v2"


class DataConfig(Strict):
    train: Path = Field(description="Training file (.csv, .tsv, .jsonl/.json or .parquet).")
    validation: Path | None = Field(
        None, description="Validation file; when absent a seeded stratified split of train is used."
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train held out for validation when `validation` is absent."
    )
    test: Path = Field(description="Labelled test file used for the final evaluation.")
    text_column: str = Field("sentence", min_length=1, description="Column holding the input text.")
    label_column: str = Field("label", min_length=1, description="Column holding the label or target.")
    text_pair_column: str | None = Field(
        None,
        min_length=1,
        description="Column holding the second text of a sentence pair (paraphrase, entailment, similarity); "
        "the two texts are tokenised as a pair.",
    )
    train_on_validation: bool = Field(
        False,
        description="Train on the validation rows too (held out of train, or the `validation` file): the run "
        "then has no split to keep its best epoch on, stop early on or fit a temperature on. `finetune tune` "
        "sets it for its winner under `search.refit_on: train+validation` (auto, the default, for classification). "
        "Not for multilabel (its decision "
        "thresholds are tuned on these rows).",
    )
    max_train_samples: int | None = Field(
        None, gt=0, description="Optional seeded subsample of train (after the validation split)."
    )
    label_separator: str | None = Field(
        None,
        min_length=1,
        description="Task multilabel: labels are a delimited string split on this (e.g. `|`); unset: the label "
        "column holds lists (JSONL arrays, Parquet lists).",
    )


class BackboneConfig(Strict):
    candidates: list[str] = Field(
        default_factory=lambda: [BUNDLED_BACKBONE],
        min_length=1,
        description="Hugging Face ids or local paths; `bundled:all-MiniLM-L6-v2` is the offline model.",
    )
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the hub.")
    pooling: Literal["auto", "native", "mean", "cls", "normalized-mean", "normalized-cls"] = Field(
        "auto",
        description="What the head reads: auto (a sentence-transformers checkpoint's own pooling, else native), "
        "native (the architecture's head input), mean (mean of token states), cls (first token state), "
        "normalized-mean / normalized-cls (those at unit length).",
    )
    selection_metric: Literal["logme", "probe"] = Field(
        "logme", description="How candidates are ranked: LogME evidence, or a cross-validated linear probe."
    )
    selection_layers: Literal["all", "last"] = Field(
        "all",
        description="Features LogME/the probe score: the pooled hidden states averaged over every transformer block "
        "(all), or the last block's only, which is what the frozen head reads (last).",
    )
    selection_sample: int = Field(500, ge=10, description="Train rows (seeded, stratified) scored per candidate.")
    probe_folds: int = Field(5, ge=2, description="Folds of the `probe` metric.")
    max_parameters: int | None = Field(None, gt=0, description="Exclude candidates with more backbone parameters.")
    max_latency_ms: float | None = Field(
        None, gt=0, description="Exclude candidates slower than this per example (batch size 1, measured)."
    )
    task_runner: Literal["thread", "dask", "ray"] = Field(
        "thread",
        description="Prefect task runner scoring candidates in parallel (dask/ray need prefect-dask/prefect-ray).",
    )
    selection_workers: int = Field(2, ge=1, description="Candidates scored at once (threads, or local Dask workers).")
    dask_address: str | None = Field(
        None,
        description="Scheduler of an existing Dask cluster (task_runner dask); unset: a local cluster of processes.",
    )


class TrainingConfig(Strict):
    frozen: FrozenStageConfig = Field(
        default_factory=FrozenStageConfig,
        description="Stage 1: backbone frozen, only the task head learns.",
    )
    unfrozen: UnfrozenStageConfig = Field(
        default_factory=UnfrozenStageConfig,
        description="Stage 2: everything learns, at a smaller learning rate.",
    )
    batch_size: int = Field(32, gt=0, description="Training batch size.")
    eval_batch_size: int = Field(
        128, gt=0, description="Batch size for validation, test and prediction (lower it when they run out of memory)."
    )
    eval_batch_tokens: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="Most padded tokens in one validation, test, feature or layer-cache batch (rows sorted by "
        "length, eval_batch_size still caps the rows). auto: 1024 on CPUs at fp32 (faster than 128 rows there: "
        "docs/decisions/inference-batches.md); no cap on GPUs and at bf16 (not measured). 0: no cap.",
    )
    max_length: int = Field(128, gt=1, le=8192, description="Longest input in tokens; longer texts are truncated.")
    seed: int = Field(42, ge=0, description="Seed for splits, subsampling, shuffling and initialisation.")
    strategy: Literal["auto", "lp-ft", "full", "linear-probe", "lora", "contrastive"] = Field(
        "auto",
        description="auto: chosen from the training rows per class (finetune_core.training.recipe); "
        "lp-ft: head on the frozen backbone, then everything; full: skip the frozen stage; "
        "linear-probe: frozen stage only; lora: frozen stage, then adapters and head; "
        "contrastive: tune the encoder on same/different-class pairs (SetFit), then lp-ft's stages.",
    )
    contrastive: ContrastiveStageConfig = Field(
        default_factory=ContrastiveStageConfig, description="The pair-tuning stage of strategy `contrastive`."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (never on biases or LayerNorm).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop a stage after this many epochs without validation improvement."
    )
    keep_best: bool = Field(True, description="End each stage with its best validation epoch's weights, not the last.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on GPUs with bf16 and CPUs with AMX; on AVX-512 BF16 without AMX where a "
        "cached measurement of the backbone's step finds bf16 at least 1.10x as fast; else fp32 (docs: Precision).",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto: cuda, then mps, then cpu.")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice).")
    num_processes: int = Field(
        1,
        ge=1,
        description="Data-parallel (DDP) processes per node for the unfrozen stage (gloo on CPUs, one GPU each "
        "elsewhere).",
    )
    launcher: Literal["local", "torchrun", "ray"] = Field(
        "local",
        description="How the data-parallel processes start. local: num_processes on this machine through torch's "
        "elastic launcher; torchrun: the stage runs under torchrun's elastic agent with torchrun_args (multi-node; "
        "other nodes run the command written next to the run's model directory); ray: num_processes Ray Train "
        "workers in all on the cluster ray_address (needs the ray-train extra).",
    )
    ray_address: str | None = Field(
        None,
        min_length=1,
        description="Ray cluster for launcher ray: unset starts a local Ray cluster for the stage; auto joins the "
        "cluster RAY_ADDRESS (or `ray start` on this machine) names; or the head's HOST:6379.",
    )
    torchrun_args: list[str] = Field(
        default_factory=list,
        description="torchrun options for launcher torchrun, e.g. [--nnodes=2, --rdzv-backend=c10d, "
        "--rdzv-endpoint=HOST:29400, --rdzv-id=RUN]; empty: --standalone (one node).",
    )
    max_restarts: int = Field(
        0, ge=0, description="Restarts of a failed worker group by the elastic agent; each resumes from the last epoch."
    )
    feature_cache: bool = Field(
        True, description="Cache frozen-backbone features on disk for re-runs (false: no disk used for them)."
    )
    cache_dir: Path | None = Field(None, description="Feature cache directory (default: ~/.cache/finetune).")
    calibrate: bool = Field(
        True,
        description="Fit temperature scaling on validation (classification); on a validation split too small to "
        "decide on, on the label review's out-of-fold predictions instead.",
    )
    temperature: float | None = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="A temperature given, not fitted (classification): stored with the model as it is, and "
        "`calibrate` fits none. `finetune tune` sets it for its winner under `search.refit_on: "
        "train+validation` (classification's default): the one its winning trial fitted on the validation rows "
        "(docs/how-to/tune.md).",
    )
    drop_suspect_labels: bool = Field(
        False,
        description="Train the stages after the label review without the rows it flags (recorded in "
        "review/dropped_rows.csv); false: flagged rows are only reported.",
    )
    metric: str | None = Field(
        None,
        description="Validation metric that picks the best epoch, stops early and decides the champion comparison "
        "(unset: accuracy for classification, spearman for regression, f1_macro for multilabel).",
    )
    class_weights: Literal["none", "balanced"] | dict[str, float] = Field(
        "none",
        description="Cross-entropy class weights (classification): none, balanced (n_samples / (n_classes * "
        "count) from train), or {label: weight}.",
    )
    pos_weight: Literal["none", "balanced"] | dict[str, float] | None = Field(
        None,
        description="Binary cross-entropy positive weights (multilabel): none, balanced (negatives / positives of "
        "each label in train, capped at 100), or {label: weight}; unset: balanced for multilabel "
        "(docs/benchmarks/multilabel.md).",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Adapters for strategy `lora`.")


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(
        None,
        min_length=1,
        description="Tracking server URI or database. Unset: the MLFLOW_TRACKING_URI environment variable, "
        "else sqlite:///mlflow.db in the working directory (finetune_core.config.tracking).",
    )
    experiment: str = Field("finetune", min_length=1, description="MLflow experiment name.")
    registered_model: str = Field("finetune-model", min_length=1, description="Registered model name.")


class ServingConfig(Strict):
    onnx: bool = Field(
        True,
        description="At registration, export the model (its pooling and head) to ONNX, check its parity with "
        "PyTorch on the test split (gates.parity) and serve it with ONNX Runtime when it passes "
        "(docs/how-to/serving.md). The fp32 graph answers a one-text `mlflow models serve` request in half "
        "PyTorch's time with the same labels (docs/benchmarks/serving.md). false: PyTorch only, and a "
        "faster registration.",
    )
    quantize: Literal["int8", "none"] = Field(
        "int8",
        description="int8: also quantise the ONNX graph (ONNX Runtime dynamic quantisation) and serve it when it "
        "passes parity, else the fp32 graph; none: the fp32 graph only.",
    )
    latency_rows: int = Field(
        64,
        ge=0,
        description="Test rows timed one at a time per runtime at registration (p50/p95 latency at batch 1; "
        "eight times as many, at most, at batch 32); 0: not measured, for a faster registration.",
    )
