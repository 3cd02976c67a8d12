"""The registered version's description and the model card, in Markdown, for reviewers."""

from __future__ import annotations

from finetune_core.evaluation.gates import GateVerdict
from finetune_core.metric_table import headline


def _metrics_table(task: str, metrics: dict[str, float], verdict: GateVerdict) -> list[str]:
    """This version's test metrics, next to the champion's and the trivial baseline's on the same rows."""
    names = [m for m in headline(task) if m in metrics]
    columns: list[tuple[str, dict[str, float]]] = [("this version", metrics)]
    if verdict.champion_metrics:
        columns.append((f"champion v{verdict.champion_version} (same test set)", verdict.champion_metrics))
    if verdict.baseline is not None:
        columns.append((f"{verdict.baseline.name} baseline", verdict.baseline.metrics))
    lines = ["| metric | " + " | ".join(title for title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in names:
        cells = [f"{values[name]:.4f}" if name in values else "-" for _, values in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _contrastive_rate(training, stages: dict[str, dict]) -> str:
    """The rate the contrastive stage ran at (``None`` resolves from the rows per class)."""
    rate = stages.get("contrastive", {}).get("extra", {}).get("peak_learning_rate", training.contrastive.learning_rate)
    return "auto" if rate is None else f"{rate:g}"


def _precision_line(training, stages: dict[str, dict]) -> str:
    """``precision: auto`` as the network-training stage resolved it: what, why, the measured ratio."""
    extra = (stages.get("unfrozen") or next(iter(stages.values()), {})).get("extra", {})
    if "precision_reason" not in extra:
        return f"precision {training.precision}"
    line = f"precision {training.precision} -> {extra['precision']} ({extra['precision_reason']})"
    if extra.get("inference_precision", extra["precision"]) != extra["precision"]:
        line += f", inference {extra['inference_precision']} ({extra.get('inference_precision_reason', '')})"
    return line


def _stage_lines(config, stages: dict[str, dict]) -> list[str]:
    training = config.training
    lines = [
        f"- strategy `{training.strategy}`, batch {training.batch_size}, max length {training.max_length}, "
        f"seed {training.seed}, {_precision_line(training, stages)}"
    ]
    settings = {
        "frozen": f"lr {training.frozen.learning_rate:g}",
        "unfrozen": f"lr {training.unfrozen.learning_rate:g}, layer decay {training.unfrozen.layer_lr_decay:g}, "
        f"{training.unfrozen.scheduler} schedule, warmup {training.unfrozen.warmup_ratio:g}"
        + (", gradual unfreezing" if training.unfrozen.gradual else ""),
        "contrastive": f"lr {_contrastive_rate(training, stages)}, "
        + (
            f"{pairs} similar and dissimilar pairs per row"
            if (pairs := training.contrastive.pairs_per_example)
            else "every pair of rows (SetFit's default)"
        ),
    }
    extra = next(iter(stages.values()), {}).get("extra", {})  # the flow records the recipe on every stage
    if extra.get("strategy_reason"):
        lines.append(f"- strategy chosen: `{extra['strategy']}` ({extra['strategy_reason']})")
    if extra.get("validation", "used") != "used":
        lines.append(f"- validation split not used ({extra['validation']}): no best-epoch restore or calibration on it")
    for stage, info in stages.items():
        lines.append(
            f"- {stage} stage: {info['epochs_run']}/{info['epochs']} epochs ({settings.get(stage, '')}), "
            f"best epoch {info['best_epoch']}, {info['wall_seconds']:.1f} s, {info['samples_per_second']:.0f} samples/s"
        )
    return lines


def version_description(
    config,
    *,
    backbone: str,
    selection: str,
    data: dict,
    stages: dict[str, dict],
    metrics: dict[str, float],
    verdict: GateVerdict,
    run_link: str,
) -> str:
    """Markdown for the registered version: data, backbone, stages, metrics, gate verdict."""
    lines = [f"**Gate verdict: {'PASSED' if verdict.passed else 'FAILED'}** — {verdict.summary()}", ""]
    if any(c.rule == "baseline" and not c.passed for c in verdict.checks):
        name = verdict.baseline.name if verdict.baseline else "trivial"
        lines += [f"**Not made champion: no better than the {name} baseline on this test set.**", ""]
    lines += [
        "### Data",
        f"- fingerprint `{data['fingerprint']}`",
        "- rows: " + ", ".join(f"{split} {n}" for split, n in data["rows"].items()),
    ]
    if data.get("labels"):
        lines.append(f"- classes: {', '.join(data['labels'])}")
    if data.get("augmented_rows"):
        lines.append(f"- augmented training rows: {data['augmented_rows']}")
    if data.get("validation"):
        lines.append(f"- validation: {data['validation']}")
    lines += ["", "### Backbone", f"- `{backbone}` ({selection})", "", "### Training"]
    lines += _stage_lines(config, stages)
    lines += ["", "### Test metrics"]
    lines += _metrics_table(config.task, metrics, verdict)
    lines += ["", "### Gates"] + [f"- {'✔' if c.passed else '✘'} {c.reason}" for c in verdict.checks]
    lines += ["", f"Run: {run_link}"]
    return "\n".join(lines)


def label_review_markdown(review: dict, calibration: dict) -> str:
    """The label review's section of the version description: how many train labels look wrong,
    the most suspect rows, and where the temperature came from when validation could not fit it."""
    lines = ["", "### Label review"]
    if "skipped" in review:
        lines.append(f"- not run: {review['skipped']}")
    else:
        lines.append(
            f"- {review['suspects']} of {review['total']} train labels flagged ({review['fraction']:.1%}) by "
            f"{review['method']} on {review['folds']}-fold out-of-fold predictions; all in `{review['file']}`"
        )
        if "warning" in review:
            lines.append(f"- **warning**: {review['warning']}")
        if review.get("dropped"):
            lines.append(
                f"- {review['dropped']} flagged rows dropped before the later stages (review/dropped_rows.csv)"
            )
        if review["suspects"]:
            lines += [f"- score: {review['score']}", "", review["table"]]
    if again := review.get("after_training"):  # the second reading: stage 2's margins
        lines.append(
            f"- after training, {again['suspects']} of {again['total']} train labels flagged ({again['fraction']:.1%}) "
            f"by the {again['method']}; all in `{again['file']}`"
        )
        if again["suspects"]:
            lines += ["", again["table"], ""]
    if "oof_temperature_kept" in calibration:
        lines.append(
            "- temperature kept at 1 (too few validation rows, and the out-of-fold predictions do not beat the "
            "majority class)"
        )
    elif "oof_ece_before" in calibration:
        prior = calibration.get("oof_temperature_prior_sd")
        how = f"; sharpening, drawn toward 1 by a prior on log T, sd {prior}" if prior else ""
        lines.append(
            f"- temperature {calibration['temperature']:.3f} fitted on the out-of-fold predictions (too few "
            f"validation rows{how}): ECE {calibration['oof_ece_before']:.4f} -> {calibration['oof_ece_after']:.4f} "
            "on them"
        )
    return "\n".join(lines)


def model_card(config, *, name: str, description: str, files: dict[str, str]) -> str:
    """A model card: intended use, the version description, and where each review file is."""
    task = config.task
    lines = [
        f"# Model card: {name}",
        "",
        f"A {task} model fine-tuned from a pretrained text backbone with a two-stage recipe (head on the frozen "
        f"backbone, then everything at small layer-wise learning rates).",
        "",
        "## Intended use",
        f"Predicts from the text column `{config.data.text_column}` of a DataFrame; returns "
        + {
            "classification": "`label` and `probability_<class>` columns (temperature-scaled).",
            "multilabel": "a `labels` list (each label whose probability reaches its decision threshold, tuned "
            "per label on validation) and `probability_<label>` columns (per-label temperature applied).",
        }.get(task, "a `prediction` column."),
        "Trained on the data described below only; check the worst-predicted examples before using it elsewhere.",
        "",
        description,
        "",
        "## Files for review",
    ]
    lines += [f"- `{path}`: {what.replace('_', ' ')}" for what, path in files.items()]
    return "\n".join(lines)
