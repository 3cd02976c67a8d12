"""The logged model served with ONNX Runtime where torch cannot be imported: loaded by
``mlflow.pyfunc`` in a fresh process, and behind ``mlflow models serve`` answering REST requests.
torch and transformers are made unimportable by packages of those names that raise on import, put
first on the path: what a serving install (the `serve` extra) lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import numpy as np

from finetune_core.serving.predictor import Predictor
from tests.servers import free_port, stop, wait_for
from tests.serving.onnx_models import TEXTS

BLOCKED = ("torch", "transformers", "safetensors")

LOAD_AND_PREDICT = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
served = model.predict(pd.DataFrame({"sentence": json.loads(sys.argv[3])}))
try:
    model.predict(pd.DataFrame({"sentence": ["x"]}), params={"runtime": "torch"})
    torch_error = None
except Exception as exc:
    torch_error = str(exc)
print(json.dumps({
    "frame": served.to_dict(orient="list"),
    "torch_loaded": any(m.split(".")[0] in ("torch", "transformers") for m in sys.modules if sys.modules[m]),
    "torch_error": torch_error,
}))
"""


def _without_torch(root: Path) -> dict[str, str]:
    """An environment whose Python cannot import torch, transformers or safetensors."""
    for name in BLOCKED:
        package = root / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(f"raise ImportError('{name} is not installed (serving without torch)')\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}


def test_the_logged_model_predicts_without_torch(onnx_model, tracking_uri, tmp_path):
    uri, directory = onnx_model
    listed = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text()
    assert "onnxruntime==" in listed and "tokenizers==" in listed and "mlflow-skinny==" in listed
    assert "torch" not in listed and "transformers" not in listed

    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, tracking_uri, uri, json.dumps(TEXTS)],
        cwd=tmp_path,
        env=_without_torch(tmp_path / "blocked"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert not seen["torch_loaded"]
    assert "runtime torch needs torch and transformers" in seen["torch_error"]
    expected = Predictor.load(directory).predict_texts(TEXTS)
    assert seen["frame"]["label"] == expected["label"].tolist()
    np.testing.assert_allclose(seen["frame"]["probability_positive"], expected["probability_positive"], atol=1e-5)


def _post(url: str, payload: dict) -> tuple[int, dict]:
    body = json.dumps(payload).encode()
    call = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(call, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_mlflow_models_serve_answers_rest_requests_with_onnx_runtime(onnx_model, tracking_uri, tmp_path):
    uri, directory = onnx_model
    port, log = free_port(), tmp_path / "serve.log"
    env = _without_torch(tmp_path / "blocked") | {"MLFLOW_TRACKING_URI": tracking_uri}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # its uvicorn
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "models", "serve", "-m", uri, "--env-manager", "local", "-h", "127.0.0.1"]
    with log.open("w") as out:
        server = subprocess.Popen([*command, "-p", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=out)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, log, timeout=180)
        texts = TEXTS[:4]
        split = {"columns": ["sentence"], "data": [[t] for t in texts]}
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_split": split})
        assert status == 200, answer
        served = answer["predictions"]
        expected = Predictor.load(directory).predict_texts(texts)
        assert [row["label"] for row in served] == expected["label"].tolist()
        np.testing.assert_allclose(
            [row["probability_positive"] for row in served], expected["probability_positive"], atol=1e-5
        )
        params = {"dataframe_split": split, "params": {"runtime": "torch"}}
        status, answer = _post(f"http://127.0.0.1:{port}/invocations", params)
        assert status >= 400 and "runtime torch needs torch" in json.dumps(answer)  # proof torch never served
    finally:
        stop(server)
