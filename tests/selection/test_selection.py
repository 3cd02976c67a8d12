"""Backbone selection: LogME is the Bayesian evidence, ranking rules, constraints, ties, the real
MiniLM ranked above its truncated and random derivatives, and selection inside the flow."""

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from scipy.stats import multivariate_normal
from typer.testing import CliRunner

from finetune_core.config.loading import validate_config
from finetune_core.data.prepare import prepare_splits
from finetune_core.model.features import FeatureSettings, cached_features, extract_features
from finetune_core.model.heads import head_spec
from finetune_core.selection.candidates import CandidateScore, rank, rank_backbones
from finetune_core.selection.transferability import logme, logme_column, probe_score
from flows.cli import app
from tests.derived_backbones import random_copy, truncated_copy


def test_logme_is_the_log_evidence_of_bayesian_linear_regression():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 5))
    y = f @ rng.normal(size=5) + 0.3 * rng.normal(size=60)
    sigma, v = np.linalg.eigh(f.T @ f)
    evidence, alpha, beta = logme_column(f, y, sigma, v)
    covariance = np.eye(60) / beta + f @ f.T / alpha  # y ~ N(0, I/beta + F F^T / alpha)
    assert evidence == pytest.approx(multivariate_normal(np.zeros(60), covariance).logpdf(y) / 60, rel=1e-6)


def test_informative_features_score_higher_with_logme_and_the_probe():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, size=300)
    informative = rng.normal(size=(300, 16)) + 1.5 * labels[:, None]
    noise = rng.normal(size=(300, 16))
    assert logme(informative, labels, "classification") > logme(noise, labels, "classification")
    assert (
        probe_score(informative, labels, "classification") > 0.9 > 0.65 > probe_score(noise, labels, "classification")
    )
    target = informative[:, 0] * 2.0
    assert logme(informative, target, "regression") > logme(noise, target, "regression")


def _score(name, score, parameters, latency=1.0):
    return CandidateScore(
        candidate=name, path=name, metric="logme", score=score, parameters=parameters, latency_ms=latency
    )


def test_ranking_constraints_and_ties():
    ranked = rank([_score("a", 0.50, 100), _score("b", 0.90, 300), _score("c", 0.7, 50)], None, None)
    assert [s.candidate for s in ranked] == ["b", "c", "a"]
    tied = rank([_score("big", 0.8000, 300), _score("small", 0.7995, 100)], None, None)
    assert [s.candidate for s in tied] == ["small", "big"]  # within TIE: the smaller model wins
    limited = rank(
        [_score("big", 0.9, 300, 5.0), _score("slow", 0.8, 100, 50.0), _score("ok", 0.1, 100, 5.0)],
        max_parameters=200,
        max_latency_ms=20,
    )
    assert [s.candidate for s in limited] == ["ok", "big", "slow"]
    assert "300 parameters > backbone.max_parameters 200" in limited[1].excluded
    assert "50.0 ms per example > backbone.max_latency_ms 20" in limited[2].excluded


def test_known_features_are_not_extracted_again(tiny_backbone, tmp_path):
    from finetune_core.model.backbone import load_for_task, load_tokenizer
    from finetune_core.model.batching import encode

    model = load_for_task(str(tiny_backbone), "classification", ["0", "1"]).eval()
    encoded = encode(load_tokenizer(str(tiny_backbone)), [f"a film number {i}" for i in range(20)], 16)
    spec, no_autocast = head_spec(model, "mean"), (lambda: torch.autocast("cpu", enabled=False))
    full = extract_features(model, spec, encoded, 8, "cpu", no_autocast)
    known = (np.array([0, 3, 7]), full[[0, 3, 7]] + 100.0)  # marked: these rows must come from `known`
    mixed, hit = cached_features(
        model,
        spec,
        encoded,
        str(tiny_backbone),
        FeatureSettings(16, 8, "cpu", no_autocast, "fp32", "mean", None),
        known=known,
    )
    assert not hit and torch.equal(mixed[[0, 3, 7]], known[1])
    rest = [i for i in range(20) if i not in (0, 3, 7)]
    assert torch.allclose(mixed[rest], full[rest], atol=1e-6)


@pytest.mark.integration
def test_real_minilm_against_its_truncated_and_random_derivatives(tmp_path):
    """On the shipped SST-2 sample (fine-tuned test accuracy, bench/selection.py: full 0.800 >
    lowest 3 layers 0.786 > lowest layer only 0.764 > random 0.615) the default LogME on the
    layer-averaged features ranks the four in that order. On the last layer alone it ranks the
    truncations above the full sentence-embedding model (docs/concepts/backbone-selection.md)."""
    from finetune_core.model.backbone import resolve_backbone
    from tests.conftest import SST2

    full = resolve_backbone("bundled:all-MiniLM-L6-v2")
    three = str(truncated_copy(full, tmp_path / "three", keep_layers=3))
    one = str(truncated_copy(full, tmp_path / "one", keep_layers=1))
    random = str(random_copy(full, tmp_path / "random"))
    raw = {
        "data": {"train": str(SST2 / "train.tsv"), "test": str(SST2 / "test.tsv")},
        "backbone": {"candidates": [random, one, three, full]},
    }
    config = validate_config(raw)
    assert (config.backbone.selection_metric, config.backbone.selection_layers, config.backbone.selection_sample) == (
        "logme",
        "all",
        500,
    )
    prepared = prepare_splits(config, tmp_path / "data")
    ranked = rank_backbones(config, prepared, tmp_path / "all")
    assert [s.path for s in ranked.ranking] == [full, three, one, random]
    scores = [s.score for s in ranked.ranking]
    assert min(a - b for a, b in zip(scores, scores[1:])) > 0.01  # clear margins, not ties
    assert ranked.ranking[0].parameters > ranked.ranking[1].parameters > ranked.ranking[2].parameters  # really smaller

    config.backbone.selection_layers = "last"
    last_only = rank_backbones(config, prepared, tmp_path / "last")
    assert [s.path for s in last_only.ranking][0] == three and last_only.ranking[-1].path == random


@pytest.mark.parametrize("runner", ["thread", "dask"])
def test_selection_in_the_flow_logs_ranking_and_nested_runs(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path, runner
):
    from flows.finetune import finetune
    from tests.conftest import tiny_config

    weaker = random_copy(tiny_backbone, tmp_path / "random-tiny", seed=3)
    raw = tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path)
    # dask: a real local cluster of worker processes scores the candidates
    raw["backbone"] = {"candidates": [str(weaker), str(tiny_backbone)], "selection_sample": 60, "task_runner": runner}
    result = finetune(validate_config(raw))
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["backbone"] == result.backbone
    assert "selection/ranking.json" in {a.path for a in client.list_artifacts(result.mlflow_run_id, "selection")}
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.mlflow_run_id}'")
    assert sorted(c.data.tags["candidate"] for c in children) == sorted([str(weaker), str(tiny_backbone)])
    assert all("score" in c.data.metrics and "latency_ms" in c.data.metrics for c in children)
    assert "candidates; ranking in the run" in client.get_model_version("tiny-model", result.model_version).description


def test_select_command_ranks_and_names_a_missing_candidate(tiny_backbone, sst2_small, tmp_path):
    import yaml

    truncated = truncated_copy(tiny_backbone, tmp_path / "truncated", keep_layers=1)
    config = {
        "data": {"train": str(sst2_small["train"]), "test": str(sst2_small["test"])},
        "backbone": {"candidates": [str(tiny_backbone), str(truncated)], "selection_sample": 60},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    ranked = runner.invoke(app, ["select", str(path)])
    assert ranked.exit_code == 0, ranked.output
    assert "backbone ranking (logme" in ranked.output and "truncated" in ranked.output
    missing = runner.invoke(
        app, ["select", str(path), "--set", f"backbone.candidates=[{tiny_backbone},{tmp_path}/nope]"]
    )
    assert missing.exit_code == 2 and "nope" in missing.output and "does not exist" in missing.output


def _layer_average_reference(model, batch) -> torch.Tensor:
    """What the layer average is: every block's output states (not the embeddings'), mean-pooled."""
    hidden = model(**batch, output_hidden_states=True).hidden_states[1:]
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return ((torch.stack(hidden).mean(dim=0) * mask).sum(dim=1) / mask.sum(dim=1)).detach()


def test_layer_average_stays_per_candidate_while_another_thread_exports(tiny_backbone, tmp_path):
    """While torch.export traces (the ONNX export at registration) on any thread, transformers'
    collector of `output_hidden_states` is process-wide; candidates scored on other threads then
    mixed their states. The layer average reads its own block hooks instead."""
    from concurrent.futures import ThreadPoolExecutor

    from finetune_core.model.backbone import load_for_task, load_tokenizer
    from finetune_core.model.batching import collate, encode
    from finetune_core.selection.candidates import with_layer_average

    paths = [str(tiny_backbone), str(random_copy(tiny_backbone, tmp_path / "random"))]
    models = [load_for_task(path, "classification", ["0", "1"]).eval() for path in paths]
    encoded = encode(load_tokenizer(paths[0]), [f"a film number {i} that runs long" for i in range(8)], 16)
    batch = collate(encoded, list(range(8)))
    with torch.no_grad():
        expected = [_layer_average_reference(model, batch) for model in models]

        def layer_average(index: int) -> torch.Tensor:
            spec, split = with_layer_average(head_spec(models[index], "mean"))
            return split(spec.features(models[index], batch))[1]

        def export() -> None:
            for _ in range(3):
                torch.export.export(exported, (), dict(batch), strict=False)

        exported = load_for_task(paths[0], "classification", ["0", "1"]).eval().base_model
        with ThreadPoolExecutor(3) as pool:  # one thread per candidate, as rank_backbones scores them
            exporting = pool.submit(export)
            results = list(pool.map(lambda index: [layer_average(index) for _ in range(60)], [0, 1]))
            exporting.result()
    for index, repeated in enumerate(results):
        assert all(torch.allclose(result, expected[index], atol=1e-5) for result in repeated)
