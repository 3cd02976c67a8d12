"""Augmentation: seeded, label-preserving, train-only, balanced on request, marked and fingerprinted."""

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from finetune_core.config.augmentation import AugmentationConfig
from finetune_core.config.loading import validate_config
from finetune_core.data.augment import (
    AUGMENTED,
    MaskedLmReplacer,
    augment_frame,
    augment_prepared,
    augment_text,
    random_deletion,
    random_swap,
)
from finetune_core.data.prepare import LABEL, TEXT, prepare_splits
from finetune_core.errors import ConfigError

SENTENCES = [f"the film number {i} was {'good' if i % 4 else 'bad'} and the acting felt honest" for i in range(40)]
TRAIN = pd.DataFrame({TEXT: SENTENCES, LABEL: [1 if i % 4 else 0 for i in range(40)]})


def test_swap_and_deletion_keep_words_and_never_empty():
    rng = np.random.default_rng(0)
    words = "one two three four five".split()
    assert sorted(random_swap(words, 0.4, rng)) == sorted(words)
    assert len(random_deletion(words, 1.0, rng)) == 1  # everything deleted: one word survives
    assert set(random_deletion(words, 0.5, rng)) <= set(words)


def test_uniform_copies_are_marked_labelled_like_their_source_and_seeded():
    config = AugmentationConfig(enabled=True, copies_per_example=2)
    first = augment_frame(TRAIN, config, seed=3)
    assert len(first) == 3 * len(TRAIN) and first[AUGMENTED].sum() == 2 * len(TRAIN)
    copies = first[first[AUGMENTED]]
    assert (copies[LABEL].to_numpy() == np.repeat(TRAIN[LABEL].to_numpy(), 2)).all()
    assert (copies[TEXT].to_numpy() != np.repeat(TRAIN[TEXT].to_numpy(), 2)).mean() > 0.95
    assert first.equals(augment_frame(TRAIN, config, seed=3))
    assert not first.equals(augment_frame(TRAIN, config, seed=4))


def test_balance_augments_minority_classes_up_to_the_majority():
    config = AugmentationConfig(enabled=True, balance=True)
    balanced = augment_frame(TRAIN, config, seed=0)
    assert Counter(balanced[LABEL]) == {0: 30, 1: 30}
    assert set(balanced[balanced[AUGMENTED]][LABEL]) == {0}


def test_no_enabled_operation_is_a_config_error():
    config = AugmentationConfig(enabled=True, operations={"swap": 0, "delete": 0})
    with pytest.raises(ConfigError, match="no operation is enabled"):
        augment_text("a few words here", config, np.random.default_rng(0))


def test_masked_lm_replacement_is_contextual_and_seeded(tmp_path):
    from tests.tiny_models import build_tiny_masked_lm

    model = build_tiny_masked_lm(tmp_path / "mlm", SENTENCES)
    replacer = MaskedLmReplacer(str(model), top_k=5)
    config = AugmentationConfig(
        enabled=True,
        synonyms="masked-lm",
        masked_lm=str(model),
        operations={"swap": 0, "delete": 0, "synonym": 0.3, "insert": 0.2},
    )
    texts = [augment_text(SENTENCES[1], config, np.random.default_rng(seed), replacer) for seed in range(6)]
    assert texts == [augment_text(SENTENCES[1], config, np.random.default_rng(s), replacer) for s in range(6)]
    changed = [t for t in texts if t != SENTENCES[1]]
    assert changed and all(t.replace(" ", "").isalnum() for t in changed)


def test_augmentation_touches_only_train_and_changes_the_fingerprint(tmp_path):
    path = tmp_path / "train.csv"
    TRAIN.rename(columns={TEXT: "sentence"}).to_csv(path, index=False)
    config = validate_config(
        {"data": {"train": str(path), "test": str(path)}, "augmentation": {"enabled": True, "copies_per_example": 1}}
    )
    prepared = prepare_splits(config, tmp_path / "data")
    augmented, counts = augment_prepared(config, prepared)
    for split in ("validation", "test"):
        assert augmented.paths[split] == prepared.paths[split]
        assert augmented.frame(split).equals(prepared.frame(split))
    assert augmented.rows["train"] == 2 * prepared.rows["train"] and counts["added"] == prepared.rows["train"]
    assert counts["after"] == {k: 2 * v for k, v in counts["before"].items()}
    assert augmented.fingerprint != prepared.fingerprint
    assert augmented.fingerprint == augment_prepared(config, prepared)[0].fingerprint
    assert prepared.frame("train").equals(pd.read_parquet(prepared.paths["train"]))  # the original is kept


def test_balance_needs_classification():
    with pytest.raises(ConfigError, match="augmentation.balance needs task classification"):
        validate_config(
            {"task": "regression", "data": {"train": "a.csv", "test": "b.csv"}, "augmentation": {"balance": True}}
        )
