"""What a trial tries: Optuna samplers and pruners for an experiment, its search space turned into
suggestions, and the grid with conditional dimensions stored as parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna

from harness.config.schema import Experiment
from harness.config.search import SearchSpace, grid_points
from harness.config.suite import HasMetrics
from harness.util.errors import HarnessError


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0])


def make_sampler(exp: Experiment) -> optuna.samplers.BaseSampler:
    constraints = _constraints if exp.constraints else None
    if exp.sampler in ("grid", "random"):  # grid: its points are queued up front (_open_study)
        return optuna.samplers.RandomSampler(seed=exp.seed)
    if exp.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=exp.seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=exp.seed, constraints_func=constraints)


def make_pruner(exp: Experiment) -> optuna.pruners.BasePruner:
    if exp.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if exp.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


GRID_POINT = "grid point"  # the Optuna parameter of a grid with conditional dimensions


def sample(trial: optuna.Trial, exp: Experiment) -> dict[str, Any]:
    """A trial's configuration by dotted path: where the search space becomes `trial.suggest_*`.

    Dimensions are sampled in file order; a conditional one only where its `when` holds (see
    `config.SearchSpace`). Each case of a dimension is its own Optuna parameter (named
    `<path> | <condition>`), so a sampler never mixes the LoRA range with the full fine-tuning
    one. A grid's points are queued once up front (`enqueue_grid`; a conditional grid's by
    their index in `config.grid_points`), so each trial takes one and none runs twice.
    """
    if exp.sampler == "grid" and _conditional(exp):
        points = grid_points(exp.search)
        return points[trial.suggest_categorical(GRID_POINT, list(range(len(points))))]
    params: dict[str, Any] = {}
    for path, dimension in exp.search.items():
        space = dimension.applying(params)
        if space is None:
            continue
        name = path
        if dimension.cases:
            name += " | " + ", ".join(f"{k}={v}" for k, v in (space.when or {}).items())
        params[path] = suggest(trial, name, space)
    return params


def _conditional(exp: Experiment) -> bool:
    return any(v.when for s in exp.search.values() for v in s.variants)


def suggest(trial: optuna.Trial, name: str, space: SearchSpace) -> Any:
    if space.type == "float":
        return trial.suggest_float(name, space.low, space.high, log=space.log, step=space.step)
    if space.type == "int":
        step = int(space.step or 1)
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_categorical(name, space.choices)


def objectives_of(exp: Experiment, suites: Sequence[HasMetrics]) -> list[tuple[str, str]]:
    """(metric, direction) pairs. Without declared objectives: keep the first base-compared
    suite metric's change small (e.g. `forgetting/delta`), from the suites' own declarations."""
    if exp.objectives:
        return [(o.metric, o.direction) for o in exp.objectives]
    for s in suites:
        if any(m.compare_base and m.by is None for m in s.metrics):
            return [(f"{s.name}/delta", "maximize")]
    raise HarnessError(
        "objectives: none given, and no suite in eval.suites compares a metric with the base "
        "model to default to; declare objectives"
    )


def enqueue_grid(study: optuna.Study, exp: Experiment) -> None:
    """Queue every grid point once (a conditional grid's points by index, see `sample`); the
    grid sampler then only hands out queued points, so no configuration runs twice."""
    for i, point in enumerate(grid_points(exp.search)):
        study.enqueue_trial({GRID_POINT: i} if _conditional(exp) else point, skip_if_exists=True)


def _grid_size(exp: Experiment) -> int:
    return len(grid_points(exp.search))
