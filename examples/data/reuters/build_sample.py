"""Rebuild the Reuters sample: `python build_sample.py ../../../../shared/data/reuters` (its JSONL files).

The ten most frequent topics of the source's train file (the classic "R10" subset) and rows whose topics all
belong to them; per topic, rarest first, up to PER_TOPIC rows that have it are drawn at random (seed 0), so
rare topics and their co-occurrences (grain, wheat, corn) are not drowned by `earn`; texts cut at 600
characters (the example reads 128 tokens)."""

import sys
from collections import Counter
from pathlib import Path

import pandas as pd

PER_TOPIC = {"train": 36, "test": 14}
TOPICS, CHARS = 10, 600

if __name__ == "__main__":
    source, here = Path(sys.argv[1]), Path(__file__).parent
    train = pd.read_json(source / "train.jsonl", lines=True)
    counts = Counter(t for labels in train["labels"] for t in labels).most_common(TOPICS)
    top = {name for name, _ in counts}
    for split, per_topic in PER_TOPIC.items():
        frame = pd.read_json(source / f"{split}.jsonl", lines=True)
        frame = frame[frame["labels"].map(lambda labels: 0 < len(labels) and set(labels) <= top)]
        frame = frame.sample(frac=1.0, random_state=0)
        chosen: list[int] = []
        for topic, _ in reversed(counts):  # rarest topic first
            rows = frame.index[[topic in labels for labels in frame["labels"]]]
            having = [i for i in rows if i not in chosen]
            chosen += having[:per_topic]
        frame = frame.loc[sorted(chosen)].sample(frac=1.0, random_state=0)
        frame = frame.assign(text=frame["text"].str.slice(0, CHARS).str.strip(), labels=frame["labels"].map(sorted))
        frame[["text", "labels"]].to_json(here / f"{split}.jsonl", orient="records", lines=True, force_ascii=False)
