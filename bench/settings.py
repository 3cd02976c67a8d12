"""Our training settings with a benchmark's overrides on top, one section deep
(``{"unfrozen": {"dropout": 0.0}}`` changes one key of ``unfrozen``, not the whole section)."""

from __future__ import annotations


def merged(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for key, value in overrides.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out
