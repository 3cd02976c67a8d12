"""Human-readable forms of a validation report: a Markdown summary (Prefect artifact) and a
plain-text table (CLI)."""

from __future__ import annotations

from pathlib import Path

from finetune_core.validation.suites import CheckResult, ValidationReport


def _count(result: CheckResult) -> str:
    if result.unexpected_count is None:
        return "-"
    percent = f" ({result.unexpected_percent:.1f}%)" if result.unexpected_percent is not None else ""
    return f"{result.unexpected_count}{percent}"


def _shown(report: ValidationReport) -> list[CheckResult]:
    """Failures worth a line, errors first: a check that failed its error level is not repeated
    at its warning level."""
    stopped = {(r.split, r.check) for r in report.failures("error")}
    failures = [r for r in report.failures() if r.severity == "error" or (r.split, r.check) not in stopped]
    return sorted(failures, key=lambda r: (r.severity != "error", r.split, r.check))


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: ValidationReport) -> str:
    verdict = "passed" if report.passed else "FAILED: training stopped"
    lines = [f"# Data validation {verdict}", "", report.summary(), ""]
    lines += ["| split | file | rows |", "|---|---|---|"]
    lines += [f"| {s} | `{report.sources.get(s, '')}` | {n} |" for s, n in report.rows.items()]
    failures = _shown(report)
    if not failures:
        lines += ["", "Every check passed."]
        return "\n".join(lines)
    lines += [
        "",
        "## Failed checks",
        "",
        "| severity | split | check | expectation | column | unexpected | observed |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in failures:
        lines.append(
            f"| **{r.severity}** | {r.split} | {r.check} | {r.expectation} | {_cell(r.column or '')} | "
            f"{_count(r)} | {_cell(r.observed)} |"
        )
    for r in failures:
        if r.examples:
            lines += ["", f"### {r.split} / {r.check}: example rows", ""]
            columns = list(r.examples[0])
            lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(e.get(c, "")) for c in columns) + " |" for e in r.examples]
    return "\n".join(lines)


def table(report: ValidationReport) -> str:
    failures = _shown(report)
    if not failures:
        return f"data validation passed: {report.summary()}"
    header = ("SEVERITY", "SPLIT (FILE)", "CHECK", "COLUMN", "UNEXPECTED", "OBSERVED / EXAMPLE")
    rows = []
    for r in failures:
        example = r.examples[0] if r.examples else None
        detail = (
            r.observed
            if example is None
            else f"row {example['row']}: " + ", ".join(f"{k}={v!r}" for k, v in example.items() if k != "row")
        )
        where = f"{r.split} ({Path(report.sources[r.split]).name})" if r.split in report.sources else r.split
        rows.append((r.severity, where, r.check, r.column or "", _count(r), detail[:70]))
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), *(fmt.format(*row) for row in rows)]
    verdict = "data validation FAILED" if not report.passed else "data validation passed with warnings"
    return "\n".join([f"{verdict}: {report.summary()}", *lines])
