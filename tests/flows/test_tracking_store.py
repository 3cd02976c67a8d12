"""The flow records where the environment says when the configuration does not: a run with only
MLFLOW_TRACKING_URI set lands in that store (not in ./mlflow.db), and a resumed run must find
the store it started in."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.errors import ConfigError
from finetune_core.model.backbone import backbone_identity
from finetune_core.redaction import redact_uri, store_digest
from tests.conftest import tiny_config


def env_only_config(tiny_backbone, sst2_small, tmp_path):
    raw = tiny_config(tiny_backbone, sst2_small, "unused", tmp_path)
    del raw["mlflow"]  # no mlflow section at all: the default configuration
    return validate_config(raw)


def test_a_run_with_only_the_environment_variable_lands_in_that_store(
    prefect_server, tiny_backbone, sst2_small, tmp_path, monkeypatch
):
    from flows.finetune import finetune

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'elsewhere' / 'env.db'}"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    config = env_only_config(tiny_backbone, sst2_small, tmp_path)

    result = finetune(config)

    assert result.tracking_uri == store
    assert not (tmp_path / "mlflow.db").exists()  # the default store was never created
    client = MlflowClient(store)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.params["mlflow.tracking_uri"] == store
    assert run.data.tags["config_hash"] == config.fingerprint()  # the store is not part of the hash
    (version,) = client.search_model_versions("name = 'finetune-model'")
    assert str(version.version) == "1"
    # the backbone as the configuration names it, with a hash of its weights; the path is a detail
    identity = backbone_identity(str(tiny_backbone), str(tiny_backbone))
    assert version.tags["backbone"] == str(tiny_backbone) == run.data.tags["backbone"]
    assert version.tags["backbone_sha256"] == identity.weights_sha256 == run.data.tags["backbone_sha256"]
    assert version.tags["backbone_path"] == str(tiny_backbone.resolve())
    assert identity.describe() in version.description
    record = json.loads((tmp_path / "runs").glob("*/run.json").__next__().read_text())
    assert record["tracking_store"] == store_digest(store) and "tracking_uri" not in record


def test_resuming_against_another_store_is_refused_naming_both(tiny_backbone, sst2_small, tmp_path, monkeypatch):
    from finetune_core.config.tracking import with_resolved_tracking
    from finetune_core.run_layout import RunLayout
    from flows.finetune import _resumed_run

    config = env_only_config(tiny_backbone, sst2_small, tmp_path)
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    started_in = "sqlite:////srv/mlflow/mlflow.db"
    layout.record.write_text(
        json.dumps({"config_hash": config.fingerprint(), "mlflow_run_id": "abc", "tracking_uri": started_in})
    )
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        ConfigError, match=r"tracked in sqlite:////srv/mlflow/mlflow.db.*resolves to sqlite:///mlflow.db"
    ):
        _resumed_run(with_resolved_tracking(config), str(layout.root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", started_in)
    assert _resumed_run(with_resolved_tracking(config), str(layout.root))[1] == "abc"


def test_the_run_record_keeps_a_digest_of_the_store_and_shows_it_redacted(tiny_backbone, sst2_small, tmp_path):
    from finetune_core.config.tracking import with_resolved_tracking
    from finetune_core.run_layout import RunLayout, write_record
    from flows.finetune import _resumed_run

    started_in = "postgresql://alice:Pa55-w0rd@db:5432/mlflow"
    config = env_only_config(tiny_backbone, sst2_small, tmp_path)
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    write_record(
        layout,
        config_hash=config.fingerprint(),
        mlflow_run_id="abc",
        tracking_store=store_digest(started_in),
        tracking_store_shown=redact_uri(started_in),
    )
    elsewhere = {"MLFLOW_TRACKING_URI": "postgresql://alice:another@db:5432/mlflow"}
    with pytest.raises(ConfigError, match=r"tracked in postgresql://alice:\*\*\*@db:5432/mlflow") as raised:
        _resumed_run(with_resolved_tracking(config, elsewhere), str(layout.root))
    assert "Pa55-w0rd" not in str(raised.value) and "another" not in str(raised.value)
    resumed = with_resolved_tracking(config, {"MLFLOW_TRACKING_URI": started_in})
    assert _resumed_run(resumed, str(layout.root))[1] == "abc"
