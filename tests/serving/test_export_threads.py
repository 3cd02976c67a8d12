"""Two runs registering at once in one process (two flows on threads, as a serving process or a test
runs them) export their ONNX graphs at the same time. torch.export keeps its tracing state in
process-wide objects: two exports at once both failed (each run silently served PyTorch) and every
later export in the process failed too; a model loaded on another thread during an export failed."""

from __future__ import annotations

import threading

import pytest

from finetune_core.serving.export_process import OnnxExportError, export_model_dir
from finetune_core.serving.onnx_export import export_onnx
from finetune_core.serving.predictor import load_model_dir
from tests.serving.onnx_models import model_dir


def _on_threads(*jobs) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(job) -> None:
        try:
            job()
        except BaseException as exc:  # surfaced by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_in_process_exports_on_two_threads_take_turns_and_leave_later_exports_working(tiny_backbone, tmp_path):
    model, tokenizer, meta = load_model_dir(model_dir(tiny_backbone, "classification", tmp_path / "model"))

    def export(name: str):
        return lambda: export_onnx(model, tokenizer, meta, tmp_path / f"{name}.onnx", fuse=False)

    assert not _on_threads(export("thread-0"), export("thread-1"))
    export("afterwards")()
    assert all((tmp_path / f"{name}.onnx").is_file() for name in ("thread-0", "thread-1", "afterwards"))


def test_registration_exports_in_a_child_while_this_process_loads_models(tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, "pairs", tmp_path / "model")

    def export(name: str):
        return lambda: export_model_dir(directory, tmp_path / f"{name}.onnx")

    def load_models():
        for _ in range(20):
            load_model_dir(directory)

    assert not _on_threads(export("thread-0"), export("thread-1"), load_models)
    assert all((tmp_path / f"thread-{i}.onnx").stat().st_size > 0 for i in range(2))


def test_a_failed_child_export_raises_the_error_it_ended_with(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(OnnxExportError, match=r"^ValueError: Unrecognized model in .*not-a-model"):
        export_model_dir(tmp_path / "not-a-model", tmp_path / "graph.onnx")
    assert not (tmp_path / "graph.onnx").exists()
