"""Secrets never recorded: the one redaction module (URIs, free text, log records) and the places
that record a configuration (params, config.yaml, the run record's store check)."""

from __future__ import annotations

import logging

import pytest

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import flatten
from finetune_core.config.tracking import credentials_to_environment, with_resolved_tracking
from finetune_core.redaction import (
    install_log_redaction,
    redact_text,
    redact_uri,
    store_digest,
    without_credentials,
)

SECRET = "Pa55-w0rd_xyz"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        (f"postgresql://alice:{SECRET}@db.example:5432/mlflow", "postgresql://alice:***@db.example:5432/mlflow"),
        (f"postgresql+psycopg2://alice:{SECRET}@db/mlflow", "postgresql+psycopg2://alice:***@db/mlflow"),
        (f"https://alice:{SECRET}@mlflow.example", "https://alice:***@mlflow.example"),
        (f"https://{SECRET}@mlflow.example/", "https://" + SECRET + "@mlflow.example/"),  # a user name, kept
        (f"https://host/x?token={SECRET}&experiment=3", "https://host/x?token=***&experiment=3"),
        (f"postgresql://db/mlflow?user=bob&password={SECRET}", "postgresql://db/mlflow?user=bob&password=***"),
        (f"https://host/?X-Api-Key={SECRET}", "https://host/?X-Api-Key=***"),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:////tmp/a b/mlflow.db", "sqlite:////tmp/a b/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("mlflow.db", "mlflow.db"),
    ],
)
def test_redact_uri_masks_the_password_and_secret_parameters_and_keeps_the_store(uri, shown):
    assert redact_uri(uri) == shown


def test_without_credentials_drops_the_whole_userinfo_for_links():
    assert without_credentials(f"https://alice:{SECRET}@host:8443/x") == "https://host:8443/x"
    assert without_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_redact_text_masks_uris_inside_messages_and_secret_environment_values():
    environ = {"HF_TOKEN": "hf_abcdefghijkl", "MLFLOW_TRACKING_PASSWORD": "short", "HOME": "/root"}
    message = (
        f"could not reach 'postgresql://alice:{SECRET}@db:5432/mlflow' (token hf_abcdefghijkl used); "
        f"see https://host/x?access_key={SECRET}&a=1 from /root"
    )
    shown = redact_text(message, environ)
    assert SECRET not in shown and "hf_abcdefghijkl" not in shown
    assert "postgresql://alice:***@db:5432/mlflow" in shown and "access_key=***&a=1" in shown
    assert "/root" in shown  # not a secret variable; a 5-character secret is too short to search for


def test_log_records_are_redacted_once_installed(caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    install_log_redaction()
    install_log_redaction()  # idempotent: one wrapper
    assert getattr(logging.getLogRecordFactory(), "redacts_secrets", False)
    logger = logging.getLogger("tests.redaction")
    with caplog.at_level(logging.INFO, logger="tests.redaction"):
        logger.info("store %s with password %s", f"http://alice:{SECRET}@h", SECRET)
        try:
            raise RuntimeError(f"failed at postgresql://u:{SECRET}@db/x")
        except RuntimeError:
            logger.exception("boom")
    assert SECRET not in caplog.text
    assert "http://alice:***@h" in caplog.text and "postgresql://u:***@db/x" in caplog.text


def _config(tmp_path, uri: str | None) -> FinetuneConfig:
    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    return FinetuneConfig.model_validate(
        {
            "data": {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "train.csv")},
            "mlflow": {"tracking_uri": uri},
        }
    )


def test_recorded_configuration_shows_the_store_without_its_password(tmp_path):
    config = _config(tmp_path, f"postgresql://alice:{SECRET}@db/mlflow")
    params = flatten(config)
    assert params["mlflow.tracking_uri"] == "postgresql://alice:***@db/mlflow"
    assert SECRET not in repr(config.for_record())
    assert config.for_record()["mlflow"]["tracking_uri"] == "postgresql://alice:***@db/mlflow"


def test_credentials_move_out_of_the_flow_parameters_into_the_environment(tmp_path):
    uri = f"http://alice:{SECRET}@127.0.0.1:5000"
    environ: dict[str, str] = {}
    handed_on = credentials_to_environment(_config(tmp_path, uri), environ)
    assert handed_on.mlflow.tracking_uri is None and environ == {"MLFLOW_TRACKING_URI": uri}
    assert with_resolved_tracking(handed_on, environ).mlflow.tracking_uri == uri  # the same store
    plain = _config(tmp_path, "sqlite:///x.db")
    assert credentials_to_environment(plain, {}) is plain  # nothing secret: left as configured


def test_store_digest_tells_stores_apart_without_revealing_them():
    one, other = store_digest(f"http://a:{SECRET}@h"), store_digest("http://a:another@h")
    assert one != other and SECRET not in one and one == store_digest(f"http://a:{SECRET}@h")


def test_show_config_prints_the_store_redacted(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    (tmp_path / "train.csv").write_text("text,label\na,0\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"data: {{train: {tmp_path / 'train.csv'}, test: {tmp_path / 'train.csv'}}}\n"
        f"mlflow: {{tracking_uri: 'postgresql://alice:{SECRET}@db/mlflow'}}\n"
    )
    for extra in ([], ["--all"]):
        shown = CliRunner().invoke(app, ["show-config", str(config), *extra])
        assert shown.exit_code == 0, shown.output
        assert "postgresql://alice:***@db/mlflow" in shown.output and SECRET not in shown.output
