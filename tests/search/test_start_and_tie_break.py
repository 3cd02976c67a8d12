"""Where a sweep starts (the configuration as given, `search.start_from_config`) and which of two trials
scored alike wins (the lower validation loss), without Prefect or MLflow."""

from __future__ import annotations

import optuna
import pytest
from transformers import BertConfig

from finetune_core.config.loading import validate_config
from finetune_core.model.embedding_and_dropout import checkpoint_dropout
from finetune_core.search.space import distributions, given_point, resolve_space
from finetune_core.search.study import TIE_BREAK, ask, best_trial, start_from
from finetune_core.search.trial import scored_epoch_loss, unset_values
from finetune_core.training.loop import StageResult

DATA = {"train": "train.csv", "test": "test.csv"}
DROPOUT = "training.unfrozen.dropout"


def config(training=None, **search):
    return validate_config({"data": DATA, "training": training or {}, "search": search})


def test_the_given_point_is_the_default_recipe_with_the_checkpoints_dropout():
    given = config()
    point = given_point(given, resolve_space(given), unset={DROPOUT: 0.1})
    assert point == {
        "training.unfrozen.learning_rate": 1e-4,
        "training.unfrozen.layer_lr_decay": 0.9,
        "training.unfrozen.epochs": 3,
        "training.unfrozen.freeze_layers": 0,
        "training.unfrozen.warmup_ratio": 0.1,
        DROPOUT: 0.1,
    }


def test_a_value_outside_its_range_or_unresolved_is_left_to_the_sampler():
    given = config(training={"unfrozen": {"learning_rate": 1e-3, "epochs": 4}})
    point = given_point(given, resolve_space(given), unset={DROPOUT: None})
    assert "training.unfrozen.learning_rate" not in point  # 1e-3 is above the space's 3e-4
    assert DROPOUT not in point and point["training.unfrozen.epochs"] == 4


@pytest.mark.parametrize(("rows_per_class", "rate"), [(8, 6e-5), (64, 2e-5)])
def test_an_unset_contrastive_rate_starts_at_what_the_stage_would_train_with(tmp_path, rows_per_class, rate):
    import pandas as pd

    from finetune_core.data.columns import LABEL
    from finetune_core.data.prepare import PreparedData

    train = tmp_path / "train.parquet"
    pd.DataFrame({LABEL: [0, 1] * rows_per_class}).to_parquet(train)
    prepared = PreparedData.model_construct(task="classification", paths={"train": str(train)})
    given = config(training={"strategy": "contrastive", "unfrozen": {"dropout": 0.05}})
    space = resolve_space(given)
    point = given_point(given, space, unset=unset_values(given, space, prepared, backbone="unused"))
    assert point["training.contrastive.learning_rate"] == rate  # by rows per class, as the stage picks it
    assert point[DROPOUT] == 0.05  # set: the checkpoint is not read


def test_a_new_study_asks_the_given_point_first_and_a_started_one_is_left_alone():
    given = config()
    space = resolve_space(given)
    point = given_point(given, space, unset={DROPOUT: 0.1})
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    assert start_from(study, point)
    first = ask(study, distributions(space))
    assert first.params == pytest.approx(point)
    study.tell(first, 0.8)
    assert not start_from(study, point)  # resumed: the first trial is not queued again
    assert ask(study, distributions(space)).params != first.params


def test_trials_tied_on_the_objective_are_told_apart_by_their_validation_loss():
    study = optuna.create_study(direction="maximize")
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for number, (value, loss) in enumerate([(0.735, 0.59), (0.70, 0.50), (0.735, 0.58), (0.735, 0.62)]):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"x": number / 10}, distributions=x, user_attrs={TIE_BREAK: loss}
            )
        )
    assert study.best_trial.number == 0  # Optuna's: the first of the tied
    assert best_trial(study).number == 2


def test_the_tie_break_is_the_loss_at_the_epoch_the_trial_is_scored_on():
    history = [{"epoch": 1, "val_loss": 0.6, "val_accuracy": 0.7}, {"epoch": 2, "val_loss": 0.5, "val_accuracy": 0.8}]
    result = StageResult(stage="unfrozen", epochs=3, train_examples=8, best_epoch=2, best_metric=0.8, history=history)
    assert scored_epoch_loss(result, "loss") == 0.5
    assert scored_epoch_loss(result, "mse") is None


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}, 0.1),
        ({"hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.2, "classifier_dropout": 0.2}, 0.2),
        ({"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0}, None),  # no one rate to name
    ],
)
def test_the_checkpoints_dropout_is_its_one_rate(tmp_path, rates, expected):
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8, **rates).save_pretrained(
        tmp_path
    )
    assert checkpoint_dropout(str(tmp_path)) == expected
