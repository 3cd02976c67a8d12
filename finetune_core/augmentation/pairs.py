"""Swapped sentence pairs: for a symmetric relation (paraphrase, similarity), (b, a) is as labelled as
(a, b), so every training pair is added again with its texts swapped (``augmentation.swap_pairs``)."""

from __future__ import annotations

import pandas as pd

from finetune_core.data.columns import AUGMENTED, TEXT, TEXT_PAIR
from finetune_core.data.copies import as_originals


def with_swapped_pairs(train: pd.DataFrame) -> pd.DataFrame:
    """``train`` and, after it, each of its rows with ``TEXT`` and ``TEXT_PAIR`` exchanged (marked augmented;
    ``source_row``: the row it was made from, an EDA copy's own source where EDA ran first)."""
    train = as_originals(train)
    swapped = train.rename(columns={TEXT: TEXT_PAIR, TEXT_PAIR: TEXT})[train.columns]
    return pd.concat([train, swapped.assign(**{AUGMENTED: True})], ignore_index=True)
