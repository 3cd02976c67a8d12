"""Resumption is the orchestration's default: the same work started again after a crash (a
Prefect flow retry, or the flow run again) continues the unfinished run directory from its last
finished epoch, in the same MLflow run; finished runs are never reused; a live run is never
taken over."""

import threading

import pytest
from mlflow import MlflowClient

from finetune_core.config.loading import validate_config
from finetune_core.run_layout import RunLayout, claim_run_dir, read_record, run_dir_key
from tests.conftest import tiny_config


class Crash(Exception):
    pass


@pytest.fixture
def flow_config(tiny_backbone, sst2_small, tracking_uri, tmp_path):
    config = validate_config(tiny_config(tiny_backbone, sst2_small, tracking_uri, tmp_path))
    config.training.unfrozen.epochs = 2
    return config


def _crash_once_after(monkeypatch, stage: str, epoch: int) -> list:
    """The epoch logger raises once, after ``stage`` ``epoch`` is checkpointed and logged."""
    import tasks.train

    real_logger, crashes = tasks.train.epoch_logger, []

    def crashing_logger(run_id):
        log = real_logger(run_id)

        def on_epoch_end(s, e, metrics):
            log(s, e, metrics)
            if (s, e) == (stage, epoch) and not crashes:
                crashes.append(e)
                raise Crash(f"crashed after {stage} epoch {epoch}")

        return on_epoch_end

    monkeypatch.setattr(tasks.train, "epoch_logger", crashing_logger)
    return crashes


def _only_run(tracking_uri):
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    return client, runs


def test_a_flow_retry_continues_the_unfinished_run(prefect_server, flow_config, tracking_uri, tmp_path, monkeypatch):
    from flows.finetune import finetune

    crashes = _crash_once_after(monkeypatch, "unfrozen", 1)
    result = finetune.with_options(retries=1)(flow_config)

    assert crashes == [1]
    client, runs = _only_run(tracking_uri)
    assert [r.info.run_id for r in runs] == [result.mlflow_run_id]  # one MLflow run, continued
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    assert result.stages["unfrozen"]["resumed_after_epoch"] == 1
    history = client.get_metric_history(result.mlflow_run_id, "unfrozen/val_accuracy")
    assert [m.step for m in history] == [1, 2]  # epoch 1 is not trained (nor logged) twice
    assert len(list((tmp_path / "runs").iterdir())) == 1


def test_running_the_same_work_again_continues_then_starts_afresh(
    prefect_server, flow_config, tracking_uri, tmp_path, monkeypatch
):
    from flows.finetune import finetune

    _crash_once_after(monkeypatch, "unfrozen", 1)
    with pytest.raises(Crash):
        finetune(flow_config)
    monkeypatch.undo()
    client, (crashed,) = _only_run(tracking_uri)
    assert crashed.info.status == "FAILED" and client.search_registered_models() == []

    resumed = finetune(flow_config)  # the same config and data: continue, no resume argument
    assert resumed.mlflow_run_id == crashed.info.run_id
    assert resumed.stages["unfrozen"]["resumed_after_epoch"] == 1 and resumed.model_version == "1"

    straight = finetune(flow_config)  # the first is finished: a new run in a new directory
    assert straight.mlflow_run_id != resumed.mlflow_run_id and straight.run_dir != resumed.run_dir
    assert straight.stages["unfrozen"]["resumed_after_epoch"] == 0
    assert straight.metrics == resumed.metrics  # an interrupted run ends where an uninterrupted one does

    flow_config.training.seed = 7  # other work: another key, another directory
    other = finetune(flow_config)
    assert other.run_dir not in (resumed.run_dir, straight.run_dir)
    assert read_record(RunLayout(other.run_dir))["finished"]


def test_a_live_run_is_never_taken_over_and_a_dead_ones_lock_is_free(tmp_path):
    key = run_dir_key("config", "inputs")
    with claim_run_dir(tmp_path, key) as first:
        with claim_run_dir(tmp_path, key) as second:  # held by a live run: the next directory
            assert second.layout.root.name == f"{key}-2"

        taken = []

        def claim_from_another_thread():  # another open file: flock conflicts, as across processes
            with claim_run_dir(tmp_path, key) as claim:
                taken.append(claim.layout.root.name)

        worker = threading.Thread(target=claim_from_another_thread)
        worker.start()
        worker.join()
        assert taken == [f"{key}-2"]
    with claim_run_dir(tmp_path, key) as again:  # released when its holder ended
        assert again.layout.root == first.layout.root
