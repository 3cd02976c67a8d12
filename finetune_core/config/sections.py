"""Configuration sections by concern: data, backbone, training stages, MLflow.
Cross-field checks are not here: they live in ``FinetuneConfig`` (config.finetune)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from finetune_core.config.base import Strict

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
        "L2-regularised loss (scikit-learn's LogisticRegression); auto: L-BFGS while AdamW would take few steps.",
    )
    regularization: float = Field(
        1.0, gt=0, description="L-BFGS only: inverse L2 strength, scikit-learn's C on unit-length features."
    )
    max_rows: int | None = Field(
        None,
        gt=0,
        description="Train rows (seeded, stratified) whose features fit the head when the unfrozen stage follows "
        "with no blocks kept frozen; the head then only starts stage 2. None: every row, or 4,096 when "
        "unfrozen.max_minutes is set (a forward pass over every row would otherwise take a large share of a "
        "short budget's wall time).",
    )


class UnfrozenStageConfig(StageConfig):
    epochs: int = Field(3, ge=0, description="Epochs fine-tuning everything (0 skips it).")
    # 1e-4, not run_glue's 5e-5: with all-MiniLM-L6-v2, MRPC (3,668 rows) 0.775 test accuracy
    # against 0.739, SST-2 2,000 rows 0.830 against 0.816 (3 seeds); on the full SST-2 train
    # set 0.891 against 0.896 (one seed). README "A better default learning rate".
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
        "stops after the batch that passes it.",
    )
    freeze_layers: int = Field(
        0,
        description="Keep the embeddings and the lowest N transformer blocks frozen in this stage (negative: all "
        "but the top -N); their outputs are computed once and cached, so each epoch runs only the blocks above. "
        "0: every layer trains.",
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
    # Off by default for now, though measured better with the bundled backbone: SST-2 2,000 rows
    # (3 seeds, fp32) 0.830 test accuracy against 0.821 with the matrix trained, MRPC (one seed)
    # 0.793 against 0.790, 1.12-1.19x stage-2 samples/s against the whole matrix trained (the
    # default's seen token rows now take most of that: 1.10-1.15x; bench/results/
    # engine-freeze-words-fp32.json, tasks-mrpc-words.json, engine-levers-seen-rows-fp32.json). A
    # backbone whose token vectors must still learn (the tests' random tiny BERTs: 0.50 accuracy
    # where 0.9 was reached) loses with it; two sets are thin for a default.
    freeze_word_embeddings: bool = Field(
        False,
        description="Keep the token-embedding matrix frozen in this stage (positions, token types and the "
        "embedding LayerNorm still train): its dense gradient and optimizer update over the whole vocabulary "
        "are skipped, and tokens absent from train keep their pretrained vectors.",
    )
    dropout_masks: Literal["numpy", "torch"] = Field(
        "numpy",
        description="Source of this stage's dropout masks on CPU: numpy (PCG64 raw bits, seeded from torch's "
        "generator; 5x cheaper than torch's Bernoulli kernel there) or torch. GPUs always use torch's.",
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
    max_pairs: int = Field(20000, gt=0, description="Cap on the pairs of one epoch (seeded subsample).")
    encode_sides: Literal["auto", "once", "separately"] = Field(
        "auto",
        description="separately: each side of a pair in its own forward pass with its own dropout (SetFit's way); "
        "once: each distinct row of a batch encoded once for both sides (half the work); auto: separately up to "
        "32 training rows per class, once above.",
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
    eval_batch_size: int = Field(128, gt=0, description="Batch size for validation, test and prediction.")
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
    token_rows: Literal["seen", "all"] = Field(
        "seen",
        description="seen: the stages that train the encoder (contrastive, unfrozen) optimise only the "
        "token-embedding rows that occur in the training split; the others would get no gradient, so they take only "
        "weight decay, applied as one factor: the same weights as training the whole matrix, without its dense "
        "gradient and update over the vocabulary each step. all: the whole matrix every step, as HF Trainer does.",
    )
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop a stage after this many epochs without validation improvement."
    )
    keep_best: bool = Field(True, description="End each stage with its best validation epoch's weights, not the last.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="auto: bf16 autocast on GPUs with bf16 and CPUs with native bf16 (AVX-512 BF16 or AMX), else fp32.",
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
    feature_cache: bool = Field(True, description="Cache frozen-backbone features on disk for re-runs.")
    cache_dir: Path | None = Field(None, description="Feature cache directory (default: ~/.cache/finetune).")
    calibrate: bool = Field(True, description="Fit temperature scaling on validation (classification).")
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
        "each label in train, capped at 100), or {label: weight}; unset: balanced for multilabel (+5 points "
        "macro-F1 on Reuters, bench/tasks.py).",
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
