"""Gate calibration: how often the release gate says pass / regression / inconclusive.

A seeded Monte Carlo of paired 0/1 scores (accuracy-like metrics) run through the gate's own
statistics (Tango's interval and the exact one-sided McNemar test of `harness.stats.comparison`) and
decision rule (`harness.verdicts.gate.decide`).

The model of two runs on the same items: the baseline is right on 70% of items; the candidate
loses `churn + drop` of all items (right before, wrong now) and gains `churn` (wrong before,
right now), so its true accuracy is 0.7 - drop and the two runs disagree on `2 * churn + drop`
of the items. Fine-tuned checkpoints against their base typically disagree on 5-30% of
items; churn 0.05-0.10 (disagreement 10-20% at no change) is the middle of that range. For a
lower-is-better rate (e.g. benign over-refusal) the same cells are mirrored: the rate rises by
`drop`. Only the counts of the two disagreeing cells matter to a paired test, so each
simulated study draws them from a multinomial.

Scenarios per (n, allowed change m, churn):
- drop = m: the candidate is exactly as bad as allowed; a sound gate passes it <= 5% of the time;
- drop = 0: no true change; a sound gate calls it a regression <= 5% of the time;
- drop = 0, pass: how often a harmless candidate is let through (the other side of power);
- drop = 2m: clearly worse; the gate should call it a regression (power).

Then the same for several runs per side (replicates pooled by `stats.pooled_comparison`), with
fewer studies per cell (each runs its own bootstrap).

    python benchmarks/gate_calibration.py [--sims 4000] [--seed 0] [--pooled-studies 200]
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from harness.stats.comparison import tango_interval
from harness.verdicts.gate import PASS, REGRESSION, decide

BASE_ACCURACY = 0.7


def disagreeing_counts(
    n: int, drop: float, churn: float, higher_is_better: bool, sims: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(b_only, a_only) per simulated study: items only the candidate / only the baseline
    scores 1 on. For a lower-is-better rate a score of 1 is the bad outcome."""
    worse, better = churn + drop, churn
    if not (0 <= better <= 1 - BASE_ACCURACY and 0 <= worse <= BASE_ACCURACY):
        raise ValueError(f"churn {churn} and drop {drop} do not fit a baseline of {BASE_ACCURACY}")
    cells = rng.multinomial(n, [better, worse, 1 - better - worse], size=sims)
    gained, lost = cells[:, 0], cells[:, 1]
    return (gained, lost) if higher_is_better else (lost, gained)


def mcnemar_one_sided(b_only: np.ndarray, a_only: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact one-sided McNemar p-values of `paired_comparison`, per study: binomial(k, 1/2)
    tails over the k discordant items, one CDF per distinct k (log space, like
    `harness.stats.comparison.binomial_tail_half` beyond its exact range)."""
    k = b_only + a_only
    lower, higher = np.ones(len(k)), np.ones(len(k))
    for total in np.unique(k):
        if total == 0:
            continue
        j = np.arange(total + 1)
        log_pmf = (
            math.lgamma(total + 1)
            - np.array([math.lgamma(i + 1) + math.lgamma(total - i + 1) for i in j])
            - total * math.log(2.0)
        )
        cdf = np.minimum(np.cumsum(np.exp(log_pmf)), 1.0)
        rows = k == total
        lower[rows], higher[rows] = cdf[b_only[rows]], cdf[a_only[rows]]
    return lower, higher


def rates(
    n: int,
    margin: float,
    drop: float,
    churn: float,
    *,
    higher_is_better: bool = True,
    sims: int = 4000,
    seed: int = 0,
) -> dict[str, float]:
    """Share of simulated studies the gate calls pass / regression / inconclusive."""
    rng = np.random.default_rng(seed)
    b_only, a_only = disagreeing_counts(n, drop, churn, higher_is_better, sims, rng)
    low, high = tango_interval(b_only, a_only, n, 0.95)
    p_lower, p_higher = mcnemar_one_sided(b_only, a_only)
    diff = (b_only - a_only) / n
    v = decide(diff, low, high, p_lower, p_higher, margin, higher_is_better)
    return {
        "pass": float((v == PASS).mean()),
        "regression": float((v == REGRESSION).mean()),
        "inconclusive": float(((v != PASS) & (v != REGRESSION)).mean()),
    }


def pooled_rates(
    n: int, margin: float, drop: float, *, runs: int = 3, seed_sd: float = 0.01, studies: int = 200,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Rates for several runs per side (replicates), through `stats.pooled_comparison` and
    `gate.verdict`. Each item is "known" (solved with probability 0.9) for 70% of items, else
    solved with probability 0.15; every run (seed) shifts all its items' probabilities by
    N(0, seed_sd); the candidate's probabilities are lower by `drop` on every item."""
    from harness.stats.comparison import pooled_comparison
    from harness.verdicts.gate import verdict

    rng = np.random.default_rng(seed)
    counts = {PASS: 0, REGRESSION: 0}
    for _ in range(studies):
        q = np.where(rng.uniform(size=n) < 0.7, 0.9, 0.15)
        sides = []
        for shift in (0.0, drop):
            p = q[None, :] - shift + rng.normal(0, seed_sd, size=(runs, 1))
            sides.append((rng.uniform(size=(runs, n)) < np.clip(p, 0, 1)).astype(float))
        v = verdict(pooled_comparison(sides[0], sides[1], n_resamples=1000, seed=1), margin, True)
        counts[v] = counts.get(v, 0) + 1
    return {k: c / studies for k, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=4000, help="simulated studies per cell")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooled-studies", type=int, default=200, help="per replicate cell")
    args = parser.parse_args()
    print(f"{'n':>5} {'allowed':>7} {'churn':>5} {'direction':>9}  "
          f"{'pass@drop=m':>11} {'regr@no change':>14} {'pass@no change':>14} {'regr@drop=2m':>12}")  # fmt: skip
    worst_pass = worst_false = 0.0
    for churn in (0.05, 0.10, 0.15):
        for margin in (0.02, 0.05):
            for n in (30, 60, 210, 500, 1000, 3000):
                for up in (True, False):
                    kw = {"higher_is_better": up, "sims": args.sims, "seed": args.seed}
                    at_margin = rates(n, margin, margin, churn, **kw)
                    null = rates(n, margin, 0.0, churn, **kw)
                    double = rates(n, margin, 2 * margin, churn, **kw)
                    worst_pass = max(worst_pass, at_margin["pass"])
                    worst_false = max(worst_false, null["regression"])
                    print(
                        f"{n:>5} {margin:>7.2f} {churn:>5.2f} {'higher' if up else 'lower':>9}  "
                        f"{at_margin['pass']:>11.1%} {null['regression']:>14.1%} "
                        f"{null['pass']:>14.1%} {double['regression']:>12.1%}"
                    )
    print(f"\nworst false pass (drop = allowed change): {worst_pass:.1%} (bound 5%)")
    print(f"worst false regression (no change): {worst_false:.1%} (bound 5%)")
    print(
        "\nseveral runs per side (3 + 3 replicates, seed sd 0.01, two-level bootstrap; "
        f"{args.pooled_studies} studies per cell)"
    )
    print(
        f"{'n':>5} {'allowed':>7}  {'pass@drop=m':>11} {'regr@no change':>14} {'regr@drop=2m':>12}"
    )
    for n in (210, 1000):
        for margin in (0.02, 0.05):
            kw = {"studies": args.pooled_studies, "seed": args.seed}
            at_margin = pooled_rates(n, margin, margin, **kw)
            null = pooled_rates(n, margin, 0.0, **kw)
            double = pooled_rates(n, margin, 2 * margin, **kw)
            print(f"{n:>5} {margin:>7.2f}  {at_margin[PASS]:>11.1%} {null[REGRESSION]:>14.1%} "
                  f"{double[REGRESSION]:>12.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
