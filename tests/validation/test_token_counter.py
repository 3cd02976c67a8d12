"""`validation.max_text_tokens` with a tokenizer that cannot be loaded is a configuration error
(exit 2 naming the backbone), not a crash (exit 1)."""

import pytest
import yaml
from typer.testing import CliRunner

from finetune_core.errors import ConfigError
from finetune_core.validation.suites import token_counter_for
from flows.cli import app

UNREACHABLE = "example-org/not-in-any-cache"  # a hub id; the tests run with HF_HUB_OFFLINE=1


def test_an_unloadable_tokenizer_is_a_config_error_naming_the_backbone(tmp_path):
    with pytest.raises(ConfigError, match=rf"validation.max_text_tokens: .*backbone '{UNREACHABLE}'"):
        token_counter_for(UNREACHABLE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')
    (broken / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="could not load the tokenizer"):
        token_counter_for(str(broken))


def test_finetune_validate_exits_2(tmp_path, sst2_small):
    config = {
        "data": {"train": str(sst2_small["train"]), "test": str(sst2_small["test"])},
        "backbone": {"candidates": [UNREACHABLE]},
        "validation": {"max_text_tokens": 64},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["validate", str(path), "--report-dir", str(tmp_path / "report")])
    assert result.exit_code == 2, result.output
    assert UNREACHABLE in result.output and "Traceback" not in result.output
