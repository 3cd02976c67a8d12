"""The logged model ships only the serving code: loaded in a fresh process it predicts, imports
its `finetune_core` from the model's own code directory, and never imports Great Expectations,
Prefect or the training code. A model without an ONNX graph (logged before ONNX export, or with
serving.onnx false) is served by PyTorch, and refuses runtime onnx by name."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pandas as pd

from finetune_core.serving import SHIPPED_MODULES
from finetune_core.serving.predictor import ModelMeta, save_model_dir
from tasks.register import log_pyfunc

LOAD_AND_PREDICT = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
served = model.predict(pd.DataFrame({"sentence": ["a gorgeous, witty film", "a dull mess"]}))
by_torch = model.predict(pd.DataFrame({"sentence": ["a gorgeous, witty film"]}), params={"runtime": "torch"})
try:
    model.predict(pd.DataFrame({"sentence": ["a dull mess"]}), params={"runtime": "onnx"})
    onnx_error = None
except Exception as exc:
    onnx_error = str(exc)
import finetune_core
print(json.dumps({
    "columns": list(served.columns),
    "rows": len(served),
    "same_by_torch": by_torch["label"].tolist() == served["label"].tolist()[:1],
    "onnx_error": onnx_error,
    "package": finetune_core.__file__,
    "modules": sorted(m for m in sys.modules if m.startswith("finetune_core")),
    "great_expectations": any(m.startswith("great_expectations") for m in sys.modules),
    "prefect": any(m == "prefect" or m.startswith("prefect.") for m in sys.modules),
}))
"""


def _model_dir(backbone, target):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    meta = ModelMeta(task="classification", text_column="sentence", max_length=32, labels=["0", "1"])
    return save_model_dir(model, AutoTokenizer.from_pretrained(backbone), meta, target)


def test_logged_model_predicts_in_a_fresh_process_with_serving_code_only(tiny_backbone, tracking_uri, tmp_path):
    model_dir = _model_dir(tiny_backbone, tmp_path / "model")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("serving")
    with mlflow.start_run() as run:
        uri = log_pyfunc(model_dir, pd.DataFrame({"sentence": ["a fine film"]}), run.info.run_id)

    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, tracking_uri, uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["columns"] == ["label", "probability_0", "probability_1"] and seen["rows"] == 2
    assert seen["same_by_torch"] and "runtime onnx: this model holds no ONNX graph" in seen["onnx_error"]
    assert "/code/finetune_core/" in seen["package"]  # the model's own copy, not the checkout's
    assert not seen["great_expectations"] and not seen["prefect"]
    shipped = {m.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for m in SHIPPED_MODULES}
    assert set(seen["modules"]) <= shipped, set(seen["modules"]) - shipped
