"""How the data path scales today: peak memory and time of read → validate → prepare for 1×,
10× and 100× the SST-2 training set (repeated, each copy perturbed so texts stay distinct).

    python bench/scale.py [--factors 1 10 100]

Each factor runs in a fresh process (peak RSS is per process). This is the baseline for
issue 8's "data larger than memory": the current path holds whole splits in pandas, so memory
is expected to grow with the data. Writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
REPO = Path(__file__).resolve().parents[1]
SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))


def build(work: Path, factor: int) -> Path:
    import pandas as pd

    train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, keep_default_na=False)
    path = work / f"train-x{factor}.tsv"
    with path.open("w", encoding="utf-8") as out:
        out.write("sentence\tlabel\n")
        for copy in range(factor):  # written copy by copy: building the file does not need the memory
            suffix = "" if copy == 0 else f" #{copy}"
            out.writelines(f"{s}{suffix}\t{label}\n" for s, label in zip(train["sentence"], train["label"]))
    return path


def measure(train: Path, test: Path) -> dict:
    sys.path.insert(0, str(REPO))
    from finetune_core.config import validate_config
    from finetune_core.data import prepare_data, read_splits
    from finetune_core.validation import validate_raw

    config = validate_config({"data": {"train": str(train), "test": str(test)},
                              "validation": {"max_duplicate_fraction": 1.0}})
    work = Path(tempfile.mkdtemp())
    timings = {}
    started = time.perf_counter()
    raw = read_splits(config, work / "raw")
    timings["read_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    report = validate_raw(config, raw)
    timings["validate_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    prepared = prepare_data(config, work / "data", raw, drop_unusable=True)
    timings["prepare_seconds"] = time.perf_counter() - started
    return {**timings, "rows": prepared.rows, "passed": report.passed,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--measure", nargs=2, metavar=("TRAIN", "TEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:  # the child process
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            train = build(Path(tmp), factor)
            child = subprocess.run([sys.executable, __file__, "--measure", str(train), str(SST2 / "test.tsv")],
                                   capture_output=True, text=True, check=True)
            results[f"x{factor}"] = {"file_mb": train.stat().st_size / 1e6, **json.loads(child.stdout.strip().splitlines()[-1])}
            print(factor, json.dumps(results[f"x{factor}"]), flush=True)
            train.unlink()
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
