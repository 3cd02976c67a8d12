"""Data validation with Great Expectations 1.x: one suite per split, built from `validation.*`.

Checks that compare rows (duplicates) or splits (unknown labels, train/test leakage, class
shares) are computed as derived columns of the validated frame, so every check is a real
GX expectation with its own severity, result and Data Docs entry. Failed checks carry a few
example rows with their line numbers in the source file.

Splits are validated ``validation.chunk_rows`` rows at a time, so a file larger than memory
is never read whole: the whole-split facts behind the derived columns are gathered first in
one streaming pass (``split_facts``), each chunk is its own GX validation, and the chunks'
results are added up per check (``validation_merge``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config.validation import CHECKS, ValidationConfig
from finetune_core.data.chunks import chunks_of, parquet_columns
from finetune_core.validation.merge import merge_chunks
from finetune_core.validation.split_facts import SplitFacts, as_written, gather, normalise

DUPLICATE, IN_TRAIN, CLASS_SHARE, TARGET, FINITE, TOKENS = (
    "[repeats an earlier text]",
    "[text also in train]",
    "[share of its class in train]",
    "[target as number]",
    "[target is finite]",
    "[length in tokens]",
)


class CheckResult(BaseModel):
    split: str
    check: str
    severity: str
    success: bool
    expectation: str
    column: str | None = None
    observed: str = ""
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict] = []


class ValidationReport(BaseModel):
    results: list[CheckResult]
    rows: dict[str, int]
    sources: dict[str, str]
    data_docs: str | None = None  # index.html of the GX Data Docs site
    result_json: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures("error")

    def failures(self, severity: str | None = None) -> list[CheckResult]:
        return [r for r in self.results if not r.success and (severity is None or r.severity == severity)]

    def summary(self) -> str:
        errors, warnings = len(self.failures("error")), len(self.failures("warning"))
        return f"{len(self.results)} checks on {len(self.rows)} split(s): {errors} error(s), {warnings} warning(s)"


def _derived_frame(
    split: str,
    chunk: pd.DataFrame,
    text: str,
    label: str,
    task: str,
    facts: dict[str, SplitFacts],
    leaked: set[str],
    token_counter,
) -> pd.DataFrame:
    out = chunk.copy()
    if text in out:
        out[DUPLICATE] = facts[split].duplicate[out.index.to_numpy()] if len(out) else pd.Series(dtype=bool)
        if split != "train" and "train" in facts and facts["train"].has_text:
            keys = normalise(out[text])
            out[IN_TRAIN] = keys.isin(leaked) & (keys != "")
        if token_counter is not None:
            out[TOKENS] = token_counter(out[text].fillna("").astype(str).tolist())
    if label in out:
        if task == "classification":
            out[label] = out[label].map(as_written).astype(object)
            if split == "train":
                out[CLASS_SHARE] = out[label].map(facts["train"].class_shares()).astype("float64")
        else:
            numbers = pd.to_numeric(out[label], errors="coerce").astype("float64")
            out[TARGET], out[FINITE] = numbers, np.isfinite(numbers.to_numpy())
    return out


def _expectations(
    split: str,
    frame: pd.DataFrame,
    text: str,
    label: str,
    task: str,
    config: ValidationConfig,
    train_labels: list[str] | None,
) -> list[tuple[str, object]]:
    import great_expectations as gx

    E = gx.expectations
    min_rows = config.min_train_rows if split == "train" else config.min_eval_rows
    planned: list[tuple[str, object]] = [
        ("columns", E.ExpectColumnToExist(column=text)),
        ("columns", E.ExpectColumnToExist(column=label)),
        ("min_rows", E.ExpectTableRowCountToBeBetween(min_value=min_rows)),
    ]
    if text in frame:
        planned += [
            ("text_not_blank", E.ExpectColumnValuesToNotBeNull(column=text)),
            ("text_not_blank", E.ExpectColumnValuesToNotMatchRegex(column=text, regex=r"^\s*$")),
            (
                "text_length",
                E.ExpectColumnValueLengthsToBeBetween(
                    column=text, min_value=config.min_text_chars, max_value=config.max_text_chars
                ),
            ),
            (
                "duplicates",
                E.ExpectColumnValuesToBeInSet(
                    column=DUPLICATE, value_set=[False], mostly=1 - config.max_duplicate_fraction
                ),
            ),
        ]
        if TOKENS in frame:
            planned.append(
                ("text_tokens", E.ExpectColumnValuesToBeBetween(column=TOKENS, max_value=config.max_text_tokens))
            )
        if IN_TRAIN in frame:
            planned.append(
                (
                    "leakage",
                    E.ExpectColumnValuesToBeInSet(
                        column=IN_TRAIN, value_set=[False], mostly=1 - config.max_leakage_fraction
                    ),
                )
            )
    if label in frame:
        planned.append(("label_not_null", E.ExpectColumnValuesToNotBeNull(column=label)))
        if task == "classification" and split == "train":
            planned += [
                ("min_classes", E.ExpectColumnUniqueValueCountToBeBetween(column=label, min_value=2)),
                (
                    "class_fraction",
                    E.ExpectColumnValuesToBeBetween(column=CLASS_SHARE, min_value=config.min_class_fraction),
                ),
            ]
        elif task == "classification" and train_labels is not None:
            planned.append(("labels_known", E.ExpectColumnValuesToBeInSet(column=label, value_set=train_labels)))
        elif task == "regression":
            planned.append(("target_finite", E.ExpectColumnValuesToBeInSet(column=FINITE, value_set=[True])))
            if config.target_min is not None or config.target_max is not None:
                planned.append(
                    (
                        "target_bounds",
                        E.ExpectColumnValuesToBeBetween(
                            column=TARGET, min_value=config.target_min, max_value=config.target_max
                        ),
                    )
                )
    return [(check, expectation) for check, expectation in planned if config.severity_of(check) != "off"]


_GX_SEVERITY = {"error": "critical", "warning": "warning"}
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 20}


def _examples(frame: pd.DataFrame, indexes: list, columns: list[str], limit: int) -> list[dict]:
    rows = []
    for index in indexes[:limit]:
        row = {"row": int(index) + 1}  # 1-based data row of the file (header not counted)
        for column in columns:
            if column in frame:
                value = frame.at[index, column]
                row[column] = (
                    None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)[:200]
                )
        rows.append(row)
    return rows


def _context(docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if docs_dir is None:
        context = gx.get_context(mode="ephemeral")
    else:
        docs_dir.mkdir(parents=True, exist_ok=True)
        context = gx.get_context(mode="file", project_root_dir=str(docs_dir))
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no bars in logs of unattended runs
    return context


def _validate_chunk(checkpoint, derived: pd.DataFrame, run_name: str | None, text: str, label: str, limit: int):
    """One GX validation of one chunk: (its JSON, per expectation {type, kwargs, meta, success, result, examples})."""
    from great_expectations.core.run_identifier import RunIdentifier

    run = checkpoint.run(
        batch_parameters={"dataframe": derived}, run_id=RunIdentifier(run_name=run_name) if run_name else None
    )
    validation = next(iter(run.run_results.values()))
    parts = []
    for outcome in validation.results:
        result = outcome.result or {}
        failed_rows = result.get("partial_unexpected_index_list") or []
        parts.append(
            {
                "type": outcome.expectation_config.type,
                "kwargs": outcome.expectation_config.kwargs,
                "meta": outcome.expectation_config.meta,
                "success": bool(outcome.success),
                "result": result,
                "examples": _examples(derived, failed_rows, [text, label], limit),
            }
        )
    return validation.to_json_dict(), parts


def _columns(source) -> list[str]:
    return list(source.columns) if isinstance(source, pd.DataFrame) else parquet_columns(source)


def run_suites(
    frames: dict[str, pd.DataFrame | str | Path],
    sources: dict[str, str],
    text: str,
    label: str,
    task: str,
    config: ValidationConfig,
    docs_dir: Path | None = None,
    token_counter=None,
) -> ValidationReport:
    """Validate every split (a frame, or a Parquet file read in chunks); with ``docs_dir``,
    write GX Data Docs and the JSON results there."""
    import great_expectations as gx

    context = _context(docs_dir)
    data_source = context.data_sources.add_or_update_pandas(name="finetune")
    chunked = {split: chunks_of(frame, config.chunk_rows) for split, frame in frames.items()}
    facts, leaked = gather(chunked, text, label, task)
    train_labels = None
    if task == "classification" and "train" in frames and label in _columns(frames["train"]):
        train_labels = sorted(facts["train"].label_counts)
    results: list[CheckResult] = []
    raw_results: dict[str, object] = {}
    # Reports name the data's own column, not the derived one the expectation ran on.
    source_column = {DUPLICATE: text, IN_TRAIN: text, TOKENS: text, CLASS_SHARE: label, TARGET: label, FINITE: label}
    for split, chunks in chunked.items():
        checkpoint, chunk_json, parts = None, [], []
        several = facts[split].rows > config.chunk_rows
        for chunk in chunks():
            derived = _derived_frame(
                split, chunk, text, label, task, facts, leaked, token_counter if config.max_text_tokens else None
            )
            if checkpoint is None:  # one suite per split, planned from the (shared) columns
                planned = _expectations(split, derived, text, label, task, config, train_labels)
                suite = context.suites.add_or_update(gx.ExpectationSuite(name=f"finetune-{split}"))
                for check, expectation in planned:
                    expectation.severity = _GX_SEVERITY[config.severity_of(check)]
                    expectation.meta = {"check": check, "guards": CHECKS[check][0]}
                    suite.add_expectation(expectation)
                batch_definition = data_source.add_dataframe_asset(name=split).add_batch_definition_whole_dataframe(
                    split
                )
                definition = context.validation_definitions.add_or_update(
                    gx.ValidationDefinition(name=f"finetune-{split}", data=batch_definition, suite=suite)
                )
                actions = [gx.checkpoint.UpdateDataDocsAction(name="data-docs")] if docs_dir else []
                checkpoint = context.checkpoints.add_or_update(
                    gx.Checkpoint(
                        name=f"finetune-{split}",
                        validation_definitions=[definition],
                        actions=actions,
                        result_format=_RESULT_FORMAT,
                    )
                )
            run_name = f"{split} rows {chunk.index[0] + 1}-{chunk.index[-1] + 1}" if several and len(chunk) else None
            as_json, chunk_parts = _validate_chunk(checkpoint, derived, run_name, text, label, config.examples)
            chunk_json.append(as_json)
            parts.append(chunk_parts)
        raw_results[split] = chunk_json[0] if len(chunk_json) == 1 else chunk_json
        for index, first in enumerate(parts[0]):
            merged = merge_chunks([chunk_parts[index] for chunk_parts in parts], facts[split], config.examples)
            column = first["kwargs"].get("column")
            results.append(
                CheckResult(
                    split=split,
                    check=first["meta"]["check"],
                    severity=config.severity_of(first["meta"]["check"]),
                    success=merged["success"],
                    expectation=first["type"],
                    column=source_column.get(column, column),
                    observed=merged["observed"],
                    unexpected_count=merged["unexpected_count"],
                    unexpected_percent=merged["unexpected_percent"],
                    examples=[] if merged["success"] else merged["examples"],
                )
            )
    report = ValidationReport(results=results, rows={s: f.rows for s, f in facts.items()}, sources=sources)
    if docs_dir is not None:
        report.result_json = str(docs_dir / "validation_results.json")
        Path(report.result_json).write_text(
            json.dumps(
                {"summary": report.summary(), "checks": [r.model_dump() for r in results], "gx": raw_results},
                indent=1,
                default=str,
            )
        )
        index = docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
        report.data_docs = str(index) if index.exists() else None
    return report


def token_counter_for(backbone_spec: str, trust_remote_code: bool = False):
    """Counts tokens (special tokens included) with a backbone's tokenizer."""
    from transformers import AutoTokenizer

    from finetune_core.model.backbone import resolve_backbone

    tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(backbone_spec), trust_remote_code=trust_remote_code)
    return lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def validate_raw(config, raw, docs_dir: Path | None = None) -> ValidationReport:
    """Run the suites of ``config.validation`` on every split read into ``raw`` (a RawData)."""
    counter = None
    if config.validation.max_text_tokens and config.validation.severity_of("text_tokens") != "off":
        counter = token_counter_for(config.backbone.candidates[0], config.backbone.trust_remote_code)
    return run_suites(
        dict(raw.paths),
        raw.sources,
        config.data.text_column,
        config.data.label_column,
        config.task,
        config.validation,
        docs_dir,
        counter,
    )
