"""The console view of a study: a line per finished trial and the table of best trials at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna

from harness.config.schema import (
    Experiment,
)
from harness.stats.pareto import best_of
from harness.util.redact import redact


@dataclass
class StudyOutcome:
    study: optuna.Study
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    storage: str
    report_dir: Path | None = None
    base: dict[str, float] = field(default_factory=dict)  # the base model's eval summary


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best completed trial, or the Pareto front for several objectives, by the report's
    rule (`stats.pareto.best_of`): among trials that satisfy every constraint, or among all
    completed ones when none does. Every sampler gets the same rule (Optuna's own applies
    constraints only for samplers that take them)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [all(v <= 0 for v in t.user_attrs.get("constraints", [])) for t in complete]
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    return [complete[i] for i in best_of([t.values for t in complete], feasible, maximize)]


def _print_trial(
    number: int, params: dict, summary: dict, objectives: list, seconds: float, replicates: int
) -> None:
    shown = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    values = ", ".join(f"{m}={summary.get(m, float('nan')):.3f}" for m, _ in objectives)
    pooled = f", mean of {replicates} replicates" if replicates > 1 else ""
    print(f"trial {number}: {values} ({shown}{pooled}) in {seconds:.0f}s")


def print_table(outcome: StudyOutcome, exp: Experiment) -> None:
    """A short table of trials and where to look next."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from harness.eval.suites import key_metrics, load_suites

    study = outcome.study
    columns = key_metrics(load_suites(exp.eval.suites, exp.eval.suite_dirs))
    table = Table(title=f"study {exp.name}")
    for header in (
        "trial",
        "state",
        *(_short(name) for name in exp.search),
        *(k.label for k in columns),
    ):
        table.add_column(header, no_wrap=True)
    best = {t.number for t in best_trials(study)}
    blank = [""] * (1 + len(exp.search))
    table.add_row("base", *blank, *(_cell(outcome.base, {}, k.name) for k in columns))
    for t in study.get_trials(deepcopy=False):
        summary, spread = t.user_attrs.get("summary", {}), t.user_attrs.get("summary_sd", {})
        cells = [f"{t.number}{' *' if t.number in best else ''}", t.state.name.lower()]
        params = t.user_attrs.get("params", t.params)
        cells += [str(params.get(name, "")) for name in exp.search]
        cells += [_cell(summary, spread, k.name) for k in columns]
        table.add_row(*cells)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print("* best trial (the Pareto front when there are several objectives)")
    if exp.replicates > 1:
        console.print(f"metrics: mean ± standard deviation over {exp.replicates} replicates")
    console.print(f"MLflow: mlflow ui --backend-store-uri {redact(outcome.tracking_uri)}")
    console.print(
        f"  then open http://127.0.0.1:5000/#/experiments/{outcome.experiment_id}/runs "
        "(the study's runs table)"
    )
    if outcome.report_dir:
        console.print(f"report: {outcome.report_dir}/report.html (and report.md)")
    console.print(f"Optuna storage: {redact(outcome.storage)}")


def _cell(summary: dict[str, float], spread: dict[str, float], metric: str) -> str:
    if metric not in summary:
        return ""
    sd = f"±{spread[metric]:.3f}" if metric in spread else ""
    return f"{summary[metric]:.3f}{sd}"


def _short(path: str) -> str:
    """`data.sources.replay.weight` → `replay`; `peft.enabled` → `lora`; else the last part."""
    parts = path.split(".")
    if path == "peft.enabled":
        return "lora"
    return parts[-2] if parts[-1] == "weight" and len(parts) > 1 else parts[-1]
