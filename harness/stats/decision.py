"""The decision rule of the release gate and of effects tables, and the sample sizes it needs.

For a metric with allowed change m in its bad direction: "pass" only when the data show the
change is within m (a one-sided non-inferiority test), "regression" only when they show it is
beyond m, otherwise "inconclusive". Each error is bounded whatever the true change: a change at
or beyond m passes at most `alpha` of the time; a change within m is called a regression at
most `alpha` of the time (`benchmarks/gate_calibration.py` measures both). Over several gated
metrics the regression side is Holm-adjusted (`verdicts`), over an effects table's cells
`adjust_p` gives Holm or Benjamini-Hochberg.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from harness.stats.comparison import (
    INCONCLUSIVE,
    PASS,
    REGRESSION,
    PairedComparison,
    PooledEffect,
    _check_confidence,
    _t_tests,
    _tango_score,
)
from harness.stats.student import t_quantile
from harness.util.errors import HarnessError

METHODS = ("holm", "bh")
_NORMAL = NormalDist()


def margin_p(c: PairedComparison, delta: float) -> tuple[float, float]:
    """One-sided p-values of the claims "b - a > delta" and "b - a < delta", from the same
    statistic as the comparison's interval (so p <= alpha exactly when the two-sided
    1 - 2 alpha interval lies wholly on that side of delta)."""
    if c.interval.startswith("tango_score"):
        deff = c.design_effect
        z = _tango_score((c.b_only or 0) / deff, (c.a_only or 0) / deff, c.n / deff, delta)
        return 1.0 - _NORMAL.cdf(z), _NORMAL.cdf(z)
    return _t_tests(c.diff, c.se, c.df, delta)


def _check_threshold(threshold: float) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or threshold < 0
    ):
        raise HarnessError(f"allowed change must be a number >= 0, got {threshold!r}")
    return float(threshold)


def margin_tests(
    c: PairedComparison, threshold: float, higher_is_better: bool
) -> tuple[float, float]:
    """(p_pass, p_regression): one-sided p-values of "the change is within the allowed
    `threshold`" (non-inferiority) and "the change is beyond it" (in the bad direction)."""
    t = _check_threshold(threshold)
    above, below = margin_p(c, -t if higher_is_better else t)
    return (above, below) if higher_is_better else (below, above)


def decide(p_pass: float, p_regression: float, alpha: float = 0.05) -> str:
    """pass when the data show the change is within the allowed one (p_pass <= alpha),
    regression when they show it is beyond (p_regression <= alpha), else inconclusive."""
    if p_pass <= alpha:
        return PASS
    if p_regression <= alpha:
        return REGRESSION
    return INCONCLUSIVE


def verdict(
    comparison: PairedComparison,
    threshold: float,
    higher_is_better: bool,
    *,
    alpha: float = 0.05,
) -> str:
    """The verdict ("pass", "regression" or "inconclusive") on one metric with allowed change
    `threshold` in its bad direction (a drop when `higher_is_better`, else a rise).

    pass only when a one-sided test at `alpha` shows the change is within the allowed one;
    regression only when one shows it is beyond; else inconclusive. So, whatever the true
    change: a change at or beyond the allowed one passes at most `alpha` of the time, a change
    within it is called a regression at most `alpha` of the time. Equivalently: pass when the
    two-sided 1 - 2 alpha interval lies wholly within the allowed change, regression when it
    lies wholly beyond.
    """
    alpha = _check_confidence(alpha, "alpha")
    return decide(*margin_tests(comparison, threshold, higher_is_better), alpha)


@dataclass(frozen=True)
class Judgement:
    """One gated metric's verdict with the one-sided p-values behind it: `p_pass` (the change
    is within the allowed one), `p_regression` (it is beyond) and the latter Holm-adjusted over
    the release's gated metrics."""

    verdict: str
    p_pass: float
    p_regression: float
    p_regression_adjusted: float


def judge_release(
    comparisons: Sequence[PairedComparison],
    thresholds: Sequence[float],
    higher_is_better: Sequence[bool],
    *,
    alpha: float = 0.05,
) -> list[Judgement]:
    """`verdict` for several gated metrics of one release, with the regression side
    Holm-adjusted over them: the chance that a release whose every change is within its
    allowed one is called a regression anywhere stays at most `alpha`. The pass side needs no
    adjustment: a release passes only when every metric passes, so a metric beyond its
    allowed change lets it through at most `alpha` of the time."""
    alpha = _check_confidence(alpha, "alpha")
    tests = [
        margin_tests(c, t, up)
        for c, t, up in zip(comparisons, thresholds, higher_is_better, strict=True)
    ]
    adjusted = adjust_p([p for _, p in tests], "holm")
    return [
        Judgement(decide(p, q, alpha), p, r, q) for (p, r), q in zip(tests, adjusted, strict=True)
    ]


def verdicts(
    comparisons: Sequence[PairedComparison],
    thresholds: Sequence[float],
    higher_is_better: Sequence[bool],
    *,
    alpha: float = 0.05,
) -> list[str]:
    """The verdicts of `judge_release`: several gated metrics, Holm on the regression side."""
    return [
        j.verdict for j in judge_release(comparisons, thresholds, higher_is_better, alpha=alpha)
    ]


def adjust_p(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values, in the input order: "holm" controls the family-wise error (the
    chance of any false finding), "bh" (Benjamini-Hochberg) the false discovery rate (the
    expected share of false findings among those made). Reject where adjusted p <= alpha."""
    if method not in METHODS:
        raise HarnessError(f"adjust_p: method must be one of {', '.join(METHODS)}, got {method!r}")
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or not np.all((p >= 0) & (p <= 1)):
        raise HarnessError("adjust_p: p-values must be a flat sequence of numbers in [0, 1]")
    k = len(p)
    if k == 0:
        return []
    order = np.argsort(p, kind="stable")
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate(ranked * (k - np.arange(k)))
    else:
        adj = np.minimum.accumulate((ranked * k / np.arange(1, k + 1))[::-1])[::-1]
    out = np.empty(k)
    out[order] = np.minimum(adj, 1.0)
    return [float(v) for v in out]


def decide_effects(
    effects: Sequence[PooledEffect], method: str = "holm", *, alpha: float = 0.05
) -> list[tuple[float, bool]]:
    """(adjusted p, decided) for every cell of an effects table: p-values adjusted over all
    cells (`adjust_p`), a cell decided when its adjusted p is at most `alpha` and its interval
    holds seed noise (one run per configuration decides nothing: see `pooled_effect`)."""
    alpha = _check_confidence(alpha, "alpha")
    adjusted = adjust_p([e.p_value for e in effects], method)
    return [(q, e.seed_noise and q <= alpha) for e, q in zip(effects, adjusted, strict=True)]


# ---------------------------------------------------------------- sample sizes


def items_needed(
    diff: float,
    threshold: float,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    design_effect: float = 1.0,
    seed_var: float = 0.0,
    alpha: float = 0.05,
    alpha_regression: float | None = None,
    power: float = 0.8,
) -> int | None:
    """Paired items for the gate to settle a comparison whose true difference is `diff`.

    `diff` is the change in the good direction (negative = worse) and `threshold` the allowed
    change (>= 0). The test is the gate's own (`verdict`): a one-sided test at `alpha` of
    "within the allowed change" (pass) when diff > -threshold, or at `alpha_regression`
    (default `alpha`; the gate's Holm step lowers it) of "beyond it" (regression) when
    diff < -threshold; both have `power` at n = (z_a + z_b)^2 var deff / (distance^2 - (z_a +
    z_b)^2 seed_var), distance = |diff + threshold|. None when no number of items settles it:
    the change sits on the allowed one, or seed noise alone (`seed_var`, which more items do
    not shrink; more runs do) is too large. Give `discordance` (0/1 scores; share of items where
    the runs disagree: var = discordance - diff^2) or `sd` (sd of per-item differences);
    `design_effect` for clustered items. It assumes the observed difference and disagreement
    are the true ones, so treat it as an estimate, not a promise. For 0/1 scores the normal
    approximation is continuity-corrected (Fleiss, Levin & Paik 2003, Statistical Methods for
    Rates and Proportions, 3rd ed., section 4.2): without it the measured power was 79-80%.
    """
    if (discordance is None) == (sd is None):
        raise HarnessError("items_needed: give exactly one of discordance= (0/1 scores) or sd=")
    for name, value in (("diff", diff), ("threshold", threshold)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            raise HarnessError(f"items_needed: {name} must be a number, got {value!r}")
    if threshold < 0:
        raise HarnessError(f"items_needed: threshold must be >= 0, got {threshold}")
    alpha = _check_confidence(alpha, "alpha")
    power = _check_confidence(power, "power")
    if discordance is not None:
        if not 0.0 < float(discordance) <= 1.0:
            raise HarnessError(f"items_needed: discordance must be in (0, 1], got {discordance}")
        var = max(float(discordance) - float(diff) ** 2, 1e-12)
    else:
        if float(sd) <= 0:
            raise HarnessError(f"items_needed: sd must be positive, got {sd}")
        var = float(sd) ** 2
    var *= max(1.0, float(design_effect))
    distance = abs(diff + threshold)
    if distance < 1e-12:
        return None
    level = alpha if diff > -threshold else _check_confidence(alpha_regression or alpha, "alpha")
    z2 = (_NORMAL.inv_cdf(1.0 - level) + _NORMAL.inv_cdf(power)) ** 2
    room = distance**2 - z2 * max(float(seed_var), 0.0)
    if room <= 0:
        return None
    n = z2 * var / room
    if discordance is not None:  # a discrete test: Fleiss, Levin & Paik's continuity correction
        n = n / 4 * (1 + math.sqrt(1 + 4 / (n * distance))) ** 2
    return max(1, math.ceil(n - 1e-9))


def _variance_budget(
    effect: PooledEffect, cells: int, alpha: float, power: float, name: str
) -> tuple[float, float, float] | None:
    """(the variance at which a two-sided test at Bonferroni's alpha / cells decides the
    observed change with `power`, its item part now, its shift part now), t quantiles at the
    effect's degrees of freedom (seed noise from few runs keeps them small, whatever the
    items). None when no change is seen."""
    if cells < 1:
        raise HarnessError(f"{name}: cells must be >= 1, got {cells}")
    alpha, power = _check_confidence(alpha, "alpha"), _check_confidence(power, "power")
    if abs(effect.diff) < 1e-12 or effect.se <= 0:
        return None
    z = t_quantile(1.0 - alpha / (2 * cells), effect.df) + t_quantile(power, effect.df)
    return (effect.diff / z) ** 2, max(effect.se**2 - effect.shift_var, 0.0), effect.shift_var


def _items_within(n: int, v_items: float, room: float) -> int | None:
    """Items at which item noise (`v_items` at n items) fits in `room`, or None."""
    if room <= 0 or v_items <= 0:
        return None
    return max(1, math.ceil(n * v_items / room))


def items_to_decide(
    effect: PooledEffect, cells: int = 1, *, alpha: float = 0.05, power: float = 0.8
) -> int | None:
    """Items per configuration at which an effect of the size observed would be decided with
    `power`, so an undecided cell of an effects table says what would settle it.

    The table's adjusted level is taken as Bonferroni's alpha / cells (Holm's first step; a
    bound for Benjamini-Hochberg too), two-sided, at the effect's t degrees of freedom. Item
    noise shrinks with items; seeds shifting whole runs (`effect.shift_var`) do not, only more
    seeds do. None when the observed difference is zero or seed noise alone keeps it undecided
    at any number of items. Like `items_needed`, it takes the observed difference for the true
    one: an estimate."""
    budget = _variance_budget(effect, cells, alpha, power, "items_to_decide")
    if budget is None:
        return None
    allowed, v_items, shift = budget
    return _items_within(effect.n, v_items, allowed - shift)


def design_to_decide(
    effect: PooledEffect, cells: int = 1, *, alpha: float = 0.05, power: float = 0.8
) -> tuple[int, int] | None:
    """(items, runs) per configuration at which an effect of the size observed would be
    decided with `power`, so an undecided cell says what would settle it.

    Item noise falls as 1 / items and seeds shifting whole runs (`effect.shift_var`) as
    1 / runs; the t keeps its degrees of freedom and item noise is not credited with the runs
    averaging it (both conservative). The design is the first that works of: more items at
    these runs (`items_to_decide`); more runs at these items; else both, each given half of
    the variance the decision allows. None when no change is seen."""
    budget = _variance_budget(effect, cells, alpha, power, "design_to_decide")
    if budget is None:
        return None
    allowed, v_items, shift = budget
    items = _items_within(effect.n, v_items, allowed - shift)
    if items is not None:
        return items, effect.runs
    if v_items < allowed:  # the items suffice; seeds are what is missing
        return effect.n, max(effect.runs, math.ceil(effect.runs * shift / (allowed - v_items)))
    return (
        max(effect.n, math.ceil(effect.n * v_items / (allowed / 2))),
        max(effect.runs, math.ceil(effect.runs * shift / (allowed / 2))),
    )


def min_detectable_effect(
    n: int,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    design_effect: float = 1.0,
    alpha: float = 0.05,
    power: float = 0.8,
) -> float:
    """Smallest true paired difference a one-sided test at `alpha` detects with probability
    `power` at `n` items: (z_a + z_b) * sqrt(var * deff / n), with var = discordance (0/1
    scores, McNemar's variance when the difference is small against the disagreement) or sd^2.
    Reports print it so a reader sees which effects a suite of this size can and cannot
    resolve."""
    if (discordance is None) == (sd is None):
        raise HarnessError("min_detectable_effect: give exactly one of discordance= or sd=")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HarnessError(f"min_detectable_effect: n must be a positive integer, got {n!r}")
    var = float(discordance) if discordance is not None else float(sd) ** 2
    if var < 0:
        raise HarnessError("min_detectable_effect: discordance/sd must be >= 0")
    z = _NORMAL.inv_cdf(1.0 - _check_confidence(alpha, "alpha")) + _NORMAL.inv_cdf(
        _check_confidence(power, "power")
    )
    return z * math.sqrt(var * max(1.0, float(design_effect)) / int(n))
