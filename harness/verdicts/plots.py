"""The study report's plots: the Pareto front, effects of searched factors, training loss, and
per-task scores against the base model."""

from __future__ import annotations

from harness.verdicts.analysis import (
    Effects,
    Trial,
)
from harness.verdicts.render import (
    figure_png,
    new_figure,
)


def plot_pareto(
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


def plot_effects(effects: Effects, higher_is_better: dict[str, bool]) -> bytes | None:
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


def plot_losses(histories: dict[str, list[tuple[int, float]]]) -> bytes | None:
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


def plot_per_task(rows: list[dict], label: str) -> bytes | None:
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
