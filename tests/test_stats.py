"""Paired statistics against scipy and textbook values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness.stats.comparison import (
    PairedComparison,
    items_needed,
    mcnemar_exact,
    min_detectable_effect,
    paired_bootstrap,
    paired_comparison,
    pooled_comparison,
    pooled_effect,
    tango_interval,
    wilson_interval,
)
from harness.util.errors import HarnessError

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
    assert cmp.test == "sign_flip" and cmp.discordance is None and cmp.interval == "bootstrap"
    assert cmp.p_higher < 0.01 < cmp.p_lower
    assert cmp.p_value < 0.01
    assert cmp.sd_diff == pytest.approx(float(np.std(b - a, ddof=1)))
    null = paired_comparison(a, a + rng.normal(0, 0.05, size=80), seed=1)
    assert null.p_value > 0.05
    assert paired_comparison([0.2, 0.4], [0.2, 0.4]).p_value == 1.0


# ------------------------------------------------------------------------------------------
# Tango's interval, one-sided p-values, pooled runs
# ------------------------------------------------------------------------------------------


def _tango_score_numeric(x: int, y: int, n: int, delta: float) -> float:
    """Tango's score statistic with the restricted MLE found numerically (no closed form)."""
    from scipy.optimize import minimize_scalar

    lo, hi = max(0.0, -delta), (1.0 - delta) / 2.0
    rest = n - x - y

    def nll(q: float) -> float:
        return -(x * np.log(q + delta) + y * np.log(q) + rest * np.log(1 - 2 * q - delta))

    q = minimize_scalar(nll, bounds=(lo + 1e-12, hi - 1e-12), method="bounded",
                        options={"xatol": 1e-12}).x  # fmt: skip
    return (x - y - n * delta) / np.sqrt(n * (2 * q + delta * (1 - delta)))


@pytest.mark.parametrize(("x", "y", "n"), [(16, 4, 100), (3, 9, 40), (0, 0, 30), (12, 0, 25)])
def test_tango_bounds_solve_the_score_equation(x: int, y: int, n: int) -> None:
    low, high = tango_interval(x, y, n)
    z = sps.norm.ppf(0.975)
    assert low < (x - y) / n < high
    if low > -1:
        assert _tango_score_numeric(x, y, n, float(low)) == pytest.approx(z, abs=1e-3)
    if high < 1:
        assert _tango_score_numeric(x, y, n, float(high)) == pytest.approx(-z, abs=1e-3)


def test_no_disagreement_does_not_collapse_the_interval() -> None:
    cmp = paired_comparison([1, 0] * 15, [1, 0] * 15)
    assert cmp.interval == "tango_score"
    assert cmp.ci_low < -0.05 and cmp.ci_high > 0.05  # n=30: ~[-0.11, 0.11], never [0, 0]
    wider = paired_comparison([1], [1])
    assert wider.ci_low < cmp.ci_low and wider.ci_high > cmp.ci_high


def test_one_sided_p_values_are_exact_binomial_tails() -> None:
    a, b = _pairs(a_only=14, b_only=5, both=50, neither=31)
    cmp = paired_comparison(a, b)
    assert cmp.p_lower == pytest.approx(sps.binom.cdf(5, 19, 0.5))
    assert cmp.p_higher == pytest.approx(sps.binom.sf(4, 19, 0.5))
    assert cmp.p_lower < 0.05 < cmp.p_higher


def test_pooled_runs_average_items_and_widen_for_seed_noise() -> None:
    rng = np.random.default_rng(0)
    n = 300
    base = (rng.uniform(size=(3, n)) < 0.7).astype(float)
    one = pooled_comparison(base[:1], base[1:2])
    assert one == paired_comparison(base[0], base[1])
    # Candidate seeds that shift every item differently: seed noise the interval must show.
    shifts = np.array([-0.15, 0.0, 0.15])[:, None]
    cand = np.clip(base.mean(axis=0) + shifts, 0, 1)
    pooled = pooled_comparison(base, cand, seed=1)
    assert pooled.interval == "two_level_bootstrap" and (pooled.runs_a, pooled.runs_b) == (3, 3)
    assert pooled.diff == pytest.approx(float(cand.mean() - base.mean()))
    items_only = paired_comparison(base.mean(axis=0), cand.mean(axis=0), seed=1)
    assert pooled.ci_high - pooled.ci_low > 2 * (items_only.ci_high - items_only.ci_low)
    with pytest.raises(HarnessError, match="same items"):
        pooled_comparison(base, cand[:, :10])


def _factor_study(rng: np.random.Generator, effect: float, runs: int = 2) -> list[tuple]:
    """Three pairs of configurations (the other factors shift every item by -0.1, 0, +0.1),
    each configuration `runs` replicates whose seed shifts every item a little, on 150 items
    of varied difficulty; the level adds `effect` to every item's chance of a 1."""
    p = rng.uniform(0.15, 0.75, 150)

    def config(shift: float) -> list[np.ndarray]:
        return [
            (rng.random(150) < p + shift + rng.normal(0, 0.02)).astype(float) for _ in range(runs)
        ]

    return [(config(c), config(c + effect)) for c in (-0.1, 0.0, 0.1)]


def test_pooled_effect_covers_a_known_effect_and_finds_it() -> None:
    effects = [
        pooled_effect(_factor_study(np.random.default_rng(s), 0.1), n_resamples=400, seed=s)
        for s in range(100)
    ]
    assert {(e.pairs, e.runs, e.n, e.interval) for e in effects} == {
        (3, 2, 150, "two_level_bootstrap")
    }
    assert sum(e.low <= 0.1 <= e.high for e in effects) >= 90  # 95% nominal, errs wide
    assert sum(e.decided and e.low > 0 for e in effects) >= 80  # and the effect is found
    assert np.mean([e.diff for e in effects]) == pytest.approx(0.1, abs=0.01)


def test_pooled_effect_of_nothing_is_mostly_undecided() -> None:
    effects = [
        pooled_effect(_factor_study(np.random.default_rng(s), 0.0), n_resamples=400, seed=s)
        for s in range(100)
    ]
    assert sum(e.low <= 0 <= e.high for e in effects) >= 90


def test_pooled_effect_of_one_pair_is_the_paired_comparison() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random(80) < 0.5).astype(float), (rng.random(80) < 0.6).astype(float)
    e, c = pooled_effect([([a], [b])]), paired_comparison(a, b)
    assert (e.diff, e.low, e.high, e.n, e.pairs, e.runs) == (c.diff, c.ci_low, c.ci_high, 80, 1, 1)
    assert e.interval == "tango_score"
    # Two identical pairs: the same estimate; the bootstrap interval is close to Tango's.
    twice = pooled_effect([([a], [b]), ([a], [b])])
    assert twice.diff == pytest.approx(c.diff)
    assert twice.low == pytest.approx(c.ci_low, abs=0.03)
    assert twice.high == pytest.approx(c.ci_high, abs=0.03)
    with pytest.raises(HarnessError, match="same items"):
        pooled_effect([([a], [b]), ([a[:10]], [b[:10]])])
    with pytest.raises(HarnessError, match="at least one"):
        pooled_effect([])


# ------------------------------------------------------------------------------------------
# items_needed and min_detectable_effect
# ------------------------------------------------------------------------------------------


def test_items_needed_answers_the_gates_question() -> None:
    z_pass, z_regr, z_b = sps.norm.ppf(0.975), sps.norm.ppf(0.95), sps.norm.ppf(0.8)
    # no observed change, 20% disagreement, 2% allowed drop: items to *pass*
    expected = np.ceil((z_pass + z_b) ** 2 * 0.2 / 0.02**2)
    assert items_needed(0.0, 0.02, discordance=0.2) == expected
    # observed drop 0.05 against an allowed 0.02: items to show the *regression*
    expected = np.ceil((z_regr + z_b) ** 2 * (0.2 - 0.05**2) / 0.05**2)
    assert items_needed(-0.05, 0.02, discordance=0.2) == expected
    # on the allowed change itself no number of items settles it
    assert items_needed(-0.02, 0.02, discordance=0.2) is None
    assert items_needed(0.01, 0.05, sd=0.3) < items_needed(0.0, 0.05, sd=0.3)


def test_items_needed_gives_the_power_it_promises() -> None:
    """At the returned n, a true change equal to the observed one passes ~80% of the time."""
    from harness.verdicts.gate import verdict

    psi, allowed = 0.2, 0.05
    n = items_needed(0.0, allowed, discordance=psi)
    rng = np.random.default_rng(0)
    passes = 0
    for _ in range(200):
        cells = rng.multinomial(n, [psi / 2, psi / 2, 1 - psi])
        a = [1] * cells[0] + [0] * cells[1] + [1] * cells[2]
        b = [0] * cells[0] + [1] * cells[1] + [1] * cells[2]
        passes += verdict(paired_comparison(a, b), allowed, True) == "pass"
    assert 0.7 <= passes / 200 <= 0.92


def test_min_detectable_effect_inverts_items_needed() -> None:
    mde = min_detectable_effect(1000, discordance=0.2)
    assert mde == pytest.approx((sps.norm.ppf(0.95) + sps.norm.ppf(0.8)) * np.sqrt(0.2 / 1000))
    assert min_detectable_effect(4000, discordance=0.2) == pytest.approx(mde / 2)
    assert min_detectable_effect(100, sd=0.5) > min_detectable_effect(400, sd=0.5)


def test_items_needed_errors() -> None:
    with pytest.raises(HarnessError, match="exactly one"):
        items_needed(0.1, 0.02)
    with pytest.raises(HarnessError, match="exactly one"):
        items_needed(0.1, 0.02, sd=1.0, discordance=0.2)
    with pytest.raises(HarnessError, match="threshold"):
        items_needed(0.0, -0.1, sd=1.0)
    with pytest.raises(HarnessError, match="sd"):
        items_needed(0.1, 0.02, sd=0.0)
    with pytest.raises(HarnessError, match="power"):
        items_needed(0.1, 0.02, sd=1.0, power=1.5)
    with pytest.raises(HarnessError, match="n must"):
        min_detectable_effect(0, sd=1.0)
