"""Peak memory and time of the data path at 1×, 10× and 100× the SST-2 training set
(repeated, each copy perturbed so texts stay distinct): read → validate → prepare →
tokenise train → one pass over its length-grouped training batches.

    python -m bench.scale [--factors 1 10 100]

Each factor runs in a fresh process (peak RSS is per process). Memory should stay nearly
flat while time grows linearly: splits travel as Parquet, validation and preparation stream
chunks, token ids are memory-mapped Arrow. The numbers before that change are in
bench/results/scale/scale-before.json. Writes bench/results/scale/scale.json.
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

from bench.paths import REPO, results_file

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
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


class AnonymousMemory:
    """Samples the process's anonymous resident memory (RssAnon, KiB) every 10 ms and keeps the
    peak. Peak RSS also counts pages of memory-mapped files (the Arrow cache, the token file),
    which the kernel drops and re-reads at will; anonymous memory is what the data path needs."""

    def __init__(self):
        import threading

        self.peak = 0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("RssAnon:"):
                        self.peak = max(self.peak, int(line.split()[1]))
            time.sleep(0.01)


def measure(train: Path, test: Path) -> dict:
    import numpy as np
    from transformers import AutoTokenizer

    from finetune_core.config.loading import validate_config
    from finetune_core.data.checks import basic_checks
    from finetune_core.data.prepare import prepare_splits, read_splits
    from finetune_core.model.backbone import resolve_backbone
    from finetune_core.model.batching import collate, length_grouped_batches
    from finetune_core.model.tokenized import encode_file
    from finetune_core.validation.suites import validate_raw

    config = validate_config(
        {"data": {"train": str(train), "test": str(test)}, "validation": {"max_duplicate_fraction": 1.0}}
    )
    work = Path(tempfile.mkdtemp())
    timings, peaks, anonymous = {}, {}, {}
    sampler = AnonymousMemory()

    def phase(name, run):
        started = time.perf_counter()
        sampler.peak = 0
        result = run()
        timings[f"{name}_seconds"] = time.perf_counter() - started
        peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        anonymous[name] = sampler.peak / 1024
        return result

    raw = phase("read", lambda: read_splits(config, work / "raw"))
    report = phase("validate", lambda: validate_raw(config, raw))
    prepared = phase("prepare", lambda: prepare_splits(config, work / "data", raw, drop_unusable=True))
    phase("basic_checks", lambda: basic_checks(prepared, config))
    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(config.backbone.candidates[0]))
    encoded = phase(
        "tokenize", lambda: encode_file(tokenizer, prepared.paths["train"], config.training.max_length, work / "tokens")
    )

    def one_epoch_of_batches():  # what a training epoch reads, without the model
        tokens = 0
        for batch in length_grouped_batches(encoded.lengths, config.training.batch_size, np.random.default_rng(0)):
            tokens += int(collate(encoded, batch)["attention_mask"].sum())
        return tokens

    tokens = phase("batches", one_epoch_of_batches)
    return {
        **timings,
        "rows": prepared.rows,
        "passed": report.passed,
        "train_tokens": tokens,
        "peak_rss_mb_after": peaks,
        "peak_rss_mb": max(peaks.values()),
        "peak_anonymous_mb_during": anonymous,
        "peak_anonymous_mb": max(anonymous.values()),
    }


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
            env = {**os.environ, "HF_DATASETS_CACHE": str(Path(tmp) / "hf")}  # the Arrow cache goes with the run
            child = subprocess.run(
                [sys.executable, "-m", "bench.scale", "--measure", str(train), str(SST2 / "test.tsv")],
                capture_output=True,
                text=True,
                check=True,
                env=env,
                cwd=REPO,
            )
            results[f"x{factor}"] = {
                "file_mb": train.stat().st_size / 1e6,
                **json.loads(child.stdout.strip().splitlines()[-1]),
            }
            print(factor, json.dumps(results[f"x{factor}"]), flush=True)
            train.unlink()
    results_file("scale", "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
