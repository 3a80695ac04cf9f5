"""A time budget that shapes the run (cllm/schedule.py): `train --max-time S` alone lays warmup and
cosine decay over S seconds, validates and checkpoints over it, and ends at --min-lr close to S;
--epochs and --max-steps keep their meaning."""
import json
import math

import pytest
from train_helpers import (
    all_threads_after,  # noqa: F401  (autouse)
    prepared_dataset,
    read_metrics,
    tiny_config,
    train_losses,
)

from cllm.data import read_token_file
from cllm.errors import ConfigError
from cllm.schedule import BUDGET_POINTS, UNPLANNED, VALIDATION_SHARE, BudgetPlanner, plan_run
from cllm.training import TrainConfig, train


@pytest.fixture
def dataset(tmp_path_factory):
    return prepared_dataset(tmp_path_factory)


def simulate(planner, budget, seconds_per_step, point_cost=0.0, first_steps=1.0, start=0.0):
    """Drive a planner with a simulated clock as the training loop does, from `start` elapsed seconds;
    returns (steps, elapsed, points)."""
    step, elapsed, points = planner.first_step, start, []
    while step < planner.total and elapsed < budget:
        elapsed += first_steps if step - planner.first_step < 2 else seconds_per_step(elapsed)
        step += 1
        planner.reach(step, elapsed)
        if planner.is_point(step):
            points.append(elapsed)
            elapsed += point_cost  # the validation and checkpoint
        planner.after_step(step, elapsed)
    return step, elapsed, points


@pytest.mark.parametrize("speed", ["steady", "slowing"])
def test_the_plan_fills_the_budget(speed):
    budget = 600.0
    rate = (lambda t: 0.05) if speed == "steady" else (lambda t: 0.05 * (1 + t / budget))  # half speed at the end
    planner = BudgetPlanner(budget)
    assert planner.total == UNPLANNED  # before any measurement: the peak rate after warmup
    steps, elapsed, points = simulate(planner, budget, rate, point_cost=2.0, first_steps=10.0)
    # ended by the plan (at --min-lr), or by the clock within 1% of its steps (the last revision is at
    # 90%: a machine that keeps slowing down ends a little short of the plan)
    assert 0 <= planner.planned - steps <= 0.01 * steps, (steps, planner.planned)
    assert abs(elapsed - budget) <= 0.02 * budget, elapsed
    assert BUDGET_POINTS - 1 <= len(points) <= BUDGET_POINTS + 1
    gaps = [b - a for a, b in zip(points, points[1:])]
    assert max(gaps) <= 1.5 * budget / BUDGET_POINTS


def test_slow_validations_do_not_follow_each_other():
    # validations longer than the spacing of the points: they are spaced out to take at most a
    # quarter of the run (not one after every step), and the plan still accounts for their cost
    budget, cost = 600.0, 2.5 * 600.0 / BUDGET_POINTS
    planner = BudgetPlanner(budget)
    steps, elapsed, points = simulate(planner, budget, lambda t: 0.05, point_cost=cost)
    assert steps == planner.planned and abs(elapsed - budget) <= 0.03 * budget, elapsed
    assert 2 <= len(points) <= budget * VALIDATION_SHARE / cost + 1, points
    spaced = points[:-1]  # the last validation is the plan's end, wherever it falls
    assert all(b - a >= cost / VALIDATION_SHARE for a, b in zip(spaced, spaced[1:]))


def test_a_resumed_plan_continues_from_its_checkpoint():
    budget = 100.0
    planner = BudgetPlanner(budget, planned=2000, step=1000, elapsed_s=50.0)
    assert planner.total == 2000  # the checkpoint's plan, from the first step on
    steps, elapsed, points = simulate(planner, budget, lambda t: 0.05, first_steps=0.05, start=50.0)
    assert abs(steps - 2000) <= 20 and abs(elapsed - budget) <= 1.0  # 1000 more steps of 0.05 s fill the 50 s left
    assert 9 <= len(points) <= 11  # the points of the budget's second half


def test_time_budget_run_ends_at_min_lr_near_the_budget(tmp_path, dataset):
    train(tiny_config(dataset, tmp_path / "warm", max_steps=2))  # compiles the kernels outside the budget
    budget = 6.0
    cfg = tiny_config(dataset, tmp_path / "run", max_steps=None, max_time=budget, learning_rate=1e-2, min_lr=1e-3,
                      warmup_steps=20, eval_interval=None, checkpoint_interval=None, keep_last=40)
    summary = train(cfg)
    records = read_metrics(tmp_path / "run")
    steps = [r for r in records if "train_loss" in r]
    assert summary["steps"] == len(steps) > 100
    last = steps[-1]
    assert last["lr"] - cfg.min_lr <= 0.01 * (cfg.learning_rate - cfg.min_lr), last  # decayed to --min-lr
    assert abs(last["elapsed_s"] - budget) <= 0.1 * budget, last["elapsed_s"]
    evals = [r["elapsed_s"] for r in records if "val_loss" in r]
    assert BUDGET_POINTS - 2 <= len(evals) <= BUDGET_POINTS + 1, evals
    for quarter in range(4):  # spread over the budget (each quarter holds a few; a loaded machine may stall one)
        assert sum(quarter * budget / 4 <= t < (quarter + 1) * budget / 4 + 0.05 * budget for t in evals) >= 2, evals
    state = json.loads((tmp_path / "run" / "latest" / "state.json").read_text())
    # the plan ended the run, or the clock did a few steps before its end (the last revision was at 95%)
    assert 0 <= state["planned_steps"] - summary["steps"] <= 0.01 * summary["steps"], state["planned_steps"]

    # a resume from a mid-run checkpoint takes its plan: the steps up to the next revision repeat exactly
    mid = sorted(p for p in (tmp_path / "run").glob("step_*"))[len(evals) // 2]
    k = json.loads((mid / "state.json").read_text())["step"]
    again = tiny_config(dataset, tmp_path / "again", max_steps=None, max_time=budget, learning_rate=1e-2,
                        min_lr=1e-3, warmup_steps=20, eval_interval=None, checkpoint_interval=None, resume=str(mid))
    train(again)
    reference, resumed = train_losses(tmp_path / "run"), train_losses(tmp_path / "again")
    assert min(resumed) == k + 1
    assert [resumed[s] for s in range(k + 1, k + 4)] == [reference[s] for s in range(k + 1, k + 4)]


def test_epochs_and_max_steps_keep_their_meaning(tmp_path, dataset):
    n_train = len(read_token_file(str(dataset / "train.bin")))
    per_step = 4 * 16  # the tiny config's batch x context
    cfg = tiny_config(dataset, tmp_path / "half", max_steps=None, epochs=0.5, max_time=60.0)
    assert train(cfg)["steps"] == math.ceil(0.5 * n_train / per_step)  # --epochs wins over the budget
    one = tiny_config(dataset, tmp_path / "one", max_steps=None, eval_interval=None)  # no length flag: 1 epoch
    assert train(one)["steps"] == math.ceil(n_train / per_step)
    assert [r["step"] for r in read_metrics(tmp_path / "one") if "val_loss" in r] == [math.ceil(n_train / per_step)]
    total, planner = plan_run(tiny_config(dataset, tmp_path, max_steps=7, max_time=5.0), 100.0, None, 0)
    assert (total, planner) == (7, None)


def test_intervals_and_epochs_may_be_left_to_the_run_but_not_set_wrong():
    TrainConfig(epochs=None, eval_interval=None, checkpoint_interval=None).validate()
    for bad in (dict(eval_interval=0), dict(checkpoint_interval=2.5), dict(epochs=-1.0)):
        with pytest.raises(ConfigError):
            TrainConfig(**bad).validate()
