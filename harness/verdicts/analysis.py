"""A study read back from MLflow, and what follows from it: best trials, the Pareto front,
replicates pooled item by item, forgetting per task, and the effect of each searched factor.

MLflow is the source of truth, not the Optuna study or files a run left behind: whatever a
reader sees in the MLflow UI is what the report summarises, so the two never disagree. What
the study was (objectives, constraints, search space, suites and their metric declarations)
comes from the `study/spec.json` it logged (`config.StudySpec`), read back with the same model.
`harness.verdicts.report` turns all this into pages.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.config.schema import Constraint, Experiment, ReportConfig, StudySpec
from harness.config.search import SearchSpace
from harness.config.suite import SuiteMetrics
from harness.eval.suites import KeyMetric
from harness.stats.comparison import (
    PooledEffect,
    SeedNoise,
    pooled_comparison,
    pooled_effect,
    seed_noise,
)
from harness.stats.decision import decide_effects, design_to_decide
from harness.stats.pareto import best_of
from harness.study.tracking import client_for
from harness.util.errors import HarnessError
from harness.util.names import metric_name
from harness.verdicts.records import (
    Indexed,
    index_records,
    item_clusters,
    item_scores,
    load_records,
    metric_items,
    paired_keys,
)
from harness.verdicts.render import fmt_num

_RUN_ID_KEYS = ("mlflow_run_id", "run_id", "mlflow_run", "mlflow run id")


# ---------------------------------------------------------------- reading MLflow


@dataclass
class Trial:
    """One sampled configuration. With replicates, `metrics` are the mean over its replicate
    runs (`run_ids`, first replicate first; `run_id` is the first) and `spread` their standard
    deviation."""

    number: int | None
    state: str  # COMPLETE | PRUNED | FAIL | RUNNING | ...
    run_id: str | None
    params: dict[str, str] = field(default_factory=dict)  # sampled, without the "trial." prefix
    metrics: dict[str, float] = field(default_factory=dict)
    values: list[float] | None = None
    fail_reason: str | None = None
    run_ids: list[str] = field(default_factory=list)
    spread: dict[str, float] = field(default_factory=dict)


@dataclass
class Provenance:
    """Where a study's numbers came from: the commits its trials ran at, the command that
    started it and the machine (parent-run tags), library versions, and each data source with
    its sha256 and licence (as the experiment declared it)."""

    commits: list[str] = field(default_factory=list)
    command: str | None = None
    machine: str | None = None
    versions: str | None = None
    sources: list[dict[str, str | None]] = field(default_factory=list)


def _provenance(parent: Any, children: list[Any], exp: Experiment | None) -> Provenance:
    tags = parent.data.tags if parent is not None else {}
    params = [dict(r.data.params) for r in children]
    first = params[0] if params else {}
    declared = {s.name: s.licence for s in exp.data.sources} if exp is not None else {}
    prefix = "cfg.data.sources."
    names = [
        k[len(prefix) : -len(".path")]
        for k in first
        if k.startswith(prefix) and k.endswith(".path")
    ]
    return Provenance(
        commits=sorted({p["lineage.git_commit"] for p in params if p.get("lineage.git_commit")}),
        command=tags.get("harness.command"),
        machine=tags.get("harness.machine"),
        versions=first.get("lineage.versions"),
        sources=[
            {
                "name": name,
                "path": first.get(f"{prefix}{name}.path"),
                "sha256": first.get(f"lineage.source.{name}.sha256"),
                "licence": _declared(first.get(f"{prefix}{name}.licence")) or declared.get(name),
            }
            for name in names
        ],
    )


def _declared(value: str | None) -> str | None:
    """A logged setting, None where the resolved config held none (logged as "null")."""
    return None if value in (None, "", "null", "None") else value


@dataclass
class Study:
    """A study as MLflow holds it, with what its spec says it was (`load_study`)."""

    name: str
    tracking_uri: str
    parent_run_id: str | None
    parent_status: str | None
    parent_params: dict[str, str]
    parent_metrics: dict[str, float]
    trials: list[Trial]
    objectives: list[tuple[str, str]]  # (metric, "maximize" | "minimize")
    constraints: list[Constraint]
    notes: list[str]  # caveats about what was found
    picked: str | None = None  # the study's own choice (tag harness.best_trials)
    suite_dirs: list[str] = field(default_factory=list)  # extra suite folders (eval.suite_dirs)
    base: dict[str, float] = field(default_factory=dict)  # the base model's metrics
    search: dict[str, SearchSpace] = field(default_factory=dict)  # the searched factors
    suites: list[SuiteMetrics] = field(default_factory=list)  # as the spec recorded them
    report: ReportConfig = field(default_factory=ReportConfig)  # how effects are decided
    base_origin: str | None = None  # "base dequantized from 4-bit Q4_1 weights (...)"
    references: list[dict] = field(default_factory=list)  # study/reference.json's checks
    provenance: Provenance = field(default_factory=Provenance)
    _records: dict[str, dict[str, list[dict]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _indexed: dict[tuple[str, str], Indexed | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @functools.cached_property
    def declared_suites(self) -> list[SuiteMetrics]:
        """The suites' metric declarations: the spec's record of them, or (for spec files
        that list suite names only) every suite.yaml found in the suite folders now."""
        if self.suites and all(s.metrics for s in self.suites):
            return list(self.suites)
        from harness.eval.suites import discover_suites, load_suites

        found = load_suites(sorted(discover_suites(self.suite_dirs)), self.suite_dirs)
        return [SuiteMetrics.of(s) for s in found]

    @functools.cached_property
    def key_metrics(self) -> list[KeyMetric]:
        """Headline metrics declared by the suites (`suites.key_metrics`) this study logged."""
        from harness.eval.suites import key_metrics

        seen = {m for t in self.trials for m in t.metrics}
        return [k for k in key_metrics(self.declared_suites) if k.name in seen]

    def records(self, run_id: str) -> dict[str, list[dict]]:
        """A run's per-sample records (`records.load_records`), downloaded once per report."""
        if run_id not in self._records:
            self._records[run_id] = load_records(client_for(self.tracking_uri), run_id)
        return self._records[run_id]

    def indexed(self, run_id: str, suite: str) -> Indexed | None:
        """A run's records of one suite by item (`records.index_records`), indexed once per
        report however many factors and metrics read them; None when the run has none."""
        if (run_id, suite) not in self._indexed:
            rows = self.records(run_id).get(suite)
            self._indexed[run_id, suite] = (
                {suite: index_records(rows, f"run {run_id}", suite)} if rows else None
            )
        return self._indexed[run_id, suite]

    @property
    def replicated(self) -> bool:
        return any(len(t.run_ids) > 1 for t in self.trials)

    @property
    def partial(self) -> bool:
        return bool(self.partial_reasons)

    @property
    def partial_reasons(self) -> list[str]:
        reasons = []
        if self.parent_status is not None and self.parent_status != "FINISHED":
            reasons.append(f"the study's parent run is {self.parent_status}")
        running = [t for t in self.trials if t.state == "RUNNING"]
        if running:
            reasons.append(f"{len(running)} trial(s) still RUNNING")
        return reasons


def _study_json(client: Any, run_id: str, name: str) -> Any:
    """A JSON artifact `study/<name>` of the parent run, or None when it is not logged (yet)."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, f"study/{name}", tmp)
        except (MlflowException, OSError):
            return None
        try:
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except ValueError:
            raise HarnessError(f"run {run_id}: study/{name} is not valid JSON") from None


def _spec(client: Any, run_id: str) -> StudySpec | None:
    data = _study_json(client, run_id, "spec.json")
    try:
        return StudySpec.model_validate(data) if data is not None else None
    except ValidationError as e:
        raise HarnessError(f"run {run_id}: study/spec.json: {e.errors()[0]['msg']}") from None


def _references(client: Any, run_id: str) -> list[dict]:
    """The base model's checks against `eval.reference_scores` (`study/reference.json`)."""
    data = _study_json(client, run_id, "reference.json")
    return list(data.get("checks", [])) if isinstance(data, dict) else []


def _int_or_none(x: Any) -> int | None:
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


def _trial_from_runs(runs: list[Any]) -> Trial:
    """A trial from its replicate runs: metrics averaged over the replicates that logged them;
    the state is the worst of theirs (a failed replicate fails the trial)."""
    import statistics

    runs = sorted(runs, key=lambda r: _int_or_none(r.data.tags.get("replicate")) or 0)
    states = [
        r.data.tags.get("harness.state")
        or ("RUNNING" if r.info.status == "RUNNING" else r.info.status)
        for r in runs
    ]
    state = next((s for s in ("FAIL", "FAILED", "RUNNING", "PRUNED") if s in states), states[0])
    names = {m for r in runs for m in r.data.metrics}
    values = {m: [r.data.metrics[m] for r in runs if m in r.data.metrics] for m in names}
    first = runs[0]
    return Trial(
        number=_int_or_none(first.data.tags.get("harness.trial")),
        state=state,
        run_id=first.info.run_id,
        fail_reason=next(
            (
                r.data.tags["harness.fail_reason"]
                for r in runs
                if r.data.tags.get("harness.fail_reason")
            ),
            None,
        ),
        params={
            k[len("trial.") :]: v for k, v in first.data.params.items() if k.startswith("trial.")
        },
        metrics={m: statistics.fmean(v) for m, v in values.items()},
        run_ids=[r.info.run_id for r in runs],
        spread={m: statistics.stdev(v) for m, v in values.items() if len(v) > 1},
    )


def load_study(name: str, tracking_uri: str, exp: Experiment | None = None) -> Study:
    """Read the latest parent run of study `name`, its child trial runs and trials.json."""
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments())
        hint = f" (studies there: {', '.join(known)})" if known else ""
        raise HarnessError(f"no study named '{name}' at {tracking_uri}{hint}")
    eid = experiment.experiment_id
    # A resumed study reuses its first parent run (harness.study.tracking.find_parent): oldest first.
    parents = client.search_runs(
        [eid], "tags.`harness.role` = 'study'", order_by=["attributes.start_time ASC"]
    )
    notes: list[str] = []
    parent = parents[0] if parents else None
    if len(parents) > 1:
        notes.append(
            f"{len(parents)} study runs share this name; this report covers the first "
            f"({parent.info.run_id})."
        )
    if parent is not None:
        children = client.search_runs(
            [eid], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=5000
        )
    else:
        children = client.search_runs([eid], "tags.`harness.role` = 'trial'", max_results=5000)
        notes.append("no study (parent) run found; the report lists every trial run.")

    by_trial: dict[str, list[Any]] = {}  # a trial's replicate runs, by trial number
    for run in children:
        number = run.data.tags.get("harness.trial")
        by_trial.setdefault(number if number is not None else run.info.run_id, []).append(run)
    trials: dict[str, Trial] = {}
    for runs in by_trial.values():
        trial = _trial_from_runs(runs)
        trials[trial.run_id] = trial

    listed = _study_json(client, parent.info.run_id, "trials.json") if parent is not None else None
    listed = listed if isinstance(listed, list) else None
    if parent is not None and listed is None:
        notes.append("study/trials.json is not logged yet; trial states come from the runs.")
    by_number = {t.number: t for t in trials.values() if t.number is not None}
    for entry in listed or []:
        if not isinstance(entry, dict):
            continue
        run_id = next((entry[k] for k in _RUN_ID_KEYS if entry.get(k)), None)
        number = _int_or_none(entry.get("number"))
        trial = trials.get(run_id) if run_id else None
        trial = trial or by_number.get(number)
        if trial is None:
            trial = Trial(number=number, state=str(entry.get("state", "?")), run_id=run_id)
            trials[run_id or f"#{number}"] = trial
        trial.state = str(entry.get("state") or trial.state)
        trial.number = number if number is not None else trial.number
        values = entry.get("values")
        trial.values = values if isinstance(values, list) else trial.values
        trial.fail_reason = entry.get("fail_reason") or entry.get("reason") or trial.fail_reason
        if not trial.params and isinstance(entry.get("params"), dict):
            trial.params = {k: str(v) for k, v in entry["params"].items()}

    pparams = dict(parent.data.params) if parent is not None else {}
    spec = _spec(client, parent.info.run_id) if parent is not None else None
    search = (spec.search if spec is not None else {}) or (exp.search if exp is not None else {})
    if exp is not None:
        objectives = [(o.metric, o.direction) for o in exp.objectives]
        constraints = list(exp.constraints)
    elif spec is not None:
        objectives = [(o.metric, o.direction) for o in spec.objectives]
        constraints = list(spec.constraints)
    else:
        objectives, constraints = [], []
        if parent is not None:
            notes.append(
                "no study/spec.json on the parent run: objectives and constraints unknown."
            )
    ordered = sorted(trials.values(), key=lambda t: (t.number is None, t.number or 0))
    return Study(
        name=name,
        tracking_uri=tracking_uri,
        parent_run_id=parent.info.run_id if parent is not None else None,
        parent_status=parent.info.status if parent is not None else None,
        parent_params=pparams,
        parent_metrics=dict(parent.data.metrics) if parent is not None else {},
        trials=ordered,
        objectives=objectives,
        constraints=constraints,
        notes=notes,
        picked=parent.data.tags.get("harness.best_trials") if parent is not None else None,
        suite_dirs=list(exp.eval.suite_dirs) if exp is not None else [],
        base={
            k[len("base/") :]: v
            for k, v in (parent.data.metrics if parent is not None else {}).items()
            if k.startswith("base/")
        },
        search=dict(search),
        suites=list(spec.suites) if spec is not None else [],
        report=exp.report
        if exp is not None
        else spec.report
        if spec is not None
        else ReportConfig(),
        base_origin=spec.base_origin if spec is not None else None,
        references=_references(client, parent.info.run_id) if parent is not None else [],
        provenance=_provenance(parent, children, exp),
    )


# ---------------------------------------------------------------- analysis


def check_constraints(trial: Trial, constraints: Sequence[Constraint]) -> tuple[bool, list[str]]:
    """Whether a trial satisfies every constraint, and a phrase for each one it does not."""
    why = []
    for c in constraints:
        value = trial.metrics.get(c.metric)
        if value is None:
            why.append(f"{c.metric} missing")
        elif c.violation(value) > 0:
            why.append(f"{c.metric} = {fmt_num(value)} violates {c.op} {fmt_num(c.value)}")
    return not why, why


def best_trials(study: Study) -> tuple[list[Trial], str]:
    """The best completed trial(s) and a sentence saying how they were chosen."""
    objectives = study.objectives
    complete = [t for t in study.trials if t.state == "COMPLETE"]
    scored = [t for t in complete if all(m in t.metrics for m, _ in objectives)]
    if not objectives or not scored:
        return [], "no completed trial has every objective metric yet."
    feasible = [check_constraints(t, study.constraints)[0] for t in scored]
    how = "among trials that satisfy every constraint"
    if study.constraints and not any(feasible):
        how = "no trial satisfies every constraint, so among all completed trials"
    elif not study.constraints:
        how = "among completed trials (no constraints declared)"
    points = [[t.metrics[m] for m, _ in objectives] for t in scored]
    picks = [scored[i] for i in best_of(points, feasible, [d == "maximize" for _, d in objectives])]
    if len(objectives) == 1:
        metric, direction = objectives[0]
        return picks, f"best {metric} ({direction}) {how}."
    names = ", ".join(f"{m} ({d})" for m, d in objectives)
    return picks, f"Pareto-optimal on {names} {how}."


def _task_scores(
    replicates: list[list[dict]], suite: str
) -> dict[str, tuple[list[float], list[list[float]]]]:
    """One configuration's records of `suite` as, per task, the base model's scores and each
    replicate's scores on the items every replicate holds with the same content (items pair by
    (task, id) and content: `records.paired_keys`)."""
    runs = [
        (
            f"replicate {i}",
            {
                (str(r.get("task", "?")), str(r.get("id"))): r
                for r in rows
                if r.get("base_score") is not None and r.get("score") is not None
            },
        )
        for i, rows in enumerate(replicates)
    ]
    if not runs:
        return {}
    keys, _ = paired_keys(runs, suite)
    by_task: dict[str, list[tuple[str, str]]] = {}
    for key in keys:
        by_task.setdefault(key[0], []).append(key)
    return {
        task: (
            [float(runs[0][1][k]["base_score"]) for k in task_keys],
            [[float(recs[k]["score"]) for k in task_keys] for _, recs in runs],
        )
        for task, task_keys in sorted(by_task.items())
    }


def task_seed_noise(
    configs: list[list[list[dict]]], suite: str = "forgetting"
) -> dict[str, SeedNoise]:
    """Per task, seed noise pooled over every replicated configuration of a study (each a list
    of replicate runs' records), as the effects table pools it: two seeds of one configuration
    alone give a t with one degree of freedom, an interval too wide to say anything. A task
    whose items differ between configurations is left out (each trial then uses its own)."""
    per_config = [_task_scores(c, suite) for c in configs if len(c) > 1]
    out: dict[str, SeedNoise] = {}
    for task in sorted({t for scores in per_config for t in scores}):
        mats = [scores[task][1] for scores in per_config if task in scores]
        if len({len(m[0]) for m in mats}) == 1 and (noise := seed_noise(mats)) is not None:
            out[task] = noise
    return out


def forgetting_by_task(
    replicates: list[list[dict]],
    suite: str = "forgetting",
    noise: dict[str, SeedNoise] | None = None,
) -> list[dict]:
    """Per-task accuracy vs the base model on the same items, with the paired interval.

    `replicates`: one configuration's records of `suite`, one list per replicate run (seed),
    each record carrying the base model's score on its item. With one run the comparison is of
    two checkpoints, with several it is of the recipe against the fixed base model, seed noise
    included (`pooled_comparison(..., fixed_baseline=True)`), taken per task from `noise`
    (`task_seed_noise`: the study's replicated configurations) where given."""
    out = []
    for task, (base, scores) in _task_scores(replicates, suite).items():
        pooled = (noise or {}).get(task) if len(scores) > 1 else None
        c = pooled_comparison([base], scores, fixed_baseline=True, noise=pooled)
        out.append(
            {
                "task": task,
                "n": c.n,
                "runs": c.runs_b,
                "base_acc": c.mean_a,
                "acc": c.mean_b,
                "delta": c.diff,
                "low": c.ci_low,
                "high": c.ci_high,
                "p": c.p_value,
                "test": c.test,
            }
        )
    return out


# ---------------------------------------------------------------- effects of searched factors


@dataclass(frozen=True)
class Effect:
    """One level of a searched factor against its reference level on one headline metric.
    `p_adjusted` is its p-value adjusted over every cell of the table (`Effects.method`);
    `decided` says the adjusted p is at most 5% and the interval includes seed noise."""

    factor: str
    level: str
    reference: str
    metric: str
    estimate: PooledEffect
    p_adjusted: float = 1.0
    decided: bool = False
    # undecided cells: items and runs per configuration that would decide a change this size
    items_to_decide: int | None = None
    seeds_to_decide: int | None = None

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {
            "factor": self.factor,
            "level": self.level,
            "reference": self.reference,
            "metric": self.metric,
            "diff": e.diff,
            "low": e.low,
            "high": e.high,
            "n": e.n,
            "clusters": e.clusters,
            "pairs": e.pairs,
            "replicates": e.runs,
            "seed_noise": e.seed_noise,
            "p_value": e.p_value,
            "p_adjusted": self.p_adjusted,
            "decided": self.decided,
            "items_to_decide": self.items_to_decide,
            "seeds_to_decide": self.seeds_to_decide,
        }


@dataclass
class Effects:
    """The main-effects table and the factors it leaves out, with why. `method`: how its
    p-values are adjusted over all cells ("holm" or "bh"); `seed_df`: degrees of freedom of
    the seed noise pooled over the study's replicated configurations (None: no configuration
    was replicated, so no interval holds seed noise and no effect is decided); `dropped`:
    items left out per suite (`report.common_items`)."""

    rows: list[Effect] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)  # float/int ranges: levels never repeat
    unmatched: list[str] = field(default_factory=list)  # no two trials differ only in it
    follows: dict[str, list[str]] = field(default_factory=dict)  # factor -> `followers`
    method: str = "holm"
    seed_df: dict[str, int | None] = field(default_factory=dict)  # metric -> df of seed noise
    dropped: dict[str, int] = field(default_factory=dict)


ALPHA = 0.05  # the table's error level: family-wise (holm) or false discovery rate (bh)


Pair = tuple[list[Trial], list[Trial]]  # (trials at the reference level, trials at the level)


def level_text(value: Any) -> str:
    """A searched value as trial parameters log it (`tracking.log_params`: JSON but for text)."""
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _level_of(value: str | None, levels: list[str]) -> str | None:
    """Which declared level a logged parameter is (as text, or as the same number)."""
    if value is None or value in levels:
        return value
    for level in levels:
        try:
            if float(value) == float(level):
                return level
        except ValueError:
            continue
    return None


def matched_pairs(
    trials: Sequence[Trial], factor: str, levels: list[str], follows: Sequence[str] = ()
) -> dict[str, list[Pair]]:
    """Per level after the first (the reference): the pairs of configurations that differ
    only in `factor`, one at the reference level and one at this level, with every other
    sampled parameter equal (absent ones too: a conditional dimension that was not sampled).
    Parameters in `follows` are conditioned on the factor (e.g. a learning rate per method):
    they go with its level and are left out of the match; a level with several of their values
    (two rates for LoRA) has a configuration per value, each paired with each of the
    reference's. Trials of the same configuration (a sampler that repeated one) are replicates
    of it."""
    skip = {factor, *follows}
    groups: dict[tuple, dict[str, dict[tuple, list[Trial]]]] = {}
    for t in trials:
        level = _level_of(t.params.get(factor), levels)
        if level is not None:
            rest = tuple(sorted((k, v) for k, v in t.params.items() if k not in skip))
            own = tuple(sorted((k, v) for k, v in t.params.items() if k in follows))
            groups.setdefault(rest, {}).setdefault(level, {}).setdefault(own, []).append(t)
    out: dict[str, list[Pair]] = {}
    for by_level in groups.values():
        references = list(by_level.get(levels[0], {}).values())
        for level in levels[1:]:
            configs = list(by_level.get(level, {}).values())
            if references and configs:
                out.setdefault(level, []).extend((r, c) for c in configs for r in references)
    return {level: out[level] for level in levels[1:] if level in out}


def main_effects(study: Study, *, method: str | None = None) -> Effects:
    """The effect of each level of every discrete searched factor (grid or categorical, and
    conditional `cases` of them) against its first choice, on every headline metric.

    Pooled over the other factors and over replicates: the trials that differ only in the
    factor are paired (`matched_pairs`) and their per-item differences combined with
    `stats.pooled_effect`, a configuration that serves in several pairs entering once. Seed
    noise is pooled over every replicated configuration of the study (`stats.seed_noise`);
    items are paired by content and counted by family where the suite declares one. The
    p-values are adjusted over all cells with Holm or Benjamini-Hochberg (`method`, else the
    study's `report.multiplicity`). For a metric against the base (`<suite>/delta`) the
    compared score is used: the base cancels out. Agreement metrics (`agree_by`) have no
    per-item scores and are left out."""
    out = Effects(method=method or study.report.multiplicity)
    done = [t for t in study.trials if t.state == "COMPLETE" and t.run_ids]
    metrics = [k for k in study.key_metrics if k.spec.agree_by is None]
    scores = {m.name: _config_scores(study, done, m, out.dropped) for m in metrics}
    for m in metrics:
        out.seed_df[m.name] = scores[m.name].noise.df if scores[m.name].noise else None
    cells: list[tuple[str, str, str, str, PooledEffect]] = []
    for factor, space in study.search.items():
        if any(v.type in ("float", "int") for v in space.variants):
            out.continuous.append(factor)
            continue
        levels = [level_text(v) for v in space.values()]
        out.follows[factor] = followers(study.search, factor)
        pairs = matched_pairs(done, factor, levels, out.follows[factor])
        if not pairs:
            out.unmatched.append(factor)
            continue
        for level, level_pairs in pairs.items():
            for metric in metrics:
                estimate = scores[metric.name].effect(level_pairs)
                if estimate is not None:
                    cells.append((factor, level, levels[0], metric.name, estimate))
    decided = decide_effects([c[4] for c in cells], out.method, alpha=ALPHA)
    out.rows = []
    for cell, (q, ok) in zip(cells, decided, strict=True):
        design = None if ok else design_to_decide(cell[4], len(cells), alpha=ALPHA)
        items, seeds = design or (None, None)
        out.rows.append(
            Effect(*cell, p_adjusted=q, decided=ok, items_to_decide=items, seeds_to_decide=seeds)
        )
    return out


def followers(search: dict[str, SearchSpace], factor: str) -> list[str]:
    """The dimensions sampled under a condition on `factor` (`when: {factor: ...}`)."""
    return [
        path
        for path, space in search.items()
        if any(v.when and factor in v.when for v in space.variants)
    ]


@dataclass
class _ConfigScores:
    """One metric's per-item scores for every run of the study, on the items all of them
    hold alike, with the suite's item families and the study's seed noise."""

    by_run: dict[str, list[float]]
    clusters: list[str] | None
    noise: SeedNoise | None

    def effect(self, pairs: list[Pair]) -> PooledEffect | None:
        """The pooled effect over `pairs`; None when a run lacks the metric's records."""
        runs = [r for ref, lvl in pairs for t in (*ref, *lvl) for r in t.run_ids]
        if not self.by_run or any(r not in self.by_run for r in runs):
            return None

        def config(trials: list[Trial]) -> tuple[tuple[str, ...], list[list[float]]]:
            ids = tuple(r for t in trials for r in t.run_ids)
            return ids, [self.by_run[r] for r in ids]

        sides = [(config(ref), config(lvl)) for ref, lvl in pairs]
        return pooled_effect(
            [(a[1], b[1]) for a, b in sides],
            clusters=self.clusters,
            configs=[(a[0], b[0]) for a, b in sides],
            noise=self.noise,
        )


def _config_scores(
    study: Study, trials: list[Trial], metric: KeyMetric, dropped: dict[str, int]
) -> _ConfigScores:
    """`metric`'s scores for every run of `trials` that has its suite's records, paired by
    content across all of them (`records.paired_keys`: an error, or with
    `report.common_items` the common items, counted in `dropped`)."""
    empty = _ConfigScores({}, None, None)
    suite = next((s for s in study.declared_suites if s.name == metric.suite), None)
    if suite is None:
        return empty
    indexed = {r: recs for t in trials for r in t.run_ids if (recs := study.indexed(r, suite.name))}
    if not indexed:
        return empty
    runs = [(f"run {r}", recs[suite.name]) for r, recs in indexed.items()]
    kept, dropped[suite.name] = paired_keys(runs, suite.name, common=study.report.common_items)
    first = runs[0][1]
    items = {k: first[k] for k in kept}
    name = metric_name(suite.name, metric.spec.name)
    keys = {n: k for n, _, k in metric_items(suite, items)}.get(name, [])
    if not keys:
        return empty
    rows = item_scores(list(indexed.values()), suite.name, metric.spec.score, keys)
    by_run = dict(zip(indexed, rows, strict=True))
    clusters = item_clusters(items, keys, suite.cluster_by)
    configs = [
        [by_run[r] for r in t.run_ids] for t in trials if all(r in by_run for r in t.run_ids)
    ]
    return _ConfigScores(by_run, clusters, seed_noise(configs, clusters=clusters))
