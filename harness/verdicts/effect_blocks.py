"""The study report's effects section: each searched factor's effect on each headline metric,
with its interval, adjusted p-value and whether it is decided, and a sentence naming both kinds."""

from __future__ import annotations

from harness.verdicts.analysis import (
    Effect,
    Effects,
    Study,
)
from harness.verdicts.plots import plot_effects
from harness.verdicts.render import (
    Block,
    Para,
    Plot,
    Table,
    fmt_num,
)

METHOD_NAMES = {"holm": "Holm", "bh": "Benjamini-Hochberg"}
METHOD_MEANING = {
    "holm": "the chance that a study with no true effect shows any decided cell is at most 5%",
    "bh": "the expected share of decided cells that are false is at most 5%",
}


def effect_blocks(study: Study, effects: Effects) -> list[Block]:
    """The main-effects table, which effects it decides, the factors it leaves out, a plot."""
    if not study.search:
        return [Para("The study's spec records no search space: no factors to show effects for.")]
    blocks: list[Block] = []
    if effects.rows:
        blocks.append(Para(effects_header(effects)))
        headers = ["factor", "level", "reference", "metric", "diff", "95% interval", "n",
                   "pairs", "replicates", "p", f"p ({METHOD_NAMES[effects.method]})",
                   "decided", "to decide"]  # fmt: skip
        rows = [
            [e.factor, e.level, e.reference, e.metric, fmt_num(e.estimate.diff),
             f"[{fmt_num(e.estimate.low)}, {fmt_num(e.estimate.high)}]",
             e.estimate.n if e.estimate.clusters >= e.estimate.n
             else f"{e.estimate.n} ({e.estimate.clusters} families)",
             e.estimate.pairs, e.estimate.runs, fmt_num(e.estimate.p_value),
             fmt_num(e.p_adjusted), decision(e), to_decide(e)]
            for e in effects.rows
        ]  # fmt: skip
        blocks += [Table(headers, rows), Para(decided_sentence(effects))]
        png = plot_effects(effects, {k.name: k.higher_is_better for k in study.key_metrics})
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


def effects_header(effects: Effects) -> str:
    """What the effects table's intervals hold and how its cells are decided."""
    other = "bh" if effects.method == "holm" else "holm"
    text = (
        "Each level of a searched factor against its reference level (the factor's first "
        "choice), on each headline metric: diff = level - reference on the same items (paired "
        "by content), pooled over every pair of completed trials that differ only in this "
        "factor (pairs), a configuration that serves in several pairs counted once, and over "
        "their replicate runs. Suites that declare item families (cluster_by) count families. "
        f"Multiplicity: p-values adjusted over all {len(effects.rows)} cells with "
        f"{METHOD_NAMES[effects.method]} ({METHOD_MEANING[effects.method]}); an experiment "
        f"chooses {METHOD_NAMES[other]} with `report: {{multiplicity: {other}}}`. Decided: "
        "adjusted p <= 0.05 with seed noise in the interval. To decide (undecided "
        "cells): the items per configuration at which a change of this size would be decided "
        "with 80% power (Bonferroni over the cells, two-sided; item noise shrinks with items, "
        "seeds shifting whole runs do not), else the seeds (runs) per configuration, else "
        "both; it takes the observed change for the true one."
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


def decision(e: Effect) -> str:
    if e.decided:
        return "yes"
    return "not decided (no seed noise estimate)" if not e.estimate.seed_noise else "not decided"


def to_decide(e: Effect) -> str:
    """What would settle an undecided cell at its diff: items, seeds, or both per configuration."""
    if e.decided or not e.estimate.seed_noise:
        return ""
    if abs(e.estimate.diff) < 1e-12:
        return "no change seen"
    items, seeds = e.items_to_decide, e.seeds_to_decide
    if items is None or seeds is None:
        return ""
    if seeds == e.estimate.runs:
        return f"~{items:,} items"
    if items == e.estimate.n:
        return f"~{seeds} seeds"
    return f"~{items:,} items x {seeds} seeds"


def decided_sentence(effects: Effects) -> str:
    def name(e: Effect) -> str:
        return f"{e.factor} = {e.level} (vs {e.reference}) on {e.metric}"

    decided = [e for e in effects.rows if e.decided]
    undecided = [e for e in effects.rows if not e.decided]
    if not decided:
        return (
            "No effect is decided: no adjusted p-value is at most 0.05 with seed noise "
            "included, so these trials cannot tell the levels apart; more items or replicates "
            "would (to decide: how many, at the observed size)."
        )
    text = "Decided (adjusted p <= 0.05): " + "; ".join(
        f"{name(e)}: {fmt_num(e.estimate.diff)}" for e in decided
    )
    if undecided:
        text += ". Not decided: " + "; ".join(map(name, undecided))
    return text + "."
