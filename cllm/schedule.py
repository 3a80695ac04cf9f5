"""Laying the learning-rate schedule over a time budget: `train --max-time S` with neither --max-steps
nor --epochs gives the run S seconds rather than a number of steps.

The schedule (linear warmup, cosine decay to --min-lr: lr_at) needs its length in steps, so
BudgetPlanner estimates how many steps fit in the budget from the measured speed. Why an estimate
rather than a schedule driven by the clock (the rate a function of elapsed seconds): with the clock,
every pause of a shared machine would move the learning rate, and a resumed run could never replay
the steps it ran before. With an estimate, the rate of step s is lr_at(s, planned steps), a function
of two integers:
- the first plan is made once CALIBRATION of the budget has been measured (not counting this
  process's first SKIPPED_STEPS steps, which compile kernels); until then the total is UNPLANNED,
  which gives the warmup and then the peak rate;
- it is revised at BUDGET_POINTS evenly spaced points of the budget's seconds, where the run also
  validates and saves a checkpoint, each time from the seconds per step of the span since the last
  revision (samples and checkpoints included) and the measured cost of a validation times the
  validations still to come, so the last revision, at 95%, sets the end within what the speed
  changes over the last 5%; the points are placed by the clock, not by the plan, so that a revision
  never moves them; the next point comes no sooner than three times a validation's cost after
  it (VALIDATION_SHARE), so that slow validations do not fill the budget, and none falls in the last
  four validations' time before the end, where the final validation serves;
- the plan in force is stored in every checkpoint (state.json `planned_steps`), and the budget counts
  the whole run across resumes (state.json `elapsed_s`). A resumed run takes the stored plan, so its
  steps up to the next revision are bit-identical to the uninterrupted run's; from there on they can
  differ as two fresh time-budgeted runs differ (each revision reads a clock). That is the trade-off
  against a fixed step count: only --max-steps and --epochs runs resume bit-identically to the end.
"""
from __future__ import annotations

import math

BUDGET_POINTS = 20  # validations, checkpoints and plan revisions spread over a time budget
# a run's length and rhythm when no flag and no time budget sets them (TrainConfig's --help shows these)
EPOCHS = 1.0
EVAL_INTERVAL = 250
CHECKPOINT_INTERVAL = 500
CALIBRATION = 0.02  # share of the budget measured before the first plan
SKIPPED_STEPS = 2  # a process's first steps compile kernels and fault pages in: not timed
MIN_SPAN_STEPS = 2  # a revision needs at least this many steps measured since the last one
VALIDATION_SHARE = 0.25  # at most this share of the run validates: slow validations space the points out
UNPLANNED = 1 << 62  # the schedule's length before the first plan: after warmup, the peak rate


def lr_at(step: int, cfg, total_steps: int) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr at total_steps (step from 0)."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    if total_steps <= cfg.warmup_steps:
        return cfg.learning_rate
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def budget_shapes_run(max_steps: int | None, epochs: float | None, max_time: float | None) -> bool:
    """Whether the time budget sets the run's length: --max-time given, --max-steps and --epochs not."""
    return max_time is not None and max_steps is None and epochs is None


class BudgetPlanner:
    """The number of steps that fit in `budget_s` seconds, planned and revised as the run goes (on the
    process that measures, rank 0; the training loop shares its `total` with the other ranks)."""

    def __init__(self, budget_s: float, planned: int | None = None, step: int = 0, elapsed_s: float = 0.0):
        self.budget = float(budget_s)
        self.planned = planned  # None until the first plan; restored from a checkpoint on resume
        self.first_step = step  # this process's first step (0, or the step a resume starts from)
        self.mark: tuple[int, float] | None = None  # (step, elapsed s) where the measured span starts
        self.next_point = int(elapsed_s * BUDGET_POINTS / self.budget) + 1  # the next point, k/BUDGET_POINTS
        self.point_step = -1  # the last step that reached a point
        self.reached_at = 0.0  # the elapsed seconds when it did (before its validation)
        self.point_cost = 0.0  # seconds of the last point's validation
        self.span_point_costs = 0.0  # seconds of validations in the measured span

    @property
    def total(self) -> int:
        """The schedule's length in steps: the plan, or UNPLANNED before the first."""
        return UNPLANNED if self.planned is None else self.planned

    def reach(self, step: int, elapsed_s: float) -> None:
        """Called once after each step, before its validation: marks the step as a point when the run's
        elapsed seconds crossed the next of the points k/BUDGET_POINTS of the budget (is_point tells)."""
        # no point in the last stretch: the final validation serves there
        last_stretch = elapsed_s >= self.budget - self.point_cost / VALIDATION_SHARE
        if elapsed_s * BUDGET_POINTS >= self.next_point * self.budget and not last_stretch:
            self.point_step, self.reached_at = step, elapsed_s

    def is_point(self, step: int) -> bool:
        """Whether `step` (counted from 1, after it ran) reached a point of the budget or ends the plan:
        the run validates, saves a checkpoint and revises the plan there."""
        return step == self.point_step or step >= self.total

    def after_step(self, step: int, elapsed_s: float) -> None:
        """Called after each step's validation with the run's elapsed seconds (counting the time
        before a resume): starts the measured span, makes the first plan, or revises it at a point."""
        if step == self.point_step:  # the next point lies after this one's validation, even a slow one
            self.point_cost = elapsed_s - self.reached_at
            self.span_point_costs += self.point_cost
            gap = self.point_cost * (1 / VALIDATION_SHARE - 1)
            self.next_point = int((elapsed_s + gap) * BUDGET_POINTS / self.budget) + 1
        if self.mark is None:
            if step - self.first_step >= SKIPPED_STEPS:
                self.mark, self.span_point_costs = (step, elapsed_s), 0.0
            return
        steps, seconds = step - self.mark[0], elapsed_s - self.mark[1]
        if steps < MIN_SPAN_STEPS:
            return
        if (self.planned is None and seconds >= CALIBRATION * self.budget) or (
                step == self.point_step and step < self.total):
            self._plan(step, elapsed_s, (seconds - self.span_point_costs) / steps)

    def _spacing(self) -> float:
        """Seconds between points: budget / BUDGET_POINTS, wider when validations are slow."""
        return max(self.budget / BUDGET_POINTS, self.point_cost / VALIDATION_SHARE)

    def _plan(self, step: int, elapsed_s: float, seconds_per_step: float) -> None:
        # what is left of the budget, less the validations still to come (the points before the last
        # stretch, four validations long, and the final one), in steps
        left = self.budget - elapsed_s
        spacing = self._spacing()
        next_at = self.next_point * self.budget / BUDGET_POINTS
        stretch_at = self.budget - self.point_cost / VALIDATION_SHARE
        points_left = int((stretch_at - next_at) / spacing) + 1 if next_at < stretch_at else 0
        left -= (points_left + 1) * self.point_cost
        self.planned = step + max(1, int(left / seconds_per_step)) if seconds_per_step > 0 else step + 1
        self.mark, self.span_point_costs = (step, elapsed_s), 0.0


def plan_run(cfg, steps_per_epoch: float, state: dict | None, step: int) -> tuple[int, BudgetPlanner | None]:
    """The schedule's length in steps for a TrainConfig, and the planner when a time budget sets it
    (restored from a checkpoint's state on resume): --max-steps, else --epochs (default EPOCHS), else the budget."""
    if budget_shapes_run(cfg.max_steps, cfg.epochs, cfg.max_time):
        state = state or {}
        planner = BudgetPlanner(cfg.max_time, state.get("planned_steps"), step, float(state.get("elapsed_s", 0.0)))
        return planner.total, planner
    if cfg.max_steps is not None:
        return cfg.max_steps, None
    epochs = EPOCHS if cfg.epochs is None else cfg.epochs
    return max(1, math.ceil(epochs * steps_per_epoch)), None


def is_due(step: int, interval: int | None, default: int, planner: BudgetPlanner | None) -> bool:
    """Whether a validation (or checkpoint) falls on `step`: every `interval` steps when given, else
    at the budget's points when a planner sets the run's length, else every `default` steps."""
    if interval is None and planner is not None:
        return planner.is_point(step)
    return step % (interval or default) == 0
