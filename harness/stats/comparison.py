"""Statistics for honest comparisons of two runs scored on the same eval items.

Two checkpoints evaluated on identical items give *paired* scores; comparing their means with
unpaired standard errors (what lm-eval reports) wastes most of the signal and overstates noise.
Everything here takes per-item scores in the same item order and uses only numpy and the
standard library (scipy is a test-only reference), seeded so reports are reproducible.

Public API
----------
wilson_interval(successes, n, confidence=0.95) -> (low, high)
    Interval for one proportion; sane at small n and at 0% / 100%.
tango_interval(b_only, a_only, n, confidence=0.95) -> (low, high)
    Score interval for a difference of paired proportions (vectorised).
paired_bootstrap(a, b, *, n_resamples=2000, confidence=0.95, seed=0) -> PairedDiff
    Mean of b - a with a percentile CI from resampling items (pairs stay together).
mcnemar_exact(a, b) -> float
    Two-sided exact McNemar p-value for 0/1 scores (binomial test on discordant pairs).
paired_comparison(a, b, *, n_resamples=2000, confidence=0.95, seed=0) -> PairedComparison
    Everything a report row needs: means, diff, CI (Tango for 0/1 scores, bootstrap for
    others), one-sided bounds, p-value, n, discordance, sd of differences.
pooled_comparison(a_runs, b_runs, ...) -> PairedComparison
    Several runs (replicates) per side: per-item averages, two-level bootstrap.
pooled_effect(pairs, ...) -> PooledEffect
    One factor's effect pooled over matched pairs of configurations (and their replicates).
items_needed(diff, threshold, *, discordance=None, sd=None) -> int | None
    Items for the gate to settle a comparison (pass or regression); None when none can.
min_detectable_effect(n, *, discordance=None, sd=None) -> float
    The smallest paired change a suite of n items detects with 80% power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from harness.util.errors import HarnessError

_EXACT_BINOMIAL_MAX_N = 2000
_BOOTSTRAP_CHUNK = 256
_BISECTION_STEPS = 60  # interval bounds to 2^-60: far below any reported digit


@dataclass(frozen=True)
class PairedDiff:
    """Mean of b - a over items, with a percentile bootstrap interval."""

    diff: float
    low: float
    high: float
    confidence: float
    n: int
    n_resamples: int


@dataclass(frozen=True)
class PairedComparison:
    """One row of a comparison report: run `b` (candidate) against run `a` (reference).

    `interval` names how `ci_low`/`ci_high` (two-sided at `confidence`) were computed:
    "tango_score" for 0/1 scores, "bootstrap" for others, "two_level_bootstrap" for several
    runs per side. `test` names how `p_value` (two-sided) and `p_lower`/`p_higher` (one-sided:
    evidence that b is lower / higher than a) were computed: "mcnemar_exact" (binomial test
    on the discordant items) when every score is 0/1, otherwise "sign_flip" (a seeded paired
    permutation test on the differences), or "bootstrap" (share of two-level bootstrap means
    on the other side of zero) for several runs per side.
    `discordance` (share of items where the runs disagree, 0/1 scores only) and `sd_diff`
    feed `items_needed` and `min_detectable_effect`.
    """

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p_value: float
    test: str
    sd_diff: float
    discordance: float | None
    a_only: int | None
    b_only: int | None
    p_lower: float
    p_higher: float
    interval: str
    runs_a: int = 1
    runs_b: int = 1

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain dict for MLflow params/metrics and report tables."""
        return asdict(self)


def _check_confidence(confidence: float, name: str = "confidence") -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise HarnessError(f"{name} must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < confidence < 1.0:
        raise HarnessError(f"{name} must be in (0, 1), got {confidence}")
    return float(confidence)


def _z(two_sided_confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + two_sided_confidence / 2.0)


def _paired_arrays(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    try:
        xa = np.asarray(a, dtype=float)
        xb = np.asarray(b, dtype=float)
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"scores must be numbers: {exc}") from None
    if xa.ndim != 1 or xb.ndim != 1:
        raise HarnessError("scores a and b must be flat sequences of per-item numbers")
    if xa.shape != xb.shape:
        raise HarnessError(
            f"scores a and b must cover the same items: got {len(xa)} and {len(xb)} scores"
        )
    if len(xa) == 0:
        raise HarnessError("scores a and b are empty: nothing to compare")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise HarnessError("scores a and b must be finite (found NaN or inf)")
    return xa, xb


def _binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion.

    Preferred over the normal (Wald) interval below a few hundred items: it never leaves [0, 1]
    and does not collapse to zero width at 0% or 100%. `n == 0` returns (0.0, 1.0): with no
    items every rate is possible, and reports can show that instead of crashing.
    """
    confidence = _check_confidence(confidence)
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise HarnessError(f"{name} must be an integer count, got {value!r}")
    if n < 0 or successes < 0 or successes > n:
        raise HarnessError(f"successes must be in [0, n]; got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    z = _z(confidence)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def ratio_interval(
    passed: Sequence[float], total: Sequence[float], confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for a share of parts when parts come in clusters (an item's instructions share
    one reply, so they pass or fail together more often than independent trials would).

    The share is sum(passed) / sum(total); its variance is the ratio estimator's, with items as
    clusters. That gives an effective number of independent parts, n_eff = p(1-p) / variance
    (at most the parts, at least the items), which goes into Wilson's formula, so the interval
    stays inside [0, 1] and keeps its width at 0% or 100% (then n_eff is the number of items).
    """
    confidence = _check_confidence(confidence)
    y, m = np.asarray(passed, dtype=float), np.asarray(total, dtype=float)
    k, parts = len(y), float(m.sum())
    if k == 0 or parts == 0:
        return (0.0, 1.0)
    p = float(y.sum()) / parts
    var = k / max(k - 1, 1) * float(((y - p * m) ** 2).sum()) / parts**2
    n_eff = min(parts, max(k, p * (1 - p) / var)) if var > 0 else k
    z = _z(confidence)
    denom = 1.0 + z * z / n_eff
    centre = (p + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _bootstrap_means(d: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(d)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, n_resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


def _check_resamples(n_resamples: int) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise HarnessError(f"n_resamples must be an integer, got {n_resamples!r}")
    if n_resamples < 100:
        raise HarnessError(f"n_resamples must be at least 100, got {n_resamples}")


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDiff:
    """Mean of b - a with a percentile bootstrap CI, resampling items with replacement.

    Resampling the per-item differences keeps each item's pair together, so the interval
    reflects only disagreement between the runs, not item difficulty shared by both.
    """
    confidence = _check_confidence(confidence)
    _check_resamples(n_resamples)
    xa, xb = _paired_arrays(a, b)
    d = xb - xa
    means = _bootstrap_means(d, int(n_resamples), seed)
    low, high = _bootstrap_bounds(means, confidence)
    return PairedDiff(
        diff=float(d.mean()),
        low=low,
        high=high,
        confidence=confidence,
        n=len(d),
        n_resamples=int(n_resamples),
    )


def binomial_tail_half(m: int, n: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2): exact sums up to n = 2000, log space beyond."""
    if m < 0:
        return 0.0
    if m >= n:
        return 1.0
    if n <= _EXACT_BINOMIAL_MAX_N:
        return min(1.0, sum(math.comb(n, i) for i in range(m + 1)) / 2**n)
    i = np.arange(m + 1)
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
        - n * math.log(2.0)
    )
    top = log_terms.max()
    return min(1.0, math.exp(top + math.log(np.exp(log_terms - top).sum())))


def _binomial_two_sided_half(k: int, n: int) -> float:
    """P-value of the two-sided exact binomial test of k successes in n at p = 1/2."""
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    return min(1.0, 2.0 * binomial_tail_half(m, n))


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 scores.

    Only items where the runs disagree carry information; under "no difference" each such item
    is equally likely to favour either run, so the count favouring b is Binomial(discordant, 1/2).
    Returns 1.0 when the runs never disagree.
    """
    xa, xb = _paired_arrays(a, b)
    if not (_binary(xa) and _binary(xb)):
        raise HarnessError("mcnemar_exact needs 0/1 scores; use paired_bootstrap for others")
    b_only = int(((xa == 0) & (xb == 1)).sum())
    a_only = int(((xa == 1) & (xb == 0)).sum())
    n = a_only + b_only
    if n == 0:
        return 1.0
    return _binomial_two_sided_half(b_only, n)


def _sign_flip_p(d: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """Paired permutation test: under no difference each item's b - a is as likely negated.
    Returns (two-sided, one-sided "b lower", one-sided "b higher") p-values."""
    observed = d.mean()
    if not np.any(d):
        return 1.0, 1.0, 1.0
    rng = np.random.default_rng(seed)
    both = low = high = 0
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, n_resamples)
        signs = rng.choice((-1.0, 1.0), size=(stop - start, len(d)))
        flipped = (signs * d).mean(axis=1)
        both += int((np.abs(flipped) >= abs(observed) - 1e-12).sum())
        low += int((flipped <= observed + 1e-12).sum())
        high += int((flipped >= observed - 1e-12).sum())
    return tuple((k + 1) / (n_resamples + 1) for k in (both, low, high))


def tango_interval(
    b_only: np.ndarray | int,
    a_only: np.ndarray | int,
    n: np.ndarray | int,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for the difference of two paired proportions (b - a).

    Tango, T. (1998) "Equivalence test and confidence interval for the difference in
    proportions for the paired-sample design", Statistics in Medicine 17:891-908, with the
    restricted maximum likelihood estimate of the two discordant cells. Fagerland, Lydersen &
    Laake (2014, Stat Methods Med Res 23:1-25) recommend it for coverage close to nominal
    even at small n; unlike Wald or the bootstrap it does not collapse to [0, 0] when the runs
    never disagree: with no discordant item among n it still has width ~2 z^2 / n.
    `benchmarks/gate_calibration.py` measures what the gate built on it does.

    `b_only`: items only b gets right; `a_only`: items only a gets right; `n`: all items.
    Vectorised (numpy arrays broadcast) so calibration studies run in milliseconds; the
    bounds are found by bisection on the score statistic, which decreases in the difference.
    """
    confidence = _check_confidence(confidence)
    x = np.asarray(b_only, dtype=float)
    y = np.asarray(a_only, dtype=float)
    m = np.asarray(n, dtype=float)
    if np.any(m <= 0) or np.any(x < 0) or np.any(y < 0) or np.any(x + y > m):
        raise HarnessError("tango_interval: need 0 <= b_only, a_only and b_only + a_only <= n")
    z = _z(confidence)
    x, y, m = np.broadcast_arrays(x, y, m)

    def score(delta: np.ndarray) -> np.ndarray:
        big_b = -x - y + (2 * m - x + y) * delta
        big_c = -y * delta * (1 - delta)
        q = (np.sqrt(np.maximum(big_b * big_b - 8 * m * big_c, 0.0)) - big_b) / (4 * m)
        var = m * (2 * q + delta * (1 - delta))
        num = x - y - m * delta
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(var > 0, num / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)

    observed = (x - y) / m
    lo_a, hi_a = np.full(x.shape, -1.0), observed.copy()  # lower bound: score(delta) = +z
    lo_b, hi_b = observed.copy(), np.full(x.shape, 1.0)  # upper bound: score(delta) = -z
    for _ in range(_BISECTION_STEPS):
        mid = (lo_a + hi_a) / 2
        above = score(mid) > z
        lo_a, hi_a = np.where(above, mid, lo_a), np.where(above, hi_a, mid)
        mid = (lo_b + hi_b) / 2
        below = score(mid) < -z
        lo_b, hi_b = np.where(below, lo_b, mid), np.where(below, mid, hi_b)
    return lo_a, hi_b


def _bootstrap_bounds(means: np.ndarray, confidence: float) -> tuple[float, float]:
    """Two-sided percentile interval of bootstrap means."""
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare run b against run a on the same items: means, b - a with CI, and p-values.

    0/1 scores (accuracy, refusal, format pass): Tango's score interval (`tango_interval`) and
    exact McNemar p-values (binomial test on the items where the runs disagree). Other
    scores: a seeded paired percentile bootstrap and sign-flip permutation p-values. The
    one-sided p-values feed the gate's regression test; an exact test keeps its false-alarm
    rate at or below the nominal level at every n.
    """
    confidence = _check_confidence(confidence)
    xa, xb = _paired_arrays(a, b)
    d = xb - xa
    sd_diff = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if _binary(xa) and _binary(xb):
        a_only = int(((xa == 1) & (xb == 0)).sum())
        b_only = int(((xa == 0) & (xb == 1)).sum())
        low, high = (float(v) for v in tango_interval(b_only, a_only, len(d), confidence))
        k = a_only + b_only
        p = (mcnemar_exact(xa, xb), binomial_tail_half(b_only, k), binomial_tail_half(a_only, k))
        test, interval = "mcnemar_exact", "tango_score"
        discordance: float | None = k / len(d)
    else:
        _check_resamples(n_resamples)
        means = _bootstrap_means(d, int(n_resamples), seed)
        low, high = _bootstrap_bounds(means, confidence)
        a_only = b_only = None
        p = _sign_flip_p(d, int(n_resamples), seed)
        test, interval = "sign_flip", "bootstrap"
        discordance = None
    return PairedComparison(
        n=len(d),
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        p_value=float(p[0]),
        test=test,
        sd_diff=sd_diff,
        discordance=discordance,
        a_only=a_only,
        b_only=b_only,
        p_lower=float(p[1]),
        p_higher=float(p[2]),
        interval=interval,
    )


def _score_matrix(runs: Sequence[Sequence[float]], side: str) -> np.ndarray:
    try:
        m = np.asarray(runs, dtype=float)
    except (TypeError, ValueError) as exc:
        raise HarnessError(
            f"{side} runs must hold the same number of numeric scores: {exc}"
        ) from None
    if m.ndim != 2 or m.shape[0] == 0:
        raise HarnessError(f"{side}: give a list of runs, each a list of per-item scores")
    return m


def pooled_comparison(
    a_runs: Sequence[Sequence[float]],
    b_runs: Sequence[Sequence[float]],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare several runs per side (replicates: same items, different seeds).

    One run per side is `paired_comparison`. Otherwise each item's score is averaged over a
    side's runs and the interval comes from a two-level bootstrap: each resample draws runs
    with replacement within each side, then items with replacement, so the interval reflects
    seed-to-seed noise (a seed that shifts every item) as well as item noise. With two or
    three runs per side the run level is resampled crudely and the interval errs wide, i.e.
    towards "inconclusive" rather than towards a false pass or regression. The p-values are
    the share of bootstrap means on the far side of zero (doubled for the two-sided one), so
    they include seed noise too.
    """
    confidence = _check_confidence(confidence)
    ma, mb = _score_matrix(a_runs, "baseline"), _score_matrix(b_runs, "candidate")
    if ma.shape[0] == 1 and mb.shape[0] == 1:
        return paired_comparison(
            ma[0], mb[0], n_resamples=n_resamples, confidence=confidence, seed=seed
        )
    xa, xb = _paired_arrays(ma.mean(axis=0), mb.mean(axis=0))
    if ma.shape[1] != mb.shape[1] or not (np.isfinite(ma).all() and np.isfinite(mb).all()):
        raise HarnessError("every run must cover the same items with finite scores")
    _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    n, means = ma.shape[1], np.empty(int(n_resamples))
    for start in range(0, int(n_resamples), _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, int(n_resamples))
        k = stop - start
        wa = _run_weights(rng, k, ma.shape[0])
        wb = _run_weights(rng, k, mb.shape[0])
        per_item = wb @ mb - wa @ ma  # (k, n): each resample's per-item difference
        idx = rng.integers(0, n, size=(k, n))
        means[start:stop] = np.take_along_axis(per_item, idx, axis=1).mean(axis=1)
    low, high = _bootstrap_bounds(means, confidence)
    d = xb - xa
    r = int(n_resamples)
    p_lower = (int((means >= 0).sum()) + 1) / (r + 1)
    p_higher = (int((means <= 0).sum()) + 1) / (r + 1)
    return PairedComparison(
        n=n,
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=float(d.mean()),
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        p_value=min(1.0, 2 * min(p_lower, p_higher)),
        test="bootstrap",
        sd_diff=float(d.std(ddof=1)) if n > 1 else 0.0,
        discordance=None,
        a_only=None,
        b_only=None,
        p_lower=p_lower,
        p_higher=p_higher,
        interval="two_level_bootstrap",
        runs_a=ma.shape[0],
        runs_b=mb.shape[0],
    )


@dataclass(frozen=True)
class PooledEffect:
    """A change (b - a) pooled over matched pairs of configurations: `n` items, `pairs` pairs,
    `runs` the fewest replicate runs of any configuration in them. `interval` says how
    `low`/`high` were computed (see `pooled_effect`)."""

    diff: float
    low: float
    high: float
    confidence: float
    n: int
    pairs: int
    runs: int
    interval: str

    @property
    def decided(self) -> bool:
        """Whether the interval excludes no change."""
        return self.low > 0 or self.high < 0


def pooled_effect(
    pairs: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PooledEffect:
    """The effect of one factor level against a reference, pooled over configurations.

    Each pair is (reference runs, level runs) of two configurations that differ only in that
    factor, each a list of runs (replicates) of per-item scores; every pair covers the same
    items in the same order. The estimate is the mean per-item difference over all pairs. One
    pair is `pooled_comparison` (one run per side: `paired_comparison`, Tango's interval for
    0/1 scores). For several, a two-level bootstrap as `pooled_comparison` does: each resample
    draws every configuration's runs with replacement, then items with replacement, the same
    items for every pair, because a hard item is hard in every configuration. The pairs are
    the design's own (the levels the other factors took), not resampled: the interval is
    about the average effect over them.
    """
    confidence = _check_confidence(confidence)
    if not pairs:
        raise HarnessError("pooled_effect: give at least one (reference runs, level runs) pair")
    mats = [(_score_matrix(a, "reference"), _score_matrix(b, "level")) for a, b in pairs]
    widths = {m.shape[1] for pair in mats for m in pair}
    if len(widths) != 1 or not all(np.isfinite(m).all() for pair in mats for m in pair):
        raise HarnessError("pooled_effect: every run of every pair must cover the same items")
    runs = min(m.shape[0] for pair in mats for m in pair)
    if len(mats) == 1:
        c = pooled_comparison(
            mats[0][0], mats[0][1], n_resamples=n_resamples, confidence=confidence, seed=seed
        )
        return PooledEffect(c.diff, c.ci_low, c.ci_high, confidence, c.n, 1, runs, c.interval)
    _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    n, r = widths.pop(), int(n_resamples)
    means = np.empty(r)
    for start in range(0, r, _BOOTSTRAP_CHUNK):
        k = min(start + _BOOTSTRAP_CHUNK, r) - start
        per_item = np.zeros((k, n))
        for ma, mb in mats:
            per_item += _run_weights(rng, k, mb.shape[0]) @ mb
            per_item -= _run_weights(rng, k, ma.shape[0]) @ ma
        idx = rng.integers(0, n, size=(k, n))
        means[start : start + k] = np.take_along_axis(per_item, idx, axis=1).mean(axis=1)
    low, high = _bootstrap_bounds(means / len(mats), confidence)
    diff = float(np.mean([mb.mean(axis=0) - ma.mean(axis=0) for ma, mb in mats]))
    return PooledEffect(diff, low, high, confidence, n, len(mats), runs, "two_level_bootstrap")


def _run_weights(rng: np.random.Generator, k: int, runs: int) -> np.ndarray:
    """(k, runs) weights of runs drawn with replacement, each row summing to 1."""
    draws = rng.integers(0, runs, size=(k, runs))
    return np.stack([np.bincount(row, minlength=runs) for row in draws]) / runs


def items_needed(
    diff: float,
    threshold: float,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    confidence: float = 0.95,
    power: float = 0.8,
) -> int | None:
    """Paired items for the gate to settle a comparison whose true difference is `diff`.

    `diff` is the observed change in the good direction (negative = worse) and `threshold`
    the allowed change (>= 0). The question is the gate's own:
    - if diff > -threshold: how many items make the one-sided bound (at `confidence`) clear
      the allowed change with probability `power`, i.e. a *pass* of the non-inferiority test;
    - if diff < -threshold: how many make the one-sided 95% bound exclude zero, i.e. a
      *regression*;
    - if diff == -threshold: None, because no number of items can settle it: the estimate
      sits on the allowed change.
    Give `discordance` (0/1 scores; share of items where the runs disagree) or `sd` (sd of
    per-item differences). Normal approximation n = (z_a + z_b)^2 * var / distance^2 with
    var = discordance - diff^2 (McNemar's paired variance) or sd^2; rounded up. Treat it as
    a floor: it assumes the observed difference and disagreement are the true ones.
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
    confidence = _check_confidence(confidence)
    power = _check_confidence(power, "power")
    if discordance is not None:
        if not 0.0 < float(discordance) <= 1.0:
            raise HarnessError(f"items_needed: discordance must be in (0, 1], got {discordance}")
        var = max(float(discordance) - float(diff) ** 2, 1e-12)
    else:
        if float(sd) <= 0:
            raise HarnessError(f"items_needed: sd must be positive, got {sd}")
        var = float(sd) ** 2
    if math.isclose(diff, -threshold, abs_tol=1e-12):
        return None
    if diff > -threshold:
        z_a, distance = NormalDist().inv_cdf(0.5 + confidence / 2.0), diff + threshold
    else:
        z_a, distance = NormalDist().inv_cdf(confidence), -diff
    z_b = NormalDist().inv_cdf(power)
    return max(1, math.ceil((z_a + z_b) ** 2 * var / distance**2 - 1e-9))


def min_detectable_effect(
    n: int,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    confidence: float = 0.95,
    power: float = 0.8,
) -> float:
    """Smallest true paired difference detected with probability `power` at `n` items.

    The inverse of the regression side of `items_needed` (one-sided test at `confidence`):
    (z_a + z_b) * sqrt(var / n), with var = discordance (0/1 scores, McNemar's variance
    when the difference is small against the disagreement) or sd^2. Reports print it so a
    reader sees which effects a suite of this size can and cannot resolve.
    """
    if (discordance is None) == (sd is None):
        raise HarnessError("min_detectable_effect: give exactly one of discordance= or sd=")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise HarnessError(f"min_detectable_effect: n must be a positive integer, got {n!r}")
    var = float(discordance) if discordance is not None else float(sd) ** 2
    if var < 0:
        raise HarnessError("min_detectable_effect: discordance/sd must be >= 0")
    z = NormalDist().inv_cdf(_check_confidence(confidence)) + NormalDist().inv_cdf(
        _check_confidence(power, "power")
    )
    return z * math.sqrt(var / int(n))
