"""Paired statistics against scipy and textbook values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness.errors import HarnessError
from harness.stats import (
    PairedComparison,
    items_needed,
    mcnemar_exact,
    paired_bootstrap,
    paired_comparison,
    wilson_interval,
)

# ------------------------------------------------------------------------------------------
# Wilson
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "conf"),
    [(0, 10, 0.95), (3, 10, 0.95), (10, 10, 0.95), (81, 263, 0.95), (7, 40, 0.9)],
)
def test_wilson_matches_scipy(k: int, n: int, conf: float) -> None:
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=conf, method="wilson")
    low, high = wilson_interval(k, n, conf)
    assert low == pytest.approx(ref.low, abs=1e-9)
    assert high == pytest.approx(ref.high, abs=1e-9)


def test_wilson_textbook_example() -> None:
    # Newcombe (1998), Table I, example 81/263: 0.2553 to 0.3662 at 95%.
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and 0 < high < 1
    low, high = wilson_interval(5, 5)
    assert high == 1.0 and 0 < low < 1
    for bad in [(-1, 5), (6, 5), (1, -1), (1.5, 3), (True, 3)]:
        with pytest.raises(HarnessError):
            wilson_interval(*bad)
    with pytest.raises(HarnessError, match="confidence"):
        wilson_interval(1, 3, confidence=95)


# ------------------------------------------------------------------------------------------
# McNemar
# ------------------------------------------------------------------------------------------


def _pairs(a_only: int, b_only: int, both: int = 5, neither: int = 5) -> tuple[list, list]:
    a = [1] * a_only + [0] * b_only + [1] * both + [0] * neither
    b = [0] * a_only + [1] * b_only + [1] * both + [0] * neither
    return a, b


@pytest.mark.parametrize(("a_only", "b_only"), [(3, 10), (10, 3), (0, 6), (7, 7), (1, 0), (40, 61)])
def test_mcnemar_matches_binomtest(a_only: int, b_only: int) -> None:
    a, b = _pairs(a_only, b_only)
    ref = sps.binomtest(b_only, a_only + b_only, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(ref, rel=1e-12)


def test_mcnemar_large_n_uses_log_space_and_matches() -> None:
    a, b = _pairs(1400, 1550, both=0, neither=0)
    ref = sps.binomtest(1550, 2950, 0.5).pvalue
    assert mcnemar_exact(a, b) == pytest.approx(ref, rel=1e-9)


def test_mcnemar_edges() -> None:
    assert mcnemar_exact([1, 0, 1], [1, 0, 1]) == 1.0
    assert mcnemar_exact([True, False], [True, False]) == 1.0
    with pytest.raises(HarnessError, match="0/1"):
        mcnemar_exact([0.5, 1], [1, 1])
    with pytest.raises(HarnessError, match="same items"):
        mcnemar_exact([0, 1], [0, 1, 1])
    with pytest.raises(HarnessError, match="empty"):
        mcnemar_exact([], [])


# ------------------------------------------------------------------------------------------
# Bootstrap
# ------------------------------------------------------------------------------------------


def test_paired_bootstrap_close_to_scipy() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.5, 0.2, size=300)
    b = a + rng.normal(0.05, 0.1, size=300)
    ours = paired_bootstrap(a, b, n_resamples=4000, seed=3)
    ref = sps.bootstrap(
        (b - a,), np.mean, n_resamples=4000, method="percentile", random_state=3
    ).confidence_interval
    assert ours.diff == pytest.approx(float(np.mean(b - a)))
    assert ours.low == pytest.approx(ref.low, abs=0.003)
    assert ours.high == pytest.approx(ref.high, abs=0.003)
    assert ours.low < ours.diff < ours.high


def test_paired_bootstrap_is_seeded_and_paired() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    first = paired_bootstrap(a, b, seed=7)
    assert first == paired_bootstrap(a, b, seed=7)
    assert first != paired_bootstrap(a, b, seed=8)
    # Pairing: a constant shift has zero-width CI however noisy the items are.
    noisy = np.random.default_rng(0).normal(size=50)
    shifted = paired_bootstrap(noisy, noisy + 0.25)
    assert shifted.low == pytest.approx(0.25) and shifted.high == pytest.approx(0.25)


def test_paired_bootstrap_edges() -> None:
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
    one = paired_bootstrap([0], [1])
    assert (one.diff, one.low, one.high, one.n) == (1.0, 1.0, 1.0, 1)
    with pytest.raises(HarnessError, match="same items"):
        paired_bootstrap([1, 2], [1])
    with pytest.raises(HarnessError, match="n_resamples"):
        paired_bootstrap([1, 2], [1, 2], n_resamples=10)
    with pytest.raises(HarnessError, match="finite"):
        paired_bootstrap([1, float("nan")], [1, 2])


# ------------------------------------------------------------------------------------------
# paired_comparison
# ------------------------------------------------------------------------------------------


def test_paired_comparison_binary_uses_mcnemar() -> None:
    a, b = _pairs(4, 16, both=60, neither=20)
    cmp = paired_comparison(a, b)
    assert isinstance(cmp, PairedComparison)
    assert cmp.test == "mcnemar_exact"
    assert cmp.n == 100
    assert cmp.mean_a == pytest.approx(0.64) and cmp.mean_b == pytest.approx(0.76)
    assert cmp.diff == pytest.approx(0.12)
    assert (cmp.a_only, cmp.b_only) == (4, 16)
    assert cmp.discordance == pytest.approx(0.20)
    assert cmp.p_value == pytest.approx(sps.binomtest(16, 20).pvalue)
    assert cmp.ci_low < 0.12 < cmp.ci_high
    assert set(cmp.to_dict()) >= {"n", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "p_value"}


def test_paired_comparison_continuous_uses_sign_flip() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(size=80)
    b = a + 0.1 + rng.normal(0, 0.05, size=80)
    cmp = paired_comparison(a, b, seed=1)
    assert cmp.test == "sign_flip" and cmp.discordance is None
    assert cmp.p_value < 0.01
    assert cmp.sd_diff == pytest.approx(float(np.std(b - a, ddof=1)))
    null = paired_comparison(a, a + rng.normal(0, 0.05, size=80), seed=1)
    assert null.p_value > 0.05
    assert paired_comparison([0.2, 0.4], [0.2, 0.4]).p_value == 1.0


# ------------------------------------------------------------------------------------------
# items_needed
# ------------------------------------------------------------------------------------------


def test_items_needed_mean_difference_textbook() -> None:
    # (1.96 + 0.8416)^2 * (1 / 0.5)^2 = 31.4 -> 32 pairs.
    assert items_needed(0.5, sd=1.0) == 32
    assert items_needed(-0.5, sd=1.0) == 32
    assert items_needed(0.25, sd=1.0) > items_needed(0.5, sd=1.0)
    assert items_needed(0.5, sd=1.0, power=0.9) > 32


def test_items_needed_mcnemar_formula_and_power() -> None:
    psi, delta = 0.3, 0.1
    z_a, z_b = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    expected = np.ceil((z_a * np.sqrt(psi) + z_b * np.sqrt(psi - delta**2)) ** 2 / delta**2)
    n = items_needed(delta, discordance=psi)
    assert n == expected
    # Simulated power of the exact test at that n is close to the 80% asked for.
    rng = np.random.default_rng(0)
    p_b_only, p_a_only = (psi + delta) / 2, (psi - delta) / 2
    hits = 0
    reps = 400
    for _ in range(reps):
        u = rng.uniform(size=n)
        a = np.where(u < p_a_only, 1, 0)
        b = np.where((u >= p_a_only) & (u < p_a_only + p_b_only), 1, 0)
        hits += mcnemar_exact(a, b) < 0.05
    assert 0.7 <= hits / reps <= 0.9


def test_items_needed_errors() -> None:
    with pytest.raises(HarnessError, match="exactly one"):
        items_needed(0.1)
    with pytest.raises(HarnessError, match="exactly one"):
        items_needed(0.1, sd=1.0, discordance=0.2)
    with pytest.raises(HarnessError, match="effect"):
        items_needed(0.0, sd=1.0)
    with pytest.raises(HarnessError, match="exceed"):
        items_needed(0.3, discordance=0.2)
    with pytest.raises(HarnessError, match="sd"):
        items_needed(0.1, sd=0.0)
    with pytest.raises(HarnessError, match="power"):
        items_needed(0.1, sd=1.0, power=1.5)
