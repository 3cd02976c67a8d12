"""`strategy: auto` and the small-validation rule: pure decisions, and their effect on a config."""

import pytest

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import MIN_VALIDATION_ROWS_PER_CLASS, prepare_splits
from finetune_core.training.recipe import (
    CONTRASTIVE_UP_TO_ROWS_PER_CLASS,
    UNFROZEN_AFTER_CONTRASTIVE,
    choose_strategy,
    resolve,
    validation_plan,
)
from tests.datasets import easy_sentiment


@pytest.mark.parametrize(
    ("rows", "task", "minutes", "strategy"),
    [
        (8, "classification", None, "contrastive"),  # 8 per class, all rows train (bench/fewshot.py)
        (16, "classification", None, "contrastive"),  # 16 per class
        (57.5, "classification", None, "contrastive"),  # 64 per class, 10 % held out for validation
        (CONTRASTIVE_UP_TO_ROWS_PER_CLASS, "classification", None, "contrastive"),
        (CONTRASTIVE_UP_TO_ROWS_PER_CLASS + 1, "classification", None, "lp-ft"),  # not measured: lp-ft stays
        (900, "classification", None, "lp-ft"),  # the demo: examples/sst2.yaml keeps its recipe
        (8, "regression", None, "lp-ft"),  # no classes to pair
        (900, "classification", 0.5, "linear-probe"),  # too short a budget to move the encoder
        (8, "classification", 30, "contrastive"),  # its pairs take seconds at this size
    ],
)
def test_choose_strategy(rows, task, minutes, strategy):
    chosen, reason = choose_strategy(rows, task, minutes)
    assert chosen == strategy and reason


def test_validation_plan_skips_on_too_few_rows_per_class():
    assert validation_plan({"neg": 40, "pos": 41}) == "used"
    assert validation_plan({}) == "used"  # regression
    assert validation_plan({"neg": MIN_VALIDATION_ROWS_PER_CLASS, "pos": 9}) == "used"
    assert validation_plan({"neg": 1, "pos": 2}) == "skipped: 1 rows per class"
    assert validation_plan({"neg": 1, "pos": 2}, in_train=True) == "skipped: 1 rows per class; they train too"


def test_a_tiny_validation_file_given_is_kept_out_of_train(tmp_path):
    config = _config(tmp_path, 18)
    easy_sentiment(2, 2).to_csv(tmp_path / "validation.csv", index=False)
    config = config.model_copy(
        update={"data": config.data.model_copy(update={"validation": str(tmp_path / "validation.csv")})}
    )
    prepared = prepare_splits(config, tmp_path / "data")
    _, recipe, _ = resolve(config, prepared)
    assert not prepared.validation_in_train and prepared.rows["train"] == 18  # the user's split stays theirs
    assert recipe.validation.startswith("skipped: ") and "train too" not in recipe.validation


def _config(tmp_path, rows, **training):
    easy_sentiment(rows, 0).to_csv(tmp_path / "train.csv", index=False)
    easy_sentiment(20, 1).to_csv(tmp_path / "test.csv", index=False)
    raw = {"data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.csv")}, "training": training}
    return validate_config(raw)


def test_auto_is_the_default_and_resolves_from_the_prepared_data(tmp_path):
    config = _config(tmp_path, 18)
    assert config.training.strategy == "auto"
    prepared = prepare_splits(config, tmp_path / "data")
    resolved, recipe, _ = resolve(config, prepared)
    assert resolved.training.strategy == recipe.strategy == "contrastive"
    # 2 validation rows (1 per class) are too few to decide anything: they stay in train, 9 per class
    assert prepared.validation_in_train and prepared.rows == {"train": 18, "validation": 2, "test": 20}
    assert "9 training rows per class" in recipe.reason and "bench/fewshot.py" in recipe.reason
    expected_unfrozen = config.training.unfrozen.epochs if UNFROZEN_AFTER_CONTRASTIVE else 0
    assert resolved.training.unfrozen.epochs == expected_unfrozen
    assert recipe.validation == "skipped: 1 rows per class; they train too"
    assert not resolved.training.keep_best and not resolved.training.calibrate
    assert resolved.training.early_stopping_patience is None
    assert config.training.keep_best and config.training.strategy == "auto"  # the input is not changed


def test_enough_rows_keep_lp_ft_and_validation(tmp_path):
    config = _config(tmp_path, 240)  # as tests/training/test_training.py
    prepared = prepare_splits(config, tmp_path / "data")
    resolved, recipe, _ = resolve(config, prepared)
    assert recipe.strategy == "lp-ft" and recipe.validation == "used"
    assert not prepared.validation_in_train and prepared.rows["train"] + prepared.rows["validation"] == 240
    assert resolved.training.keep_best and resolved.training.calibrate


def test_an_explicit_contrastive_keeps_its_configured_stages(tmp_path):
    config = _config(tmp_path, 18, strategy="contrastive")
    resolved, recipe, _ = resolve(config, prepare_splits(config, tmp_path / "data"))
    assert recipe.strategy == "contrastive" and recipe.reason == "set in the configuration"
    assert resolved.training.unfrozen.epochs == config.training.unfrozen.epochs == 3


def test_an_explicit_strategy_is_kept(tmp_path):
    config = _config(tmp_path, 18, strategy="linear-probe")
    resolved, recipe, _ = resolve(config, prepare_splits(config, tmp_path / "data"))
    assert resolved.training.strategy == "linear-probe" and recipe.reason == "set in the configuration"


def test_auto_contrastive_folds_held_out_validation_into_train(tmp_path):
    """64 per class: 10 % held out is 13 rows (6-7 per class), enough to be "used", but the head-only
    contrastive recipe would spend them on a temperature alone: they train, as all 128 do in SetFit."""
    config = _config(tmp_path, 128)
    prepared = prepare_splits(config, tmp_path / "data")
    assert not prepared.validation_in_train and prepared.rows["train"] == 115
    resolved, recipe, folded = resolve(config, prepared)
    assert recipe.strategy == "contrastive" and recipe.validation.endswith("they train too")
    assert folded.validation_in_train and folded.rows["train"] == 128 and folded.rows["validation"] == 13
    assert folded.fingerprint != prepared.fingerprint and folded.paths["validation"] == prepared.paths["validation"]
    train, validation = folded.frame("train"), folded.frame("validation")
    assert train.iloc[115:].reset_index(drop=True).equals(validation)  # the held-out rows, appended
    assert not resolved.training.keep_best and not resolved.training.calibrate
    # an explicit strategy keeps the split (its unfrozen stage picks epochs on it)
    explicit = config.model_copy(update={"training": config.training.model_copy(update={"strategy": "contrastive"})})
    assert resolve(explicit, prepared)[2] is prepared


def test_train_on_validation_folds_the_held_out_rows_and_uses_no_validation(tmp_path):
    """A sweep's winner under `search.refit_on: train+validation`: the split chose the trial; now it trains."""
    from finetune_core.data.folding import train_on_validation

    config = _config(tmp_path, 240)
    prepared = prepare_splits(config, tmp_path / "data")
    assert train_on_validation(config, prepared) is prepared  # not asked
    asked = config.model_copy(update={"data": config.data.model_copy(update={"train_on_validation": True})})
    folded = train_on_validation(asked, prepared)
    assert folded.validation_in_train and folded.rows["train"] == 240 and folded.rows["validation"] == 24
    resolved, recipe, same = resolve(asked, folded)
    assert same is folded and recipe.strategy == "lp-ft"
    assert recipe.validation == "skipped: data.train_on_validation: all 240 rows train"
    assert not resolved.training.keep_best and not resolved.training.calibrate
    assert train_on_validation(asked, folded) is folded  # folded once
