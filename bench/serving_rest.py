"""The served model behind `mlflow models serve`, as a client sees it: one registered model, its
ONNX Runtime form (the default runtime) and PyTorch (``params: {"runtime": "torch"}``) asked in
alternation by the same client, one text per request and 32 per request.

    python -m bench.serving_rest [--kind single] [--train-rows 400] [--requests 200] [--rounds 3]

The model is bench.serving's briefly fine-tuned MiniLM; registration's own export, parity check and
choice of form (``finetune_core.serving.forms.prepare_serving`` with the default gates) decide what
``auto`` serves. Client-side wall clock per request (HTTP, JSON and the server's pyfunc included):
p50/p95 at one text per request, rows/s at 32. Results: bench/results/serving/ (docs/benchmarks/serving.md).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np

from bench.machine import load_average, machine
from bench.paths import invocation, results_file
from bench.serving import KINDS, cpu_flags, read_split, targets_of, texts_of, train_briefly
from finetune_core.config.gates import ParityGates
from finetune_core.config.sections import ServingConfig
from finetune_core.serving.forms import ParityRows, prepare_serving
from finetune_core.serving.outputs import load_meta
from tasks.register import log_pyfunc

RUNTIMES = {"auto": {}, "torch": {"runtime": "torch"}}  # auto: the form registration chose


def logged_model(kind: str, work: Path, train_rows: int) -> tuple[str, dict]:
    """The briefly trained model, its served form chosen as registration chooses, logged to a SQLite store."""
    directory = train_briefly(kind, work / "model", train_rows, "examples")
    test = read_split(kind, "test", "examples")
    texts, pairs = texts_of(kind, test)
    labels = load_meta(directory).labels
    rows = ParityRows(
        texts=[texts] + ([] if pairs is None else [pairs]),
        targets=targets_of(kind, test, labels),
        metric=KINDS[kind]["metric"],
    )
    task = "multilabel" if kind == "multilabel" else "classification"
    report = prepare_serving(
        directory,
        work / "forms",
        rows,
        task=task,
        serving=ServingConfig(onnx=True, latency_rows=0),
        gates=ParityGates(),
    )
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    mlflow.set_experiment("bench-serving-rest")
    with mlflow.start_run() as run:
        uri = log_pyfunc(directory, test[_columns(kind)].head(1), run.info.run_id)
    return uri, {"served": report.served, "reason": report.reason}


def _columns(kind: str) -> list[str]:
    spec = KINDS[kind]
    return [spec["text"]] + ([] if spec["pair"] is None else [spec["pair"]])


def serve(uri: str, work: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=log)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 180
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError((work / "serve.log").read_text()[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise TimeoutError(f"mlflow models serve not up after 180 s: {work / 'serve.log'}")


def post(url: str, columns: list[str], rows: list[list[str]], params: dict) -> float:
    """Seconds for one request (``rows``: per row, its text(s))."""
    body = {"dataframe_split": {"columns": columns, "data": rows}, **({"params": params} if params else {})}
    call = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(call, timeout=120) as response:
        response.read()
    return time.perf_counter() - started


def measure(url: str, kind: str, requests: int, rounds: int) -> dict[str, dict]:
    test = read_split(kind, "test", "examples")
    columns = _columns(kind)
    rows = test[columns].astype(str).values.tolist()
    single: dict[str, list[float]] = {name: [] for name in RUNTIMES}
    batch32: dict[str, float] = {name: 0.0 for name in RUNTIMES}
    for params in RUNTIMES.values():  # warm-up: each runtime loads on its first request
        post(url, columns, rows[:32], params)
    for _ in range(rounds):
        for i in range(requests):  # interleaved, one text each
            for name, params in RUNTIMES.items():
                single[name].append(post(url, columns, rows[i : i + 1], params))
        for name, params in RUNTIMES.items():
            seconds = sum(post(url, columns, rows[s : s + 32], params) for s in range(0, min(len(rows), 400), 32))
            batch32[name] = max(batch32[name], min(len(rows), 400) / seconds)
    return {
        name: {
            "p50_ms": 1000 * float(np.percentile(single[name], 50)),
            "p95_ms": 1000 * float(np.percentile(single[name], 95)),
            "rows_per_s_batch32": batch32[name],
        }
        for name in RUNTIMES
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=list(KINDS), default="single")
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--requests", type=int, default=200, help="one-text requests per runtime and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    facts = machine()
    with tempfile.TemporaryDirectory(prefix="bench-serving-rest-") as scratch:
        work = Path(scratch)
        uri, form = logged_model(args.kind, work, args.train_rows)
        server, url = serve(uri, work)
        try:
            load_before = load_average()
            table = measure(url, args.kind, args.requests, args.rounds)
        finally:
            server.terminate()
            server.wait(timeout=30)
    torch_row = table["torch"]
    records = [
        {
            "runtime": f"auto ({form['served']})" if name == "auto" else name,
            "p50 ms, 1 text": row["p50_ms"],
            "p95 ms, 1 text": row["p95_ms"],
            "x torch p50": torch_row["p50_ms"] / row["p50_ms"],
            "rows/s, 32 texts": row["rows_per_s_batch32"],
            "x torch batch 32": row["rows_per_s_batch32"] / torch_row["rows_per_s_batch32"],
        }
        for name, row in table.items()
    ]
    payload = {
        "command": invocation("bench.serving_rest"),
        "machine": facts,
        "cpu_flags_grep": cpu_flags(),
        "served form (auto)": form,
        "load average while timing": f"{load_before} -> {load_average()}",
        "setup": f"{args.kind}: MiniLM fine-tuned on {args.train_rows} rows; `mlflow models serve` (--env-manager "
        f"local, its default workers); {args.requests} one-text requests per runtime per round, interleaved, and the "
        f"first 400 test rows 32 per request; {args.rounds} rounds (latency: all requests; rows/s: best round)",
        "table": records,
    }
    out = args.out or results_file("serving", f"rest-{args.kind}-{'-'.join(facts['flags']) or 'cpu'}.json")
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["table"], indent=1), payload["served form (auto)"], f"\nwrote {out}")


if __name__ == "__main__":
    main()
