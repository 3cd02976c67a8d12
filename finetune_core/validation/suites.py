"""Data validation with Great Expectations 1.x: one suite per split, built from `validation.*`.

Checks that compare rows (duplicates) or splits (unknown labels, train/test leakage, class
sizes, mixed label types, label typos) are computed as derived columns of the validated
frame (``expectations``), so every check is a real GX expectation with its own severity,
result and Data Docs entry; a check with a warning and an error level is one expectation
per level. Failed checks carry a few example rows with their line numbers in the source file.

Splits are validated ``validation.chunk_rows`` rows at a time, so a file larger than memory
is never read whole: the whole-split facts behind the derived columns are gathered first in
one streaming pass (``split_facts``), each chunk is its own GX validation, and the chunks'
results are added up per check (``validation_merge``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from finetune_core.config.validation import CHECKS, ValidationConfig
from finetune_core.data.chunks import chunks_of, parquet_columns
from finetune_core.data.columns import text_columns
from finetune_core.validation.expectations import (
    LABEL_DERIVED,
    SHOWN_IN_EXAMPLES,
    TEXT_DERIVED,
    LabelRules,
    derived_frame,
    planned_expectations,
)
from finetune_core.validation.label_sets import LABEL_SET_DERIVED, SHOWN, count_labels
from finetune_core.validation.merge import merge_chunks
from finetune_core.validation.split_facts import gather


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


def _validate_chunk(checkpoint, derived: pd.DataFrame, run_name: str | None, texts: list[str], label: str, limit: int):
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
        kwargs = outcome.expectation_config.kwargs
        shown = texts + [label] + [c for c in [kwargs.get("column")] if c in SHOWN_IN_EXAMPLES + SHOWN]
        parts.append(
            {
                "type": outcome.expectation_config.type,
                "kwargs": kwargs,
                "meta": outcome.expectation_config.meta,
                "success": bool(outcome.success),
                "result": result,
                "examples": _examples(derived, failed_rows, shown, limit),
            }
        )
    return validation.to_json_dict(), parts


def _columns(source) -> list[str]:
    return list(source.columns) if isinstance(source, pd.DataFrame) else parquet_columns(source)


# Great Expectations keeps process-wide state (its project manager points at the last context
# made): two validations in threads of one process (two flow runs started together, or mapped
# tasks) wrote one run's great_expectations.yml twice. One validation at a time per process.
_GX_IN_USE = threading.Lock()


def run_suites(*args, **kwargs) -> ValidationReport:
    """Validate every split, one validation at a time in this process (see ``_GX_IN_USE``)."""
    with _GX_IN_USE:
        return _run_suites(*args, **kwargs)


def _run_suites(
    frames: dict[str, pd.DataFrame | str | Path],
    sources: dict[str, str],
    texts: list[str],
    label: str,
    task: str,
    config: ValidationConfig,
    docs_dir: Path | None = None,
    token_counter=None,
    separator: str | None = None,
) -> ValidationReport:
    """Validate every split (a frame, or a Parquet file read in chunks); with ``docs_dir``,
    write GX Data Docs and the JSON results there. ``texts``: the text columns; a sentence pair's
    second is checked as the text is, and duplicates and leakage are about the pair."""
    context = _context(docs_dir)
    data_source = context.data_sources.add_or_update_pandas(name="finetune")
    chunked = {split: chunks_of(frame, config.chunk_rows) for split, frame in frames.items()}
    facts, leaked = gather(chunked, texts, label, task)
    if task == "multilabel" and "train" in chunked:  # per-label counts: one more pass over train's labels
        facts["train"].label_counts = count_labels(chunked["train"], label, separator)
    train_labels = None
    if task == "classification" and "train" in frames and label in _columns(frames["train"]):
        train_labels = sorted(facts["train"].label_counts)
    rules = LabelRules.of(facts.get("train") if task in ("classification", "multilabel") else None)
    results: list[CheckResult] = []
    raw_results: dict[str, object] = {}
    # Reports name the data's own column, not the derived one the expectation ran on.
    source_column = {
        **dict.fromkeys(TEXT_DERIVED, texts[0]),
        **dict.fromkeys(LABEL_DERIVED, label),
        **dict.fromkeys(LABEL_SET_DERIVED, label),
    }
    for split, chunks in chunked.items():
        checkpoint, chunk_json, parts = None, [], []
        several = facts[split].rows > config.chunk_rows
        for chunk in chunks():
            counter = token_counter if config.max_text_tokens else None
            derived = derived_frame(split, chunk, texts, label, task, facts, leaked, rules, counter, separator)
            if checkpoint is None:  # one suite per split, planned from the (shared) columns
                planned = planned_expectations(split, derived, texts, label, task, config, train_labels, rules)
                checkpoint = _split_checkpoint(context, data_source, split, planned, docs_dir)
            run_name = f"{split} rows {chunk.index[0] + 1}-{chunk.index[-1] + 1}" if several and len(chunk) else None
            as_json, chunk_parts = _validate_chunk(checkpoint, derived, run_name, texts, label, config.examples)
            chunk_json.append(as_json)
            parts.append(chunk_parts)
        raw_results[split] = chunk_json[0] if len(chunk_json) == 1 else chunk_json
        results += _merged_results(split, parts, facts[split], config.examples, rules, source_column)
    report = ValidationReport(results=results, rows={s: f.rows for s, f in facts.items()}, sources=sources)
    if docs_dir is not None:
        _write_results(report, docs_dir, raw_results)
    return report


def _split_checkpoint(context, data_source, split: str, planned, docs_dir: Path | None):
    """The GX checkpoint of one split: its suite of ``planned`` (check, severity, expectation), the
    split's dataframe asset, and (with ``docs_dir``) the Data Docs update."""
    import great_expectations as gx

    suite = context.suites.add_or_update(gx.ExpectationSuite(name=f"finetune-{split}"))
    for check, severity, expectation in planned:
        expectation.severity = _GX_SEVERITY[severity]
        expectation.meta = {"check": check, "guards": CHECKS[check][0], "severity": severity}
        suite.add_expectation(expectation)
    batch_definition = data_source.add_dataframe_asset(name=split).add_batch_definition_whole_dataframe(split)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"finetune-{split}", data=batch_definition, suite=suite)
    )
    actions = [gx.checkpoint.UpdateDataDocsAction(name="data-docs")] if docs_dir else []
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"finetune-{split}",
            validation_definitions=[definition],
            actions=actions,
            result_format=_RESULT_FORMAT,
        )
    )


def _merged_results(split: str, parts, facts, examples: int, rules, source_column) -> list[CheckResult]:
    """One result per check of ``split``, its chunks' results (``parts``, per chunk per
    expectation) added up; named by the data's own column."""
    results = []
    for index, first in enumerate(parts[0]):
        merged = merge_chunks([chunk_parts[index] for chunk_parts in parts], facts, examples)
        column, check = first["kwargs"].get("column"), first["meta"]["check"]
        finding = None if merged["success"] else rules.finding(check)
        results.append(
            CheckResult(
                split=split,
                check=check,
                severity=first["meta"]["severity"],
                success=merged["success"],
                expectation=first["type"],
                column=source_column.get(column, column),
                observed=finding or merged["observed"],
                unexpected_count=merged["unexpected_count"],
                unexpected_percent=merged["unexpected_percent"],
                examples=[] if merged["success"] else merged["examples"],
            )
        )
    return results


def _write_results(report: ValidationReport, docs_dir: Path, raw_results: dict) -> None:
    """The JSON results beside the Data Docs, and where the Data Docs' index is (when written)."""
    report.result_json = str(docs_dir / "validation_results.json")
    Path(report.result_json).write_text(
        json.dumps(
            {"summary": report.summary(), "checks": [r.model_dump() for r in report.results], "gx": raw_results},
            indent=1,
            default=str,
        )
    )
    index = docs_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    report.data_docs = str(index) if index.exists() else None


def token_counter_for(backbone_spec: str, trust_remote_code: bool = False):
    """Counts tokens (special tokens included) with a backbone's tokenizer; one that cannot be
    loaded (a hub id offline and not cached, broken tokenizer files) is a configuration error."""
    from transformers import AutoTokenizer

    from finetune_core.errors import ConfigError
    from finetune_core.model.backbone import resolve_backbone

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_backbone(backbone_spec), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"validation.max_text_tokens: could not load the tokenizer of backbone {backbone_spec!r} "
            f"(backbone.candidates[0]) to count tokens: {exc}"
        ) from None
    return lambda texts: [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def validate_raw(config, raw, docs_dir: Path | None = None) -> ValidationReport:
    """Run the suites of ``config.validation`` on every split read into ``raw`` (a RawData)."""
    counter = None
    if config.validation.max_text_tokens and config.validation.severity_of("text_tokens") != "off":
        counter = token_counter_for(config.backbone.candidates[0], config.backbone.trust_remote_code)
    return run_suites(
        dict(raw.paths),
        raw.sources,
        list(text_columns(config.data.text_column, config.data.text_pair_column).values()),
        config.data.label_column,
        config.task,
        config.validation,
        docs_dir,
        counter,
        config.data.label_separator,
    )
