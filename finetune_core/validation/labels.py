"""Whole-split rules on a classification label set: mixed label types and likely typos.

Both are decided on train's label counts (``SplitFacts.label_counts``, gathered over every
chunk), so a chunk's rows can be flagged without seeing the others. Labels are compared as
the file writes them (``as_written``): ``1`` and ``1.0`` in a text column are two classes to
the model, and so are ``neg`` and ``Neg``.

**Mixed types** (``label_types``): some labels look like numbers (``0``, ``1``, ``2.5``: a
finite float after stripping) and others do not (``pos``). A label column is a list of codes
or a list of names; a mix is almost always a merge of two encodings, or a stray word in a
numeric column (the corpus: ``0``/``1`` with every fourth row ``pos`` trained a 3-class
model). The rows of the kind with fewer rows are flagged (a tie flags the words).

**Typos** (``label_typos``): label A is flagged as a variant of a label B with at least as
many rows when

1. both read the same after normalising (case-folded, runs of whitespace as one space,
   trimmed; numbers by value: ``1`` and ``1.0``), whatever their counts: two classes nobody
   could tell apart by name (``neg``/``Neg``, ``pos``/``pos ``); or
2. both are words of at least ``TYPO_MIN_CHARS`` characters, A has at most
   ``TYPO_MAX_SHARE`` of B's rows, they differ in more than digits, and their normalised
   forms are within ``typo_distance`` edits (insert, delete, substitute, swap two adjacent
   letters): 1 edit below 8 characters, 2 from 8 on (``postive``/``positive``).

Rule 2 is deliberately narrow, since a false alarm stops a run: short codes (``neg``/``neu``)
and enumerations (``class_1``/``class_2``) are never typos of each other, and a real class
is rarely both spelt like another and 20 times smaller. A real class that is, is kept with
``validation.severity.label_typos: off``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

TYPO_MAX_SHARE = 0.05  # a suspected typo has at most 5 % of the rows of the label it resembles
TYPO_MIN_CHARS = 4  # shorter labels are only compared by their normalised form (rule 1)
TYPO_MAX_LABELS = 500  # rule 2 compares pairs; above this many labels only rule 1 runs
NUMBER, WORD = "number", "word"


def label_kind(label: str) -> str:
    """``number`` when the label reads as a finite number, else ``word``."""
    try:
        return NUMBER if math.isfinite(float(label.strip())) else WORD
    except ValueError:
        return WORD


def _normal_form(label: str) -> str:
    if label_kind(label) == NUMBER:
        return repr(float(label.strip()))
    return " ".join(label.casefold().split())


def expected_kind(counts: Mapping[str, int]) -> str | None:
    """The kind of label rows should have: the one with more rows (a tie: numbers); None without labels."""
    rows = {NUMBER: 0, WORD: 0}
    for label, count in counts.items():
        rows[label_kind(label)] += count
    if not rows[NUMBER] and not rows[WORD]:
        return None
    return NUMBER if rows[NUMBER] >= rows[WORD] else WORD


def _listing(labels: list[tuple[str, int]], limit: int = 5) -> str:
    shown = ", ".join(f"{label!r} ({count} rows)" for label, count in labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def mixed_types(counts: Mapping[str, int]) -> str | None:
    """Why the labels mix numbers and words, or None when they do not."""
    kinds: dict[str, list[tuple[str, int]]] = {NUMBER: [], WORD: []}
    for label, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        kinds[label_kind(label)].append((label, count))
    if not kinds[NUMBER] or not kinds[WORD]:
        return None
    return f"numeric labels {_listing(kinds[NUMBER])} mixed with word labels {_listing(kinds[WORD])}"


def typo_distance(length: int) -> int:
    """Edits allowed between a word label of ``length`` characters and the label it may misspell."""
    return 1 if length < 8 else 2


def edit_distance(a: str, b: str, limit: int) -> int:
    """Optimal-string-alignment distance of ``a`` and ``b`` (an adjacent swap is one edit), or
    ``limit + 1`` as soon as it must exceed ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before, previous = None, list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            if before is not None and i > 1 and j > 1 and char == b[j - 2] and a[i - 2] == other:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return previous[-1]


def _digits_differ_only(a: str, b: str) -> bool:
    return re.sub(r"\d", "", a) == re.sub(r"\d", "", b)


def suspected_typos(counts: Mapping[str, int]) -> dict[str, str]:
    """Each label that looks like a variant or misspelling of another -> that other label."""
    # Most rows first; among equals a label already in normal form first, then by name.
    ordered = sorted(counts, key=lambda label: (-counts[label], label != _normal_form(label), label))
    forms = {label: _normal_form(label) for label in ordered}
    suspects: dict[str, str] = {}
    first_of_form: dict[str, str] = {}
    for label in ordered:  # rule 1: the same normal form as a label with at least as many rows
        if forms[label] in first_of_form:
            suspects[label] = first_of_form[forms[label]]
        else:
            first_of_form[forms[label]] = label
    if len(ordered) > TYPO_MAX_LABELS:
        return suspects
    words = [label for label in ordered if label_kind(label) == WORD and label not in suspects]
    for index, rare in enumerate(words):  # rule 2: close spelling of a label with 20 times its rows
        for common in words[:index]:
            a, b = forms[rare], forms[common]
            shorter = min(len(a), len(b))
            if (
                counts[rare] <= TYPO_MAX_SHARE * counts[common]
                and shorter >= TYPO_MIN_CHARS
                and not _digits_differ_only(a, b)
                and edit_distance(a, b, typo_distance(shorter)) <= typo_distance(shorter)
            ):
                suspects[rare] = common
                break
    return suspects


def describe_typos(suspects: Mapping[str, str], counts: Mapping[str, int], limit: int = 5) -> str:
    pairs = sorted(suspects.items(), key=lambda item: (-counts[item[1]], item[0]))
    shown = "; ".join(
        f"{rare!r} ({counts[rare]} rows) looks like {common!r} ({counts[common]} rows)"
        for rare, common in pairs[:limit]
    )
    return shown + (f"; and {len(pairs) - limit} more" if len(pairs) > limit else "")
