"""One check's result over a split validated chunk by chunk.

Each chunk is a real Great Expectations validation; this adds their counts up. Row-level
expectations sum their element, missing and unexpected counts and decide ``mostly`` on the
totals, as GX would on the whole split. The two table-level ones take the whole-split fact
gathered beforehand (``split_facts``): the row count, and the number of distinct labels.
With one chunk, GX's own result is kept as it is.
"""

from __future__ import annotations

import json

from finetune_core.validation.split_facts import SplitFacts

ROW_COUNT = "expect_table_row_count_to_be_between"
UNIQUE_COUNT = "expect_column_unique_value_count_to_be_between"
EXISTS = "expect_column_to_exist"
NOT_NULL = "expect_column_values_to_not_be_null"


def _between(value: float, kwargs: dict) -> bool:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    return (low is None or value >= low) and (high is None or value <= high)


def merge_chunks(parts: list[dict], facts: SplitFacts, limit: int) -> dict:
    """``parts``: this check on every chunk, each {type, kwargs, success, result, examples}.
    Returns {success, observed, unexpected_count, unexpected_percent, examples}."""
    first = parts[0]
    examples = [row for part in parts for row in part["examples"]][:limit]
    if len(parts) == 1:
        result = first["result"]
        return {
            "success": first["success"],
            "observed": observed(result),
            "unexpected_count": result.get("unexpected_count"),
            "unexpected_percent": result.get("unexpected_percent"),
            "examples": examples,
        }
    kind, kwargs = first["type"], first["kwargs"]
    if kind in (ROW_COUNT, UNIQUE_COUNT):
        value = facts.rows if kind == ROW_COUNT else len(facts.label_counts)
        return {
            "success": _between(value, kwargs),
            "observed": json.dumps(value),
            "unexpected_count": None,
            "unexpected_percent": None,
            "examples": [],
        }
    if kind == EXISTS:
        return {
            "success": all(p["success"] for p in parts),
            "observed": "",
            "unexpected_count": None,
            "unexpected_percent": None,
            "examples": [],
        }
    elements = sum(p["result"].get("element_count") or 0 for p in parts)
    missing = sum(p["result"].get("missing_count") or 0 for p in parts)
    unexpected = sum(p["result"].get("unexpected_count") or 0 for p in parts)
    counted = elements if kind == NOT_NULL else elements - missing  # GX's denominator for each kind
    mostly = kwargs.get("mostly")
    if mostly is None:
        success = unexpected == 0
    else:
        success = counted == 0 or 1 - unexpected / counted >= mostly
    return {
        "success": success,
        "observed": f"{unexpected} unexpected of {elements}",
        "unexpected_count": unexpected,
        "unexpected_percent": 100 * unexpected / counted if counted else 0.0,
        "examples": [] if success else examples,
    }


def observed(result: dict) -> str:
    if "observed_value" in result:
        return json.dumps(result["observed_value"], default=str)[:200]
    if result.get("unexpected_count") is not None:
        return f"{result['unexpected_count']} unexpected of {result.get('element_count')}"
    return ""
