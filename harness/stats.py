"""Statistics for honest comparisons of two runs scored on the same eval items.

Two checkpoints evaluated on identical items give *paired* scores; comparing their means with
unpaired standard errors (what lm-eval reports) wastes most of the signal and overstates noise.
Everything here takes per-item scores in the same item order and uses only numpy and the
standard library (scipy is a test-only reference), seeded so reports are reproducible.

Public API
----------
wilson_interval(successes, n, confidence=0.95) -> (low, high)
    Interval for one proportion; sane at small n and at 0% / 100%.
paired_bootstrap(a, b, *, n_resamples=2000, confidence=0.95, seed=0) -> PairedDiff
    Mean of b - a with a percentile CI from resampling items (pairs stay together).
mcnemar_exact(a, b) -> float
    Two-sided exact McNemar p-value for 0/1 scores (binomial test on discordant pairs).
paired_comparison(a, b, *, n_resamples=2000, confidence=0.95, seed=0) -> PairedComparison
    Everything a report row needs: means, diff, CI, p-value, n, discordance, sd of differences.
items_needed(effect, *, discordance=None, sd=None, alpha=0.05, power=0.8) -> int
    Paired items needed to detect `effect` (normal approximation; see its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from harness.errors import HarnessError

_EXACT_BINOMIAL_MAX_N = 2000
_BOOTSTRAP_CHUNK = 256


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

    `test` names how `p_value` was computed: "mcnemar_exact" when every score is 0/1, otherwise
    "sign_flip" (a seeded paired permutation test on the differences). `discordance` (share of
    items where the runs disagree, 0/1 scores only) and `sd_diff` feed `items_needed`.
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


def _binomial_two_sided_half(k: int, n: int) -> float:
    """P-value of the two-sided exact binomial test of k successes in n at p = 1/2."""
    m = min(k, n - k)
    if 2 * m == n:
        return 1.0
    if n <= _EXACT_BINOMIAL_MAX_N:
        tail = sum(math.comb(n, i) for i in range(m + 1))
        return min(1.0, 2 * tail / 2**n)
    i = np.arange(m + 1)
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in i])
        - n * math.log(2.0)
    )
    top = log_terms.max()
    log_tail = top + math.log(np.exp(log_terms - top).sum())
    return min(1.0, 2.0 * math.exp(log_tail))


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


def _sign_flip_p(d: np.ndarray, n_resamples: int, seed: int) -> float:
    """Paired permutation test: under no difference each item's b - a is as likely negated."""
    observed = abs(d.mean())
    if not np.any(d):
        return 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, n_resamples)
        signs = rng.choice((-1.0, 1.0), size=(stop - start, len(d)))
        flipped = np.abs((signs * d).mean(axis=1))
        hits += int((flipped >= observed - 1e-12).sum())
    return (hits + 1) / (n_resamples + 1)


def paired_comparison(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """Compare run b against run a on the same items: means, b - a with CI, and a p-value.

    The p-value is exact McNemar when every score is 0/1 (accuracy, refusal, format pass) and a
    seeded sign-flip permutation test otherwise; the CI is always the paired bootstrap.
    """
    xa, xb = _paired_arrays(a, b)
    boot = paired_bootstrap(xa, xb, n_resamples=n_resamples, confidence=confidence, seed=seed)
    d = xb - xa
    sd_diff = float(d.std(ddof=1)) if len(d) > 1 else 0.0
    if _binary(xa) and _binary(xb):
        a_only = int(((xa == 1) & (xb == 0)).sum())
        b_only = int(((xa == 0) & (xb == 1)).sum())
        p_value, test = mcnemar_exact(xa, xb), "mcnemar_exact"
        discordance: float | None = (a_only + b_only) / len(d)
    else:
        a_only = b_only = None
        p_value, test = _sign_flip_p(d, int(n_resamples), seed), "sign_flip"
        discordance = None
    return PairedComparison(
        n=len(d),
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=boot.diff,
        ci_low=boot.low,
        ci_high=boot.high,
        confidence=boot.confidence,
        p_value=float(p_value),
        test=test,
        sd_diff=sd_diff,
        discordance=discordance,
        a_only=a_only,
        b_only=b_only,
    )


def items_needed(
    effect: float,
    *,
    discordance: float | None = None,
    sd: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> int:
    """Paired items needed to detect a true mean difference `effect` (two-sided test).

    Give exactly one of:
    - `discordance` for 0/1 scores: the share of items where the two runs disagree (from a pilot
      comparison, `PairedComparison.discordance`). Uses Connor's (1987) normal approximation for
      McNemar's test, n = (z_a * sqrt(psi) + z_b * sqrt(psi - effect^2))^2 / effect^2 with
      psi = discordance; requires |effect| <= discordance, since a rate can only move on items
      where the runs disagree.
    - `sd` for other scores: the standard deviation of per-item differences b - a;
      n = ((z_a + z_b) * sd / effect)^2 (paired z-test).
    Rounded up. It is an approximation: the exact McNemar test is a little conservative at
    small n, so treat the result as a floor.
    """
    if (discordance is None) == (sd is None):
        raise HarnessError("items_needed: give exactly one of discordance= (0/1 scores) or sd=")
    if isinstance(effect, bool) or not isinstance(effect, (int, float)) or effect == 0:
        raise HarnessError(f"items_needed: effect must be a non-zero number, got {effect!r}")
    alpha = _check_confidence(alpha, "alpha")
    power = _check_confidence(power, "power")
    z_a = NormalDist().inv_cdf(1.0 - alpha / 2.0)
    z_b = NormalDist().inv_cdf(power)
    delta = abs(float(effect))
    if discordance is not None:
        psi = float(discordance)
        if not 0.0 < psi <= 1.0:
            raise HarnessError(f"items_needed: discordance must be in (0, 1], got {discordance}")
        if delta > psi:
            raise HarnessError(
                f"items_needed: effect {effect} cannot exceed discordance {discordance}"
            )
        n = (z_a * math.sqrt(psi) + z_b * math.sqrt(psi - delta * delta)) ** 2 / delta**2
    else:
        if float(sd) <= 0:
            raise HarnessError(f"items_needed: sd must be positive, got {sd}")
        n = ((z_a + z_b) * float(sd) / delta) ** 2
    return max(1, math.ceil(n - 1e-9))
