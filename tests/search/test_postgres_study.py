"""The study in the tracking store's own PostgreSQL: in an `optuna` schema, beside MLflow's tables
(both keep an `alembic_version` table), on a real server from the `pgserver` wheel."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.search.study import counts, default_storage, open_study


@pytest.fixture(scope="module")
def postgres_uri():
    import pgserver

    root = Path(tempfile.mkdtemp(prefix="finetune-postgres-"))
    server = pgserver.get_server(root / "data", cleanup_mode="stop")
    try:
        server.psql("create database mlflow;")
        socket_dir = server.get_uri().split("host=", 1)[1]
        yield f"postgresql+psycopg2://postgres@/mlflow?host={socket_dir}"
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def test_the_study_shares_the_tracking_database_in_its_own_schema(postgres_uri):
    client = MlflowClient(postgres_uri)
    experiment = client.create_experiment("sweeps")  # MLflow's tables and migrations first
    config = validate_config({"data": {"train": "a.csv", "test": "b.csv"}, "mlflow": {"tracking_uri": postgres_uri}})
    assert default_storage(config) == postgres_uri

    study = open_study(config, name="s", storage_url=postgres_uri, task="classification")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(trial, 0.5)
    again = open_study(config, name="s", storage_url=postgres_uri, task="classification")
    assert counts(again)["complete"] == 1

    engine = sqlalchemy.create_engine(postgres_uri)
    try:
        tables = sqlalchemy.inspect(engine)
        assert {"studies", "trials"} <= set(tables.get_table_names(schema="optuna"))
        assert "studies" not in tables.get_table_names(schema="public")
    finally:
        engine.dispose()
    assert client.get_experiment(experiment).name == "sweeps"  # MLflow's store still migrates and reads
    assert MlflowClient(postgres_uri).search_experiments()
