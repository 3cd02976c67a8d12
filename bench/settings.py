"""Our training settings with a benchmark's overrides on top, one section deep
(``{"unfrozen": {"dropout": 0.0}}`` changes one key of ``unfrozen``, not the whole section); the
retired keys that chose an engine path still choose it here, so a recorded command still compares."""

from __future__ import annotations

import copy

from finetune_core.config.retired import RETIRED
from finetune_core.model import dropout_masks, embedding_rows


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def engine_switches(training: dict) -> dict:
    """``training`` without the retired keys (finetune_core/config/retired.py), their choice set on the
    engine instead (``{"token_rows": "all"}``, ``{"unfrozen": {"dropout_masks": "torch"}}``), the fixed
    behaviour where ``training`` names none: call it before each run it configures."""
    training = copy.deepcopy(training)
    embedding_rows.SEEN_ROWS_ONLY = training.pop("token_rows", "seen") == RETIRED["training.token_rows"].fixed
    for stage in dropout_masks.STAGE_MASKS:
        fixed = RETIRED[f"training.{stage}.dropout_masks"].fixed
        dropout_masks.STAGE_MASKS[stage] = training.get(stage, {}).pop("dropout_masks", fixed)
    return training
