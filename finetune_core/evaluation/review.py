"""What reviewers read: plots, the per-class report, the worst-predicted test rows.

Every function writes files into a directory and returns their paths; nothing here knows
about MLflow. Plots use matplotlib's non-interactive Agg backend (no display on servers).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from finetune_core.data.columns import TEXT, TEXTS
from finetune_core.data.multilabel import label_matrix
from finetune_core.durable import write_atomic
from finetune_core.evaluation.multilabel_review import write_multilabel_review
from finetune_core.faults import maybe_kill
from finetune_core.metrics.served import predicted_ids, probabilities


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    """The PNG written whole or not at all: a rerun after a kill never logs half an image."""
    image = io.BytesIO()
    figure.savefig(image, dpi=100, format="png")
    write_atomic(path, image.getvalue())


def training_curves(stages: dict[str, dict], path: Path) -> Path:
    """Loss and validation metric per epoch, both stages side by side in one PNG."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for column, stage in enumerate(("frozen", "unfrozen")):
        history = stages.get(stage, {}).get("history", [])
        axis = axes[column]
        axis.set_title(f"{stage} stage")
        axis.set_xlabel("epoch")
        if not history:
            axis.text(0.5, 0.5, "not run", ha="center", va="center", transform=axis.transAxes)
            continue
        epochs = [h["epoch"] for h in history]
        axis.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train loss")
        for key in sorted(
            k
            for k in history[0]
            if k.startswith("val_") and k[4:] in ("loss", "accuracy", "mse", "f1_macro", "f1_micro")
        ):
            axis.plot(epochs, [h[key] for h in history], marker=".", label=key)
        axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def confusion_matrix_plot(targets: np.ndarray, predicted: np.ndarray, labels: list[str], path: Path) -> Path:
    from sklearn.metrics import confusion_matrix

    plt = _pyplot()
    matrix = confusion_matrix(targets, predicted, labels=range(len(labels)))
    size = max(3.5, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        axis.text(
            col, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black"
        )
    axis.set_title("confusion matrix (test)")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def calibration_plot(probs: np.ndarray, targets: np.ndarray, path: Path, bins: int = 10) -> Path:
    """Reliability diagram: accuracy against confidence, per confidence bin."""
    plt = _pyplot()
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == targets
    edges = np.linspace(0, 1, bins + 1)
    centres, accuracy, counts = [], [], []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            centres.append(confidence[inside].mean())
            accuracy.append(correct[inside].mean())
            counts.append(int(inside.sum()))
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axis.plot(centres, accuracy, marker="o", label="model (temperature applied)")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title("calibration (test)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def residual_plot(targets: np.ndarray, predictions: np.ndarray, path: Path) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    axes[0].scatter(targets, predictions, s=8, alpha=0.6)
    low, high = float(min(targets.min(), predictions.min())), float(max(targets.max(), predictions.max()))
    axes[0].plot([low, high], [low, high], linestyle="--", color="grey")
    axes[0].set_xlabel("target")
    axes[0].set_ylabel("prediction")
    axes[1].scatter(predictions, predictions - targets, s=8, alpha=0.6)
    axes[1].axhline(0, linestyle="--", color="grey")
    axes[1].set_xlabel("prediction")
    axes[1].set_ylabel("residual")
    figure.suptitle("test residuals")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def per_class_report(targets: np.ndarray, predicted: np.ndarray, labels: list[str]) -> str:
    from sklearn.metrics import classification_report

    return classification_report(
        targets, predicted, labels=range(len(labels)), target_names=labels, digits=4, zero_division=0
    )


def worst_examples(
    texts: list[str], targets: np.ndarray, served: pd.DataFrame, task: str, labels: list[str] | None, count: int = 50
) -> pd.DataFrame:
    """The test rows the model got most wrong: lowest probability of the true class, or
    largest absolute error. Sentence pairs show both texts (``served`` has the other text columns)."""
    frame = pd.DataFrame({TEXT: texts}).assign(**{c: served[c].to_numpy() for c in TEXTS[1:] if c in served.columns})
    if task == "regression":
        frame["target"], frame["prediction"] = targets, served["prediction"].to_numpy()
        frame["abs_error"] = (frame["prediction"] - frame["target"]).abs()
        return frame.sort_values("abs_error", ascending=False).head(count)
    probs = probabilities(served, labels)
    frame["true_label"] = [labels[t] for t in targets]
    frame["predicted_label"] = [labels[p] for p in predicted_ids(task, served, labels)]
    frame["probability_of_true_label"] = probs[np.arange(len(targets)), targets]
    return frame.sort_values("probability_of_true_label").head(count)


def write_review_files(
    out_dir: Path,
    task: str,
    texts: list[str],
    targets: np.ndarray,
    served: pd.DataFrame,
    labels: list[str] | None,
    stages: dict[str, dict],
    thresholds: list[float] | None = None,
) -> dict[str, Path]:
    """All reviewer files for one model into ``out_dir``; returns name -> path. ``thresholds``:
    a multilabel model's decision threshold per label, shown in its per-label report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"training_curves": training_curves(stages, out_dir / "training_curves.png")}
    maybe_kill("review-files")
    if task == "multilabel":
        truth, predicted = label_matrix(targets, len(labels)), predicted_ids(task, served, labels)
        probs = probabilities(served, labels)
        return files | write_multilabel_review(out_dir, texts, truth, predicted, probs, labels, _pyplot(), thresholds)
    worst = worst_examples(texts, targets, served, task, labels)
    files["worst_examples"] = out_dir / "worst_test_examples.csv"
    write_atomic(files["worst_examples"], worst.to_csv(index=False))
    if task == "regression":
        files["residuals"] = residual_plot(
            np.asarray(targets, dtype=np.float64), served["prediction"].to_numpy(), out_dir / "residuals.png"
        )
        return files
    predicted = predicted_ids(task, served, labels)
    files["confusion_matrix"] = confusion_matrix_plot(targets, predicted, labels, out_dir / "confusion_matrix.png")
    files["calibration"] = calibration_plot(probabilities(served, labels), targets, out_dir / "calibration.png")
    files["per_class_report"] = out_dir / "per_class_report.txt"
    write_atomic(files["per_class_report"], per_class_report(targets, predicted, labels))
    return files
