"""Strategy ``contrastive``: tune the encoder on pairs of training rows before the head (SetFit,
Tunstall et al. 2022). Pairs of the same class should embed close (cosine 1), pairs of different
classes apart (cosine 0): a cosine-similarity loss on pooled sentence embeddings. The tuned encoder
is saved as a backbone directory the frozen stage then loads instead of the original.

It runs in the engine's epoch loop: per-epoch checkpoints and resume, progress, ``on_epoch_end``
metrics. Its validation metric is the nearest-class-centroid accuracy of the validation embeddings
(centroids from train): how well the embedding alone separates the classes, before any head.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from finetune_core.data.prepare import PreparedData
from finetune_core.model import embedding_rows
from finetune_core.model.backbone import load_tokenizer
from finetune_core.model.batching import BatchLimit, Encoded, collate, sorted_batches
from finetune_core.model.dropout_masks import STAGE_MASKS, choose_masks
from finetune_core.model.heads import POOLING_FILE, POOLINGS, resolve_pooling
from finetune_core.model.loading import MODEL_LOADING
from finetune_core.training.checkpoint import Checkpointer
from finetune_core.training.device import eval_batches, runtime_for
from finetune_core.training.encoded_splits import split_tokens
from finetune_core.training.loop import (
    EpochLoop,
    StageResult,
    StepSettings,
    epoch_rng,
    finished_stage,
    mark_finished,
    seed_everything,
)
from finetune_core.training.optim import make_optimizer, make_scheduler
from finetune_core.training.stage_setup import StageInputs

STAGE = "contrastive"
# `encode_sides: auto` encodes each side of a pair separately (SetFit's way, with its self pairs) up
# to this many training rows per class, each distinct row once above, where separately would double
# the pair stage for no gain; docs/benchmarks/fewshot-sst2.md.
SEPARATE_SIDES_UP_TO_ROWS_PER_CLASS = 32
# `learning_rate: None`: SetFit's 2e-5 barely moves the encoder in the few steps of few rows per
# class, and 6e-5 loses at 64 per class; docs/benchmarks/fewshot-sst2.md.
FEW_ROWS_LEARNING_RATE, SETFIT_LEARNING_RATE = 6e-5, 2e-5


def sample_pairs(
    labels: np.ndarray,
    pairs_per_example: int | None,
    rng: np.random.Generator,
    max_pairs: int | None = None,
    self_pairs: bool = False,
):
    """(first, second, similarity) row indexes and targets, shuffled, at most ``max_pairs``.

    ``pairs_per_example`` None: SetFit 1.x's default ("oversampling"): every unordered pair of two
    different rows once (``self_pairs``: and each row with itself, a similar pair, as SetFit's
    combinations with replacement do), the smaller of the similar (same class, 1.0) and dissimilar
    (0.0) sets cycled until both are as large. An int: SetFit's ``num_iterations``: for every row, that many
    times, one partner of its class and one of another class (a class of one row pairs with
    itself; with one class there are no dissimilar pairs)."""
    labels = np.asarray(labels)
    if pairs_per_example is None:
        first, second = np.triu_indices(len(labels), 0 if self_pairs else 1)
        same = labels[first] == labels[second]
        groups = [(first[same], second[same], 1.0), (first[~same], second[~same], 0.0)]
        size = max(len(a) for a, _, _ in groups)
        picks = [(rng.permutation(len(a))[np.arange(size) % len(a)], a, b, t) for a, b, t in groups if len(a)]
        first = np.concatenate([a[p] for p, a, _, _ in picks])
        second = np.concatenate([b[p] for p, _, b, _ in picks])
        similar = np.concatenate([np.full(len(p), t, dtype=np.float32) for p, _, _, t in picks])
    else:
        members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
        others = {c: np.flatnonzero(labels != c) for c in members}
        first, second, similar = [], [], []
        for _ in range(pairs_per_example):
            for row, label in enumerate(labels):
                same = members[label]
                candidates = same[same != row] if len(same) > 1 else same
                first.append(row), second.append(int(rng.choice(candidates))), similar.append(1.0)
                if len(others[label]):
                    first.append(row), second.append(int(rng.choice(others[label]))), similar.append(0.0)
        first, second, similar = np.array(first), np.array(second), np.array(similar, dtype=np.float32)
    order = rng.permutation(len(first))[:max_pairs]
    return first[order], second[order], similar[order]


def pair_count(labels: np.ndarray, pairs_per_example: int | None, max_pairs: int, self_pairs: bool = False) -> int:
    """How many pairs ``sample_pairs`` draws per epoch (the same every epoch)."""
    labels = np.asarray(labels)
    if pairs_per_example is not None:
        classes = len(np.unique(labels))
        return min(len(labels) * pairs_per_example * (2 if classes > 1 else 1), max_pairs)
    counts = np.unique(labels, return_counts=True)[1]
    similar = int((counts * (counts - 1) // 2).sum())
    dissimilar = len(labels) * (len(labels) - 1) // 2 - similar
    similar += len(labels) if self_pairs else 0
    return min((2 if similar and dissimilar else 1) * max(similar, dissimilar), max_pairs)


def cosine_similarity_loss(a: torch.Tensor, b: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the pairs' cosine similarity and their target (1 same, 0 different)."""
    return F.mse_loss(F.cosine_similarity(a.float(), b.float()), similar)


def _few_rows(labels: np.ndarray) -> bool:
    return len(labels) / max(len(np.unique(labels)), 1) <= SEPARATE_SIDES_UP_TO_ROWS_PER_CLASS


def pair_encoding(encode_sides: str, self_pairs: bool | None, labels: np.ndarray) -> tuple[str, bool]:
    """(``once`` or ``separately``, self pairs or not) for this stage's training labels."""
    if encode_sides == "auto":
        encode_sides = "separately" if _few_rows(labels) else "once"
    return encode_sides, encode_sides == "separately" if self_pairs is None else self_pairs


def pair_learning_rate(setting: float | None, labels: np.ndarray) -> float:
    """The stage's learning rate: the configured one, or by the training rows per class."""
    if setting is not None:
        return setting
    return FEW_ROWS_LEARNING_RATE if _few_rows(labels) else SETFIT_LEARNING_RATE


def _embed(model, pooling: str, encoded: Encoded, rows: np.ndarray, runtime) -> torch.Tensor:
    batch = {k: v.to(runtime.device) for k, v in collate(encoded, rows).items()}
    with runtime.autocast():
        return POOLINGS[pooling](model, batch)


def _embed_pairs(model, pooling: str, encoded: Encoded, first: np.ndarray, second: np.ndarray, runtime):
    """Both sides' embeddings, each distinct row encoded once: with few training rows a batch of
    pairs repeats rows (16 pairs of 16 rows: 32 sides, at most 16 distinct), so this halves the
    forward and backward work against encoding each side (SetFit's way); the loss is the same."""
    rows, where = np.unique(np.concatenate([first, second]), return_inverse=True)
    vectors = _embed(model, pooling, encoded, rows, runtime)
    where = torch.from_numpy(where).to(vectors.device)
    return vectors[where[: len(first)]], vectors[where[len(first) :]]


def _embed_sides(model, pooling: str, encoded: Encoded, first: np.ndarray, second: np.ndarray, runtime):
    """Each side in its own forward pass (SetFit's way): a row on both sides, or paired with
    itself, gets two dropout masks, so even an identical pair carries a gradient (as in SimCSE)."""
    return _embed(model, pooling, encoded, first, runtime), _embed(model, pooling, encoded, second, runtime)


@torch.inference_mode()
def embed_all(model, pooling: str, encoded: Encoded, batch_size: int | BatchLimit, runtime) -> torch.Tensor:
    model.eval()
    out, runtime = None, runtime.for_inference()
    for batch in sorted_batches(encoded.lengths, batch_size):
        vectors = _embed(model, pooling, encoded, batch, runtime).float().cpu()
        if out is None:
            out = torch.zeros(len(encoded), vectors.shape[1])
        out[torch.from_numpy(batch)] = vectors
    return out if out is not None else torch.zeros(0, 1)


def centroid_accuracy(train: torch.Tensor, train_y: np.ndarray, val: torch.Tensor, val_y: np.ndarray) -> float:
    """Share of validation rows whose nearest (cosine) train-class centroid is their class."""
    classes = np.unique(train_y)
    centroids = torch.stack([F.normalize(train[torch.from_numpy(train_y == c)], dim=1).mean(0) for c in classes])
    nearest = (F.normalize(val, dim=1) @ F.normalize(centroids, dim=1).T).argmax(1).numpy()
    return float((classes[nearest] == val_y).mean()) if len(val_y) else 0.0


def _load_encoder(backbone: str, trust_remote_code: bool):
    from transformers import AutoModel

    with MODEL_LOADING:
        return AutoModel.from_pretrained(backbone, trust_remote_code=trust_remote_code)


def train_contrastive(inputs: StageInputs) -> StageResult:
    """Tune the backbone ``inputs.start`` on seeded same/different-class pairs of train; save it to
    ``inputs.out_dir`` (weights, tokenizer, and its pooling as a sentence-transformers pooling file,
    so the frozen stage's ``pooling: auto`` reads the embedding this stage tuned)."""
    out_dir = Path(inputs.out_dir)
    if (done := finished_stage(out_dir, inputs.resume)) is not None:
        return done
    config, prepared, backbone, progress = inputs.config, inputs.prepared, str(inputs.start), inputs.progress
    training, stage = config.training, config.training.contrastive
    runtime = runtime_for(training, backbone, config.backbone.trust_remote_code)
    inference = eval_batches(training, runtime)  # validation's embedding batches
    seed_everything(training.seed + 2)
    pooling = "cls" if resolve_pooling(config.backbone.pooling, backbone).endswith("cls") else "mean"
    tokenizer = load_tokenizer(backbone, config.backbone.trust_remote_code)
    model = _load_encoder(backbone, config.backbone.trust_remote_code).to(runtime.device)
    dropout_masks = choose_masks(model, STAGE_MASKS["contrastive"], runtime.device)
    (train, train_y), (validation, val_y) = (
        split_tokens(prepared, s, tokenizer, training.max_length) for s in ("train", "validation")
    )
    sides, self_pairs = pair_encoding(stage.encode_sides, stage.self_pairs, train_y)
    learning_rate = pair_learning_rate(stage.learning_rate, train_y)
    pairs_per_epoch = pair_count(train_y, stage.pairs_per_example, stage.max_pairs, self_pairs)
    embed_pairs = _embed_sides if sides == "separately" else _embed_pairs
    batches = -(-pairs_per_epoch // stage.batch_size)
    # with 16 rows a pair batch touches a few dozen token rows of 30k: only the seen ones train
    seen_rows = embedding_rows.use_seen_rows(model, train.input_ids) if embedding_rows.SEEN_ROWS_ONLY else None
    optimizer = make_optimizer(
        [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": training.weight_decay}],
        learning_rate,
    )
    embedding_rows.attach(seen_rows, optimizer)
    # SetFit's schedule: linear decay over all steps, 10 % warmup
    scheduler = make_scheduler(optimizer, "linear", int(0.1 * batches * stage.epochs), max(batches * stage.epochs, 1))
    loop = _pair_loop(inputs, pairs_per_epoch, batches)

    steps = StepSettings(STAGE, optimizer, scheduler, stage.batch_size, training.max_grad_norm, runtime, None, progress)

    def train_epoch(epoch: int) -> float:
        model.train()
        rng = epoch_rng(training.seed, STAGE, epoch)
        pairs = sample_pairs(train_y, stage.pairs_per_example, rng, stage.max_pairs, self_pairs)
        return _pair_epoch(model, pooling, train, pairs, embed_pairs, steps)

    def validate() -> dict:
        train_vectors = embed_all(model, pooling, train, inference, runtime)
        val_vectors = embed_all(model, pooling, validation, inference, runtime)
        return {"centroid_accuracy": centroid_accuracy(train_vectors, train_y, val_vectors, val_y)}

    result = loop.run(model, train_epoch, validate, optimizer, scheduler, resume=inputs.resume)
    result.extra.update(embedding_rows.fold_back(model, seen_rows))
    result.extra.update(**runtime.record(), device=str(runtime.device), pooling=pooling, encode_sides=sides)
    result.extra.update(peak_learning_rate=learning_rate, self_pairs=self_pairs, dropout_masks=dropout_masks)
    _save_encoder(model.cpu(), tokenizer, pooling, prepared, out_dir)
    return mark_finished(out_dir, result)


def _pair_epoch(model, pooling: str, train: Encoded, pairs, embed_pairs, steps: StepSettings) -> float:
    """One epoch over ``pairs`` (first rows, second rows, similarity targets) in batches of pairs."""
    first, second, similar = pairs
    runtime, optimizer = steps.runtime, steps.optimizer
    total = 0.0
    for start in range(0, len(first), steps.batch_size):
        rows = slice(start, start + steps.batch_size)
        a, b = embed_pairs(model, pooling, train, first[rows], second[rows], runtime)
        loss = cosine_similarity_loss(a, b, torch.from_numpy(similar[rows]).to(runtime.device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), steps.max_grad_norm)
        optimizer.step()
        steps.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        total += value * len(first[rows])
        steps.progress.advance(1, len(first[rows]), value)
    return total / max(len(first), 1)


def _pair_loop(inputs: StageInputs, pairs_per_epoch: int, batches: int) -> EpochLoop:
    """The stage's epoch loop: an epoch is ``pairs_per_epoch`` pairs, the best epoch by centroid accuracy."""
    training, checkpoints = inputs.config.training, inputs.checkpoints
    return EpochLoop(
        stage=STAGE,
        epochs=training.contrastive.epochs,
        train_examples=pairs_per_epoch,
        metric="val_centroid_accuracy",
        larger_is_better=True,
        keep_best=training.keep_best,
        checkpointer=Checkpointer(Path(checkpoints) / STAGE if checkpoints else None),
        on_epoch_end=inputs.on_epoch_end,
        reporter=inputs.progress,
        batches_per_epoch=batches,
    )


def _save_encoder(model, tokenizer, pooling: str, prepared: PreparedData, out_dir: Path) -> None:
    """The tuned encoder as a backbone directory, with the pooling the frozen stage then reads."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    # the head after this stage reads the tuned vectors at unit length: the cosine loss tuned their
    # direction only (SetFit's head reads normalised embeddings too). On SST-2 at 8 per class
    # (5 seeds, the same tuned encoders, scikit-learn's C=1 head) unit-length features scored 0.613
    # against 0.584 at their own length (scaled by their mean norm), 0.662 against 0.657 at 16.
    modes = {"pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_cls_token": pooling == "cls"}
    modes.update(normalize=True, pairs=prepared.pairs)
    (out_dir / POOLING_FILE).parent.mkdir(parents=True, exist_ok=True)
    (out_dir / POOLING_FILE).write_text(json.dumps(modes))
