"""The metric table: every metric a task reports, which direction is better, and the primary
metric that selects epochs and decides the champion comparison. The one owner of these facts:
gates, early stopping, the model card and `finetune models` all read it from here."""

from __future__ import annotations

# Metrics each task produces: name -> larger is better. Order is the order reviewers see
# (model card, `finetune models`). Per-class metrics are named precision_<class>, recall_<class>.
TASK_METRICS = {
    "classification": {"accuracy": True, "f1_macro": True, "loss": False, "ece": False},
    "regression": {"mse": False, "mae": False, "r2": True, "pearson": True, "spearman": True},
    # Multilabel: F1 over labels (macro: each label counts the same, the rare ones too), over all
    # decisions (micro), the share of rows with exactly the right label set, ranking quality.
    "multilabel": {
        "f1_macro": True,
        "f1_micro": True,
        "subset_accuracy": True,
        "roc_auc_macro": True,
        "loss": False,
    },
}
PER_CLASS_PREFIXES = ("precision_", "recall_")
PER_LABEL_PREFIXES = ("precision_", "recall_", "f1_")  # multilabel: per label, plus support_<label>
_PREFIXES = {"classification": PER_CLASS_PREFIXES, "multilabel": PER_LABEL_PREFIXES}

# The metric each task selects models by when `training.metric` is unset, and whether larger is
# better. Regression ranks by Spearman: similarity scores are judged by their order (as STS-B is).
PRIMARY_METRIC = {
    "classification": ("accuracy", True),
    "regression": ("spearman", True),
    "multilabel": ("f1_macro", True),
}
# The metric the trivial-baseline gate compares: a mean predictor is constant, so its Spearman is
# undefined (reported 0) and only an error metric says whether the model beats it.
BASELINE_METRIC = {
    "classification": ("accuracy", True),
    "regression": ("mse", False),
    "multilabel": ("f1_macro", True),  # the baseline predicts train's commonest label for every row
}


def primary_metric(task: str, configured: str | None = None) -> tuple[str, bool]:
    """The metric that selects epochs and decides the champion comparison: ``training.metric``
    when set, else the task's default; with whether larger is better."""
    if configured is None:
        return PRIMARY_METRIC[task]
    return configured, larger_is_better(task, configured)


def larger_is_better(task: str, metric: str) -> bool:
    if task in _PREFIXES and metric.startswith(_PREFIXES[task]) and metric not in TASK_METRICS[task]:
        return True
    return TASK_METRICS[task][metric]


def unknown_metrics(task: str, names, labels: list[str] | None = None) -> list[str]:
    """Gate metrics the task does not produce (per-class names are checked when labels are known)."""
    known = set(TASK_METRICS[task])
    unknown = []
    for name in names:
        if name in known:
            continue
        if task in _PREFIXES and name.startswith(_PREFIXES[task]):
            if labels is None or name.split("_", 1)[1] in labels:
                continue
        unknown.append(name)
    return unknown


def headline(task: str | None) -> list[str]:
    """The metrics reviewers see first, in order; every task's when the task is unknown."""
    if task in TASK_METRICS:
        return list(TASK_METRICS[task])
    return [name for metrics in TASK_METRICS.values() for name in metrics]
