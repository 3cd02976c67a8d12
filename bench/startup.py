"""Time to the first training step of `finetune run` on the demo configuration with a 32-row
training file, phase by phase.

    python -m bench.startup [--runs 3] [--server] [--repo PATH]... [--tag NAME]

Runs the installed command's code (`flows.cli`) in a fresh process per run, as a user would,
and stamps each phase from the outside: every stderr line is timed on arrival (Prefect's
"Starting temporary server", "Beginning flow run", each task's "Finished"), and three marks
come from wrappers put around the training stage's functions when the process imports them
(the frozen stage starting, its first feature batch, its first optimizer step). The run is
interrupted at the first training step. ``--server`` starts one `prefect server start` first and
points PREFECT_API_URL at it (a deployment's worker, or a user who keeps the UI open);
``--repo PATH`` measures another copy of the code with this machine's virtualenv; repeated, the
copies run alternately (e.g. `git archive HEAD | tar -x -C /tmp/before` then `--repo /tmp/before
--repo .` for a before/after). Each copy gets one unmeasured warm-up run first (the OS file
cache, MLflow's database). Prints, per mark, the median seconds since launch and CPU seconds
the command and its temporary server had used by then (wall time moves with other work on a
shared machine, CPU time barely: compare both), the CPU model and flags and the load average;
writes bench/results/startup/startup<tag>.json. Nothing asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.machine import cpu_facts  # no torch: the parent stays light
from bench.paths import REPO, results_file

DEMO = REPO / "examples" / "sst2.yaml"
TRAIN_ROWS = 32
MARK = "BENCH-MARK"

# Runs in the measured process before the CLI: wraps the stage functions once
# finetune_core.training.frozen_stage is imported (importing it here would move torch's import time).
CHILD = r"""
import importlib.abc, importlib.util, sys, time

def mark(name):  # written, not printed: a flow's log_prints would turn a print into a log line
    sys.__stderr__.write(f"{MARK} {name} {time.time():.6f}\n")
    sys.__stderr__.flush()

def first_call(module, name, label):
    original, seen = getattr(module, name), []
    def wrapper(*args, **kwargs):
        if not seen:
            seen.append(1)
            mark(label)
        return original(*args, **kwargs)
    setattr(module, name, wrapper)

class Wrap(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "finetune_core.training.frozen_stage":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            first_call(module, "train_frozen", "frozen stage starts")
            first_call(module, "cached_features", "feature extraction starts")
            for name in ("head_epoch", "network_epoch"):
                first_call(module, name, "first training step")
        spec.loader.exec_module = exec_module
        return spec

mark("python started")
sys.meta_path.insert(0, Wrap())
from flows.cli import app
sys.argv = ["finetune", *sys.argv[1:]]
app()
""".replace("{MARK}", MARK)

LINES = {  # phase marks read from the log: pattern -> mark
    r"Starting temporary server on": "temporary server starting",
    r"Started temporary server on": "temporary server up (started early)",
    r"Beginning flow run": "flow run begins",
    r"Task run '(?P<task>[a-z-]+)-[0-9a-f]+' - Finished in state": "{task} done",
}


def workspace(root: Path) -> list[str]:
    """The demo with a 32-row training file: the CLI arguments."""
    lines = (DEMO.parent / "data" / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    (root / "train.tsv").write_text("\n".join(lines[: TRAIN_ROWS + 1]) + "\n", encoding="utf-8")
    overrides = {
        "data.train": root / "train.tsv",
        "validation.min_train_rows": 10,
        "mlflow.tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "output_dir": root / "runs",
    }
    return ["run", str(DEMO), *(arg for key, value in overrides.items() for arg in ("--set", f"{key}={value}"))]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) so far of a process and its children (the temporary server)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        for each in [pid, *map(int, children)]:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):  # a process that just ended
        pass
    return total


def measure(args: list[str], env: dict, repo: Path) -> dict[str, dict[str, float]]:
    """One run until its first training step: seconds since launch of each mark ("wall") and
    CPU seconds its processes had used by then ("cpu": unlike wall time, barely moved by other
    work on the machine; with two cores, wall time can be below it)."""
    launched = time.time()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *args],
        cwd=repo,
        env={**env, "PYTHONPATH": str(repo)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the temporary server goes with it
    )
    marks, cpu, log = {}, {}, []
    try:
        for line in process.stderr:
            now, used = time.time() - launched, cpu_seconds(process.pid)
            log.append(line)
            if found := re.match(rf"{MARK} (.+) ([0-9.]+)$", line):
                marks[found.group(1)], cpu[found.group(1)] = float(found.group(2)) - launched, used
                if "first training step" in marks:
                    break
                continue
            for pattern, name in LINES.items():
                if found := re.search(pattern, line):
                    name = name.format(**found.groupdict())
                    marks.setdefault(name, now)
                    cpu.setdefault(name, used)
    finally:
        if process.poll() is None:  # interrupt: Prefect stops its temporary server on the way out
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    if "first training step" not in marks:
        sys.exit("the run ended before training:\n" + "".join(log[-40:]))
    return {"wall": marks, "cpu": cpu}


def start_server(env: dict, root: Path) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=open(root / "server.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            return server, url
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    sys.exit(f"prefect server did not start: see {root / 'server.log'}")


def median_marks(runs: list[dict[str, float]]) -> dict[str, float]:
    names = {name for run in runs for name in run}
    median = {name: statistics.median(run[name] for run in runs if name in run) for name in names}
    return dict(sorted(median.items(), key=lambda item: item[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="measured runs per copy of the code")
    parser.add_argument("--server", action="store_true", help="against a running `prefect server start`")
    parser.add_argument(
        "--repo", type=Path, action="append", help="code to measure (default: this checkout); repeat to compare"
    )
    parser.add_argument("--tag", default="", help="suffix of the results file, e.g. -server")
    options = parser.parse_args()
    repos = [repo.resolve() for repo in options.repo or [REPO]]

    with tempfile.TemporaryDirectory(prefix="finetune-startup-") as scratch:
        root = Path(scratch)
        args = workspace(root)
        env = {
            **os.environ,
            "PREFECT_HOME": str(root / "prefect"),  # a throwaway Prefect database, not the user's
            "FINETUNE_CACHE": str(root / "cache"),
            # a busy machine can take longer than Prefect's default 20 s to start the server
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        }
        env.pop("PREFECT_API_URL", None)
        # the database a user's first run creates, made here so that no measured run pays for it
        prefect = str(Path(sys.executable).with_name("prefect"))
        subprocess.run([prefect, "server", "database", "upgrade", "-y"], env=env, check=True, capture_output=True)
        server = None
        if options.server:
            server, env["PREFECT_API_URL"] = start_server(env, root)
        try:
            load_before = os.getloadavg()
            for repo in repos:  # warm-up: the OS file cache, MLflow's database
                measure(args, env, repo)
            runs = {repo: [] for repo in repos}
            for _ in range(options.runs):  # alternately, so a change in the machine's load hits each alike
                for repo in repos:
                    runs[repo].append(measure(args, env, repo))
            load_after = os.getloadavg()
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGINT)
                server.wait(timeout=60)

    medians = {repo: {kind: median_marks([r[kind] for r in runs[repo]]) for kind in ("wall", "cpu")} for repo in repos}
    last = medians[repos[-1]]["wall"]
    names = list(last) + [n for r in repos for n in medians[r]["wall"] if n not in last]
    server_kind = "running (PREFECT_API_URL)" if options.server else "temporary"
    print(f"median of {options.runs} runs; Prefect server: {server_kind}")
    print(f"{'':<28}" + "".join(f"{repo.name[-22:]:>24}" for repo in repos))
    print(f"{'mark':<28}" + "".join(f"{'wall s':>12}{'cpu s':>12}" for _ in repos))
    for name in names:
        row = f"{name:<28}"
        for repo in repos:
            for kind in ("wall", "cpu"):
                value = medians[repo][kind].get(name)
                row += f"{value:>12.2f}" if value is not None else f"{'-':>12}"
        print(row)
    machine = cpu_facts()
    print(f"CPU: {machine['model']}, {machine['cores']} cores, flags {' '.join(machine['flags']) or '-'}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    results = results_file("startup", f"startup{options.tag}.json")
    results.write_text(
        json.dumps(
            {
                "command": " ".join(["finetune", *args]),
                "server": server_kind,
                "median_seconds": {str(repo): medians[repo] for repo in repos},
                "runs": {str(repo): runs[repo] for repo in repos},
                "cpu": machine,
                "load_average": [load_before[0], load_after[0]],
            },
            indent=2,
        )
    )
    print(f"written to {results}")


if __name__ == "__main__":
    main()
