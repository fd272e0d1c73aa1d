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
    Effect,
    Effects,
    Study,
    Trial,
    best_trials,
    check_constraints,
    forgetting_by_task,
    load_study,
    main_effects,
    study_objectives,
)
from harness.verdicts.render import (
    Block,
    Details,
    Heading,
    Para,
    Plot,
    Table,
    figure_png,
    fmt_num,
    new_figure,
    write_report,
)

# ---------------------------------------------------------------- plots


def _plot_pareto(
    trials: list[Trial], x_axis: tuple[str, str], y: str, front_ids: set[str], base: dict
) -> bytes | None:
    x, direction = x_axis
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
    ax.set_xlabel(f"{x} ({'higher' if direction == 'maximize' else 'lower'} is better)")
    ax.set_ylabel(y)
    ax.set_title(f"{y} vs {x} (red: Pareto front)")
    ax.grid(alpha=0.3)
    return figure_png(fig)


def _plot_effects(effects: Effects, higher_is_better: dict[str, bool]) -> bytes | None:
    """One panel per metric: each factor level's diff against its reference with its interval;
    filled where the interval excludes 0."""
    metrics = list(dict.fromkeys(e.metric for e in effects.rows))
    if not metrics:
        return None
    cols = min(2, len(metrics))
    rows_per_panel = max(sum(e.metric == m for e in effects.rows) for m in metrics)
    panel_rows = -(-len(metrics) // cols)
    fig, axes = new_figure(
        panel_rows, cols, figsize=(6.5 * cols, (0.5 * rows_per_panel + 1.6) * panel_rows),
        squeeze=False,
    )  # fmt: skip
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = [e for e in effects.rows if e.metric == metric]
        for i, e in enumerate(rows):
            est = e.estimate
            ax.errorbar(
                est.diff, i, xerr=[[est.diff - est.low], [est.high - est.diff]], fmt="o",
                capsize=4, color="tab:blue" if e.decided else "grey",
                markerfacecolor="tab:blue" if e.decided else "white",
            )  # fmt: skip
        ax.axvline(0, color="black", lw=1)
        ax.set_yticks(
            range(len(rows)), [f"{e.factor}: {e.level} vs {e.reference}" for e in rows], fontsize=9
        )
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.invert_yaxis()
        better = "higher" if higher_is_better.get(metric, True) else "lower"
        ax.set_title(f"{metric} ({better} is better)", fontsize=10)
        ax.set_xlabel("level - reference (95% interval)", fontsize=9)
        ax.tick_params(axis="x", labelsize=9)
        ax.grid(alpha=0.3, axis="x")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
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


def _plot_per_task(rows: list[dict], label: str) -> bytes | None:
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
    ax.set_title(f"Per task, {label}")
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
    wanted = [m for m, _ in study_objectives(study)] + [c.metric for c in study.constraints]
    wanted += [k.name for k in study.key_metrics]
    return [m for m in dict.fromkeys(wanted) if m in seen]


def _as_float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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
    objectives = study_objectives(study)
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

    # trial table: what varies and the headline metrics; everything else folded away
    blocks.append(Heading("Trials"))
    keys = _key_metrics(study)
    blocks.append(_trials_table(study, keys, full=False))
    everything = _trials_table(study, keys, full=True)
    blocks.append(
        Details("All columns: state, run ids, every setting, mix shares, notes", [everything])
    )
    if keys:
        blocks.append(Para(_INTERVALS + (_REPLICATES if study.replicated else "")))
    blocks += _judge_notes(study)

    blocks += _pareto_blocks(study, objectives)

    blocks.append(Heading("Effects of searched factors"))
    blocks += _effect_blocks(study, main_effects(study) if effects is None else effects)

    # forgetting per task
    blocks += _per_task_blocks(study, best)

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


def _effect_blocks(study: Study, effects: Effects) -> list[Block]:
    """The main-effects table, which effects it decides, the factors it leaves out, a plot."""
    if not study.search:
        return [Para("The study's spec records no search space: no factors to show effects for.")]
    blocks: list[Block] = []
    if effects.rows:
        blocks.append(Para(_effects_header(effects)))
        headers = ["factor", "level", "reference", "metric", "diff", "95% interval", "n",
                   "pairs", "replicates", "p", f"p ({METHOD_NAMES[effects.method]})",
                   "decided"]  # fmt: skip
        rows = [
            [e.factor, e.level, e.reference, e.metric, fmt_num(e.estimate.diff),
             f"[{fmt_num(e.estimate.low)}, {fmt_num(e.estimate.high)}]",
             e.estimate.n if e.estimate.clusters >= e.estimate.n
             else f"{e.estimate.n} ({e.estimate.clusters} families)",
             e.estimate.pairs, e.estimate.runs, fmt_num(e.estimate.p_value),
             fmt_num(e.p_adjusted), _decision(e)]
            for e in effects.rows
        ]  # fmt: skip
        blocks += [Table(headers, rows), Para(_decided_sentence(effects))]
        png = _plot_effects(effects, {k.name: k.higher_is_better for k in study.key_metrics})
        if png:
            blocks.append(Plot("effects", "effect of each factor level vs its reference", png))
    elif not effects.unmatched and not effects.continuous:
        blocks.append(Para("No headline metric with per-item records to compare yet."))
    for factor in sorted({e.factor for e in effects.rows}):
        follows = effects.follows.get(factor)
        if follows:
            blocks.append(
                Para(
                    f"{factor}: each level runs with its own {', '.join(follows)} (searched "
                    "under a condition on it), so its effect includes that choice."
                )
            )
    for factor in effects.unmatched:
        blocks.append(
            Para(
                f"{factor}: no two completed trials differ only in this factor (with one at "
                "its reference level), so its effect cannot be told apart from the others'."
            )
        )
    if effects.continuous:
        blocks.append(
            Para(
                f"Not in the table: {', '.join(effects.continuous)}, searched over a range "
                "(float/int): their values do not repeat, so no trials differ only in them. "
                "The trial table shows the values each trial took."
            )
        )
    return blocks


METHOD_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
_METHOD_MEANING = {
    "holm": "the chance that a study with no true effect shows any decided cell is at most 5%",
    "bh": "the expected share of decided cells that are false is at most 5%",
}


def _effects_header(effects: Effects) -> str:
    """What the effects table's intervals hold and how its cells are decided."""
    other = "bh" if effects.method == "holm" else "holm"
    text = (
        "Each level of a searched factor against its reference level (the factor's first "
        "choice), on each headline metric: diff = level - reference on the same items (paired "
        "by content), pooled over every pair of completed trials that differ only in this "
        "factor (pairs), a configuration that serves in several pairs counted once, and over "
        "their replicate runs. Suites that declare item families (cluster_by) count families. "
        f"Multiplicity: p-values adjusted over all {len(effects.rows)} cells with "
        f"{METHOD_NAMES[effects.method]} ({_METHOD_MEANING[effects.method]}); an experiment "
        f"chooses {METHOD_NAMES[other]} with `report: {{multiplicity: {other}}}`. Decided: "
        "adjusted p <= 0.05 with seed noise in the interval."
    )
    seeds = {m: df for m, df in effects.seed_df.items() if any(e.metric == m for e in effects.rows)}
    if seeds and all(df is None for df in seeds.values()):
        return text + (
            " One run per configuration: seed noise is NOT included, so the intervals are about "
            "these trained checkpoints, not about the recipes (a rerun at another seed can move "
            "them by more), and no effect is called decided; run with `replicates: 2` or more "
            "to decide effects."
        )
    dfs = sorted({df for df in seeds.values() if df is not None})
    return text + (
        " 95% interval: a two-level t, seed noise (estimated from the study's own replicated "
        f"configurations, {'/'.join(map(str, dfs))} degrees of freedom) plus item noise."
    )


def _decision(e: Effect) -> str:
    if e.decided:
        return "yes"
    return "not decided (no seed noise estimate)" if not e.estimate.seed_noise else "not decided"


def _decided_sentence(effects: Effects) -> str:
    def name(e: Effect) -> str:
        return f"{e.factor} = {e.level} (vs {e.reference}) on {e.metric}"

    decided = [e for e in effects.rows if e.decided]
    undecided = [e for e in effects.rows if not e.decided]
    if not decided:
        return (
            "No effect is decided: no adjusted p-value is at most 0.05 with seed noise "
            "included, so these trials cannot tell the levels apart; more items or replicates "
            "would."
        )
    text = "Decided (adjusted p <= 0.05): " + "; ".join(
        f"{name(e)}: {fmt_num(e.estimate.diff)}" for e in decided
    )
    if undecided:
        text += ". Not decided: " + "; ".join(map(name, undecided))
    return text + "."


def _short_param(path: str) -> str:
    """A column header for a searched setting: `data.sources.replay.weight` -> `replay weight`,
    `train.learning_rate` -> `learning_rate`."""
    parts = path.split(".")
    return " ".join(parts[-2:]) if parts[-1] == "weight" and len(parts) > 2 else parts[-1]


def _trials_table(study: Study, keys: list[str], *, full: bool) -> Table:
    """One row per trial (and the base model). Compact: the searched settings that vary, with
    short names, and the headline metrics by their labels; `full`: every column."""
    params = sorted({p for t in study.trials for p in t.params})
    mixes = sorted(
        {
            m
            for t in study.trials
            for m in t.metrics
            if m.startswith("mix/") and m.endswith("/share")
        }
    )
    if not full:
        params = [p for p in params if len({t.params.get(p) for t in study.trials}) > 1]
        mixes = []
    labels = {k.name: k.label for k in study.key_metrics}
    runs = ["runs"] if study.replicated else []
    head = ["trial", "state", "run", *runs] if full else ["trial"]
    headers = head + [p if full else _short_param(p) for p in params]
    headers += [m[len("mix/") : -len("/share")] + " share" for m in mixes]
    headers += [k if full else labels.get(k, k) for k in keys] + (["note"] if full else [])
    rows = []
    if study.base:
        blank = [""] * (len(head) - 1 + len(params) + len(mixes))
        base_row = ["base", *blank, *(_with_interval(study.base, m) for m in keys)]
        rows.append(base_row + ([""] if full else []))
    for t in study.trials:
        if not full and t.state != "COMPLETE":
            continue
        row = [_trial_label(t)]
        if full:
            row += [t.state, (t.run_id or "")[:8]] + ([str(len(t.run_ids))] if runs else [])
        row += [_short(t.params[p]) if p in t.params else "" for p in params]
        row += [fmt_num(t.metrics[m]) if m in t.metrics else "" for m in mixes]
        row += [_metric_cell(t, m) for m in keys] + ([t.fail_reason or ""] if full else [])
        rows.append(row)
    return Table(headers, rows)


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
    png = _plot_pareto(study.trials, (x, dx), target, {pts[i].run_id for i in front}, study.base)

    if png:
        blocks.append(Plot("pareto", f"{target} vs {x}", png))
        blocks.append(Para("On the front: " + ", ".join(_trial_label(pts[i]) for i in front) + "."))
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
    for t in study.trials:
        if t.state != "COMPLETE" or not t.run_id:
            continue
        per_task = forgetting_by_task([study.records(r).get(suite, []) for r in t.run_ids], suite)
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
                [_trial_label(t), r["task"], r["n"], fmt_num(r["base_acc"]), fmt_num(r["acc"]),
                 fmt_num(delta), ci, fmt_num(r["p"]) if "p" in r else "n/a"]
            )  # fmt: skip
        if t.run_id in best_ids and per_task and "low" in per_task[0]:
            png = _plot_per_task(per_task, f"{suite}, trial {_trial_label(t)}")
            if png:
                plots.append(
                    Plot(f"{suite}-{t.number}", f"{suite} per task, {_trial_label(t)}", png)
                )
    if not rows:
        return [Para(f"No {suite} results from completed trials yet.")]
    headers = ["trial", "task", "n", f"base {metric}", metric, "delta", "95% paired CI", "p"]
    pooled = [
        Para(
            "Replicated trials: the trial's replicates (seeds) against the base model on the "
            "same items, with seed noise in the interval (a two-level t: the spread of the "
            "replicates' accuracies plus item noise; the base is one fixed model). Single runs: "
            "Tango's interval and McNemar's p, item noise only."
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
