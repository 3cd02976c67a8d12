"""The work `finetune run` does while Prefect's temporary server boots (flows.cli.warmup): it loads
what the first tasks would, and never fails a run itself."""

import json
import subprocess
import sys

from finetune_core.config.loading import validate_config
from flows.cli.warmup import warm_for
from tests.conftest import REPO, tiny_config

PROBE = """
import json, sys
from finetune_core.config.loading import validate_config
from flows.cli.warmup import warm_for
warm_for(validate_config(json.loads(sys.argv[1])))
print(json.dumps({m: m in sys.modules for m in sys.argv[2:]}))
"""


def test_warm_up_imports_what_the_first_tasks_use_and_creates_the_store(tiny_backbone, sst2_small, tmp_path):
    store = tmp_path / "mlflow.db"
    config = tiny_config(tiny_backbone, sst2_small, f"sqlite:///{store}", tmp_path, validation={"max_text_tokens": 64})
    modules = ["great_expectations", "transformers.models.bert.modeling_bert", "mlflow"]
    # a fresh interpreter: this test process may have imported all of them already
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config), *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert json.loads(done.stdout.strip().splitlines()[-1]) == dict.fromkeys(modules, True)
    assert store.is_file()  # created and migrated ahead of the flow's first MLflow call


def test_warm_up_leaves_failures_to_the_tasks_that_report_them(sst2_small, tmp_path):
    config = tiny_config(tmp_path / "no-such-backbone", sst2_small, "http://127.0.0.1:9", tmp_path)
    warm_for(validate_config(config))  # an unloadable backbone, a tracking server that is down: no raise
