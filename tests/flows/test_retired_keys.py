"""A champion logged before keys were retired (finetune_core/config/retired.py) still retrains: the
scheduled retrain rebuilds its configuration from the champion's recorded config.yaml, which holds
every key with its value at the time, retired ones included."""

import yaml

from finetune_core.config.finetune import FinetuneConfig
from finetune_core.config.loading import validate_config
from finetune_core.config.retired import RETIRED
from finetune_core.data.snapshots import Snapshot
from flows.retrain import snapshot_config


def recorded_before_the_retirement(tmp_path) -> dict:
    """A champion's config.yaml as the run logged it then: every key, the retired ones at their old defaults."""
    recorded = validate_config({"data": {"train": "old/train.csv", "test": "old/test.csv"}}).for_record()
    recorded["training"]["unfrozen"]["epochs"] = 2
    recorded["training"]["token_rows"] = "seen"
    recorded["training"]["unfrozen"]["dropout_masks"] = "numpy"
    recorded["training"]["contrastive"]["dropout_masks"] = "torch"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(recorded))
    return yaml.safe_load(path.read_text())


def test_an_old_champions_recorded_config_rebuilds_for_the_retrain(tmp_path):
    deployment = validate_config({"data": {"train": "a.csv", "test": "b.csv"}, "output_dir": str(tmp_path / "runs")})
    snapshot = Snapshot(name="2026-12-04", files={"train": "new/train.csv", "test": "new/test.csv"}, fingerprint="f")
    notices: list[str] = []
    effective = snapshot_config(recorded_before_the_retirement(tmp_path), deployment, snapshot, notices)
    assert isinstance(effective, FinetuneConfig) and effective.training.unfrozen.epochs == 2
    assert str(effective.data.train) == "new/train.csv" and effective.output_dir == tmp_path / "runs"
    assert [notice.split(" is retired")[0] for notice in notices] == list(RETIRED)
    assert not any("ignored" in notice for notice in notices)  # the old defaults are what the engine does now
