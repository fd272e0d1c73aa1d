"""Study reports: `report.md`, a self-contained `report.html` and `effects.json`, from a study
read back from MLflow (`harness.verdicts.analysis`).

A study that is still running gives a partial report that says so at the top, because people
open reports mid-study to decide whether to stop it. The page is a list of blocks
(`harness.verdicts.render`) in reading order: best trials, all trials, the Pareto front, the effect of
each searched factor, forgetting per task, what the suites can detect, training loss.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.config.load import load_experiment, resolve_tracking_uri
from harness.config.schema import DEFAULT_TRACKING_URI, Experiment
from harness.stats.pareto import pareto_front
from harness.study.tracking import client_for
from harness.util.files import write_atomic
from harness.verdicts.analysis import (
    Effects,
    Study,
    Trial,
    best_trials,
    check_constraints,
    forgetting_by_task,
    load_study,
    main_effects,
    task_seed_noise,
)
from harness.verdicts.cells import (
    key_metrics,
    metric_cell,
    short,
    trial_label,
    trials_table,
    with_interval,
)
from harness.verdicts.effect_blocks import effect_blocks
from harness.verdicts.plots import plot_losses, plot_pareto, plot_per_task
from harness.verdicts.render import (
    Block,
    Details,
    Heading,
    Para,
    Plot,
    Table,
    fmt_num,
    write_report,
)

# ---------------------------------------------------------------- plots


# ---------------------------------------------------------------- the report


_INTERVALS = (
    "Row 'base' is the base model before SFT. Intervals are 95% (Wilson for rates, paired "
    "bootstrap for deltas) over a single run's items."
)
_REPLICATES = (
    " A trial with several runs (replicates: the same configuration at seeds seed, seed+1, ...)"
    " shows the replicate mean ± the standard deviation across replicates (seed noise)."
)


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


def _reference_blocks(study: Study) -> list[Block]:
    """The base model measured vs its published scores (`eval.reference_scores`): a published
    figure outside the 95% interval flags an eval setup that differs from the publication's."""
    if not study.references:
        return []
    rows, outside = [], []
    for c in study.references:
        measured = c.get("measured")
        cell = (
            f"{fmt_num(measured)} [{fmt_num(c['low'])}, {fmt_num(c['high'])}]"
            if measured is not None
            else "not measured"
        )
        flag = {"within": "yes", "outside": "**MISMATCH**"}.get(c["verdict"], "?")
        if c["verdict"] == "outside":
            outside.append(c["metric"])
        rows.append([c["metric"], fmt_num(c["reference"]), cell, str(c["n"]), flag, c["source"]])
    note = (
        f"Outside the interval: {', '.join(outside)}: the eval setup (prompt, template, metric, "
        "shots, weights) differs from the publication's; explain the gap before trusting deltas."
        if outside
        else "Every published figure lies inside the base model's 95% interval."
    )
    return [
        Heading("Base model vs reference scores"),
        Table(["metric", "reference", "measured [95%]", "n", "within", "source"], rows),
        Para(note, warn=bool(outside)),
    ]


def study_blocks(study: Study, effects: Effects | None = None) -> list[Block]:
    """Everything the study report shows, in reading order (`effects`: `main_effects(study)`
    when the caller has it already)."""
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
    if study.base_origin:
        blocks.append(Para(f"Base model: {study.base_origin[:1].upper()}{study.base_origin[1:]}."))
    blocks += _reference_blocks(study)
    blocks += _provenance_blocks(study)
    objectives = study.objectives
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
            ok, problems = check_constraints(t, study.constraints)
            rows.append(
                [trial_label(t), (t.run_id or "")[:8]]
                + [metric_cell(t, m) for m, _ in objectives]
                + ["all satisfied" if ok else "; ".join(problems)]
                + [", ".join(f"{k}={short(v)}" for k, v in sorted(t.params.items()))]
            )
        if study.base:
            rows.append(
                ["base", ""] + [with_interval(study.base, m) for m, _ in objectives] + ["", ""]
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

    # trial table: what varies and the headline metrics; everything else folded away
    blocks.append(Heading("Trials"))
    keys = key_metrics(study)
    blocks.append(trials_table(study, keys, full=False))
    everything = trials_table(study, keys, full=True)
    blocks.append(
        Details("All columns: state, run ids, every setting, mix shares, notes", [everything])
    )
    if keys:
        blocks.append(Para(_INTERVALS + (_REPLICATES if study.replicated else "")))
    blocks += _judge_notes(study)

    blocks += _pareto_blocks(study, objectives)

    blocks.append(Heading("Effects of searched factors"))
    blocks += effect_blocks(study, main_effects(study) if effects is None else effects)

    # forgetting per task
    blocks += _per_task_blocks(study, best)

    blocks.append(Heading("What these suites can detect"))
    blocks += _detectable_blocks(study, best)

    # loss curves
    blocks.append(Heading("Training loss"))
    client = client_for(study.tracking_uri)
    histories = {
        trial_label(t): sorted(
            (m.step, m.value) for m in client.get_metric_history(t.run_id, "train/loss")
        )
        for t in study.trials
        if t.run_id
    }
    png = plot_losses(histories)
    blocks.append(Plot("loss", "train/loss by step", png) if png else Para("No train/loss logged."))
    return blocks


def _pareto_axes(study: Study, objectives: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The two axes of the trade-off plot: the first two objectives; with one objective, the
    change of the first base-compared metric of the study's suites (e.g. forgetting/delta)."""
    axes = list(objectives[:2])
    if len(axes) == 1:
        for s in study.suites:
            if any(m.compare_base and m.by is None for m in s.metrics):
                delta = f"{s.name}/delta"
                if delta != axes[0][0]:
                    axes.append((delta, "maximize"))
                break
    return axes


def _pareto_blocks(study: Study, objectives: list[tuple[str, str]]) -> list[Block]:
    axes = _pareto_axes(study, objectives)
    if len(axes) < 2:
        return []
    (target, dy), (x, dx) = axes
    blocks: list[Block] = [Heading(f"Pareto front: {target} vs {x}")]
    pts = [
        t for t in study.trials if t.state == "COMPLETE" and x in t.metrics and target in t.metrics
    ]
    front = pareto_front(
        [[t.metrics[x], t.metrics[target]] for t in pts], [dx == "maximize", dy == "maximize"]
    )
    png = plot_pareto(study.trials, (x, dx), target, {pts[i].run_id for i in front}, study.base)

    if png:
        blocks.append(Plot("pareto", f"{target} vs {x}", png))
        blocks.append(Para("On the front: " + ", ".join(trial_label(pts[i]) for i in front) + "."))
    else:
        blocks.append(Para(f"No completed trial has both {target} and {x} yet."))
    return blocks


def _per_task_blocks(study: Study, best: list[Trial]) -> list[Block]:
    """A table (and plots for the best trials) per suite with a base-compared `by: task`
    metric (e.g. forgetting): each task's score vs the base model on the same items."""
    blocks: list[Block] = []
    for suite in study.declared_suites:
        for spec in suite.metrics:
            if spec.compare_base and spec.by == "task":
                blocks.append(Heading(f"{suite.name} per task vs the base model"))
                blocks += _task_blocks(study, best, suite.name, spec.name)
    return blocks


def _task_blocks(study: Study, best: list[Trial], suite: str, metric: str) -> list[Block]:
    rows, plots = [], []
    best_ids = {t.run_id for t in best}
    done = [t for t in study.trials if t.state == "COMPLETE" and t.run_id]
    runs = {t.number: [study.records(r).get(suite, []) for r in t.run_ids] for t in done}
    noise = task_seed_noise(list(runs.values()), suite)
    for t in done:
        per_task = forgetting_by_task(runs[t.number], suite, noise)
        if not per_task:  # no per-item base scores: the logged summaries, without intervals
            tasks = sorted(
                m.split("/")[1]
                for m in t.metrics
                if m.startswith(f"{suite}/") and m.endswith(f"/{metric}") and m.count("/") == 2
            )
            per_task = [
                {
                    "task": k,
                    "n": None,
                    "base_acc": t.metrics.get(f"{suite}/{k}/base_{metric}"),
                    "acc": t.metrics[f"{suite}/{k}/{metric}"],
                }
                for k in tasks
            ]
        for r in per_task:
            delta = r.get("delta")
            if delta is None and r.get("base_acc") is not None:
                delta = r["acc"] - r["base_acc"]
            ci = f"[{fmt_num(r['low'])}, {fmt_num(r['high'])}]" if "low" in r else "n/a"
            rows.append(
                [trial_label(t), r["task"], r["n"], fmt_num(r["base_acc"]), fmt_num(r["acc"]),
                 fmt_num(delta), ci, fmt_num(r["p"]) if "p" in r else "n/a"]
            )  # fmt: skip
        if t.run_id in best_ids and per_task and "low" in per_task[0]:
            png = plot_per_task(per_task, f"{suite}, trial {trial_label(t)}")
            if png:
                plots.append(
                    Plot(f"{suite}-{t.number}", f"{suite} per task, {trial_label(t)}", png)
                )
    if not rows:
        return [Para(f"No {suite} results from completed trials yet.")]
    headers = ["trial", "task", "n", f"base {metric}", metric, "delta", "95% paired CI", "p"]
    pooled = [
        Para(
            "Replicated trials: the trial's replicates (seeds) against the base model on the "
            "same items, with seed noise in the interval (a two-level t: item noise plus the "
            "task's seed-to-seed spread, pooled over the study's replicated configurations; "
            "the base is one fixed model). Single runs: Tango's interval and McNemar's p, "
            "item noise only."
        )
    ]
    return [Table(headers, rows), *(pooled if study.replicated else []), *plots]


def _detectable_blocks(study: Study, best: list[Trial]) -> list[Block]:
    """Per gated metric of the best trial: its n and the smallest paired change it detects
    with 80% power (one-sided 5%), so a reader knows which differences are noise at this size.
    The disagreement is the observed one against the base where records carry base scores,
    else 2p(1 - p) (two models erring independently at rate p: the pessimistic case). A suite
    with item families (`cluster_by`) counts families: the design effect against the base, or
    without base scores items per family (a family counting as one item, the worst case)."""
    from harness.eval.suites import field_values, matches
    from harness.stats.comparison import paired_comparison
    from harness.stats.decision import min_detectable_effect
    from harness.util.names import metric_name

    done = [t for t in best or study.trials if t.state == "COMPLETE" and t.run_id]
    if not done:
        return [Para("No completed trial yet.")]
    records = study.records(done[0].run_id)
    rows = []
    for suite in (s for s in study.declared_suites if s.name in records):
        for m in (m for m in suite.metrics if m.gate and m.by is None):
            group = [r for r in records[suite.name] if matches(r, m.where)]
            scores = [r.get("scores", {}).get(m.score, r.get("score")) for r in group]
            pairs = [(s, r.get("base_score")) for s, r in zip(scores, group, strict=True)]
            if not group or any(s is None for s in scores):
                continue
            p = sum(scores) / len(scores)
            labels = (
                [json.dumps(field_values(r, suite.cluster_by), default=str) for r in group]
                if suite.cluster_by
                else None
            )
            families = len(set(labels)) if labels else len(group)
            deff = len(group) / families  # at worst a family counts as one item
            if all(b is not None for _, b in pairs):
                k = sum(s != b for s, b in pairs)
                psi, how = (k + 1) / (len(group) + 2), "observed vs base"
                if labels:
                    base = [float(b) for _, b in pairs]
                    deff = paired_comparison(base, scores, clusters=labels).design_effect
            else:
                psi, how = 2 * p * (1 - p), "2p(1-p)"
            mde = min_detectable_effect(
                len(group), discordance=max(psi, 1.0 / len(group)), design_effect=deff
            )
            if labels:
                how += f", {families} families (x{fmt_num(deff, 2)})"
            name = metric_name(suite.name, m.name)
            rows.append([name, len(group), fmt_num(p), how, fmt_num(mde), fmt_num(m.threshold)])
    if not rows:
        return [Para("No per-item records with gated metrics in the best trial.")]
    headers = ["metric", "n", "value", "disagreement", "detectable change", "gate allows"]
    note = Para(
        f"From trial {trial_label(done[0])}'s records: the smallest paired change each gated "
        "metric detects with 80% power at its n. Differences between trials smaller than this "
        "are not decided by these suites; more items (or replicates) are needed."
    )
    return [note, Table(headers, rows)]


def _provenance_blocks(study: Study) -> list[Block]:
    """The commit, command and machine the numbers came from, and the data with its licences."""
    p = study.provenance
    commits = ", ".join(c[:12] + ("-dirty" if c.endswith("-dirty") else "") for c in p.commits)
    commits = commits or "not recorded"
    lines = [
        f"Code: commit {commits}"
        + (" (the trials ran at different commits)" if len(p.commits) > 1 else "")
        + ". Command: "
        + (f"`{p.command}`" if p.command else "not recorded")
        + ". Machine: "
        + (p.machine or "not recorded")
        + "."
    ]
    if p.versions:
        lines.append(f"Libraries: {p.versions}.")
    blocks: list[Block] = [Para(" ".join(lines))]
    if p.sources:
        rows = [
            [s["name"], s["path"] or "", (s["sha256"] or "")[:12], s["licence"] or "not declared"]
            for s in p.sources
        ]
        blocks.append(Table(["data source", "path", "sha256", "licence"], rows))
    return blocks


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
    """Write `report.md`, `report.html` and `effects.json` for a study; returns the first two.

    `exp_or_study_name` is an `Experiment`, a path to an experiment file (.yaml/.yml), or a
    study (MLflow experiment) name. The tracking URI defaults to the experiment file's, else
    `sqlite:///mlflow.db`; the output folder to `reports/<name>/`. `effects.json` is the
    main-effects table as a list of `{factor, level, reference, metric, diff, low, high, n,
    clusters, pairs, replicates, seed_noise, p_value, p_adjusted, decided, multiplicity}`
    (`analysis.Effect.to_dict`: raw and adjusted p-values and the decision), empty when no
    factor qualifies.
    """
    name, uri, exp = _resolve_target(exp_or_study_name, tracking_uri)
    study = load_study(name, uri, exp)
    out = Path(out_dir) if out_dir is not None else Path("reports") / name
    title = f"Study report: {name}" + (" (partial)" if study.partial else "")
    effects = main_effects(study)
    paths = write_report(out, title, study_blocks(study, effects))
    rows = [e.to_dict() | {"multiplicity": effects.method} for e in effects.rows]
    write_atomic(out / "effects.json", json.dumps(rows, indent=1) + "\n")
    return paths
