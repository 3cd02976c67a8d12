"""The default baseline gate in the whole flow: a model that cannot beat "always the train
majority class" on the test set is registered as challenger only, never champion, even as the
first version, and its description says why. No `gates` section is configured."""

from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from tests.conftest import read_sst2, tiny_config


def test_a_model_that_cannot_beat_the_majority_class_is_never_champion(
    prefect_server, tiny_backbone, sst2_small, tracking_uri, tmp_path
):
    from flows.finetune import finetune

    # Train's majority class is 1 (79 of 120 rows). A test set of class 1 only: the baseline is
    # right on every row (accuracy 1.0), so no model can be strictly better, however it trained.
    test = read_sst2("test").query("label == 1").head(40)
    single_class = tmp_path / "test-single-class.tsv"
    test.to_csv(single_class, sep="\t", index=False, quoting=3)
    raw = tiny_config(tiny_backbone, {**sst2_small, "test": single_class}, tracking_uri, tmp_path)
    raw.pop("gates", None)  # the gate is a default, not something this configuration asks for

    result = finetune(validate_config(raw))

    assert not result.gate_passed and not result.champion
    assert any("vs majority-class baseline 1.0000 on this test set: not better" in r for r in result.gate_reasons)
    client = MlflowClient(tracking_uri)
    version = client.get_model_version("tiny-model", result.model_version)
    assert version.tags["gate"] == "failed"
    aliases = client.get_registered_model("tiny-model").aliases
    assert {alias: str(v) for alias, v in aliases.items()} == {"challenger": result.model_version}
    assert "**Gate verdict: FAILED**" in version.description
    assert "Not made champion: no better than the majority-class baseline on this test set" in version.description
    assert "| accuracy |" in version.description and "majority-class baseline |" in version.description
    run = client.get_run(result.mlflow_run_id)
    assert run.data.tags["gate"] == "failed" and run.data.metrics["baseline/accuracy"] == 1.0
