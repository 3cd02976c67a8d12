"""Rebuild the MRPC sample: `python build_sample.py ../../../../shared/data/mrpc` (the GLUE JSONL files)."""

import sys
from pathlib import Path

import pandas as pd

ROWS = {"train": 400, "test": 200}

if __name__ == "__main__":
    source, here = Path(sys.argv[1]), Path(__file__).parent
    for split, rows in ROWS.items():
        frame = pd.read_json(source / f"{split}.jsonl", lines=True).sample(n=rows, random_state=0)
        frame[["sentence1", "sentence2", "label"]].to_csv(here / f"{split}.tsv", sep="\t", index=False, quoting=3)
