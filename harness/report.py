"""Study reports: `report.md` and a self-contained `report.html`, read back from MLflow.

MLflow is the source of truth, not the Optuna study or files a run left behind: whatever a
reader sees in the MLflow UI is what the report summarises, so the two never disagree. A study
that is still running gives a partial report that says so at the top, because people open
reports mid-study to decide whether to stop it.

The page is built once as a list of blocks (headings, paragraphs, tables, plots) and rendered
twice: Markdown with plots as PNG files beside it, and HTML with the same plots embedded as
base64 so the file can be mailed or attached to a CI run on its own. `harness.gate` renders its
report with the same blocks.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.config import (
    Constraint,
    Experiment,
    StudySpec,
    load_experiment,
    resolve_tracking_uri,
)
from harness.errors import HarnessError
from harness.files import read_jsonl, write_atomic
from harness.stats import paired_comparison

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_RUN_ID_KEYS = ("mlflow_run_id", "run_id", "mlflow_run", "mlflow run id")
_MAX_ABLATION_PARAMS = 6


# ---------------------------------------------------------------- blocks and rendering


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    text: str
    warn: bool = False


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: plots/<name>.png beside report.md
    title: str
    png: bytes


Block = Heading | Para | Table | Plot

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.4; }
h1, h2, h3 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
.warn { background: #fff3cd; border: 1px solid #e0c060; padding: .6em 1em; }
img { max-width: 100%; }
"""


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return fmt_num(value)
    return str(value)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown with plots referenced as `plots/<name>.png` (written by `write_report`)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + b.text, ""]
        elif isinstance(b, Para):
            out += [("> **" + b.text + "**") if b.warn else b.text, ""]
        elif isinstance(b, Table):
            esc = [[_cell(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in b.rows]
            out.append("| " + " | ".join(b.headers) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(row) + " |" for row in esc]
            out.append("")
        elif isinstance(b, Plot):
            out += [f"![{b.title}](plots/{b.name}.png)", ""]
    return "\n".join(out)


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """One self-contained page: inline CSS, plots as data: URIs, nothing fetched."""
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="warn">{e(b.text)}</p>' if b.warn else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table><thead><tr>")
            out += [f"<th>{e(h)}</th>" for h in b.headers]
            out.append("</tr></thead><tbody>")
            for row in b.rows:
                out.append("<tr>" + "".join(f"<td>{e(_cell(c))}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif isinstance(b, Plot):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(b.title)}">'
                f"<figcaption>{e(b.title)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_report(out_dir: Path, title: str, blocks: Sequence[Block]) -> tuple[Path, Path]:
    """Write report.md (+ plots/*.png) and report.html into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [b for b in blocks if isinstance(b, Plot)]
    if plots:
        (out_dir / "plots").mkdir(exist_ok=True)
        for p in plots:
            (out_dir / "plots" / f"{p.name}.png").write_bytes(p.png)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md_path, render_markdown(title, blocks))
    write_atomic(html_path, render_html(title, blocks))
    return md_path, html_path


def fmt_num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if x != 0 and (abs(x) < 10**-(digits) or abs(x) >= 1e5):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def new_figure(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


# ---------------------------------------------------------------- reading MLflow


def client_for(tracking_uri: str) -> Any:
    """An MlflowClient bound to `tracking_uri`; never the process-wide default URI."""
    os.environ.setdefault(
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"
    )  # one bar per record file
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def load_records(client: Any, run_id: str, suites: Sequence[str] | None = None) -> dict:
    """Per-sample records of a run, `{suite: [record, ...]}` from `records/<suite>.jsonl`."""
    from mlflow.exceptions import MlflowException

    try:
        listed = client.list_artifacts(run_id, "records")
    except (MlflowException, OSError) as exc:
        raise HarnessError(f"run {run_id}: cannot list records/ artifacts: {exc}") from None
    names = [Path(f.path).name for f in listed if not f.is_dir and f.path.endswith(".jsonl")]
    wanted = [n for n in names if suites is None or n[: -len(".jsonl")] in suites]
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(wanted):
            try:
                local = client.download_artifacts(run_id, f"records/{name}", tmp)
            except (MlflowException, OSError) as exc:
                raise HarnessError(f"run {run_id}: cannot read records/{name}: {exc}") from None
            out[name[: -len(".jsonl")]] = read_jsonl(local, f"run {run_id} records/{name}")
    return out


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
class Study:
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

    @functools.cached_property
    def key_metrics(self) -> list[str]:
        """Headline metrics declared by the suites (`suites.key_metrics`) this study logged."""
        from harness.suites import discover_suites, key_metrics, load_suites

        names = key_metrics(load_suites(sorted(discover_suites(self.suite_dirs)), self.suite_dirs))
        seen = {m for t in self.trials for m in t.metrics}
        return [k.name for k in names if k.name in seen]

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
    # A resumed study reuses its first parent run (harness.tracking.find_parent): oldest first.
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
    )


# ---------------------------------------------------------------- analysis


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of points no other point dominates (at least as good everywhere, better once)."""
    signed = [[v if up else -v for v, up in zip(p, maximize, strict=True)] for p in points]
    front = []
    for i, p in enumerate(signed):
        dominated = any(
            all(qv >= pv for qv, pv in zip(q, p, strict=True)) and q != p
            for j, q in enumerate(signed)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def best_of(
    points: Sequence[Sequence[float]], feasible: Sequence[bool], maximize: Sequence[bool]
) -> list[int]:
    """The one rule for best trials (the study's table and the report): among the feasible
    points, or all of them when none is, the best point for one objective or the Pareto front
    for several. Returns indices into `points`."""
    pool = [i for i, ok in enumerate(feasible) if ok] or list(range(len(points)))
    if not pool:
        return []
    if len(maximize) == 1:
        return [(max if maximize[0] else min)(pool, key=lambda i: points[i][0])]
    return [pool[i] for i in pareto_front([points[i] for i in pool], maximize)]


def _objectives(study: Study) -> list[tuple[str, str]]:
    if study.objectives:
        return study.objectives
    seen = {m for t in study.trials for m in t.metrics}
    return [("target/accuracy", "maximize")] if "target/accuracy" in seen else []


def _feasible(trial: Trial, constraints: Sequence[Constraint]) -> tuple[bool, list[str]]:
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
    objectives = _objectives(study)
    complete = [t for t in study.trials if t.state == "COMPLETE"]
    scored = [t for t in complete if all(m in t.metrics for m, _ in objectives)]
    if not objectives or not scored:
        return [], "no completed trial has every objective metric yet."
    feasible = [_feasible(t, study.constraints)[0] for t in scored]
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


def pool_replicates(replicates: list[list[dict]]) -> list[dict]:
    """One record per item, its `score` averaged over the replicate runs of a configuration.

    How replicates are pooled for a paired comparison (against the base, or between
    configurations): items are matched by (task, id) across replicates, each item's score
    becomes its mean over the seeds (a fraction where the seeds disagree), and the comparison
    pairs these per-item means. Seed-to-seed disagreement on an item thus widens the interval;
    a shift shared by every item of one seed is visible in the replicate spread shown beside
    it. An item missing from any replicate is left out, so every mean covers the same seeds.
    """
    if len(replicates) == 1:
        return replicates[0]
    keyed = [{(r.get("task"), str(r.get("id"))): r for r in rows} for rows in replicates]
    common = [k for k in keyed[0] if all(k in other for other in keyed[1:])]
    pooled = []
    for key in common:
        scores = [float(rows[key]["score"]) for rows in keyed if rows[key].get("score") is not None]
        if len(scores) == len(keyed):
            pooled.append(keyed[0][key] | {"score": sum(scores) / len(scores)})
    return pooled


def forgetting_by_task(records: list[dict]) -> list[dict]:
    """Per-task accuracy vs the base model on the same items, with the paired interval."""
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(str(r.get("task", "?")), []).append(r)
    rows = []
    for task, recs in sorted(by_task.items()):
        recs = [r for r in recs if r.get("base_score") is not None and r.get("score") is not None]
        if not recs:
            continue
        recs.sort(key=lambda r: str(r.get("id")))
        base = [float(r["base_score"]) for r in recs]
        score = [float(r["score"]) for r in recs]
        c = paired_comparison(base, score)
        rows.append(
            {
                "task": task,
                "n": c.n,
                "base_acc": c.mean_a,
                "acc": c.mean_b,
                "delta": c.diff,
                "low": c.ci_low,
                "high": c.ci_high,
                "p": c.p_value,
                "test": c.test,
            }
        )
    return rows


# ---------------------------------------------------------------- plots


def _plot_pareto(
    trials: list[Trial], x: str, y: str, front_ids: set[str], base: dict[str, float]
) -> bytes | None:
    pts = [t for t in trials if t.state == "COMPLETE" and x in t.metrics and y in t.metrics]
    if not pts:
        return None
    fig, ax = new_figure(figsize=(6, 4.5))
    if x in base and y in base:  # the reference every trial should be read against
        ax.scatter(base[x], base[y], marker="*", s=160, c="black", zorder=4, label="base model")
        ax.annotate("base", (base[x], base[y]), textcoords="offset points", xytext=(6, -10),
                    fontsize=8)  # fmt: skip
        ax.legend(fontsize=8, loc="best")
    for t in pts:
        on_front = t.run_id in front_ids
        if x in t.spread and y in t.spread:  # replicates: ± one standard deviation
            ax.errorbar(t.metrics[x], t.metrics[y], xerr=t.spread[x], yerr=t.spread[y],
                        fmt="none", ecolor="grey", lw=0.8, zorder=2)  # fmt: skip
        ax.scatter(
            t.metrics[x],
            t.metrics[y],
            c="tab:red" if on_front else "tab:blue",
            s=60 if on_front else 30,
            zorder=3,
        )
        ax.annotate(f"#{t.number}", (t.metrics[x], t.metrics[y]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)  # fmt: skip
    front = sorted((t for t in pts if t.run_id in front_ids), key=lambda t: t.metrics[x])
    if len(front) > 1:
        ax.plot([t.metrics[x] for t in front], [t.metrics[y] for t in front], "r--", lw=1)
    ax.set_xlabel(f"{x} (higher = less forgetting)")
    ax.set_ylabel(y)
    ax.set_title("Target behaviour vs forgetting (red: Pareto front)")
    ax.grid(alpha=0.3)
    return figure_png(fig)


def _as_float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _ablation_params(trials: list[Trial]) -> list[str]:
    names = sorted({p for t in trials for p in t.params})
    names.sort(key=lambda p: (not p.startswith("data."), p))  # the mix (weights, ops) first
    return names[:_MAX_ABLATION_PARAMS]


def _plot_ablation(trials: list[Trial], params: list[str], metrics: list[str]) -> bytes | None:
    done = [t for t in trials if t.state == "COMPLETE"]
    if not params or not metrics or not done:
        return None
    fig, axes = new_figure(
        len(params), len(metrics), figsize=(3.2 * len(metrics), 2.6 * len(params)), squeeze=False
    )
    for i, p in enumerate(params):
        values = [t.params.get(p) for t in done]
        numeric = all(_as_float(v) is not None for v in values if v is not None)
        cats = sorted({v for v in values if v is not None})
        for j, m in enumerate(metrics):
            ax = axes[i][j]
            xs, ys = [], []
            for t, v in zip(done, values, strict=True):
                if v is None or m not in t.metrics:
                    continue
                xs.append(_as_float(v) if numeric else cats.index(v))
                ys.append(t.metrics[m])
            ax.scatter(xs, ys, s=20)
            if not numeric:
                ax.set_xticks(range(len(cats)), cats, fontsize=7)
            ax.set_xlabel(p, fontsize=8)
            ax.set_ylabel(m, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    return figure_png(fig)


def _plot_losses(histories: dict[str, list[tuple[int, float]]]) -> bytes | None:
    if not any(histories.values()):
        return None
    fig, ax = new_figure(figsize=(6.5, 4))
    for label, points in histories.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], label=label, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("train/loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return figure_png(fig)


def _plot_forgetting(rows: list[dict], label: str) -> bytes | None:
    if not rows:
        return None
    fig, ax = new_figure(figsize=(max(4.0, 1.1 * len(rows) + 2), 3.8))
    xs = range(len(rows))
    deltas = [r["delta"] for r in rows]
    err = [[r["delta"] - r["low"] for r in rows], [r["high"] - r["delta"] for r in rows]]
    ax.errorbar(xs, deltas, yerr=err, fmt="o", capsize=4)
    ax.axhline(0, color="grey", lw=1)
    ax.set_xticks(list(xs), [r["task"] for r in rows], rotation=20, fontsize=8)
    ax.set_ylabel("accuracy - base (95% paired CI)")
    ax.set_title(f"Forgetting per task, {label}")
    ax.grid(alpha=0.3)
    return figure_png(fig)


# ---------------------------------------------------------------- the report


def _with_interval(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return ""
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    text = fmt_num(metrics[name])
    return (
        f"{text} [{fmt_num(low)}, {fmt_num(high)}]"
        if low is not None and high is not None
        else text
    )


_INTERVALS = (
    "Row 'base' is the base model before SFT. Intervals are 95% (Wilson for rates, paired "
    "bootstrap for deltas) over a single run's items."
)
_REPLICATES = (
    " A trial with several runs (replicates: the same configuration at seeds seed, seed+1, ...)"
    " shows the replicate mean ± the standard deviation across replicates (seed noise)."
)


def _metric_cell(t: Trial, name: str) -> str:
    """A trial's metric: mean ± sd over replicates, or one run's value with its interval."""
    if name in t.spread:
        return f"{fmt_num(t.metrics[name])} ± {fmt_num(t.spread[name])}"
    return _with_interval(t.metrics, name)


def _key_metrics(study: Study) -> list[str]:
    seen = {m for t in study.trials for m in t.metrics}
    wanted = [m for m, _ in _objectives(study)] + [c.metric for c in study.constraints]
    wanted += study.key_metrics
    return [m for m in dict.fromkeys(wanted) if m in seen]


def _short(value: str) -> str:
    f = _as_float(value)
    return fmt_num(f, 4) if f is not None and "." in value else value


def _trial_label(t: Trial) -> str:
    return f"#{t.number}" if t.number is not None else (t.run_id or "?")[:8]


def _judge_notes(study: Study) -> list[Block]:
    """How far judged rates can be trusted: each judge's measured agreement with human labels,
    as the runs logged it (`judge/<suite>/accuracy`, see harness/judges.py)."""
    logged: dict[str, dict[str, float]] = {}
    for t in study.trials:
        for name, value in t.metrics.items():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == "judge":
                logged.setdefault(parts[1], {})[parts[2]] = value
    return [
        Para(
            f"{suite} rates are only as good as their judge: {fmt_num(m.get('accuracy'))} "
            f"agreement with human labels (worst model {fmt_num(m.get('min_model_accuracy'))}; "
            f"evals/{suite}/README.md)."
        )
        for suite, m in sorted(logged.items())
    ]


def study_blocks(study: Study) -> list[Block]:
    """Everything the study report shows, in reading order."""
    blocks: list[Block] = []
    if study.partial:
        blocks.append(
            Para(
                "PARTIAL REPORT: the study has not finished ("
                + "; ".join(study.partial_reasons)
                + "). Numbers will change; re-run `harness report` when it finishes.",
                warn=True,
            )
        )
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
    blocks.append(
        Para(
            f"Study '{study.name}' at {study.tracking_uri}; parent run "
            f"{study.parent_run_id or 'n/a'} ({study.parent_status or 'n/a'}); trials: {summary}."
        )
    )
    blocks += [Para(n) for n in study.notes]
    objectives = _objectives(study)
    if objectives or study.constraints:
        blocks.append(
            Para(
                "Objectives: "
                + (", ".join(f"{m} ({d})" for m, d in objectives) or "none")
                + ". Constraints: "
                + (
                    ", ".join(f"{c.metric} {c.op} {fmt_num(c.value)}" for c in study.constraints)
                    or "none"
                )
                + "."
            )
        )

    # best trials
    blocks.append(Heading("Best trial(s)"))
    best, why = best_trials(study)
    blocks.append(Para(why[:1].upper() + why[1:]))
    if best:
        headers = ["trial", "run"] + [m for m, _ in objectives] + ["constraints", "params"]
        rows = []
        for t in best:
            ok, problems = _feasible(t, study.constraints)
            rows.append(
                [_trial_label(t), (t.run_id or "")[:8]]
                + [_metric_cell(t, m) for m, _ in objectives]
                + ["all satisfied" if ok else "; ".join(problems)]
                + [", ".join(f"{k}={_short(v)}" for k, v in sorted(t.params.items()))]
            )
        if study.base:
            rows.append(
                ["base", ""] + [_with_interval(study.base, m) for m, _ in objectives] + ["", ""]
            )
        blocks.append(Table(headers, rows))
    if study.picked:
        blocks.append(Para(f"The study itself picked trial(s) {study.picked} (Optuna's choice)."))
    best_logged = {k: v for k, v in study.parent_metrics.items() if k.startswith("best/")}
    if best_logged:
        blocks.append(
            Para(
                "Logged by the study: "
                + ", ".join(f"{k} = {fmt_num(v)}" for k, v in sorted(best_logged.items()))
            )
        )

    # trial table
    blocks.append(Heading("Trials"))
    params = sorted({p for t in study.trials for p in t.params})
    mixes = sorted(
        {
            m
            for t in study.trials
            for m in t.metrics
            if m.startswith("mix/") and m.endswith("/share")
        }
    )
    keys = _key_metrics(study)
    runs = ["runs"] if study.replicated else []
    headers = ["trial", "state", "run", *runs, *params]
    headers += [m[len("mix/") : -len("/share")] + " share" for m in mixes] + keys + ["note"]
    rows = []
    if study.base:
        blank = [""] * (len(runs) + len(params) + len(mixes))
        rows.append(["base", "", "", *blank, *(_with_interval(study.base, m) for m in keys), ""])
    for t in study.trials:
        rows.append(
            [_trial_label(t), t.state, (t.run_id or "")[:8]]
            + ([str(len(t.run_ids))] if runs else [])
            + [_short(t.params[p]) if p in t.params else "" for p in params]
            + [fmt_num(t.metrics[m]) if m in t.metrics else "" for m in mixes]
            + [_metric_cell(t, m) for m in keys]
            + [t.fail_reason or ""]
        )
    blocks.append(Table(headers, rows))
    if keys:
        blocks.append(Para(_INTERVALS + (_REPLICATES if study.replicated else "")))
    blocks += _judge_notes(study)

    # Pareto front
    target = next((m for m, d in objectives if d == "maximize" and m != "forgetting/delta"), None)
    target = target or "target/accuracy"
    x = "forgetting/delta"
    blocks.append(Heading(f"Pareto front: {target} vs {x}"))
    pts = [
        t for t in study.trials if t.state == "COMPLETE" and x in t.metrics and target in t.metrics
    ]
    front = pareto_front([[t.metrics[x], t.metrics[target]] for t in pts], [True, True])
    png = _plot_pareto(study.trials, x, target, {pts[i].run_id for i in front}, study.base)
    if png:
        blocks.append(Plot("pareto", f"{target} vs {x}", png))
        blocks.append(Para("On the front: " + ", ".join(_trial_label(pts[i]) for i in front) + "."))
    else:
        blocks.append(Para(f"No completed trial has both {target} and {x} yet."))

    # ablation view
    blocks.append(Heading("Behaviour against searched parameters"))
    ab_params = _ablation_params(study.trials)
    behaviour = study.key_metrics
    png = _plot_ablation(study.trials, ab_params, behaviour)
    if png:
        blocks.append(Plot("ablation", "behavioural metrics vs searched parameters", png))
    else:
        blocks.append(Para("No searched parameters or no completed trials to plot."))

    # forgetting per task
    blocks.append(Heading("Forgetting per task vs the base model"))
    blocks += _forgetting_blocks(study, best)

    blocks.append(Heading("What these suites can detect"))
    blocks += _detectable_blocks(study, best)

    # loss curves
    blocks.append(Heading("Training loss"))
    client = client_for(study.tracking_uri)
    histories = {
        _trial_label(t): sorted(
            (m.step, m.value) for m in client.get_metric_history(t.run_id, "train/loss")
        )
        for t in study.trials
        if t.run_id
    }
    png = _plot_losses(histories)
    blocks.append(Plot("loss", "train/loss by step", png) if png else Para("No train/loss logged."))
    return blocks


def _forgetting_blocks(study: Study, best: list[Trial]) -> list[Block]:
    client = client_for(study.tracking_uri)
    rows, plots = [], []
    best_ids = {t.run_id for t in best}
    for t in study.trials:
        if t.state != "COMPLETE" or not t.run_id:
            continue
        records = pool_replicates(
            [load_records(client, r, ["forgetting"]).get("forgetting", []) for r in t.run_ids]
        )
        per_task = forgetting_by_task(records)
        if not per_task:  # no per-item base scores: the logged summaries, without intervals
            tasks = sorted(
                m.split("/")[1]
                for m in t.metrics
                if m.startswith("forgetting/") and m.endswith("/acc") and m.count("/") == 2
            )
            per_task = [
                {
                    "task": k,
                    "n": None,
                    "base_acc": t.metrics.get(f"forgetting/{k}/base_acc"),
                    "acc": t.metrics[f"forgetting/{k}/acc"],
                }
                for k in tasks
            ]
        for r in per_task:
            delta = r.get("delta")
            if delta is None and r.get("base_acc") is not None:
                delta = r["acc"] - r["base_acc"]
            ci = f"[{fmt_num(r['low'])}, {fmt_num(r['high'])}]" if "low" in r else "n/a"
            rows.append(
                [_trial_label(t), r["task"], r["n"], fmt_num(r["base_acc"]), fmt_num(r["acc"]),
                 fmt_num(delta), ci, fmt_num(r["p"]) if "p" in r else "n/a"]
            )  # fmt: skip
        if t.run_id in best_ids and per_task and "low" in per_task[0]:
            png = _plot_forgetting(per_task, f"trial {_trial_label(t)}")
            if png:
                plots.append(
                    Plot(f"forgetting-{t.number}", f"forgetting per task, {_trial_label(t)}", png)
                )
    if not rows:
        return [Para("No forgetting results from completed trials yet.")]
    headers = ["trial", "task", "n", "base acc", "acc", "delta", "95% paired CI", "p"]
    pooled = [
        Para(
            "Replicated trials: each item's score is its mean over the replicates (seeds), "
            "paired with the base by item; p is McNemar's for single runs, a sign-flip test "
            "for pooled scores."
        )
    ]
    return [Table(headers, rows), *(pooled if study.replicated else []), *plots]


def _detectable_blocks(study: Study, best: list[Trial]) -> list[Block]:
    """Per gated metric of the best trial: its n and the smallest paired change it detects
    with 80% power (one-sided 5%), so a reader knows which differences are noise at this size.
    The disagreement is the observed one against the base where records carry base scores,
    else 2p(1 - p) (two models erring independently at rate p: the pessimistic case)."""
    from harness.stats import min_detectable_effect
    from harness.suites import discover_suites, load_suites, matches, metric_name

    done = [t for t in best or study.trials if t.state == "COMPLETE" and t.run_id]
    if not done:
        return [Para("No completed trial yet.")]
    records = load_records(client_for(study.tracking_uri), done[0].run_id)
    known = discover_suites(study.suite_dirs)
    rows = []
    for suite in load_suites([s for s in sorted(records) if s in known], study.suite_dirs):
        for m in (m for m in suite.metrics if m.gate and m.by is None):
            group = [r for r in records[suite.name] if matches(r, m.where)]
            scores = [r.get("scores", {}).get(m.score, r.get("score")) for r in group]
            pairs = [(s, r.get("base_score")) for s, r in zip(scores, group, strict=True)]
            if not group or any(s is None for s in scores):
                continue
            p = sum(scores) / len(scores)
            if all(b is not None for _, b in pairs):
                k = sum(s != b for s, b in pairs)
                psi, how = (k + 1) / (len(group) + 2), "observed vs base"
            else:
                psi, how = 2 * p * (1 - p), "2p(1-p)"
            mde = min_detectable_effect(len(group), discordance=max(psi, 1.0 / len(group)))
            name = metric_name(suite.name, m.name)
            rows.append([name, len(group), fmt_num(p), how, fmt_num(mde), fmt_num(m.threshold)])
    if not rows:
        return [Para("No per-item records with gated metrics in the best trial.")]
    headers = ["metric", "n", "value", "disagreement", "detectable change", "gate allows"]
    note = Para(
        f"From trial {_trial_label(done[0])}'s records: the smallest paired change each gated "
        "metric detects with 80% power at its n. Differences between trials smaller than this "
        "are not decided by these suites; more items (or replicates) are needed."
    )
    return [note, Table(headers, rows)]


def _resolve_target(
    exp_or_study_name: Experiment | str | Path, tracking_uri: str | None
) -> tuple[str, str, Experiment | None]:
    exp: Experiment | None = None
    if isinstance(exp_or_study_name, Experiment):
        exp = exp_or_study_name
    elif str(exp_or_study_name).endswith((".yaml", ".yml")):
        exp = load_experiment(exp_or_study_name)
    if exp is not None:
        return exp.name, resolve_tracking_uri(tracking_uri or exp.tracking_uri), exp
    return str(exp_or_study_name), resolve_tracking_uri(tracking_uri or DEFAULT_TRACKING_URI), None


def write_study_report(
    exp_or_study_name: Experiment | str | Path,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` for a study; returns their paths.

    `exp_or_study_name` is an `Experiment`, a path to an experiment file (.yaml/.yml), or a
    study (MLflow experiment) name. The tracking URI defaults to the experiment file's, else
    `sqlite:///mlflow.db`; the output folder to `reports/<name>/`.
    """
    name, uri, exp = _resolve_target(exp_or_study_name, tracking_uri)
    study = load_study(name, uri, exp)
    out = Path(out_dir) if out_dir is not None else Path("reports") / name
    title = f"Study report: {name}" + (" (partial)" if study.partial else "")
    return write_report(out, title, study_blocks(study))
