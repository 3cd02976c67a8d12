"""Backbone selection: rank candidates from frozen features, without fine-tuning them.

LogME (You et al., ICML 2021) is the log marginal evidence of a Bayesian linear model from the
features to each target column, maximised over its two precisions by a fixed-point
iteration; no hyperparameters. ``probe`` is a k-fold cross-validated logistic (classification)
or ridge (regression) probe. Each candidate is also measured: parameter count and latency per
example at batch size 1. Constraints exclude candidates with the reason; ties (scores within
``TIE``) go to the smaller model. The winner's sample features are kept so the frozen stage
does not extract them again.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from finetune_core.data.chunks import take_rows
from finetune_core.data.labels import read_labels
from finetune_core.data.multilabel import label_matrix
from finetune_core.data.prepare import LABEL, PreparedData
from finetune_core.data.sampling import seeded_sample
from finetune_core.durable import writing
from finetune_core.errors import ConfigError, DataError, UserInputError
from finetune_core.model.backbone import load_for_task, load_tokenizer, resolve_backbone
from finetune_core.model.batching import Encoded, collate, encode_columns
from finetune_core.model.features import extract_features
from finetune_core.model.heads import POOLINGS, HeadSpec, head_spec, num_layers, resolve_pooling
from finetune_core.model.loading import MODEL_LOADING
from finetune_core.selection.transferability import logme, probe_score
from finetune_core.training.device import Runtime, eval_batches, runtime_for

TIE = 1e-3  # LogME is per example; differences this small are noise, not a ranking
# Candidates scored by a thread pool load one at a time (MODEL_LOADING, which every model load in
# the library holds): transformers' lazy modules replace themselves in sys.modules on first import,
# and threads importing them together in a fresh process got "cannot import name 'AutoTokenizer'
# from 'transformers'"; the tokenizer is loaded under it for that reason. Feature extraction and
# scoring, the bulk of the time, stay parallel.


def selection_sample(prepared: PreparedData, size: int, seed: int) -> np.ndarray:
    """Seeded, stratified (classification) row indexes of the prepared train split."""
    labels = read_labels(prepared.paths["train"])  # the label column alone: the texts may not fit in memory
    if size >= len(labels):
        return np.arange(len(labels))
    return seeded_sample(labels if prepared.task == "classification" else None, len(labels), size, seed)


class CandidateScore(BaseModel):
    candidate: str  # as configured
    path: str  # what from_pretrained loads
    metric: str
    score: float | None = None
    parameters: int = 0
    latency_ms: float = 0.0
    seconds: float = 0.0
    excluded: str | None = None
    features: str | None = None  # the sample features, for the frozen stage


def _latency_ms(model, features, encoded: Encoded, runtime, examples: int = 16) -> float:
    """Mean time of one example through the backbone at batch size 1 (after a warm-up)."""
    rows = list(range(min(examples, len(encoded))))
    with torch.inference_mode(), runtime.autocast():
        for row in rows[:2]:
            features(model, {k: v.to(runtime.device) for k, v in collate(encoded, [row]).items()})
        started = time.perf_counter()
        for row in rows:
            features(model, {k: v.to(runtime.device) for k, v in collate(encoded, [row]).items()})
    return 1000 * (time.perf_counter() - started) / max(len(rows), 1)


def transformer_blocks(model) -> list[torch.nn.Module]:
    """The backbone's transformer blocks, lowest first: the module list in its base model with one
    entry per layer (``encoder.layer`` in BERT, ``transformer.layer`` in DistilBERT, ``layers``
    elsewhere); empty when there is none."""
    lists = [m for m in model.base_model.modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    depth = num_layers(model)
    matching = [m for m in lists if len(m) == depth] if depth else sorted(lists, key=len, reverse=True)
    return list(matching[0]) if matching else []


def _block_outputs(model, run):
    """(result of ``run()``, the blocks' output hidden states in order). Forward hooks local to this
    call, not ``output_hidden_states``: transformers collects those in a context variable that turns
    process-wide once ``torch.export`` has traced in the process (the ONNX export), and candidates
    scored on parallel threads then read each other's states (docs/decisions/onnx-export.md)."""
    states: list[torch.Tensor] = []

    def keep(module, args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    handles = [block.register_forward_hook(keep) for block in transformer_blocks(model)]
    try:
        return run(), states
    finally:
        for handle in handles:
            handle.remove()


def with_layer_average(extractor: HeadSpec):
    """(spec, split): the spec's features are the head's features followed by the mean-pooled hidden
    states averaged over every transformer block, from one forward pass (hooks on the blocks keep
    their outputs).

    Why score the layer average: fine-tuning adapts the whole stack, and what transfers is
    spread across its layers; the last layer alone reflects the pretraining objective (here a
    contrastive sentence-similarity loss, which leaves sentiment less linearly separable there
    than in the blocks below). Scored on the last layer only, LogME ranked copies of
    all-MiniLM-L6-v2 cut to their lowest layers above the full model, the reverse of their
    fine-tuned accuracy (docs/decisions/selection-layers.md)."""
    head_width: list[int] = []

    def features(model, batch):
        head_features, blocks = _block_outputs(model, lambda: extractor.features(model, batch))
        head_width[:] = [head_features.shape[1]]
        if not blocks:  # a backbone without a block list: the head's features stand in
            return torch.cat([head_features, head_features], dim=1)
        mask = batch["attention_mask"].unsqueeze(-1).to(blocks[-1].dtype)
        average = (torch.stack(blocks).mean(dim=0) * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return torch.cat([head_features, average.to(head_features.dtype)], dim=1)

    def split(both: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return both[:, : head_width[0]], both[:, head_width[0] :]

    return HeadSpec(features, extractor.head, extractor.layer_pattern, extractor.embeddings), split


class CandidateFailed(RuntimeError):
    """An unexpected error while scoring one backbone candidate; the message names it."""


@contextmanager
def naming_candidate(candidate: str):
    """Errors raised inside name ``candidate``: several are scored in parallel, and a bare
    traceback from one of them does not say which. User errors keep their type (exit code 2)."""
    try:
        yield
    except UserInputError as exc:
        if candidate in str(exc) or type(exc) not in (ConfigError, DataError):  # named already, or a report
            raise
        raise type(exc)(f"backbone candidate {candidate!r}: {exc}") from exc
    except Exception as exc:
        raise CandidateFailed(f"backbone candidate {candidate!r}: {type(exc).__name__}: {exc}") from exc


def score_candidate(
    config, prepared: PreparedData, candidate: str, sample: np.ndarray, out_dir: Path, runtime: Runtime | None = None
) -> CandidateScore:
    """Load one candidate, extract frozen features on the sample, score and measure it.
    ``runtime``: resolved once by the caller for every candidate (else here)."""
    with naming_candidate(candidate):
        return _score(config, prepared, candidate, sample, out_dir, runtime or runtime_for(config.training))


def _score(
    config, prepared: PreparedData, candidate: str, sample: np.ndarray, out_dir: Path, runtime: Runtime
) -> CandidateScore:
    started = time.perf_counter()
    selection, training = config.backbone, config.training
    path = resolve_backbone(candidate)
    with MODEL_LOADING:
        tokenizer = load_tokenizer(path, selection.trust_remote_code)
        model = load_for_task(path, prepared.task, prepared.labels, selection.trust_remote_code)
    model = model.to(runtime.device).eval()
    pooling = resolve_pooling(selection.pooling, path, pairs=prepared.pairs)
    try:
        extractor = head_spec(model, pooling)  # exactly what the frozen stage's head will read
    except ValueError:  # a family outside the head table: its mean token state stands in
        extractor = None
    extractor = extractor or HeadSpec(POOLINGS["mean"], lambda m, f: f)
    texts = list(prepared.text_columns)  # pairs are scored as pairs
    frame = take_rows(prepared.paths["train"], sample, columns=[*texts, LABEL])  # the sample's rows, in its order
    encoded = encode_columns(tokenizer, [frame[c].astype(str).tolist() for c in texts], training.max_length)
    batches = eval_batches(training, runtime)
    if selection.selection_layers == "all":
        spec, split = with_layer_average(extractor)
        both = extract_features(model, spec, encoded, batches, runtime.device, runtime.autocast)
        features, scored = split(both)  # the head's features are kept for the frozen stage
    else:
        features = scored = extract_features(model, extractor, encoded, batches, runtime.device, runtime.autocast)
    targets = frame[LABEL].to_numpy()
    if prepared.task == "multilabel":  # label ids per row -> one 0/1 column per label
        targets = label_matrix(targets, len(prepared.labels))
    if selection.selection_metric == "logme":
        score = logme(scored.numpy(), targets, prepared.task)
    else:
        score = probe_score(scored.numpy(), targets, prepared.task, selection.probe_folds, training.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    features_path = out_dir / f"{hashlib.sha256(path.encode()).hexdigest()[:12]}-features.pt"
    saved = {
        "indexes": torch.as_tensor(sample),
        "features": features,
        "pooling": pooling,
        "precision": runtime.precision,
        "max_length": training.max_length,
    }
    with writing(features_path) as handle:  # the frozen stage reads it back: whole or not at all
        torch.save(saved, handle)
    result = CandidateScore(
        candidate=candidate,
        path=path,
        metric=selection.selection_metric,
        score=score,
        parameters=sum(p.numel() for p in model.base_model.parameters()),
        latency_ms=_latency_ms(model, extractor.features, encoded, runtime),
        features=str(features_path),
    )
    result.seconds = time.perf_counter() - started
    return result


def rank(
    scores: list[CandidateScore], max_parameters: int | None, max_latency_ms: float | None
) -> list[CandidateScore]:
    """Apply the constraints, then best score first; scores within TIE go to the smaller model."""
    for s in scores:
        if max_parameters is not None and s.parameters > max_parameters:
            s.excluded = f"{s.parameters:,} parameters > backbone.max_parameters {max_parameters:,}"
        elif max_latency_ms is not None and s.latency_ms > max_latency_ms:
            s.excluded = f"{s.latency_ms:.1f} ms per example > backbone.max_latency_ms {max_latency_ms:g}"
    eligible = sorted((s for s in scores if s.excluded is None), key=lambda s: -s.score)
    ordered: list[CandidateScore] = []
    for s in eligible:  # insertion keeps ties (within TIE of a better-placed score) ordered by size
        position = len(ordered)
        while (
            position > 0
            and abs(ordered[position - 1].score - s.score) <= TIE
            and ordered[position - 1].parameters > s.parameters
        ):
            position -= 1
        ordered.insert(position, s)
    return ordered + [s for s in scores if s.excluded is not None]


class SelectionResult(BaseModel):
    selected: CandidateScore
    ranking: list[CandidateScore]
    seconds: float

    def table(self) -> list[dict]:
        """One row per candidate, best first, for artifacts and the CLI."""
        rows = []
        for place, s in enumerate(self.ranking, start=1):
            rows.append(
                {
                    "rank": place if s.excluded is None else "-",
                    "candidate": s.candidate,
                    "metric": s.metric,
                    "score": None if s.score is None else round(s.score, 4),
                    "parameters": s.parameters,
                    "latency_ms": round(s.latency_ms, 2),
                    "seconds": round(s.seconds, 2),
                    "excluded": s.excluded or "",
                    "selected": s is self.selected,
                }
            )
        return rows


def choose(scores: list[CandidateScore], config, seconds: float) -> SelectionResult:
    ranking = rank(scores, config.backbone.max_parameters, config.backbone.max_latency_ms)
    if ranking[0].excluded is not None:
        reasons = "; ".join(f"{s.candidate}: {s.excluded}" for s in ranking)
        raise ConfigError(f"backbone.candidates: every candidate is excluded by a constraint ({reasons})")
    return SelectionResult(selected=ranking[0], ranking=ranking, seconds=seconds)


def rank_backbones(config, prepared: PreparedData, out_dir: Path) -> SelectionResult:
    """Score every candidate one after another (the flow maps them as parallel tasks instead)."""
    started = time.perf_counter()
    sample = selection_sample(prepared, config.backbone.selection_sample, config.training.seed)
    runtime = runtime_for(config.training)
    scores = [score_candidate(config, prepared, c, sample, out_dir, runtime) for c in config.backbone.candidates]
    return choose(scores, config, time.perf_counter() - started)
