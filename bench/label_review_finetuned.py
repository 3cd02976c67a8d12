"""Label review (issue 45), before building it: would out-of-fold predictions of *fine-tuned* folds
find planted flips with the target precision (0.7 at recall 0.6) that the frozen features miss?

    python -m bench.label_review_finetuned [--rows 2000] [--seeds 0] [--folds 5] [--epochs 2] [--train-on truth]

SST-2, the same 2,000 seeded rows and 10 % random flips as ``bench.label_review``. Per fold, the
bundled all-MiniLM-L6-v2 with a linear head over its unit-length mean pooling (as a run pools SST-2)
is fine-tuned on the other folds' noisy labels by a plain loop standing in for the unfrozen stage
(AdamW, learning rate 1e-4 decaying linearly to 0, batch 32, every layer, fp32), then predicts its
fold. The same confident learning as the pipeline's review
(``finetune_core.evaluation.label_review.confident_learning``) flags rows; reported: precision and
recall at the flagged count, precision at recall 0.6 ranking rows by the out-of-fold probability of
their given label, and the folds' accuracy against the true labels. Writes
bench/results/label-review/label-review-finetuned.json (``--out`` another name).

``--train-on truth``: a ceiling, not a method. The folds are fine-tuned on the other folds' *true* labels and
still judge the noisy given labels of their own fold: a review that knew every other row's true label. How well
that ranks the flips bounds what any review built on this backbone and recipe can expect.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.label_review import DATASETS, _read, flip, precision_at_recall, precision_recall
from bench.machine import machine
from bench.paths import SHARED_DATA, invocation, results_file
from finetune_core.evaluation.label_review import confident_learning, softmax

BATCH, LEARNING_RATE, MAX_LENGTH = 32, 1e-4, 64


class _Classifier:
    """The backbone, unit-length mean pooling scaled by 10 (the frozen head's input scale), a linear head."""

    def __init__(self, backbone: str, seed: int):
        import torch
        from transformers import AutoModel

        torch.manual_seed(seed)
        self.encoder = AutoModel.from_pretrained(backbone)
        self.head = torch.nn.Linear(self.encoder.config.hidden_size, 2)
        self.parameters = [*self.encoder.parameters(), *self.head.parameters()]

    def __call__(self, batch):
        import torch

        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        return self.head(10 * pooled)


def batches_of(tokenizer, texts):
    """``rows -> tensors``: the rows' texts tokenised as the loop feeds them."""

    def batch(rows):
        return tokenizer(
            [texts[r] for r in rows], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt"
        )

    return batch


def fine_tune(model: _Classifier, batch, labels, train_rows, epochs: int, seed: int, on_batch=None) -> None:
    """The plain loop standing in for the unfrozen stage; ``on_batch(epoch, rows, logits)`` hears each
    training batch before its step. Leaves the model in eval mode."""
    import torch

    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters, lr=LEARNING_RATE, weight_decay=0.01)
    steps = epochs * -(-len(train_rows) // BATCH)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    model.encoder.train()
    for epoch in range(epochs):
        order = rng.permutation(train_rows)
        for start in range(0, len(order), BATCH):
            rows = order[start : start + BATCH]
            logits = model(batch(rows))
            if on_batch is not None:
                on_batch(epoch, rows, logits)
            loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels[rows]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.encoder.eval()


def fold_logits(backbone, tokenizer, texts, labels, train_rows, test_rows, epochs, seed) -> np.ndarray:
    import torch

    batch, model = batches_of(tokenizer, texts), _Classifier(backbone, seed)
    fine_tune(model, batch, labels, train_rows, epochs, seed)
    with torch.no_grad():
        return np.concatenate([model(batch(test_rows[s : s + 64])).numpy() for s in range(0, len(test_rows), 64)])


def one_seed(backbone, texts, truth, seed: int, folds: int, epochs: int, train_on: str = "noisy") -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(backbone)
    noisy = flip(truth, "random", 0.10, np.full((len(truth), 2), 0.5), seed)
    flipped = np.flatnonzero(noisy != truth)
    taught = truth if train_on == "truth" else noisy
    assignment = np.random.default_rng(seed).permutation(len(texts)) % folds
    logits, started = np.zeros((len(texts), 2), dtype=np.float32), time.perf_counter()
    for fold in range(folds):
        held_out = np.flatnonzero(assignment == fold)
        trained = np.flatnonzero(assignment != fold)
        logits[held_out] = fold_logits(backbone, tokenizer, texts, taught, trained, held_out, epochs, 10 * seed + fold)
    probabilities = softmax(logits)
    flagged = np.flatnonzero(confident_learning(noisy, probabilities)[0])
    return {
        "seed": seed,
        **precision_recall(flagged, flipped),
        "precision_at_recall_0.6": precision_at_recall(probabilities, noisy, flipped, 0.6),
        "fold_accuracy_vs_truth": float((logits.argmax(axis=1) == truth).mean()),
        "seconds": time.perf_counter() - started,
    }


def table_of(runs: list[dict]) -> list[dict]:
    """One row per seed and their mean, as the page shows them (seconds left out: the load varied)."""
    keys = ["flagged", "precision", "recall", "precision_at_recall_0.6", "fold_accuracy_vs_truth"]
    rows = [{"seed": str(run["seed"]), **{key: run[key] for key in keys}} for run in runs]
    return rows + [{"seed": "mean", **{key: float(np.mean([run[key] for run in runs])) for key in keys}}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-on", choices=["noisy", "truth"], default="noisy")
    parser.add_argument("--out", default="label-review-finetuned.json")
    args = parser.parse_args()
    from finetune_core.model.backbone import resolve_backbone

    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    train = _read(SHARED_DATA / DATASETS["sst2"]["files"][0])
    train = train.sample(n=min(args.rows, len(train)), random_state=0)
    texts, truth = train[DATASETS["sst2"]["text"]].astype(str).tolist(), train["label"].to_numpy()
    runs = [one_seed(backbone, texts, truth, seed, args.folds, args.epochs, args.train_on) for seed in args.seeds]
    payload = {
        "command": invocation("bench.label_review_finetuned"),
        "machine": machine(),
        "rows": args.rows,
        "folds": args.folds,
        "epochs": args.epochs,
        "train_on": args.train_on,
        "table": table_of(runs),
        "runs": runs,
    }
    out = results_file("label-review", args.out)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(runs, indent=2), f"\nwrote {out}")


if __name__ == "__main__":
    main()
