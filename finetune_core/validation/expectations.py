"""What each split's Great Expectations suite checks: the derived columns a chunk gets from
the whole-split facts, and the planned expectations, each with its check name and severity.

Checks that compare rows (duplicates) or splits (unknown labels, leakage), or look at a
split's whole label set (class sizes, mixed label types, typos), become derived columns of
each chunk, so every check is a plain row-level GX expectation that adds up over chunks.
A check with two levels (``ValidationConfig.levels``) is planned once per level.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from finetune_core.config.validation import Severity, ValidationConfig
from finetune_core.validation.label_sets import derive_label_sets, label_set_expectations
from finetune_core.validation.labels import describe_typos, expected_kind, label_kind, mixed_types, suspected_typos
from finetune_core.validation.split_facts import SplitFacts, as_written, row_keys

DUPLICATE, IN_TRAIN, CLASS_SHARE, CLASS_ROWS, TARGET, FINITE, TOKENS, LABEL_KIND, TYPO_OF = (
    "[repeats an earlier text]",
    "[text also in train]",
    "[share of its class in train]",
    "[rows of its class in train]",
    "[target as number]",
    "[target is finite]",
    "[length in tokens]",
    "[kind of label]",
    "[looks like a typo of]",
)
TEXT_DERIVED = (DUPLICATE, IN_TRAIN, TOKENS)
LABEL_DERIVED = (CLASS_SHARE, CLASS_ROWS, TARGET, FINITE, LABEL_KIND, TYPO_OF)
SHOWN_IN_EXAMPLES = (TYPO_OF,)  # derived values a reader needs next to the example row


@dataclass
class LabelRules:
    """Train's label set judged once per run (classification): the kind every label should
    have, and the labels that look like a typo of another."""

    counts: dict[str, int] = field(default_factory=dict)
    kind: str | None = None
    typos: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, facts: SplitFacts | None) -> LabelRules:
        counts = dict(facts.label_counts) if facts is not None else {}
        return cls(counts, expected_kind(counts), suspected_typos(counts))

    def kinds(self) -> dict[str, str]:
        return {label: label_kind(label) for label in self.counts}

    def typo_of(self) -> dict[str, str]:
        """Every label -> the label it looks like a typo of, "" for none (a missing label stays missing)."""
        return {label: self.typos.get(label, "") for label in self.counts}

    def finding(self, check: str) -> str | None:
        """What a failed ``label_types`` / ``label_typos`` found, in words."""
        if check == "label_types":
            return mixed_types(self.counts)
        if check == "label_typos" and self.typos:
            return describe_typos(self.typos, self.counts)
        return None


def derived_frame(
    split: str,
    chunk: pd.DataFrame,
    texts: list[str],
    label: str,
    task: str,
    facts: dict[str, SplitFacts],
    leaked: set[str],
    rules: LabelRules,
    token_counter,
    separator: str | None = None,
) -> pd.DataFrame:
    """``chunk`` with the derived columns its checks read (of the first of ``texts``, and of the
    pair for duplicates and leakage); ``separator``: multilabel's ``data.label_separator``."""
    out, text = chunk.copy(), texts[0]
    if text in out:
        out[DUPLICATE] = facts[split].duplicate[out.index.to_numpy()] if len(out) else pd.Series(dtype=bool)
        if split != "train" and "train" in facts and facts["train"].has_text:
            keys = row_keys(out, texts)
            out[IN_TRAIN] = keys.isin(leaked) & (keys != "")
        if token_counter is not None:
            out[TOKENS] = token_counter(out[text].fillna("").astype(str).tolist())
    if label in out:
        if task == "multilabel":
            train = facts["train"].label_counts if "train" in facts else {}
            out = derive_label_sets(out, label, split, separator, train, rules.typos)
        elif task == "classification":
            out[label] = out[label].map(as_written).astype(object)
            if split == "train":
                # dict lookups per row (no Python call per row): a label's facts are computed once
                out[CLASS_SHARE] = out[label].map(facts["train"].class_shares()).astype("float64")
                out[CLASS_ROWS] = out[label].map(rules.counts).astype("float64")
                out[LABEL_KIND] = out[label].map(rules.kinds()).astype(object)
                out[TYPO_OF] = out[label].map(rules.typo_of()).astype(object)
        else:
            numbers = pd.to_numeric(out[label], errors="coerce").astype("float64")
            out[TARGET], out[FINITE] = numbers, np.isfinite(numbers.to_numpy())
    return out


def planned_expectations(
    split: str,
    frame: pd.DataFrame,
    texts: list[str],
    label: str,
    task: str,
    config: ValidationConfig,
    train_labels: list[str] | None,
    rules: LabelRules,
) -> list[tuple[str, Severity, object]]:
    """(check, severity, expectation) for every check that runs on ``split`` (``frame``: a derived
    chunk); ``texts``: the text columns, a sentence pair's second text checked as the first is."""
    import great_expectations as gx

    E = gx.expectations
    planned: list[tuple[str, Severity, object]] = []

    def add(check: str, expectation) -> None:
        planned.append((check, config.severity_of(check), expectation))

    def add_levels(check: str, expectation_at) -> None:  # one expectation per level of a two-level check
        planned.extend((check, severity, expectation_at(threshold)) for severity, threshold in config.levels(check))

    text, others = texts[0], texts[1:]
    for column in [text, label, *others]:
        add("columns", E.ExpectColumnToExist(column=column))
    for column in [c for c in others if c in frame]:  # a pair's second text: as the first
        _text_value_expectations(add, E, column, config)
    min_rows = config.min_train_rows if split == "train" else config.min_eval_rows
    add("min_rows", E.ExpectTableRowCountToBeBetween(min_value=min_rows))
    if text in frame:
        _text_value_expectations(add, E, text, config)
        _text_row_expectations(add, add_levels, E, frame, config)
    if label in frame:
        _label_expectations(add, add_levels, E, split, frame, label, task, config, train_labels, rules)
    return [item for item in planned if item[1] != "off"]


def _text_value_expectations(add, E, column: str, config: ValidationConfig) -> None:
    """A text column's values: present, not blank, of a length within bounds."""
    add("text_not_blank", E.ExpectColumnValuesToNotBeNull(column=column))
    add("text_not_blank", E.ExpectColumnValuesToNotMatchRegex(column=column, regex=r"^\s*$"))
    add(
        "text_length",
        E.ExpectColumnValueLengthsToBeBetween(
            column=column, min_value=config.min_text_chars, max_value=config.max_text_chars
        ),
    )


def _text_row_expectations(add, add_levels, E, frame: pd.DataFrame, config: ValidationConfig) -> None:
    """What the derived text columns say of each row: duplicates, token counts, rows leaked from train."""
    add_levels(
        "duplicates",
        lambda share: E.ExpectColumnValuesToBeInSet(column=DUPLICATE, value_set=[False], mostly=1 - share),
    )
    if TOKENS in frame:
        add("text_tokens", E.ExpectColumnValuesToBeBetween(column=TOKENS, max_value=config.max_text_tokens))
    if IN_TRAIN in frame:
        leaked_share = config.max_leakage_fraction
        add("leakage", E.ExpectColumnValuesToBeInSet(column=IN_TRAIN, value_set=[False], mostly=1 - leaked_share))


def _label_expectations(add, add_levels, E, split, frame, label, task, config, train_labels, rules) -> None:
    """The label column's checks, by task (train's class checks; other splits' labels known to train)."""
    add("label_not_null", E.ExpectColumnValuesToNotBeNull(column=label))
    if task == "classification" and split == "train":
        if rules.kind is not None:
            add("label_types", E.ExpectColumnValuesToBeInSet(column=LABEL_KIND, value_set=[rules.kind]))
            add("label_typos", E.ExpectColumnValuesToBeInSet(column=TYPO_OF, value_set=[""]))
        add("min_classes", E.ExpectColumnUniqueValueCountToBeBetween(column=label, min_value=2))
        add_levels("class_rows", lambda rows: E.ExpectColumnValuesToBeBetween(column=CLASS_ROWS, min_value=rows))
        add_levels("class_fraction", lambda share: E.ExpectColumnValuesToBeBetween(column=CLASS_SHARE, min_value=share))
    elif task == "classification" and train_labels is not None:
        add("labels_known", E.ExpectColumnValuesToBeInSet(column=label, value_set=train_labels))
    elif task == "multilabel":
        label_set_expectations(split, frame, add, add_levels, E)
    elif task == "regression":
        add("target_finite", E.ExpectColumnValuesToBeInSet(column=FINITE, value_set=[True]))
        if config.target_min is not None or config.target_max is not None:
            add(
                "target_bounds",
                E.ExpectColumnValuesToBeBetween(
                    column=TARGET, min_value=config.target_min, max_value=config.target_max
                ),
            )
