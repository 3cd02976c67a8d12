from pathlib import Path

import pytest
import yaml

from finetune_core.config.loading import apply_overrides, flatten, load_config, validate_config
from finetune_core.errors import ConfigError

MINIMAL = {"data": {"train": "train.csv", "test": "test.csv"}}


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_defaults_fill_every_section(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.task == "classification"
    assert config.backbone.candidates == ["bundled:all-MiniLM-L6-v2"]
    assert (
        config.training.frozen.epochs > 0
        and config.training.unfrozen.learning_rate < config.training.frozen.learning_rate
    )
    assert config.mlflow.tracking_uri is None  # resolved at the flow: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db


def test_relative_data_paths_resolve_against_the_config_file(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.data.train == (tmp_path / "train.csv").resolve()


def test_unknown_key_is_named_with_its_dotted_path(tmp_path):
    raw = {**MINIMAL, "training": {"frozen": {"epochz": 3, "learning_rate": 0.01}}}
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, raw))
    assert "training.frozen.epochz: unknown key" in str(error.value)


@pytest.mark.parametrize(
    "override, field",
    [
        ("training.batch_size=0", "training.batch_size"),
        ("task=ranking", "task"),
        ("data.validation_fraction=1.5", "data.validation_fraction"),
        ("training.unfrozen.learning_rate=-1", "training.unfrozen.learning_rate"),
        ("backbone.candidates=[]", "backbone.candidates"),
    ],
)
def test_bad_values_name_the_field(tmp_path, override, field):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, MINIMAL), [override])
    assert f"{field}:" in str(error.value)


def test_missing_required_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data: Field required"):
        load_config(write(tmp_path, {"task": "regression"}))


def test_overrides_are_typed_and_nested(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        [
            "training.batch_size=8",
            "training.frozen.learning_rate=3e-3",
            "task=regression",
            "backbone.candidates=[a/b, ./c]",
        ],
    )
    assert config.training.batch_size == 8
    assert config.training.frozen.learning_rate == pytest.approx(3e-3)
    assert config.task == "regression"
    assert config.backbone.candidates == ["a/b", "./c"]


def test_override_syntax_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(write(tmp_path, MINIMAL), ["training.batch_size"])
    with pytest.raises(ConfigError, match="task is not a section"):
        apply_overrides({"task": "classification"}, ["task.kind=x"])


def test_cross_field_checks(tmp_path):
    with pytest.raises(ConfigError, match="text_column and data.label_column must differ"):
        load_config(write(tmp_path, MINIMAL), ["data.label_column=sentence"])
    with pytest.raises(ConfigError, match="nothing to train"):
        load_config(write(tmp_path, MINIMAL), ["training.frozen.epochs=0", "training.unfrozen.epochs=0"])


def test_missing_or_malformed_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_flatten_and_fingerprint_are_stable():
    config = validate_config(MINIMAL)
    flat = flatten(config)
    assert flat["training.frozen.epochs"] == str(config.training.frozen.epochs)
    assert flat["backbone.candidates"] == '["bundled:all-MiniLM-L6-v2"]'
    assert config.fingerprint() == validate_config(MINIMAL).fingerprint()
    assert config.fingerprint() != validate_config({**MINIMAL, "task": "regression"}).fingerprint()


def test_a_given_temperature_needs_a_positive_value_and_classification():
    base = {"train": "a.csv", "test": "b.csv"}
    for bad in (0, -1.0):
        with pytest.raises(ConfigError, match="training.temperature"):
            validate_config({"data": base, "training": {"temperature": bad}})
    with pytest.raises(ConfigError, match="training.temperature needs task classification"):
        validate_config({"task": "regression", "data": base, "training": {"temperature": 1.5}})


def test_multilabel_refuses_to_train_on_the_rows_its_thresholds_are_tuned_on():
    base = {"train": "a.jsonl", "test": "b.jsonl"}
    with pytest.raises(ConfigError, match="data.train_on_validation: multilabel tunes its decision thresholds"):
        validate_config({"task": "multilabel", "data": {**base, "train_on_validation": True}})
    with pytest.raises(ConfigError, match="search.refit_on: multilabel tunes its decision thresholds"):
        validate_config({"task": "multilabel", "data": base, "search": {"refit_on": "train+validation"}})
    validate_config({"task": "classification", "data": base, "search": {"refit_on": "train+validation"}})
