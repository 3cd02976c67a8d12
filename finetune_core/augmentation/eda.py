"""Label-preserving augmentation of the training split: EDA (Wei & Zou 2019).

Each augmented copy gets one operation, drawn among those enabled: random swap, random
deletion, and (with a replacement source) synonym replacement and random insertion. No
offline synonym dictionary ships in a package we can install here (NLTK's WordNet is a
separate download), so replacements come from a masked language model in context: mask the
word (or a gap) and draw among the model's top predictions that are whole words, decoded
through its tokenizer (WordPiece, byte-level BPE and SentencePiece vocabularies alike).
Everything is seeded; validation and test are never touched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.augmentation.masked_lm import MaskedLmReplacer
from finetune_core.augmentation.pairs import with_swapped_pairs
from finetune_core.config.augmentation import AugmentationConfig
from finetune_core.config.finetune import FinetuneConfig
from finetune_core.data.columns import AUGMENTED
from finetune_core.data.copies import as_originals
from finetune_core.data.fingerprint import files_fingerprint
from finetune_core.data.prepare import LABEL, TEXT, PreparedData
from finetune_core.errors import ConfigError

# EDA leaves stop words alone when replacing: swapping "the" for "a" adds nothing.
STOP_WORDS = frozenset(
    "a an the and or but if of at by for with about to from in on is are was were be been being it its this that "
    "these those i me my we our you your he him his she her they them their what which who whom as so than too very "
    "s t can will just do does did has have had not no nor".split()
)


def random_swap(words: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    words = list(words)
    for _ in range(max(1, round(rate * len(words)))):
        i, j = rng.integers(len(words), size=2)
        words[i], words[j] = words[j], words[i]
    return words


def random_deletion(words: list[str], rate: float, rng: np.random.Generator) -> list[str]:
    kept = [w for w in words if rng.random() >= rate]
    return kept or [words[int(rng.integers(len(words)))]]


def synonym_replacement(words, rate, rng, replacer: MaskedLmReplacer) -> list[str]:
    """Replace a share of the non-stop words, each predicted with the others as its context."""
    words = list(words)
    positions = [i for i, w in enumerate(words) if w.lower() not in STOP_WORDS]
    rng.shuffle(positions)
    chosen = positions[: max(1, round(rate * len(words)))]
    variants = [words[:i] + [replacer.mask] + words[i + 1 :] for i in chosen]
    replacements = [replacer.pick(options, rng, words[i]) for i, options in zip(chosen, replacer.candidates(variants))]
    for i, word in zip(chosen, replacements):
        words[i] = word or words[i]
    return words


def random_insertion(words, rate, rng, replacer: MaskedLmReplacer) -> list[str]:
    """Insert predicted words into gaps of the original text (from the last gap back, so the
    earlier gaps keep their positions)."""
    words = list(words)
    gaps = [int(rng.integers(len(words) + 1)) for _ in range(max(1, round(rate * len(words))))]
    variants = [words[:g] + [replacer.mask] + words[g:] for g in gaps]
    inserted = [replacer.pick(options, rng) for options in replacer.candidates(variants)]
    for gap, word in sorted(zip(gaps, inserted), key=lambda pair: pair[0], reverse=True):
        if word is not None:
            words.insert(gap, word)
    return words


def augment_text(text: str, config: AugmentationConfig, rng: np.random.Generator, replacer=None) -> str:
    """One augmented copy of ``text`` by one EDA operation drawn among the enabled ones."""
    words = text.split()
    if len(words) < 2:
        return text
    rates = config.operations
    operations = [(name, rate) for name, rate in (("swap", rates.swap), ("delete", rates.delete)) if rate > 0]
    if replacer is not None:
        operations += [
            (name, rate) for name, rate in (("synonym", rates.synonym), ("insert", rates.insert)) if rate > 0
        ]
    if not operations:
        raise ConfigError("augmentation: no operation is enabled (all rates are 0, or synonym/insert without a source)")
    for _ in range(5):  # a copy equal to its source teaches nothing: draw again (seeded all the same)
        name, rate = operations[int(rng.integers(len(operations)))]
        if name == "swap":
            changed = random_swap(words, rate, rng)
        elif name == "delete":
            changed = random_deletion(words, rate, rng)
        elif name == "synonym":
            changed = synonym_replacement(words, rate, rng, replacer)
        else:
            changed = random_insertion(words, rate, rng, replacer)
        if changed != words:
            break
    return " ".join(changed)


def _sources(train: pd.DataFrame, config: AugmentationConfig, rng: np.random.Generator) -> np.ndarray:
    """Row indexes to augment, one entry per new row."""
    if not config.balance:
        return np.repeat(np.arange(len(train)), config.copies_per_example)
    counts = train[LABEL].value_counts()
    picks = []
    for label in sorted(counts.index):
        need = int(counts.max() - counts[label])
        if need:  # cycle through the class in a seeded order: every row is used before any twice
            rows = np.flatnonzero(train[LABEL].to_numpy() == label)
            picks.append(np.resize(rng.permutation(rows), need))
    return np.concatenate(picks) if picks else np.array([], dtype=int)


def augment_frame(train: pd.DataFrame, config: AugmentationConfig, seed: int, replacer=None) -> pd.DataFrame:
    """The training rows plus augmented copies (column ``augmented`` marks them; ``source_row`` names
    the row each was made from)."""
    rng = np.random.default_rng(seed)
    train = as_originals(train)
    sources = _sources(train, config, rng)
    copies = train.iloc[sources].copy()
    copies[TEXT] = [augment_text(str(t), config, rng, replacer) for t in copies[TEXT]]
    return pd.concat([train, copies.assign(**{AUGMENTED: True})], ignore_index=True)


def class_counts(frame: pd.DataFrame, labels: list[str] | None) -> dict[str, int]:
    if labels is None:  # regression: no classes to count
        return {"rows": len(frame)}
    counts = frame[LABEL].value_counts().sort_index()
    return {labels[int(k)]: int(v) for k, v in counts.items()}


def augment_prepared(config: FinetuneConfig, prepared: PreparedData) -> tuple[PreparedData, dict]:
    """Augment the prepared training split; returns the new data reference and class counts."""
    settings = config.augmentation
    seed = settings.seed if settings.seed is not None else config.training.seed
    train = augmented = prepared.frame("train")
    if settings.enabled:  # swap_pairs alone loads no masked LM
        replacer = MaskedLmReplacer(settings.masked_lm) if settings.synonyms == "masked-lm" else None
        augmented = augment_frame(train, settings, seed, replacer)
    if settings.swap_pairs:
        augmented = with_swapped_pairs(augmented)
    path = Path(prepared.paths["train"]).with_name("train_augmented.parquet")
    augmented.to_parquet(path, index=False)
    paths = {**prepared.paths, "train": str(path)}
    counts = {
        "before": class_counts(train, prepared.labels),
        "after": class_counts(augmented, prepared.labels),
        "added": int(augmented[AUGMENTED].sum()),
    }
    result = prepared.model_copy(
        update={
            "paths": paths,
            "rows": {**prepared.rows, "train": len(augmented)},
            # the splits streamed from their files: validation and test are never loaded whole
            "fingerprint": files_fingerprint(paths),
        }
    )
    return result, counts
