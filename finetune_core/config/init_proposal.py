"""What `finetune init` proposes for a data file (columns, task), each decision with its reason,
and the short commented configuration written from it (docs/how-to/own-data.md).

The guess itself reads data, so it lives in ``finetune_core.data.schema_guess``; this module only
holds its result and renders it, so the configuration package never imports the data package."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from finetune_core.config.sections import BUNDLED_BACKBONE

TASKS = ("classification", "regression", "multilabel")


@dataclass(frozen=True)
class InitProposal:
    """The columns and task `finetune init` settled on; ``reasons`` says why, one line per key."""

    text_column: str
    label_column: str
    task: str
    text_pair_column: str | None = None
    label_separator: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def decisions(self) -> list[tuple[str, str, str]]:
        """(config key, value, reason) for every key this proposal sets, in the order they are written."""
        rows = [("task", self.task), ("data.text_column", self.text_column)]
        if self.text_pair_column is not None:
            rows.append(("data.text_pair_column", self.text_pair_column))
        rows.append(("data.label_column", self.label_column))
        if self.label_separator is not None:
            rows.append(("data.label_separator", self.label_separator))
        return [(key, value, self.reasons.get(key, "")) for key, value in rows]


def _scalar(value: str) -> str:
    """A YAML scalar that reads back as this exact string (JSON strings are YAML)."""
    return json.dumps(value)


def render_config(proposal: InitProposal, *, train: str, test: str) -> str:
    """The starter configuration: only the keys a user must set, a comment on each; every other key
    keeps its default (``finetune show-config CONFIG --all`` lists them all)."""
    pair = proposal.text_pair_column
    lines = [
        "# Written by `finetune init`: check the columns and the task, then `finetune validate` and `finetune run`.",
        "# Data paths are relative to this file. Every key not here keeps its default:",
        "# `finetune show-config THIS_FILE --all` prints them all.",
        _commented(f"task: {proposal.task}", TASK_COMMENTS[proposal.task]),
        "",
        "data:",
        _keyed("train", _scalar(train), "the training file"),
        _keyed("test", _scalar(test), "the labelled test file of the final evaluation"),
        _keyed("validation_fraction", "0.1", "no validation file: a seeded split of train is held out"),
        _keyed("text_column", _scalar(proposal.text_column), "the input text"),
    ]
    if pair is not None:
        lines.append(_keyed("text_pair_column", _scalar(pair), "the second text: the two are tokenised as a pair"))
    lines.append(_keyed("label_column", _scalar(proposal.label_column), LABEL_COMMENTS[proposal.task]))
    if proposal.label_separator is not None:
        lines.append(
            _keyed("label_separator", _scalar(proposal.label_separator), "labels in one string, split on this")
        )
    lines += [
        "",
        "backbone:",
        "  candidates:                       # the pretrained model(s) to fine-tune; the bundled one runs offline",
        f"    - {BUNDLED_BACKBONE}",
        "",
    ]
    return "\n".join(lines)


def _keyed(key: str, value: str, comment: str) -> str:
    return _commented(f"  {key}: {value}", comment)


def _commented(line: str, comment: str) -> str:
    return line + " " * max(1, 36 - len(line)) + f"# {comment}"


TASK_COMMENTS = {
    "classification": "one label per row (cross-entropy); or regression, multilabel",
    "regression": "a number per row (mean squared error); or classification, multilabel",
    "multilabel": "several labels per row (a sigmoid each); or classification, regression",
}
LABEL_COMMENTS = {
    "classification": "the class of each row",
    "regression": "the number to predict",
    "multilabel": "the labels of each row",
}
