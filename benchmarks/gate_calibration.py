"""Operating characteristics of the decision rule, measured through the real code path.

Every simulated study builds per-item 0/1 scores and runs them through the harness's own
`pooled_comparison` and `verdict` (the gate), `judge_release` (the gate's overall verdict),
`pooled_effect`, `seed_noise` and `decide_effects` (the study report's effects table). Nothing
here re-implements the statistics.

The model of a study. Items have a difficulty q: "uniform" (every item 0.7) or "mixed" (a
third each at 0.95, 0.55, 0.10). Items are independent, or come in families of 3 (paraphrases
of one fact): a run either knows the fact or not (with chance q) and each of the 3 answers
flips with chance 0.1, so a family's items fail together. Each run (seed) shifts the chance of
every item by N(0, seed sd) (clipped to [0, 1]); then every item is drawn independently, so two
seeds also disagree on single items. The candidate's chances are lower by a drop chosen so that
the true change is exactly the column's:
- one run per side asks about two checkpoints: the true change is the two trained models'
  over the item population (their own seed shifts included: these are the checkpoints);
- several runs per side ask about two recipes: the true change is over seeds and items.
The rule (allowed drop m): pass when shown within m, regression when shown beyond m. So a
false pass is a pass at a true drop of m or more, a false regression a regression at a true
drop below m; each must be at most 5% in every row (the bound is attained at the boundary, so
a cell at exactly m reads 5% give or take its Monte Carlo error, printed beside it).

Also: a release with 10 gated metrics (no true change anywhere, and every change on the
allowed one), the power `items_needed` promises, and a null study of a 15-cell effects table
(8 configurations of 3 two-level factors x 5 metrics, no true effect anywhere): the share of
tables with any decided cell, without adjustment, with Holm and with Benjamini-Hochberg.

    nice -n 10 python benchmarks/gate_calibration.py [--studies 1000] [--items 600]
        [--margin 0.05] [--seed 0] [--fast]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from harness.stats import (
    PASS,
    REGRESSION,
    decide_effects,
    items_needed,
    judge_release,
    paired_comparison,
    pooled_comparison,
    pooled_effect,
    seed_noise,
    verdict,
)

FLIP = 0.1  # chance that one answer of a family differs from the family's knowledge
FAMILY = 3
DIFFICULTY = {
    "uniform": (np.array([0.7]), np.array([1.0])),
    "mixed": (np.array([0.95, 0.55, 0.10]), np.full(3, 1 / 3)),
}
SEED_SDS = (0.0, 0.01, 0.03, 0.09)
RUNS = (1, 2, 3)
CHANGES = (0.0, 0.5, 1.0, 2.0)  # true drop, in units of the allowed change m
CONFIDENCE = 0.90  # the gate's: its bounds are the two one-sided 5% tests
_NORMAL = NormalDist()


@dataclass(frozen=True)
class Scenario:
    seed_sd: float
    runs: int
    families: bool
    difficulty: str

    def label(self) -> str:
        items = "families of 3" if self.families else "independent"
        return f"{self.seed_sd:<4} | {self.runs} | {items} | {self.difficulty}"


def expected_clip(x: np.ndarray, sd: float) -> np.ndarray:
    """E[clip(x + N(0, sd), 0, 1)]: a chance shifted by a seed, averaged over seeds."""
    x = np.asarray(x, dtype=float)
    if sd == 0:
        return np.clip(x, 0.0, 1.0)
    cdf, pdf = np.vectorize(_NORMAL.cdf), np.vectorize(_NORMAL.pdf)

    def g(u: np.ndarray) -> np.ndarray:  # the integral of the normal cdf
        return u * cdf(u) + pdf(u)

    return 1.0 - sd * (g((1.0 - x) / sd) - g(-x / sd))


def _solve(truth, target: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a closure over arrays
    """The drop whose true change is `target` (the change decreases with the drop)."""
    lo, hi = np.full(target.shape, -1.5), np.full(target.shape, 1.5)
    for _ in range(50):
        mid = (lo + hi) / 2
        big = truth(mid) > target
        lo, hi = np.where(big, mid, lo), np.where(big, hi, mid)
    return (lo + hi) / 2


def simulate(
    s: Scenario, change: float, studies: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(baseline, candidate) scores of shape (studies, runs, n), and family labels."""
    q, share = DIFFICULTY[s.difficulty]
    scale = 1 - 2 * FLIP if s.families else 1.0  # an item's chance: 0.1 + 0.8 x its family's
    units = n // FAMILY if s.families else n
    kind = rng.choice(len(q), size=(studies, units), p=share)
    wa, wb = (rng.normal(0.0, s.seed_sd, size=(studies, s.runs)) for _ in range(2))
    if s.runs == 1:  # checkpoints: the true change includes the two runs' own seed shifts

        def truth(d: np.ndarray) -> np.ndarray:
            b = np.clip(q[None] - d[:, None] + wb[:, :1], 0, 1)
            return scale * ((b - np.clip(q[None] + wa[:, :1], 0, 1)) * share).sum(axis=1)

        drop = _solve(truth, np.full(studies, -change))
    else:  # recipes: over seeds and items
        base = (expected_clip(q, s.seed_sd) * share).sum()

        def truth(d: np.ndarray) -> np.ndarray:
            return np.array(
                [scale * ((expected_clip(q - x, s.seed_sd) * share).sum() - base) for x in d]
            )

        drop = np.full(studies, _solve(truth, np.array([-change]))[0])
    pa = np.clip(q[kind][:, None, :] + wa[:, :, None], 0, 1)
    pb = np.clip(q[kind][:, None, :] - drop[:, None, None] + wb[:, :, None], 0, 1)
    ya, yb = rng.random(pa.shape) < pa, rng.random(pb.shape) < pb
    if not s.families:
        return ya.astype(float), yb.astype(float), None
    flips = [rng.random((studies, s.runs, n)) < FLIP for _ in range(2)]
    ya = np.repeat(ya, FAMILY, axis=2) ^ flips[0]
    yb = np.repeat(yb, FAMILY, axis=2) ^ flips[1]
    return ya.astype(float), yb.astype(float), np.repeat(np.arange(units), FAMILY)


def rates(
    s: Scenario, change: float, *, margin: float, studies: int, n: int, seed: int
) -> dict[str, float]:
    """Share of studies the gate's rule calls pass / regression / inconclusive."""
    rng = np.random.default_rng(seed)
    a, b, families = simulate(s, change, studies, n, rng)
    counts = {PASS: 0, REGRESSION: 0}
    for i in range(studies):
        c = pooled_comparison(a[i], b[i], clusters=families, confidence=CONFIDENCE)
        v = verdict(c, margin, True)
        counts[v] = counts.get(v, 0) + 1
    out = {k: counts.get(k, 0) / studies for k in (PASS, REGRESSION)}
    out["inconclusive"] = 1.0 - out[PASS] - out[REGRESSION]
    return out


def mc_error(rate: float, studies: int) -> float:
    """Monte Carlo standard error of a rate, at least that of 5% (the bound)."""
    p = max(rate, 0.05)
    return math.sqrt(p * (1 - p) / studies)


def operating_table(
    scenarios: list[Scenario], *, margin: float, studies: int, n: int, seed: int
) -> list[tuple[Scenario, list[dict[str, float]]]]:
    out = []
    for k, s in enumerate(scenarios):
        cells = [
            rates(s, c * margin, margin=margin, studies=studies, n=n, seed=seed + 7919 * k + j)
            for j, c in enumerate(CHANGES)
        ]
        out.append((s, cells))
    return out


def violations(table: list[tuple[Scenario, list[dict[str, float]]]], studies: int) -> list[str]:
    """Cells above the 5% bound by more than two Monte Carlo standard errors."""
    bad = []
    for s, cells in table:
        for c, cell in zip(CHANGES, cells, strict=True):
            wrong = PASS if c >= 1.0 else REGRESSION
            if cell[wrong] > 0.05 + 2 * mc_error(cell[wrong], studies):
                bad.append(f"{s.label()} at drop {c}m: {wrong} {cell[wrong]:.1%}")
    return bad


def release_false_failures(
    *, metrics: int, change: float, studies: int, n: int, seed: int
) -> float:
    """Share of releases with `metrics` gated metrics (one run per side, independent items,
    mixed difficulty), each truly changed by `change`, that the gate calls a regression
    anywhere (`judge_release`: Holm over the gated metrics)."""
    rng = np.random.default_rng(seed)
    s = Scenario(0.0, 1, False, "mixed")
    fails = 0
    draws = [simulate(s, change, studies, n, rng) for _ in range(metrics)]
    for i in range(studies):
        comps = [paired_comparison(a[i, 0], b[i, 0], confidence=CONFIDENCE) for a, b, _ in draws]
        judged = judge_release(comps, [0.05] * metrics, [True] * metrics)
        fails += any(j.verdict == REGRESSION for j in judged)
    return fails / studies


def promised_power(
    *, drop: float, margin: float, churn: float, studies: int, seed: int
) -> tuple[int, float]:
    """(items `items_needed` asks for, share of studies settled at that n) for two
    checkpoints that disagree on `2 churn + drop` of the items with a true drop `drop`."""
    n = items_needed(-drop, margin, discordance=2 * churn + drop)
    assert n is not None
    rng = np.random.default_rng(seed)
    wanted = PASS if drop < margin else REGRESSION
    hits = 0
    for x, y, rest in rng.multinomial(n, [churn, churn + drop, 1 - 2 * churn - drop], studies):
        a = np.r_[np.zeros(x), np.ones(y), np.ones(rest)]
        b = np.r_[np.ones(x), np.zeros(y), np.ones(rest)]
        hits += verdict(paired_comparison(a, b, confidence=CONFIDENCE), margin, True) == wanted
    return n, hits / studies


def null_effects_tables(
    *, runs: int, seed_sd: float, tables: int, n: int, seed: int
) -> dict[str, float]:
    """A 2 x 2 x 2 study (8 configurations, `runs` seeds each) scored on 5 metrics with no true
    effect: 3 factors x 5 metrics = 15 cells, decided as the study report decides them.
    Returns the share of tables with any decided cell: unadjusted (any p <= 0.05, seed noise
    in it or not: the old rule), Holm, Benjamini-Hochberg (as the report decides)."""
    rng = np.random.default_rng(seed)
    configs = list(itertools.product((0, 1), repeat=3))
    anyone = {"unadjusted": 0, "holm": 0, "bh": 0}
    for _ in range(tables):
        cells = []
        for _metric in range(5):
            q = np.where(rng.random(n) < 0.5, 0.85, 0.15)
            scores = {
                c: (
                    rng.random((runs, n)) < np.clip(q + rng.normal(0, seed_sd, (runs, 1)), 0, 1)
                ).astype(float)
                for c in configs
            }
            noise = seed_noise(list(scores.values()))
            for f in range(3):
                refs = [c for c in configs if c[f] == 0]
                levels = [tuple(1 if i == f else v for i, v in enumerate(c)) for c in refs]
                cells.append(
                    pooled_effect(
                        [(scores[r], scores[lv]) for r, lv in zip(refs, levels, strict=True)],
                        configs=list(zip(refs, levels, strict=True)),
                        noise=noise,
                    )
                )
        anyone["unadjusted"] += any(e.p_value <= 0.05 for e in cells)  # the old rule
        for method in ("holm", "bh"):
            anyone[method] += any(ok for _, ok in decide_effects(cells, method))
    return {k: v / tables for k, v in anyone.items()}


def scenarios(fast: bool) -> list[Scenario]:
    if fast:
        return [
            Scenario(0.0, 1, True, "mixed"),
            Scenario(0.03, 2, False, "uniform"),
            Scenario(0.09, 3, True, "mixed"),
        ]
    return [
        Scenario(sd, r, fam, dif)
        for sd in SEED_SDS
        for r in RUNS
        for fam in (False, True)
        for dif in ("uniform", "mixed")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000, help="simulated studies per cell")
    parser.add_argument("--items", type=int, default=600, help="items per study (x3 families)")
    parser.add_argument("--margin", type=float, default=0.05, help="allowed drop m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast", action="store_true", help="3 rows, 150 studies: a smoke run")
    args = parser.parse_args()
    studies = 150 if args.fast else args.studies
    n, m = args.items, args.margin
    started = time.monotonic()
    print(f"Operating characteristics: {n} items, allowed drop m = {m}, {studies} studies per "
          "cell; pass / regression / inconclusive, Monte Carlo error of the bound cell in ()\n")  # fmt: skip
    print("| seed sd | runs/side | items | difficulty | " + " | ".join(
        f"drop {c:g}m" for c in CHANGES) + " |")  # fmt: skip
    print("|---|---|---|---|" + "---|" * len(CHANGES))
    table = []
    for s in scenarios(args.fast):
        (row,) = operating_table([s], margin=m, studies=studies, n=n, seed=args.seed)
        table.append(row)
        texts = []
        for c, cell in zip(CHANGES, row[1], strict=True):
            wrong = PASS if c >= 1.0 else REGRESSION
            texts.append(
                f"{cell[PASS]:.1%} / {cell[REGRESSION]:.1%} / {cell['inconclusive']:.1%} "
                f"(±{mc_error(cell[wrong], studies):.1%})"
            )
        print(f"| {s.label()} | " + " | ".join(texts) + " |", flush=True)
    bad = violations(table, studies)
    worst = max(
        (cell[PASS if c >= 1.0 else REGRESSION], f"{s.label()} at drop {c:g}m")
        for s, cells in table
        for c, cell in zip(CHANGES, cells, strict=True)
    )
    print(f"\nworst wrong-verdict rate: {worst[0]:.1%} ({worst[1]}); bound 5%")
    print("cells above 5% by more than 2 Monte Carlo errors: " + ("; ".join(bad) or "none"))

    k = 10
    releases = max(studies, 400)
    print(f"\nA release with {k} gated metrics (one run per side, {n} items each), "
          f"{releases} releases:")  # fmt: skip
    for c in (0.0, 1.0):
        rate = release_false_failures(metrics=k, change=c * m, studies=releases, n=n,
                                      seed=args.seed + 11)  # fmt: skip
        what = "no true change" if c == 0 else "every change exactly on the allowed one"
        print(f"- {what}: called a regression anywhere in {rate:.1%} "
              f"(±{mc_error(rate, releases):.1%}); bound 5%")  # fmt: skip

    print("\nPower `items_needed` promises (80%), two checkpoints, m = 0.05:")
    for drop, churn in ((0.0, 0.05), (0.02, 0.10), (0.10, 0.05), (0.12, 0.10)):
        need, power = promised_power(drop=drop, margin=0.05, churn=churn, studies=releases,
                                     seed=args.seed + 13)  # fmt: skip
        side = "pass" if drop < 0.05 else "regression"
        print(f"- true drop {drop}, disagreement {2 * churn + drop:.2f}: {need} items -> "
              f"{side} in {power:.1%} (±{mc_error(power, releases):.1%})")  # fmt: skip

    tables = 100 if args.fast else 400
    print(f"\nNull study: 15-cell effects table (8 configurations x 5 metrics x 300 items, "
          f"no true effect), {tables} tables; share with any decided cell:\n")  # fmt: skip
    print("| runs/config | seed sd | unadjusted | Holm | Benjamini-Hochberg |")
    print("|---|---|---|---|---|")
    for runs in (1, 2, 3):
        for sd in (0.03, 0.09):
            shares = null_effects_tables(runs=runs, seed_sd=sd, tables=tables, n=300,
                                         seed=args.seed + 17)  # fmt: skip
            print(f"| {runs} | {sd} | {shares['unadjusted']:.1%} | {shares['holm']:.1%} | "
                  f"{shares['bh']:.1%} |", flush=True)  # fmt: skip
    print(f"\n({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
