"""The wall-clock budget schedule: the learning rate decays over the budget, not over epochs."""

import pytest
import torch

from finetune_core.training import optim
from finetune_core.training.optim import BudgetSchedule


class FakeClock:
    now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(optim.time, "perf_counter", fake)
    return fake


def _schedule(kind="linear", warmup=0.1, total_steps=1000, budget=60.0):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return optimizer, BudgetSchedule(optimizer, kind, warmup, total_steps, budget)


def test_learning_rate_follows_the_clock_and_ends_at_zero_with_the_budget(clock):
    optimizer, schedule = _schedule()
    clock.now += 3.0  # 5 % of the budget: halfway through warmup
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.now += 30.0  # 55 %: halfway through the decay
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    clock.now += 60.0  # past the budget
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_step_count_ends_the_schedule_when_epochs_run_out_first(clock):
    optimizer, schedule = _schedule(total_steps=10, budget=3600.0)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_cosine_shape_and_state_without_the_clock(clock):
    optimizer, schedule = _schedule(kind="cosine", warmup=0.0)
    clock.now += 30.0
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    state = schedule.state_dict()
    assert "started" not in state and state["last_epoch"] == 1
    clock.now += 1000.0  # a resumed run starts a fresh budget at its own clock
    _, resumed = _schedule(kind="cosine", warmup=0.0)
    resumed.load_state_dict(state)
    assert resumed.started == clock.now and resumed.last_epoch == 1


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_blocks_that_freeze_later_land_at_the_switch_having_learned_as_much(kind):
    """``freeze_after_epochs``: the landing groups follow the shape compressed into the steps before
    the switch and reach zero there; over the stage their learning rates sum to what the full
    schedule gives; the other groups follow ``make_scheduler`` step for step."""
    upper, lower = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [upper], "lr": 1e-3}, {"params": [lower], "lr": 5e-4}], lr=1e-3)
    reference_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    total, warmup, land = 171, 17, 57  # 3 epochs of 57 batches, 10 % warmup, frozen after the first
    schedule = optim.landing_scheduler(optimizer, kind, warmup, total, land, [False, True])
    reference = optim.make_scheduler(reference_optimizer, kind, warmup, total)
    rates = []
    for _ in range(total):
        rates.append([group["lr"] for group in optimizer.param_groups])
        assert rates[-1][0] == pytest.approx(reference_optimizer.param_groups[0]["lr"])
        optimizer.step(), schedule.step(), reference_optimizer.step(), reference.step()
    upper_rates, lower_rates = zip(*rates)
    assert all(rate == 0 for rate in lower_rates[land:]) and max(lower_rates[:land]) > 5e-4
    assert sum(lower_rates) / 5e-4 == pytest.approx(sum(upper_rates) / 1e-3)
