"""Small synthetic datasets for tests: an easy sentiment task a tiny model learns in a few epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd

POSITIVE, NEGATIVE = ["great", "good", "wonderful", "best"], ["bad", "awful", "boring", "worst"]
FILLER = ["the", "movie", "film", "story", "was", "a", "and", "of", "it", "is"]


def easy_sentiment(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(FILLER, size=5)) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"sentence": " ".join(words), "label": label})
    return pd.DataFrame(rows)
