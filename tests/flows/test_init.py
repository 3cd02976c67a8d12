"""`finetune init` as a user runs it: the installed command in a fresh process writes a config that
`finetune validate` (another fresh process, no server needed) passes on the same data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_core.config.loading import load_config
from tests.config.test_init_proposal import KINDS, single_text, write


def finetune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("finetune")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=dict(os.environ), capture_output=True, text=True, timeout=300)


def data_files(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    build, suffix, _ = KINDS[kind]
    (tmp_path / "data").mkdir()
    train = write(build(80, seed=0), tmp_path / "data" / f"train.{suffix}")
    return train, write(build(30, seed=1), tmp_path / "data" / f"test.{suffix}")


@pytest.mark.parametrize("kind", KINDS)
def test_init_writes_a_config_that_validate_passes(tmp_path, kind):
    train, test = data_files(tmp_path, kind)
    written = tmp_path / "configs" / "finetune.yaml"

    result = finetune("init", "data/" + train.name, "--test", "data/" + test.name, "-o", "configs/finetune.yaml",
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = KINDS[kind][2]
    assert f"task: {expected['task']}" in result.stdout and "why: " in result.stdout
    raw = yaml.safe_load(written.read_text())
    assert raw["data"]["train"] == f"../data/{train.name}"  # relative to the config, as the loader reads it
    config = load_config(written)
    assert config.task == expected["task"] and config.data.train == train.resolve()
    for key, value in expected.items():
        if key != "task":
            assert getattr(config.data, key) == value

    checked = finetune("validate", str(written), "--report-dir", str(tmp_path / "report"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data validation passed" in checked.stdout


def test_without_a_test_file_init_says_it_is_required_and_writes_nothing(tmp_path):
    train, _ = data_files(tmp_path, "single-text")
    result = finetune("init", str(train), cwd=tmp_path)
    assert result.returncode == 2
    assert "a labelled test file is required (data.test)" in result.stderr and "pass --test FILE" in result.stderr
    assert "test.csv lies beside train.csv" in result.stderr
    assert "data.text_column: review" in result.stdout  # what it decided is still shown
    assert not (tmp_path / "finetune.yaml").exists()


def test_init_exits_2_naming_the_option_when_it_cannot_decide(tmp_path):
    frame = single_text().assign(a=[i % 2 for i in range(60)], b=[i % 3 for i in range(60)]).drop(columns="sentiment")
    train, test = write(frame, tmp_path / "train.csv"), write(frame, tmp_path / "test.csv")
    result = finetune("init", str(train), "--test", str(test), cwd=tmp_path)
    assert result.returncode == 2
    assert "several columns could hold the labels: 'a', 'b'; pass --label-column" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "finetune.yaml").exists()

    chosen = finetune("init", str(train), "--test", str(test), "--label-column", "b", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert load_config(tmp_path / "finetune.yaml").data.label_column == "b"


def test_init_never_overwrites_a_config_without_force(tmp_path):
    train, test = data_files(tmp_path, "single-text")
    (tmp_path / "finetune.yaml").write_text("mine: true\n")
    result = finetune("init", str(train), "--test", str(test), cwd=tmp_path)
    assert result.returncode == 2 and "finetune.yaml exists; pass --force" in result.stderr
    assert (tmp_path / "finetune.yaml").read_text() == "mine: true\n"
    forced = finetune("init", str(train), "--test", str(test), "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert load_config(tmp_path / "finetune.yaml").data.text_column == "review"


def test_a_test_file_without_the_chosen_columns_is_named(tmp_path):
    train, _ = data_files(tmp_path, "single-text")
    other = write(single_text().rename(columns={"review": "body"}), tmp_path / "other.csv")
    result = finetune("init", str(train), "--test", str(other), cwd=tmp_path)
    assert result.returncode == 2
    assert "other.csv: column(s) 'review' missing" in result.stderr
