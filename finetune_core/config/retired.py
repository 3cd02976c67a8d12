"""Configuration keys retired because the engine choice they made was measured better everywhere and
is now fixed behaviour. An old configuration still loads (a champion's recorded config.yaml above all,
which a scheduled retrain reads): ``validate_config`` (config.loading) drops each retired key and
warns once, naming what the engine does now and the decision record behind it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

RETIRED_ON = "2026-12-03"


@dataclass(frozen=True)
class RetiredKey:
    now: str  # what the engine always does now
    fixed: Any  # the value that asked for it; any other value is ignored
    record: str  # the decision record, relative to docs/


RETIRED: dict[str, RetiredKey] = {
    "training.token_rows": RetiredKey(
        now="the stages that train the encoder always optimise only the token-embedding rows the training split uses, "
        "to the same weights as training the whole matrix",
        fixed="seen",
        record="decisions/seen-token-rows.md",
    ),
    "training.unfrozen.dropout_masks": RetiredKey(
        now="stage 2 always draws its dropout masks with NumPy on CPUs, torch's on GPUs",
        fixed="numpy",
        record="decisions/dropout-masks.md",
    ),
    "training.contrastive.dropout_masks": RetiredKey(
        now="the contrastive stage always draws torch's dropout masks",
        fixed="torch",
        record="decisions/dropout-masks.md",
    ),
}


def notice(key: str, value: Any) -> str:
    """What a configuration setting the retired ``key`` to ``value`` is told."""
    retired = RETIRED[key]
    why = f"{retired.now} (docs/{retired.record})"
    if value == retired.fixed:
        return f"{key} is retired ({RETIRED_ON}); remove it: {why}"
    return f"{key} is retired ({RETIRED_ON}) and its value {value!r} is ignored: {why}"


def _holder(raw: dict, key: str) -> dict | None:
    """The mapping of ``raw`` that holds ``key``'s last part, when it does."""
    *sections, name = key.split(".")
    node: Any = raw
    for section in sections:
        node = node.get(section) if isinstance(node, dict) else None
    return node if isinstance(node, dict) and name in node else None


def drop_retired(raw: dict) -> tuple[dict, list[str]]:
    """``raw`` without the retired keys it holds (a copy; ``raw`` is left as it is), and one notice
    per key dropped."""
    present = [key for key in RETIRED if _holder(raw, key) is not None]
    if not present:
        return raw, []
    cleaned = copy.deepcopy(raw)
    notices = []
    for key in present:
        notices.append(notice(key, _holder(cleaned, key).pop(key.rsplit(".", 1)[1])))
    return cleaned, notices


def with_fixed_values(dump: dict) -> dict:
    """``dump`` (a configuration's ``model_dump``) with each retired key at its fixed value, as a
    configuration was dumped before the retirement: it hashes as it did then, since it trains the same."""
    for key, retired in RETIRED.items():
        *sections, name = key.split(".")
        node = dump
        for section in sections:
            node = node[section]
        node[name] = retired.fixed
    return dump
