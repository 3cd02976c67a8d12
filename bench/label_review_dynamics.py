"""Label review (issue 45), before building it: does one fine-tuning's training dynamics find planted flips
with the target precision (0.7 at recall 0.6) that out-of-fold predictions miss?

    python -m bench.label_review_dynamics [--rows 2000] [--seeds 0 1 2] [--epochs 3] [--out NAME]

The area under the margin (AUM; Pleiss et al., 2020): while a model trains on noisy labels, a flipped row's
given label is learnt late, if at all, so its margin (the given label's logit less the largest other) stays low
across the epochs, where a hard clean row's rises. SST-2, the same 2,000 seeded rows and 10 % random flips as
``bench.label_review``; the plain loop of ``bench.label_review_finetuned`` (the bundled MiniLM, a linear head on
unit-length mean pooling, AdamW 1e-4 decaying to 0, every layer) trains once on all rows, no folds, recording each
row's margin in its training batch (dropout on) each epoch. Reported per number of epochs averaged: precision and
recall of the rows whose mean margin is below 0 (the model spent the training disagreeing with the label), and
precision at recall 0.6 ranking rows by it; ``final``: the same for the trained model's margins in eval mode.
Writes bench/results/label-review/label-review-dynamics.json (``--out``: another name there).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from bench.label_review import DATASETS, _read, flip, precision_at_recall_of, precision_recall
from bench.label_review_finetuned import _Classifier, batches_of, fine_tune
from bench.machine import machine
from bench.paths import SHARED_DATA, invocation, results_file


def _margins(logits, labels):
    import torch

    given = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(torch.nn.functional.one_hot(labels, logits.shape[1]).bool(), -torch.inf)
    return (given - others.max(dim=1).values).detach().numpy()


def train_recording_margins(backbone, texts, labels, epochs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(margins [epoch, row] in the training batches, the trained model's margins in eval mode)."""
    import torch
    from transformers import AutoTokenizer

    batch, model = batches_of(AutoTokenizer.from_pretrained(backbone), texts), _Classifier(backbone, seed)
    margins, targets = np.zeros((epochs, len(texts)), dtype=np.float32), torch.as_tensor(labels)

    def record(epoch, rows, logits):
        margins[epoch, rows] = _margins(logits, targets[rows])

    everything = np.arange(len(texts))
    fine_tune(model, batch, labels, everything, epochs, seed, on_batch=record)
    with torch.no_grad():
        final = [_margins(model(batch(everything[s : s + 64])), targets[s : s + 64]) for s in range(0, len(texts), 64)]
    return margins, np.concatenate(final)


def scored(name: str, scores: np.ndarray, flipped: np.ndarray) -> dict:
    return {
        "signal": name,
        **precision_recall(np.flatnonzero(scores < 0), flipped),
        "precision_at_recall_0.6": precision_at_recall_of(scores, flipped, 0.6),
    }


def one_seed(backbone, texts, truth, seed: int, epochs: int) -> dict:
    noisy = flip(truth, "random", 0.10, np.full((len(truth), 2), 0.5), seed)
    flipped = np.flatnonzero(noisy != truth)
    started = time.perf_counter()
    margins, final = train_recording_margins(backbone, texts, noisy, epochs, seed)
    signals = [scored(f"AUM, epochs 1-{e}", margins[:e].mean(axis=0), flipped) for e in range(1, epochs + 1)]
    signals.append(scored("final margin", final, flipped))
    return {"seed": seed, "signals": signals, "seconds": time.perf_counter() - started}


def table_of(runs: list[dict]) -> list[dict]:
    """Per signal, the mean over seeds."""
    keys = ["flagged", "precision", "recall", "precision_at_recall_0.6"]
    names = [s["signal"] for s in runs[0]["signals"]]
    return [
        {
            "signal": name,
            **{
                key: float(np.mean([next(s[key] for s in r["signals"] if s["signal"] == name) for r in runs]))
                for key in keys
            },
        }
        for name in names
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default="label-review-dynamics.json", help="file name in bench/results/label-review/")
    args = parser.parse_args()
    from finetune_core.model.backbone import resolve_backbone

    backbone = resolve_backbone("bundled:all-MiniLM-L6-v2")
    train = _read(SHARED_DATA / DATASETS["sst2"]["files"][0])
    train = train.sample(n=min(args.rows, len(train)), random_state=0)
    texts, truth = train[DATASETS["sst2"]["text"]].astype(str).tolist(), train["label"].to_numpy()
    runs = [one_seed(backbone, texts, truth, seed, args.epochs) for seed in args.seeds]
    payload = {
        "command": invocation("bench.label_review_dynamics"),
        "machine": machine(),
        "rows": args.rows,
        "epochs": args.epochs,
        "table": table_of(runs),
        "runs": runs,
    }
    out = results_file("label-review", args.out)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["table"], indent=2), f"\nwrote {out}")


if __name__ == "__main__":
    main()
