"""Choose the served form of a trained model at registration: export it to ONNX, quantise it,
check each form's parity with PyTorch on the test split, keep the fastest form that passes inside
the model directory (``serving/``), and time the runtimes (docs/how-to/serving.md).

Order of preference: ONNX int8, ONNX fp32, PyTorch. A form that fails parity is never served; the
record says why, and the PyTorch model is always there to fall back on.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from finetune_core.config.gates import ParityGates
from finetune_core.config.sections import ServingConfig
from finetune_core.durable import write_atomic
from finetune_core.serving.onnx_predictor import GRAPH_FILE, RECORD_FILE, SERVING_DIR, OnnxPredictor
from finetune_core.serving.parity import Parity, Timing, measure_timing, parity


class ParityRows(BaseModel):
    """The test split as the served model reads it, and its targets."""

    texts: list[list[str]]  # per text column: the texts, and a sentence pair's second texts
    targets: list  # class ids, label-id lists (multilabel) or values
    metric: str  # the primary metric parity compares


class ServingReport(BaseModel):
    served: str  # onnx-int8 | onnx-fp32 | torch
    reason: str
    parities: list[Parity] = []
    timings: list[Timing] = []
    sizes_mb: dict[str, float] = {}  # torch (the weights), onnx-fp32, onnx-int8

    def metrics(self) -> dict[str, float]:
        values = {f"serving/{form.replace('-', '_')}_mb": size for form, size in self.sizes_mb.items()}
        for item in (*self.parities, *self.timings):
            values.update(item.metrics())
        return values

    def markdown(self) -> str:
        lines = ["", "## Serving", "", f"Served by default: **{self.served}** ({self.reason})."]
        if self.parities:
            lines += ["", "| form | rows | agreement | metric (torch → form) | max prob. diff | parity |"]
            lines.append("|---|---|---|---|---|---|")
            for p in self.parities:
                agreement = "n/a" if p.agreement is None else f"{p.agreement:.2%}"
                verdict = "passed" if p.passed else "failed: " + "; ".join(p.reasons)
                lines.append(
                    f"| {p.form} | {p.rows} | {agreement} | {p.metric} {p.metric_torch:.4f} → {p.metric_form:.4f} "
                    f"| {p.max_probability_difference:.2e} | {verdict} |"
                )
        if self.timings:
            lines += ["", "| runtime | p50 ms (batch 1) | p95 ms (batch 1) | rows/s (batch 32) | size MB |"]
            lines.append("|---|---|---|---|---|")
            for t in self.timings:
                size = self.sizes_mb.get(t.runtime)
                shown = "" if size is None else f"{size:.1f}"
                lines.append(f"| {t.runtime} | {t.p50_ms:.1f} | {t.p95_ms:.1f} | {t.rows_per_s:.0f} | {shown} |")
        return "\n".join(lines) + "\n"


def _megabytes(*paths: Path) -> float:
    return round(sum(p.stat().st_size for p in paths if p.is_file()) / 1e6, 2)


def _candidates(model_dir: Path, work_dir: Path, serving: ServingConfig) -> dict[str, Path]:
    """The ONNX forms to check, preferred first: int8 (when asked for), then fp32."""
    from finetune_core.serving.export_process import export_model_dir
    from finetune_core.serving.onnx_export import quantize_int8

    fp32 = export_model_dir(model_dir, work_dir / "model.fp32.onnx")
    forms = {"onnx-fp32": fp32}
    if serving.quantize == "int8":
        forms = {"onnx-int8": quantize_int8(fp32, work_dir / "model.int8.onnx"), **forms}
    return forms


def _first_line(exc: Exception) -> str:
    """The error's type and first line; a child export's error already names the type it ended with."""
    from finetune_core.serving.export_process import OnnxExportError

    first_line = str(exc).splitlines()[0] if str(exc) else ""
    return first_line if isinstance(exc, OnnxExportError) else f"{type(exc).__name__}: {first_line}"


def _record(model_dir: Path, report: ServingReport, graph: Path | None) -> None:
    """``serving/`` in the model directory: the served graph (if any) and the report."""
    target = model_dir / SERVING_DIR
    shutil.rmtree(target, ignore_errors=True)  # a form from an earlier attempt is never served
    target.mkdir(parents=True)
    if graph is not None:
        shutil.copyfile(graph, target / GRAPH_FILE)
    write_atomic(target / RECORD_FILE, report.model_dump_json(indent=2))  # last: no record, no ONNX served


def _served_by_torch(model_dir: Path, reason: str, torch_size: float) -> ServingReport:
    report = ServingReport(served="torch", reason=reason, sizes_mb={"torch": torch_size})
    _record(model_dir, report, None)
    return report


def prepare_serving(
    model_dir: str | Path,
    work_dir: str | Path,
    rows: ParityRows,
    *,
    task: str,
    serving: ServingConfig,
    gates: ParityGates,
) -> ServingReport:
    """Export, check parity, keep the served graph in ``model_dir/serving/`` and time the runtimes."""
    from finetune_core.serving.predictor import Predictor

    model_dir, work_dir = Path(model_dir), Path(work_dir)
    torch_size = _megabytes(*model_dir.glob("*.safetensors"), *model_dir.glob("*.bin"))
    if not serving.onnx:
        return _served_by_torch(model_dir, "serving.onnx is false", torch_size)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        forms = _candidates(model_dir, work_dir, serving)
    except Exception as exc:  # an architecture the exporter cannot take is served by PyTorch, not lost
        return _served_by_torch(model_dir, f"ONNX export failed ({_first_line(exc)})", torch_size)
    torch_predictor = Predictor.load(model_dir)
    torch_frame = torch_predictor.predict_texts(*rows.texts)
    targets = np.asarray(rows.targets, dtype=object if task == "multilabel" else None)
    parities, chosen = [], None
    for form, graph in forms.items():
        served = OnnxPredictor.load(model_dir, graph=graph).predict_texts(*rows.texts)
        checked = parity(form, torch_frame, served, task=task, targets=targets, metric=rows.metric, gates=gates)
        parities.append(checked)
        if checked.passed:
            chosen = form
            break  # the preferred form passed: the slower ones are not needed
    failed = [f"{p.form} failed parity ({'; '.join(p.reasons)})" for p in parities if not p.passed]
    reason = "; ".join(failed) or "passed parity"
    report = ServingReport(
        served=chosen or "torch",
        reason=reason if chosen or failed else "no ONNX form checked",
        parities=parities,
        sizes_mb={"torch": torch_size, **{form: _megabytes(path) for form, path in forms.items()}},
    )
    _record(model_dir, report, forms[chosen] if chosen else None)
    if serving.latency_rows:
        report.timings = _timings(model_dir, torch_predictor, chosen, rows, serving.latency_rows)
        _record(model_dir, report, forms[chosen] if chosen else None)
    return report


def _timings(model_dir: Path, torch_predictor, chosen: str | None, rows: ParityRows, single_rows: int) -> list[Timing]:
    """PyTorch's and the served ONNX form's latency and throughput, on the same test rows."""
    runtimes = {"torch": torch_predictor.predict_texts}
    if chosen:
        runtimes[chosen] = OnnxPredictor.load(model_dir).predict_texts
    return [measure_timing(name, run, rows.texts, single_rows=single_rows) for name, run in runtimes.items()]
