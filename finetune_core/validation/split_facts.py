"""Whole-split facts that validation needs before it can look at one chunk alone.

A duplicate, a leaked test text or a class share is a fact about all rows, not about the
chunk a row happens to sit in. One streaming pass per split gathers them, keeping per-row
numbers only (a 64-bit hash of each normalised text, one flag per row), never the texts:

- ``duplicate``: the row's normalised text repeats an earlier row's. Decided on the 64-bit
  hashes (a false "repeat" needs two different texts with the same hash: probability about
  rows² / 2⁶⁵, ~1e-6 at 6.7 million rows).
- ``leaked``: normalised train texts that also occur in a validation or test split — exact:
  train texts whose hash matches an evaluation text's are kept as strings and compared.
- ``label_counts``: the exact label set and class counts of train.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finetune_core.data.chunks import Chunks, release_free_memory

# Python's str.split() whitespace (str.isspace), as an RE2 class
_WHITESPACE = "[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f\\x85\\p{Z}]+"


def normalise(texts: pd.Series) -> pd.Series:
    """Case- and whitespace-insensitive form of a text (lower case, runs of whitespace as one
    space, trimmed; missing as ""), for duplicate and leakage checks. Computed in Arrow: as
    ``" ".join(text.lower().split())`` but without a Python object per word, which over
    millions of rows left hundreds of MB of fragmented heap behind."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        keys = pa.array(texts, from_pandas=True).cast(pa.string())  # a text column: no Python objects
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # mixed values: as text
        keys = pa.array(texts.map(as_written).astype(object), type=pa.string())
    keys = pc.fill_null(keys, "")
    keys = pc.utf8_trim(pc.replace_substring_regex(pc.utf8_lower(keys), _WHITESPACE, " "), " ")
    return pd.Series(keys, index=texts.index, dtype=pd.ArrowDtype(pa.string()))


PAIR_SEPARATOR = "\x1f"  # joins a pair's two normalised texts (normalise() turns \x1f in a text into a space)


def row_keys(chunk: pd.DataFrame, texts: list[str]) -> pd.Series:
    """Each row's normalised text; for sentence pairs (two ``texts``), both texts joined: a
    duplicate or a leaked row is the same *pair* (the same first text with another second text is
    a different row). Blank ("") when the first text is blank."""
    keys = normalise(chunk[texts[0]])
    joined = keys
    for column in [c for c in texts[1:] if c in chunk]:
        joined = joined + PAIR_SEPARATOR + normalise(chunk[column])
    return joined.where(keys != "", "")


def text_hashes(keys: pd.Series) -> np.ndarray:
    return pd.util.hash_pandas_object(keys, index=False).to_numpy()


def as_written(value) -> str | None:
    """A value as validation reports it (str of what the file holds, unlike ``data.label_text``,
    which reads 1.0 as "1"); None when missing."""
    return None if value is None or pd.isna(value) else str(value)


@dataclass
class SplitFacts:
    rows: int = 0
    has_text: bool = False  # the split has the text column
    duplicate: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per row
    label_counts: Counter = field(default_factory=Counter)  # classification: label text -> rows

    def class_shares(self) -> dict[str, float]:
        total = sum(self.label_counts.values())
        return {label: count / total for label, count in self.label_counts.items()} if total else {}


def _hash_pass(chunks: Chunks, texts: list[str], label: str | None, facts: SplitFacts, on_chunk=None) -> None:
    """Row count, duplicate flags and (``label``) label counts of one split, in one pass."""
    hashes, blanks = [], []
    for chunk in chunks():
        facts.rows += len(chunk)
        if texts[0] in chunk:
            facts.has_text = True
            keys = row_keys(chunk, texts)
            hashes.append(text_hashes(keys))
            blanks.append((keys == "").to_numpy())
            if on_chunk is not None:
                on_chunk(keys, hashes[-1])
        if label is not None and label in chunk:
            facts.label_counts.update(chunk[label].dropna().map(as_written))
    if hashes:
        facts.duplicate = repeats_earlier(np.concatenate(hashes), np.concatenate(blanks))
        del hashes, blanks
        release_free_memory()


def repeats_earlier(hashes: np.ndarray, blank: np.ndarray) -> np.ndarray:
    """Per row: its hash occurred in an earlier row (blank rows never count). A stable sort
    keeps equal hashes in row order, so all but the first of each run are repeats; about 24
    bytes per row at the peak."""
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeat = np.zeros(len(hashes), dtype=bool)
    repeat[order[1:][ordered[1:] == ordered[:-1]]] = True
    return repeat & ~blank


def gather(
    splits: dict[str, Chunks], texts: list[str], label: str, task: str
) -> tuple[dict[str, SplitFacts], set[str]]:
    """(facts per split, normalised train texts also in an evaluation split); ``texts``: the text
    columns (two for sentence pairs, whose facts are about the pair: ``row_keys``)."""
    facts = {split: SplitFacts() for split in splits}
    evaluation_hashes: list[np.ndarray] = []

    def keep_hashes(keys, hashes):
        evaluation_hashes.append(hashes[(keys != "").to_numpy()])

    for split, chunks in splits.items():
        if split != "train":
            _hash_pass(chunks, texts, None, facts[split], keep_hashes)
    wanted = np.unique(np.concatenate(evaluation_hashes)) if evaluation_hashes else np.zeros(0, dtype=np.uint64)
    leaked: set[str] = set()

    def keep_candidates(keys, hashes):  # train texts that may be evaluation texts: compared exactly later
        leaked.update(keys[np.isin(hashes, wanted) & (keys != "").to_numpy()])

    if "train" in splits:
        _hash_pass(
            splits["train"],
            texts,
            label if task == "classification" else None,
            facts["train"],
            keep_candidates if len(wanted) else None,
        )
    return facts, leaked
