"""The exported graph is fused with ONNX Runtime's transformer operators (one packed Attention per
layer, taking the padding mask as its mask index; GELUs; layer norms and GELUs kept apart from their
Adds), its int8 form quantises every projection (QAttention), and both still serve what PyTorch
serves on padded batches (docs/decisions/onnx-export.md)."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_core.serving.fusion import MASK_INDEX, fuse_transformer_ops, fused_op_counts
from finetune_core.serving.onnx_export import export_onnx, quantize_int8
from finetune_core.serving.onnx_predictor import OnnxPredictor, session
from finetune_core.serving.predictor import Predictor, load_model_dir
from tests.serving.onnx_models import PAIRS, TEXTS, model_dir

LAYERS = 2  # the tiny BERT's (bench/fixtures.py)


def _columns(kind: str) -> tuple[list[str], ...]:
    return (TEXTS, PAIRS) if kind == "pairs" else (TEXTS,)


@pytest.mark.parametrize("kind", ["classification", "pairs"])
def test_the_exported_graph_is_fused_and_matches_pytorch_on_padded_batches(kind, tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, kind, tmp_path / "model")
    graph = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx")
    counts = fused_op_counts(graph)
    assert counts["Attention"] == LAYERS and counts["MultiHeadAttention"] == 0, counts
    assert counts["SkipLayerNormalization"] + counts["BiasGelu"] == 0 and counts["Gelu"] == LAYERS, counts

    columns = _columns(kind)
    expected = Predictor.load(directory).raw_outputs(*columns)
    onnx = OnnxPredictor.load(directory, graph=graph)
    np.testing.assert_allclose(onnx.raw_outputs(*columns), expected, atol=1e-5)  # rows of every length together
    one_at_a_time = np.concatenate([onnx.raw_outputs(*[c[i : i + 1] for c in columns]) for i in range(len(TEXTS))])
    np.testing.assert_allclose(one_at_a_time, expected, atol=1e-5)


def test_without_fusion_the_graph_keeps_plain_operators(tiny_backbone, tmp_path):
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    graph = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx", fuse=False)
    assert not any(fused_op_counts(graph).values())


def test_a_graph_the_rewriter_fails_on_is_kept_unfused(tiny_backbone, tmp_path, monkeypatch):
    from finetune_core.serving import onnx_export

    def failing(*_args, **_kwargs):
        raise RuntimeError("no pattern for this architecture")

    monkeypatch.setattr(onnx_export, "fuse_transformer_ops", failing)
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    graph = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx")
    assert not any(fused_op_counts(graph).values()) and sorted(tmp_path.glob("*.onnx")) == [graph]
    expected = Predictor.load(directory).raw_outputs(TEXTS)
    np.testing.assert_allclose(OnnxPredictor.load(directory, graph=graph).raw_outputs(TEXTS), expected, atol=1e-5)


def test_the_fused_graph_quantises_every_projection_and_runs(tiny_backbone, tmp_path):
    import onnx

    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    fp32 = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx")
    int8 = quantize_int8(fp32, tmp_path / "model.int8.onnx")
    assert int8.stat().st_size < fp32.stat().st_size
    ops = [node.op_type for node in onnx.load(str(int8)).graph.node]
    # packed query/key/value in QAttention; attention output and the two feed-forward layers of each block
    assert ops.count("QAttention") == LAYERS and ops.count("MatMulInteger") >= 3 * LAYERS, ops
    assert "MatMul" not in ops and "Attention" not in ops, ops
    outputs = OnnxPredictor.load(directory, graph=int8).raw_outputs(TEXTS)
    assert outputs.shape == (len(TEXTS), 2) and np.isfinite(outputs).all()
    # what the session runs keeps them apart too: ONNX Runtime's own optimiser would fuse them again
    session(int8, optimized_copy=tmp_path / "as-run.onnx")
    ops = [node.op_type for node in onnx.load(tmp_path / "as-run.onnx").graph.node]
    assert "SkipLayerNormalization" not in ops and "BiasGelu" not in ops, ops


@pytest.mark.parametrize("kind", ["classification", "pairs"])
def test_int8_qattention_reads_the_padding_mask_and_scores_as_the_unpacked_int8_form(kind, tiny_backbone, tmp_path):
    """QAttention has no attention-bias input: the padding mask reaches it as its mask index, so on
    padded batches it scores what int8 with the projections outside MultiHeadAttention scores (the
    same int8 weights and activations); the quantiser would otherwise drop the mask."""
    import onnx

    directory = model_dir(tiny_backbone, kind, tmp_path / "model")
    plain = export_onnx(*load_model_dir(directory), tmp_path / "plain.onnx", fuse=False)
    fuse_transformer_ops(plain, tmp_path / "packed.onnx")
    fuse_transformer_ops(plain, tmp_path / "mha.onnx", packed_attention=False)
    assert fused_op_counts(tmp_path / "mha.onnx")["MultiHeadAttention"] == LAYERS
    packed = quantize_int8(tmp_path / "packed.onnx", tmp_path / "packed.int8.onnx")
    unpacked = quantize_int8(tmp_path / "mha.onnx", tmp_path / "mha.int8.onnx")
    attentions = [n for n in onnx.load(str(packed)).graph.node if n.op_type == "QAttention"]
    assert len(attentions) == LAYERS and all(n.input[5] == MASK_INDEX for n in attentions)
    columns = _columns(kind)
    expected = OnnxPredictor.load(directory, graph=unpacked).raw_outputs(*columns)
    np.testing.assert_allclose(OnnxPredictor.load(directory, graph=packed).raw_outputs(*columns), expected, atol=1e-4)


def test_an_attention_bias_beyond_padding_keeps_multiheadattention(tiny_backbone, tmp_path, monkeypatch):
    """A bias the mask index cannot carry (relative positions, ALiBi) is not dropped into ``QAttention``:
    the graph is fused to ``MultiHeadAttention`` instead and still scores what PyTorch scores."""
    from finetune_core.serving import fusion

    monkeypatch.setattr(fusion, "_padding_only", lambda graph, names: False)
    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    graph = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx")
    counts = fused_op_counts(graph)
    assert counts["MultiHeadAttention"] == LAYERS and counts["Attention"] == 0, counts
    expected = Predictor.load(directory).raw_outputs(TEXTS)
    np.testing.assert_allclose(OnnxPredictor.load(directory, graph=graph).raw_outputs(TEXTS), expected, atol=1e-5)


def test_a_call_is_scored_in_length_sorted_batches_within_the_token_cap(tiny_backbone, tmp_path, monkeypatch):
    """Rows longest first, batches of at most ``ONNX_BATCH_TOKENS`` padded tokens, outputs back in
    input order: the same outputs as one row at a time."""
    from finetune_core.serving import onnx_predictor

    directory = model_dir(tiny_backbone, "classification", tmp_path / "model")
    graph = export_onnx(*load_model_dir(directory), tmp_path / "model.onnx")
    predictor = OnnxPredictor.load(directory, graph=graph)
    texts = [TEXTS[i % len(TEXTS)] * (1 + i % 4) for i in range(24)]
    one_at_a_time = np.concatenate([predictor.raw_outputs([t]) for t in texts])
    widths, run = [], predictor.session.run

    def recording(names, feed):
        widths.append(feed["input_ids"].shape)
        return run(names, feed)

    monkeypatch.setattr(onnx_predictor, "ONNX_BATCH_TOKENS", 64)
    monkeypatch.setattr(predictor.session, "run", recording, raising=False)
    np.testing.assert_allclose(predictor.raw_outputs(texts), one_at_a_time, atol=1e-5)
    assert len(widths) > 1 and all(rows * width <= 64 or rows == 1 for rows, width in widths), widths
    assert [w for _, w in widths] == sorted((w for _, w in widths), reverse=True), widths
