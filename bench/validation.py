"""Data validation at scale: read + Great Expectations suites on a 200k-row training file.

    python -m bench.validation [--rows 200000]

Builds a TSV of ``--rows`` SST-2 training rows (repeated with a row number appended, so texts
stay distinct) plus the 872-row test file, then times, back to back in one process: a plain
pandas read (the baseline), our read (structural scan + `datasets`), and the validation with
and without Data Docs. Prints seconds and ratios; writes bench/results/validation/validation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
import pandas as pd

from bench.paths import REPO, results_file
from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import read_splits
from finetune_core.validation.suites import validate_raw

SST2 = Path(os.environ.get("SST2_DIR", REPO.parent / "shared" / "data" / "sst2"))


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)


def timed(step):
    started = time.perf_counter()
    value = step()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train = read_tsv(SST2 / "train.tsv")
        repeats = -(-args.rows // len(train))
        big = pd.concat([train] * repeats, ignore_index=True).head(args.rows)
        big["sentence"] = big["sentence"] + " #" + big.index.astype(str)
        big.to_csv(work / "train.tsv", sep="\t", index=False, quoting=3)
        read_tsv(SST2 / "test.tsv").to_csv(work / "test.tsv", sep="\t", index=False, quoting=3)
        config = validate_config(
            {
                "data": {"train": str(work / "train.tsv"), "test": str(work / "test.tsv")},
                "output_dir": str(work / "runs"),
            }
        )

        _, pandas_seconds = timed(lambda: read_tsv(work / "train.tsv"))
        raw, read_seconds = timed(lambda: read_splits(config, work / "raw"))
        _, first_seconds = timed(lambda: validate_raw(config, raw))  # includes importing GX
        report, plain_seconds = timed(lambda: validate_raw(config, raw))
        report_docs, docs_seconds = timed(lambda: validate_raw(config, raw, work / "docs"))
    result = {
        "rows": {"train": args.rows, "test": 872},
        "pandas_read_seconds": pandas_seconds,
        "our_read_seconds": read_seconds,
        "first_validation_seconds_incl_gx_import": first_seconds,
        "validation_seconds": plain_seconds,
        "validation_with_data_docs_seconds": docs_seconds,
        "checks": len(report.results),
        "failed_checks": [(r.split, r.check) for r in report_docs.failures()],
        "validation_rows_per_second": (args.rows + 872) / plain_seconds,
        "read_vs_pandas": read_seconds / pandas_seconds,
        "validation_vs_pandas_read": plain_seconds / pandas_seconds,
    }
    print(json.dumps(result, indent=1))
    results_file("validation", "validation.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
