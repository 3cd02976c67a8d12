"""Errors the CLI maps to exit codes (docs/reference/exit-codes.md: 2 = bad configuration or data)."""


class UserInputError(Exception):
    """Bad configuration or data: the message names the field, file or column."""

    exit_code = 2


class ConfigError(UserInputError):
    """The configuration is invalid; the message names the dotted field path."""


class DataError(UserInputError):
    """A data file is missing, unreadable or lacks a required column."""


class DataValidationError(DataError):
    """A data validation check of severity `error` failed; ``report`` has every result."""

    def __init__(self, report):
        self.report = report
        lines = [f"data validation failed ({report.summary()}):"]
        for failure in report.failures("error"):
            where = report.sources.get(failure.split, failure.split)
            detail = failure.observed
            if failure.examples:
                first = failure.examples[0]
                detail += f"; e.g. row {first['row']}: " + ", ".join(
                    f"{k}={v!r}" for k, v in first.items() if k != "row"
                )
            column = f" column {failure.column!r}" if failure.column else ""
            lines.append(f"  {where}:{column} {failure.check} ({detail[:160]})")
        if report.data_docs:
            lines.append(f"  report: {report.data_docs}")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # picklable although __init__ takes the report, not the message
        return (type(self), (self.report,))
