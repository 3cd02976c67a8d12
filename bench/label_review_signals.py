"""Label review (issue 45): would another view of the frozen features find planted flips with more
precision than the pipeline's out-of-fold linear head?

    python -m bench.label_review_signals [--datasets sst2 mrpc] [--rows 2000] [--seeds 0 1 2]

Same rows, features and 10 % random flips as ``bench.label_review``. Signals, each followed by the
same confident learning (``finetune_core.evaluation.label_review.confident_learning``):

- ``head``: the pipeline's review (5-fold out-of-fold linear head, C = 1), and with C = 0.1;
- ``knn K``: the given labels of each row's K nearest training rows (cosine), smoothed vote;
- ``head + knn K``: the mean of the two probabilities;
- ``layers``: SST-2 only, the head over mean-pooled hidden states of the last two / four / all
  seven layers (embeddings included), standardised, instead of the run's pooled output.

Precision and recall of the flagged rows at each signal's flagged count, means over seeds. Writes
bench/results/label-review/label-review-signals.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.label_review import DATASETS, _read, features, flip, precision_recall
from bench.machine import machine
from bench.paths import SHARED_DATA, invocation, results_file
from finetune_core.evaluation.label_review import confident_learning, out_of_fold_outputs, softmax

NEIGHBOURS = (10, 25, 50)


def knn_probabilities(x: np.ndarray, labels: np.ndarray, k: int, classes: int) -> np.ndarray:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    return (np.eye(classes)[labels][nearest].sum(axis=1) + 1) / (k + classes)


def layer_features(name: str, rows: int) -> dict[str, np.ndarray]:
    """Mean-pooled hidden states of every layer of the bundled MiniLM, in ``features``' row order."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from finetune_core.model.backbone import resolve_backbone

    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    tokenizer, model = AutoTokenizer.from_pretrained(backbone), AutoModel.from_pretrained(backbone).eval()
    train = _read(SHARED_DATA / DATASETS[name]["files"][0])
    texts = train.sample(n=min(rows, len(train)), random_state=0)[DATASETS[name]["text"]].astype(str).tolist()
    pooled = []
    with torch.inference_mode():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            mask = batch["attention_mask"].unsqueeze(-1).float()
            states = model(**batch, output_hidden_states=True).hidden_states
            pooled.append(torch.cat([(h * mask).sum(1) / mask.sum(1) for h in states], dim=1).numpy())
    every = np.concatenate(pooled)
    assert len(every) == len(texts)
    width = every.shape[1] // 7
    standard = (every - every.mean(0)) / (every.std(0) + 1e-6)
    return {"last two layers": standard[:, 5 * width :], "last four": standard[:, 3 * width :], "all seven": standard}


def signals(x: np.ndarray, noisy: np.ndarray, seed: int, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    def head(features: np.ndarray, c: float = 1.0) -> np.ndarray:
        return softmax(out_of_fold_outputs(features, noisy, "classification", outputs=2, regularization=c, seed=seed))

    found = {"head (the pipeline's)": head(x), "head, C = 0.1": head(x, 0.1)}
    for k in NEIGHBOURS:
        found[f"knn {k}"] = knn_probabilities(x, noisy, k, 2)
        found[f"head + knn {k}"] = (found["head (the pipeline's)"] + found[f"knn {k}"]) / 2
    found.update({f"head on {name}": head(features) for name, features in extra.items()})
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    records = []
    for name in args.datasets:
        with tempfile.TemporaryDirectory() as scratch:
            x, y, _, _ = features(name, args.rows, Path(scratch))
        x, y = np.asarray(x), np.asarray(y)
        extra = layer_features(name, args.rows) if DATASETS[name]["pair"] is None else {}
        clean = softmax(out_of_fold_outputs(x, y, "classification", outputs=2))
        for seed in args.seeds:
            noisy = flip(y, "random", 0.10, clean, seed)
            flipped = np.flatnonzero(noisy != y)
            for signal, probabilities in signals(x, noisy, seed, extra).items():
                flagged = np.flatnonzero(confident_learning(noisy, probabilities)[0])
                records.append({"dataset": name, "signal": signal, "seed": seed, **precision_recall(flagged, flipped)})
    table = pd.DataFrame(records).groupby(["dataset", "signal"], sort=False)[["flagged", "precision", "recall"]].mean()
    payload = {
        "command": invocation("bench.label_review_signals"),
        "machine": machine(),
        "rows": args.rows,
        "table": table.round(4).reset_index().to_dict(orient="records"),
        "runs": records,
    }
    out = results_file("label-review", "label-review-signals.json")
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(table.round(3).to_string(), f"\nwrote {out}")


if __name__ == "__main__":
    main()
