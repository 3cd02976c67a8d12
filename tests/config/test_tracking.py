"""One tracking-URI resolver for every entry point: explicit → MLFLOW_TRACKING_URI → sqlite:///mlflow.db;
resolving never changes the configuration's fingerprint."""

import pytest

from finetune_core.config.loading import apply_overrides, validate_config
from finetune_core.config.tracking import DEFAULT_TRACKING_URI, resolve_tracking_uri, with_resolved_tracking

MINIMAL = {"data": {"train": "train.csv", "test": "test.csv"}}
SERVER = "http://mlflow.example:5000"


@pytest.mark.parametrize(
    ("explicit", "environ", "expected"),
    [
        ("sqlite:///explicit.db", {"MLFLOW_TRACKING_URI": SERVER}, "sqlite:///explicit.db"),
        (None, {"MLFLOW_TRACKING_URI": SERVER}, SERVER),
        (None, {"MLFLOW_TRACKING_URI": "  "}, DEFAULT_TRACKING_URI),  # blank counts as unset
        (None, {}, DEFAULT_TRACKING_URI),
        ("", {"MLFLOW_TRACKING_URI": SERVER}, SERVER),
    ],
)
def test_explicit_then_environment_then_local_sqlite(explicit, environ, expected):
    assert resolve_tracking_uri(explicit, environ) == expected


def test_the_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", SERVER)
    assert resolve_tracking_uri(None) == SERVER
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None) == "sqlite:///mlflow.db"


def test_the_config_leaves_the_store_unset_so_the_environment_can_choose():
    config = validate_config(MINIMAL)
    assert config.mlflow.tracking_uri is None
    assert with_resolved_tracking(config, {"MLFLOW_TRACKING_URI": SERVER}).mlflow.tracking_uri == SERVER
    overridden = validate_config(apply_overrides(MINIMAL, ["mlflow.tracking_uri=sqlite:///set.db"]))
    assert with_resolved_tracking(overridden, {"MLFLOW_TRACKING_URI": SERVER}).mlflow.tracking_uri == "sqlite:///set.db"


def test_the_store_is_not_part_of_the_fingerprint():
    unset = validate_config(MINIMAL)
    elsewhere = validate_config({**MINIMAL, "mlflow": {"tracking_uri": SERVER}})
    assert unset.fingerprint() == elsewhere.fingerprint()
    assert with_resolved_tracking(unset, {}).fingerprint() == unset.fingerprint()
    assert validate_config({**MINIMAL, "mlflow": {"experiment": "other"}}).fingerprint() != unset.fingerprint()
