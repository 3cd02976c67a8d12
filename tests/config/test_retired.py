"""Retired keys (finetune_core/config/retired.py): an old configuration still loads, each retired key
dropped with one warning that names it, says what the engine does now and points to the decision."""

import copy
import logging

import pytest
import yaml

from docs.gen import config_reference
from finetune_core.config.loading import load_config, validate_config
from finetune_core.config.retired import RETIRED
from finetune_core.errors import ConfigError

MINIMAL = {"data": {"train": "train.csv", "test": "test.csv"}}
# every retired key, the two masks with the value that contradicts what the engine does now
OLD = {
    **MINIMAL,
    "training": {
        "token_rows": "seen",
        "unfrozen": {"dropout_masks": "torch", "epochs": 2},
        "contrastive": {"dropout_masks": "numpy"},
    },
}


def retired_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("finetune_core") and r.levelname == "WARNING"]


def test_a_config_with_every_retired_key_loads_with_one_warning_per_key(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(OLD))
    notices: list[str] = []
    with caplog.at_level(logging.WARNING, logger="finetune_core"):
        config = load_config(path, notices=notices)
    assert retired_warnings(caplog) == notices and len(notices) == len(RETIRED)
    for key, notice in zip(RETIRED, notices):
        assert notice.startswith(f"{key} is retired") and f"docs/{RETIRED[key].record}" in notice
    token_rows, unfrozen_masks, contrastive_masks = notices
    assert "remove it" in token_rows and "ignored" not in token_rows  # it asked for what the engine does
    assert "'torch' is ignored" in unfrozen_masks and "NumPy on CPUs" in unfrozen_masks
    assert "'numpy' is ignored" in contrastive_masks and "torch's dropout masks" in contrastive_masks
    assert config.training.unfrozen.epochs == 2  # the rest of the file is read as before
    assert "token_rows" not in config.model_dump()["training"]


def test_a_retired_key_given_with_set_warns_the_same(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    notices: list[str] = []
    load_config(path, ["training.token_rows=all"], notices)
    assert notices == [notices[0]] and notices[0].startswith("training.token_rows is retired")
    assert "'all' is ignored" in notices[0]


def test_the_raw_mapping_is_left_alone_and_other_unknown_keys_still_fail():
    raw = copy.deepcopy(OLD)
    validate_config(raw)
    assert raw == OLD  # a champion's recorded config, read once, may be read again
    with pytest.raises(ConfigError, match="training.tokn_rows: unknown key"):
        validate_config({**MINIMAL, "training": {"token_rows": "seen", "tokn_rows": "seen"}})


def test_no_retired_key_is_still_a_field_and_the_reference_page_lists_them():
    keys = {key for key, _ in config_reference.leaf_fields()}
    assert not keys & set(RETIRED)
    page = config_reference.render()
    assert "## Retired keys" in page
    for key, retired in RETIRED.items():
        assert f"| `{key}` |" in page and f"../{retired.record}" in page


def test_a_benchmark_still_compares_what_a_retired_key_chose(monkeypatch):
    from bench.settings import engine_switches
    from finetune_core.model import dropout_masks, embedding_rows

    monkeypatch.setattr(embedding_rows, "SEEN_ROWS_ONLY", True)  # restored after the test, as the entries below
    for stage, masks in dropout_masks.STAGE_MASKS.items():
        monkeypatch.setitem(dropout_masks.STAGE_MASKS, stage, masks)
    recorded = {"token_rows": "all", "unfrozen": {"dropout_masks": "torch", "epochs": 1}}  # a recorded --training
    assert engine_switches(recorded) == {"unfrozen": {"epochs": 1}} and recorded["token_rows"] == "all"
    assert not embedding_rows.SEEN_ROWS_ONLY and dropout_masks.STAGE_MASKS["unfrozen"] == "torch"
    validate_config({**MINIMAL, "training": engine_switches({"seed": 1})})  # none named: the fixed behaviour
    assert embedding_rows.SEEN_ROWS_ONLY and dropout_masks.STAGE_MASKS == {"unfrozen": "numpy", "contrastive": "torch"}


def test_the_fingerprint_counts_retired_keys_at_their_fixed_values():
    """A run or a study from before the retirement keeps its hash: the dump it hashed held these keys."""
    from finetune_core.config.retired import with_fixed_values

    dump = with_fixed_values(validate_config(MINIMAL).model_dump(mode="json"))
    assert dump["training"]["token_rows"] == "seen"
    assert dump["training"]["unfrozen"]["dropout_masks"] == "numpy"
    assert dump["training"]["contrastive"]["dropout_masks"] == "torch"
    assert (
        validate_config(OLD).fingerprint()
        == validate_config({**MINIMAL, "training": {"unfrozen": {"epochs": 2}}}).fingerprint()
    )
