"""Statistics for honest comparisons of runs scored on the same eval items.

Two checkpoints evaluated on identical items give *paired* scores; comparing their means with
unpaired standard errors (what lm-eval reports) wastes most of the signal and overstates noise.
Everything here takes per-item scores in the same item order and uses only numpy and the
standard library (scipy is a test-only reference).

Two questions, told apart by the number of runs per side:
- one run per side asks about two *checkpoints* (is this candidate worse than that baseline?):
  only item noise counts, because rerunning greedy evaluation of the same weights gives the same
  scores;
- several runs (seeds) per side ask about two *recipes* (does this configuration do worse than
  that one?): a seed shifts every item of its run, so seed-to-seed noise is in the interval.
Items that come in families (paraphrases of one fact, several prompts per fact) are given as
`clusters` (one label per item): every interval, test and sample size then counts families,
not items, because a model that forgets a fact fails all its paraphrases together.

Public API
----------
pooled_comparison(a_runs, b_runs, *, clusters=None, confidence=0.95) -> PairedComparison
    b - a with its interval and p-values; one run per side is the paired (checkpoint) case.
paired_comparison(a, b, *, clusters=None, confidence=0.95) -> PairedComparison
    The same for one run per side.
pooled_effect(pairs, *, clusters=None, configs=None, noise=None) -> PooledEffect
    One factor's effect pooled over matched pairs of configurations (and their replicates).
seed_noise(configs, *, clusters=None) -> SeedNoise | None
    Seed-to-seed noise pooled over replicated configurations.
wilson_interval, tango_interval, mcnemar_exact, paired_bootstrap: the building blocks.

The decision rule (`verdict`, `verdicts`, `adjust_p`) and sample sizes (`items_needed`) are in
`harness.stats.decision`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from harness.stats.student import t_quantile, t_sf
from harness.util.errors import HarnessError

PASS, REGRESSION, INCONCLUSIVE = "pass", "regression", "inconclusive"
CHECKPOINTS, RECIPES = "checkpoints", "recipes"

_EXACT_BINOMIAL_MAX_N = 2000
_BOOTSTRAP_CHUNK = 256
_BISECTION_STEPS = 60  # interval bounds to 2^-60: far below any reported digit
_NORMAL = NormalDist()


# ---------------------------------------------------------------- results


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
    """One row of a comparison report: runs `b` (candidate) against runs `a` (reference).

    `interval` names how `ci_low`/`ci_high` (two-sided at `confidence`) were computed and
    `test` how `p_value` (two-sided, against no change) and `p_lower`/`p_higher` (one-sided:
    evidence that b is lower / higher than a) were:
    - "tango_score" / "mcnemar_exact": one run per side, 0/1 scores, independent items;
    - "tango_score_clustered" / "score_clustered": the same with clustered items, Tango's
      statistic on counts divided by the design effect (variance with clusters / without);
    - "two_level_t": several runs per side: seed noise (the spread of run means) plus item noise
      (the per-item differences, less the part seeds already count), Satterthwaite's df;
    - "t" for one run per side of other scores: a t interval on per-item (per-cluster) differences.
    `question` is "checkpoints" (one run per side, item noise only) or "recipes" (seed noise
    included). `se`, `df`, `seed_var` (seed part of se^2), `design_effect` and `discordance`
    (share of items where single runs disagree) feed `margin_p`, `verdict` and `items_needed`.
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
    se: float = 0.0
    df: float = math.inf
    clusters: int = 0
    design_effect: float = 1.0
    seed_var: float = 0.0
    question: str = CHECKPOINTS

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain dict for MLflow params/metrics and report tables."""
        return asdict(self)


@dataclass(frozen=True)
class SeedNoise:
    """Seed-to-seed noise pooled over replicated configurations (`seed_noise`):
    `run_var` the variance of one run's mean score around its configuration's, `resid_var` the
    part of it from items a seed answers differently (run x item), `df` its degrees of freedom
    (runs less configurations)."""

    run_var: float
    resid_var: float
    df: int


FIXED = SeedNoise(run_var=0.0, resid_var=0.0, df=1)  # a fixed model: no seed noise


@dataclass(frozen=True)
class PooledEffect:
    """A change (b - a) pooled over matched pairs of configurations: `n` items, `pairs` pairs,
    `runs` the fewest replicate runs of any configuration in them. `interval` says how
    `low`/`high` were computed, `p_value` is two-sided against no change, `seed_noise` whether
    seed noise is in both (see `pooled_effect`)."""

    diff: float
    low: float
    high: float
    confidence: float
    n: int
    pairs: int
    runs: int
    interval: str
    p_value: float = 1.0
    se: float = 0.0
    df: float = math.inf
    clusters: int = 0
    seed_noise: bool = True
    # the part of se^2 from seeds shifting whole runs: more items do not shrink it
    shift_var: float = 0.0

    @property
    def decided(self) -> bool:
        """Whether the interval excludes no change and includes seed noise (before any
        multiplicity adjustment: `adjust_p` over a table's cells decides the table)."""
        return self.seed_noise and (self.low > 0 or self.high < 0)


# ---------------------------------------------------------------- checks


def _check_confidence(confidence: float, name: str = "confidence") -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise HarnessError(f"{name} must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < confidence < 1.0:
        raise HarnessError(f"{name} must be in (0, 1), got {confidence}")
    return float(confidence)


def _z(two_sided_confidence: float) -> float:
    return _NORMAL.inv_cdf(0.5 + two_sided_confidence / 2.0)


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


def _score_matrix(runs: Sequence[Sequence[float]], side: str) -> np.ndarray:
    try:
        m = np.asarray(runs, dtype=float)
    except (TypeError, ValueError) as exc:
        raise HarnessError(
            f"{side} runs must hold the same number of numeric scores: {exc}"
        ) from None
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise HarnessError(f"{side}: give a list of runs, each a non-empty list of item scores")
    if not np.isfinite(m).all():
        raise HarnessError(f"{side}: scores must be finite (found NaN or inf)")
    return m


def cluster_codes(clusters: Sequence[object] | None, n: int) -> tuple[np.ndarray, int]:
    """(cluster index per item, number of clusters); no labels: every item its own cluster."""
    if clusters is None:
        return np.arange(n), n
    labels = list(clusters)
    if len(labels) != n:
        raise HarnessError(f"clusters: give one label per item ({n}), got {len(labels)}")
    _, codes = np.unique(np.asarray([str(c) for c in labels]), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1


def _cluster_var(d: np.ndarray, codes: np.ndarray, g: int) -> float:
    """Variance of mean(d) with items correlated within clusters (cluster-robust, CR1)."""
    if g < 2:
        return 0.0
    totals = np.bincount(codes, weights=d - d.mean(), minlength=g)
    return float(g / (g - 1) * (totals * totals).sum() / len(d) ** 2)


# ---------------------------------------------------------------- building blocks


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
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return PairedDiff(
        diff=float(d.mean()),
        low=float(low),
        high=float(high),
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
        raise HarnessError("mcnemar_exact needs 0/1 scores; use paired_comparison for others")
    b_only = int(((xa == 0) & (xb == 1)).sum())
    a_only = int(((xa == 1) & (xb == 0)).sum())
    n = a_only + b_only
    if n == 0:
        return 1.0
    return _binomial_two_sided_half(b_only, n)


def _tango_score(x: Any, y: Any, m: Any, delta: Any) -> Any:
    """Tango's score statistic for b - a = delta (decreasing in delta); 0 where its variance
    vanishes. Plain arithmetic, so it takes floats (fast for one comparison) or arrays."""
    big_b = -x - y + (2 * m - x + y) * delta
    big_c = -y * delta * (1 - delta)
    disc = big_b * big_b - 8 * m * big_c
    q = (((disc + abs(disc)) / 2) ** 0.5 - big_b) / (4 * m)
    var = m * (2 * q + delta * (1 - delta))
    ok = (var > 0) * 1.0
    return (x - y - m * delta) / (abs(var) + 1.0 - ok) ** 0.5 * ok


def tango_interval(
    b_only: np.ndarray | float,
    a_only: np.ndarray | float,
    n: np.ndarray | float,
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for the difference of two paired proportions (b - a).

    Tango, T. (1998) "Equivalence test and confidence interval for the difference in
    proportions for the paired-sample design", Statistics in Medicine 17:891-908, with the
    restricted maximum likelihood estimate of the two discordant cells. Fagerland, Lydersen &
    Laake (2014, Stat Methods Med Res 23:1-25) recommend it for coverage close to nominal
    even at small n; unlike Wald or the bootstrap it does not collapse to [0, 0] when the runs
    never disagree: with no discordant item among n it still has width ~2 z^2 / n.

    `b_only`: items only b gets right; `a_only`: items only a gets right; `n`: all items
    (counts divided by a design effect for clustered items may be fractional). Vectorised so
    calibration studies run in milliseconds; the bounds are found by bisection on the score.
    """
    confidence = _check_confidence(confidence)
    x = np.asarray(b_only, dtype=float)
    y = np.asarray(a_only, dtype=float)
    m = np.asarray(n, dtype=float)
    if np.any(m <= 0) or np.any(x < 0) or np.any(y < 0) or np.any(x + y > m + 1e-9):
        raise HarnessError("tango_interval: need 0 <= b_only, a_only and b_only + a_only <= n")
    z = _z(confidence)
    if x.ndim == y.ndim == m.ndim == 0:  # one comparison: the same bisection on floats
        xf, yf, mf = float(x), float(y), float(m)
        bounds = []
        for lo, hi, target in ((-1.0, (xf - yf) / mf, z), ((xf - yf) / mf, 1.0, -z)):
            for _ in range(_BISECTION_STEPS):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if _tango_score(xf, yf, mf, mid) > target else (lo, mid)
            bounds.append(lo if target > 0 else hi)
        return np.float64(bounds[0]), np.float64(bounds[1])
    x, y, m = np.broadcast_arrays(x, y, m)
    shape = x.shape
    x, y, m = (np.concatenate([v.ravel(), v.ravel()]) for v in (x, y, m))
    k = x.size // 2  # first half: the lower bound (score = +z), second: the upper (-z)
    target = np.concatenate([np.full(k, z), np.full(k, -z)])
    observed = (x - y) / m
    lo = np.concatenate([np.full(k, -1.0), observed[k:]])
    hi = np.concatenate([observed[:k], np.full(k, 1.0)])
    for _ in range(_BISECTION_STEPS):  # the score decreases in delta
        mid = (lo + hi) / 2
        above = _tango_score(x, y, m, mid) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return lo[:k].reshape(shape), hi[k:].reshape(shape)


# ---------------------------------------------------------------- seed noise


def seed_noise(
    configs: Sequence[Sequence[Sequence[float]]], *, clusters: Sequence[object] | None = None
) -> SeedNoise | None:
    """Seed-to-seed noise pooled over every configuration with two or more runs.

    Each configuration is a list of runs (seeds) of per-item scores on the same items. A seed
    moves a run's mean score in two ways: it shifts every item (a lucky or unlucky run) and it
    answers single items differently. `run_var` is the within-configuration variance of run
    means (both ways), `resid_var` the second way alone (from the run x item residuals,
    summed within clusters), so that `pooled_comparison` can take the seed's item-level part
    out of the item noise instead of counting it twice. None when no configuration repeats.
    """
    mats = [_score_matrix(c, "configuration") for c in configs]
    widths = {m.shape[1] for m in mats}
    if len(widths) > 1:
        raise HarnessError("seed_noise: every run of every configuration must cover the same items")
    if not mats:
        return None
    codes, g = cluster_codes(clusters, widths.pop())
    ss = resid = 0.0
    df = 0
    for m in mats:
        if m.shape[0] < 2:
            continue
        means = m.mean(axis=1)
        centred = means - means.mean()
        ss += float((centred * centred).sum())
        df += m.shape[0] - 1
        e = m - m.mean(axis=0, keepdims=True) - centred[:, None]
        sums = np.stack([np.bincount(codes, weights=row, minlength=g) for row in e])
        resid += float((sums * sums).sum()) / m.shape[1] ** 2
    if df == 0:
        return None
    return SeedNoise(run_var=ss / df, resid_var=resid / df, df=df)


def _combine(
    mats: Sequence[np.ndarray],
    weights: Sequence[float],
    codes: np.ndarray,
    g: int,
    noises: Sequence[SeedNoise | None],
) -> tuple[float, float, float, float, float]:
    """(estimate, se, df, seed part of se^2, shift part of se^2) of sum_c w_c mean(configuration
    c). The shift part is what seeds add by moving whole runs (run_var less resid_var, the part
    from single items): more items do not shrink it, as they shrink the rest.

    `noises[c]` is configuration c's seed noise (configurations sharing one estimate share the
    object). Without any, the variance is the clustered item variance of the per-item contrast
    (df = clusters - 1). With them: a seed part per estimate, run_var * sum w_c^2 / runs_c,
    plus the item part, the clustered variance less what seeds already put in it (resid_var),
    combined with Satterthwaite's degrees of freedom (Welch's when each side has its own)."""
    d = sum(w * m.mean(axis=0) for w, m in zip(weights, mats, strict=True))
    v_items = _cluster_var(d, codes, g)
    df_items = float(max(g - 1, 1))
    if all(x is None for x in noises):
        return float(d.mean()), math.sqrt(v_items), df_items, 0.0, 0.0
    parts: dict[int, list] = {}  # id(noise) -> [noise, sum of w^2 / runs]
    for w, m, x in zip(weights, mats, noises, strict=True):
        if x is None:
            raise HarnessError("seed noise: give it for every configuration or for none")
        parts.setdefault(id(x), [x, 0.0])[1] += w * w / m.shape[0]
    seeds = [(x.run_var * k, x.df) for x, k in parts.values()]
    v_items = max(0.0, v_items - sum(x.resid_var * k for x, k in parts.values()))
    v_seed = sum(v for v, _ in seeds)
    v_shift = sum(max(x.run_var - x.resid_var, 0.0) * k for x, k in parts.values())
    v = v_seed + v_items
    if v <= 0:
        return float(d.mean()), 0.0, float(min(df for _, df in seeds)), 0.0, 0.0
    df = v * v / (sum(s * s / df for s, df in seeds) + v_items * v_items / df_items)
    return float(d.mean()), math.sqrt(v), df, v_seed, v_shift


def _t_tests(diff: float, se: float, df: float, delta: float = 0.0) -> tuple[float, float]:
    """One-sided p-values (b - a above delta, below delta) of a t statistic."""
    if se <= 0:
        if diff > delta:
            return 0.0, 1.0
        return (1.0, 0.0) if diff < delta else (1.0, 1.0)
    t = (diff - delta) / se
    return t_sf(t, df), t_sf(-t, df)


# ---------------------------------------------------------------- comparisons


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    clusters: Sequence[object] | None = None,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare one run b against one run a on the same items (two checkpoints).

    0/1 scores: Tango's score interval and exact McNemar p-values (the binomial test on the
    items where the runs disagree); with clusters, Tango's statistic on counts divided by the
    design effect (clustered over independent variance of the mean difference, at least 1),
    the usual correction for a score test on clustered pairs. Other scores: a t interval on
    the per-item differences, summed within clusters when there are clusters.
    """
    xa, xb = _paired_arrays(a, b)
    return pooled_comparison([xa], [xb], clusters=clusters, confidence=confidence)


def pooled_comparison(
    a_runs: Sequence[Sequence[float]],
    b_runs: Sequence[Sequence[float]],
    *,
    clusters: Sequence[object] | None = None,
    confidence: float = 0.95,
    noise: SeedNoise | None = None,
    fixed_baseline: bool = False,
) -> PairedComparison:
    """Compare runs b against runs a on the same items: one run per side is the checkpoint
    question (item noise only), several runs per side the recipe question (seed noise too).

    With several runs the estimate is the mean over runs and items, and its variance has two
    parts: seed noise, the spread of each side's run means (each side its own, as Welch's test
    does; a side with one run borrows the other's), and item noise, the per-item differences
    (summed within clusters) less the part the seeds already count. A t interval with
    Satterthwaite's df combines them, so two runs per side give wide intervals when seeds
    matter (a t with 1-2 df) rather than wrong ones.
    `noise` replaces the per-side estimates with one from more configurations (`seed_noise`).
    `fixed_baseline`: the baseline is one fixed model (the base model before fine-tuning), not
    a draw of a recipe, so only the candidate's side carries seed noise.
    """
    confidence = _check_confidence(confidence)
    ma, mb = _score_matrix(a_runs, "baseline"), _score_matrix(b_runs, "candidate")
    if ma.shape[1] != mb.shape[1]:
        raise HarnessError(
            f"every run must cover the same items: got {ma.shape[1]} and {mb.shape[1]} scores"
        )
    n = ma.shape[1]
    codes, g = cluster_codes(clusters, n)
    xa, xb = ma.mean(axis=0), mb.mean(axis=0)
    d = xb - xa
    sd_diff = float(d.std(ddof=1)) if n > 1 else 0.0
    common = {
        "n": n, "mean_a": float(xa.mean()), "mean_b": float(xb.mean()), "diff": float(d.mean()),
        "confidence": confidence, "sd_diff": sd_diff, "runs_a": ma.shape[0],
        "runs_b": mb.shape[0], "clusters": g,
    }  # fmt: skip
    replicated = ma.shape[0] > 1 or mb.shape[0] > 1
    if not replicated and _binary(xa) and _binary(xb):
        return _binary_comparison(xa, xb, codes, g, common)
    noises = [noise, noise]
    if replicated and noise is None:  # each side its own seed noise (Welch), or the other's
        noises = [seed_noise([m], clusters=clusters) for m in (ma, mb)]
        noises = [x or y for x, y in zip(noises, noises[::-1], strict=True)]
    if fixed_baseline and noises[1] is not None:
        noises[0] = FIXED
    diff, se, df, v_seed, _ = _combine([ma, mb], [-1.0, 1.0], codes, g, noises)
    noise = noises[1]
    if replicated and (ma.min() >= 0) and (mb.max() <= 1) and (ma.max() <= 1) and (mb.min() >= 0):
        se = max(se, 1.0 / g)  # no disagreement seen is not none possible: as if one family did
    q = t_quantile(0.5 + confidence / 2.0, df) if se > 0 else 0.0
    p_higher, p_lower = _t_tests(diff, se, df)  # p_higher: evidence that b is higher
    i_var = sd_diff**2 / n if n > 1 else 0.0
    return PairedComparison(
        **common,
        ci_low=diff - q * se,
        ci_high=diff + q * se,
        p_value=min(1.0, 2.0 * min(p_lower, p_higher)),
        test="two_level_t" if noise is not None else "t",
        discordance=None,
        a_only=None,
        b_only=None,
        p_lower=p_lower,
        p_higher=p_higher,
        interval="two_level_t" if noise is not None else "t",
        se=se,
        df=df,
        design_effect=max(1.0, (se * se - v_seed) / i_var) if i_var > 0 else 1.0,
        seed_var=v_seed,
        question=RECIPES if noise is not None else CHECKPOINTS,
    )


def _binary_comparison(
    xa: np.ndarray, xb: np.ndarray, codes: np.ndarray, g: int, common: dict
) -> PairedComparison:
    n = len(xa)
    a_only = int(((xa == 1) & (xb == 0)).sum())
    b_only = int(((xa == 0) & (xb == 1)).sum())
    k = a_only + b_only
    d = xb - xa
    deff = 1.0
    if g < n and n > 1 and d.var() > 0:
        deff = max(1.0, _cluster_var(d, codes, g) / (d.var(ddof=1) / n))
    low, high = tango_interval(b_only / deff, a_only / deff, n / deff, common["confidence"])
    if deff == 1.0:
        p = (mcnemar_exact(xa, xb), binomial_tail_half(b_only, k), binomial_tail_half(a_only, k))
        test, interval = "mcnemar_exact", "tango_score"
    else:
        z = _tango_score(b_only / deff, a_only / deff, n / deff, 0.0)
        p = (min(1.0, 2 * min(_NORMAL.cdf(z), 1 - _NORMAL.cdf(z))), _NORMAL.cdf(z),
             1 - _NORMAL.cdf(z))  # fmt: skip
        test, interval = "score_clustered", "tango_score_clustered"
    se = math.sqrt(deff * max(k / n - (common["diff"]) ** 2, 0.0) / n) if n else 0.0
    return PairedComparison(
        **common,
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(p[0]),
        test=test,
        discordance=k / n,
        a_only=a_only,
        b_only=b_only,
        p_lower=float(p[1]),
        p_higher=float(p[2]),
        interval=interval,
        se=se,
        df=math.inf,
        design_effect=deff,
    )


# ---------------------------------------------------------------- effects of a factor


def pooled_effect(
    pairs: Sequence[tuple[Sequence[Sequence[float]], Sequence[Sequence[float]]]],
    *,
    clusters: Sequence[object] | None = None,
    configs: Sequence[tuple[object, object]] | None = None,
    noise: SeedNoise | None = None,
    confidence: float = 0.95,
) -> PooledEffect:
    """The effect of one factor level against a reference, pooled over configurations.

    Each pair is (reference runs, level runs) of two configurations that differ only in that
    factor, each a list of runs (replicates) of per-item scores on the same items in the same
    order. The estimate is the mean over pairs of the per-item difference. A configuration
    that serves in several pairs (`configs`: a (reference, level) label per pair; without
    labels, configurations with identical scores are the same) enters once, with the sum of
    its weights, so its noise is counted with the correlation it puts between pairs.

    Seed noise comes from `noise` (the study's, pooled over all its replicated configurations:
    `seed_noise`) or else from these configurations' replicates. With neither (one run per
    configuration) the interval holds item noise only and `seed_noise` is False: the effect
    is then about these checkpoints, not these recipes, and is not decided.
    """
    confidence = _check_confidence(confidence)
    if not pairs:
        raise HarnessError("pooled_effect: give at least one (reference runs, level runs) pair")
    if configs is not None and len(configs) != len(pairs):
        raise HarnessError("pooled_effect: give one (reference, level) label per pair")
    mats: list[np.ndarray] = []
    weights: list[float] = []
    index: dict[object, int] = {}
    for p, (ref, lvl) in enumerate(pairs):
        for side, runs, sign in ((0, ref, -1.0), (1, lvl, 1.0)):
            m = _score_matrix(runs, "reference" if side == 0 else "level")
            label = configs[p][side] if configs is not None else ("scores", m.tobytes(), m.shape)
            if label not in index:
                index[label] = len(mats)
                mats.append(m)
                weights.append(0.0)
            weights[index[label]] += sign / len(pairs)
    widths = {m.shape[1] for m in mats}
    if len(widths) != 1:
        raise HarnessError("pooled_effect: every run of every pair must cover the same items")
    n = widths.pop()
    codes, g = cluster_codes(clusters, n)
    runs = min(m.shape[0] for m in mats)
    if noise is None:
        noise = seed_noise(mats, clusters=clusters)
    if len(pairs) == 1 and noise is None:
        c = pooled_comparison(pairs[0][0], pairs[0][1], clusters=clusters, confidence=confidence)
        return PooledEffect(
            c.diff, c.ci_low, c.ci_high, confidence, n, 1, runs, c.interval, c.p_value, c.se,
            c.df, g, seed_noise=False,
        )  # fmt: skip
    diff, se, df, _, shift = _combine(mats, weights, codes, g, [noise] * len(mats))
    q = t_quantile(0.5 + confidence / 2.0, df) if se > 0 else 0.0
    above, below = _t_tests(diff, se, df)
    return PooledEffect(
        diff=diff,
        low=diff - q * se,
        high=diff + q * se,
        confidence=confidence,
        n=n,
        pairs=len(pairs),
        runs=runs,
        interval="two_level_t" if noise is not None else "t",
        p_value=min(1.0, 2.0 * min(above, below)),
        se=se,
        df=df,
        clusters=g,
        seed_noise=noise is not None,
        shift_var=shift,
    )
