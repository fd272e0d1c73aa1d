"""Paired statistics against scipy and textbook values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from harness.stats.comparison import (
    PairedComparison,
    mcnemar_exact,
    paired_bootstrap,
    paired_comparison,
    pooled_comparison,
    pooled_effect,
    seed_noise,
    tango_interval,
    wilson_interval,
)
from harness.stats.decision import (
    adjust_p,
    design_to_decide,
    items_needed,
    items_to_decide,
    margin_tests,
    min_detectable_effect,
    verdict,
    verdicts,
)
from harness.stats.student import t_quantile, t_sf
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


def test_paired_comparison_continuous_is_the_paired_t() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(size=80)
    b = a + 0.1 + rng.normal(0, 0.05, size=80)
    cmp = paired_comparison(a, b)
    assert cmp.test == "t" and cmp.discordance is None and cmp.interval == "t"
    ref = sps.ttest_rel(b, a)
    assert cmp.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    ci = ref.confidence_interval(0.95)
    assert (cmp.ci_low, cmp.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert cmp.p_higher < 0.01 < cmp.p_lower
    assert cmp.sd_diff == pytest.approx(float(np.std(b - a, ddof=1)))
    assert cmp.question == "checkpoints" and cmp.seed_var == 0.0
    null = paired_comparison(a, a + rng.normal(0, 0.05, size=80))
    assert null.p_value > 0.05
    assert paired_comparison([0.2, 0.4], [0.2, 0.4]).p_value == 1.0


@pytest.mark.parametrize("df", [1, 2, 3.7, 12, 250, 1e6])
def test_student_t_matches_scipy(df: float) -> None:
    for t in (-6.0, -1.3, 0.0, 0.4, 2.1, 9.0):
        assert t_sf(t, df) == pytest.approx(sps.t.sf(t, df), abs=1e-9)
    for p in (0.001, 0.05, 0.5, 0.95, 0.975, 0.999):
        assert t_quantile(p, df) == pytest.approx(sps.t.ppf(p, df), rel=1e-8, abs=1e-9)


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
    pooled = pooled_comparison(base, cand)
    assert pooled.interval == "two_level_t" and (pooled.runs_a, pooled.runs_b) == (3, 3)
    assert pooled.question == "recipes" and pooled.seed_var > 0
    assert pooled.diff == pytest.approx(float(cand.mean() - base.mean()))
    items_only = paired_comparison(base.mean(axis=0), cand.mean(axis=0))
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
    effects = [pooled_effect(_factor_study(np.random.default_rng(s), 0.1)) for s in range(100)]
    assert {(e.pairs, e.runs, e.n, e.interval, e.seed_noise) for e in effects} == {
        (3, 2, 150, "two_level_t", True)
    }
    assert sum(e.low <= 0.1 <= e.high for e in effects) >= 90  # 95% nominal
    assert sum(e.decided and e.low > 0 for e in effects) >= 80  # and the effect is found
    assert np.mean([e.diff for e in effects]) == pytest.approx(0.1, abs=0.01)


def test_pooled_effect_of_nothing_is_mostly_undecided() -> None:
    effects = [pooled_effect(_factor_study(np.random.default_rng(s), 0.0)) for s in range(100)]
    assert sum(e.low <= 0 <= e.high for e in effects) >= 90
    assert all(e.p_value > 0.05 for e in effects if not e.decided)


def test_pooled_effect_of_one_pair_is_the_paired_comparison() -> None:
    rng = np.random.default_rng(3)
    a, b = (rng.random(80) < 0.5).astype(float), (rng.random(80) < 0.6).astype(float)
    e, c = pooled_effect([([a], [b])]), paired_comparison(a, b)
    assert (e.diff, e.low, e.high, e.n, e.pairs, e.runs) == (c.diff, c.ci_low, c.ci_high, 80, 1, 1)
    assert e.interval == "tango_score" and not e.seed_noise and not e.decided
    # The same pair twice is one pair (the same configurations): a t interval close to Tango's.
    twice = pooled_effect([([a], [b]), ([a], [b])])
    assert twice.diff == pytest.approx(c.diff) and twice.interval == "t"
    assert twice.low == pytest.approx(c.ci_low, abs=0.03)
    assert twice.high == pytest.approx(c.ci_high, abs=0.03)
    with pytest.raises(HarnessError, match="same items"):
        pooled_effect([([a], [b]), ([a[:10]], [b[:10]])])
    with pytest.raises(HarnessError, match="at least one"):
        pooled_effect([])


# ------------------------------------------------------------------------------------------
# items_needed and min_detectable_effect
# ------------------------------------------------------------------------------------------


def _fleiss(n: float, distance: float) -> int:
    """Fleiss, Levin & Paik's continuity correction of a normal-approximation sample size."""
    return int(np.ceil(n / 4 * (1 + np.sqrt(1 + 4 / (n * distance))) ** 2))


def test_items_to_decide_gives_the_promised_power_in_a_15_cell_table() -> None:
    """An effects-table cell of true change 0.08 between two recipes (two seeds each, seed sd
    0.01, seed noise pooled over the study's 8 configurations as the report pools it), judged
    at Bonferroni's 0.05 / 15: simulated at the items `items_to_decide` asks for (from a large
    pilot), the cell is decided about 80% of the time; at a tenth of them, seldom. Seed noise
    more items cannot remove gives None, and so does no change."""
    rng = np.random.default_rng(7)
    p_ref, change, cells = 0.5, 0.08, 15

    def runs(p: float, n: int) -> list[np.ndarray]:
        return [(rng.random(n) < p + rng.normal(0, 0.01)).astype(float) for _ in range(2)]

    def effect(n: int):
        ref, lvl = runs(p_ref, n), runs(p_ref + change, n)
        others = [runs(p, n) for p in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
        return pooled_effect([(ref, lvl)], noise=seed_noise([ref, lvl, *others]))

    pilot = effect(4000)
    pilot = type(pilot)(**{**pilot.__dict__, "diff": change})  # the true change, not the noisy one
    n = items_to_decide(pilot, cells)
    assert n is not None and 300 < n < 3000
    decided = [effect(n).p_value * cells <= 0.05 for _ in range(200)]
    assert 0.7 <= np.mean(decided) <= 0.92
    assert np.mean([effect(n // 10).p_value * cells <= 0.05 for _ in range(100)]) < 0.3
    shift = (change / 4) ** 2  # seeds shifting whole runs, more than the change allows
    v_items = pilot.se**2 - pilot.shift_var
    seedy = type(pilot)(**{**pilot.__dict__, "shift_var": shift, "se": np.sqrt(v_items + shift)})
    assert items_to_decide(seedy, cells) is None
    # ... there the runs per configuration say what would: the shift variance falls as 1/runs
    items, seeds = design_to_decide(seedy, cells)
    assert items == seedy.n and seeds > 2
    z = t_quantile(1 - 0.05 / (2 * cells), pilot.df) + t_quantile(0.8, pilot.df)
    assert z * np.sqrt(v_items + shift * 2 / seeds) <= change
    assert z * np.sqrt(v_items + shift * 2 / (seeds - 1)) > change
    assert design_to_decide(pilot, cells) == (n, 2)  # items alone do it
    # too few items and too much seed noise: both, each with half the allowed variance
    few = type(pilot)(**{**seedy.__dict__, "se": np.sqrt(v_items * 40 + shift), "n": 100})
    items, seeds = design_to_decide(few, cells)
    assert items > 100 and seeds > 2
    assert z * np.sqrt(v_items * 40 * 100 / items + shift * 2 / seeds) <= change
    assert design_to_decide(type(pilot)(**{**pilot.__dict__, "diff": 0.0}), cells) is None
    assert items_to_decide(type(pilot)(**{**pilot.__dict__, "diff": 0.0}), cells) is None


def test_items_needed_answers_the_gates_question() -> None:
    z_a, z_b = sps.norm.ppf(0.95), sps.norm.ppf(0.8)
    # no observed change, 20% disagreement, 2% allowed drop: items to *pass*
    expected = _fleiss((z_a + z_b) ** 2 * 0.2 / 0.02**2, 0.02)
    assert items_needed(0.0, 0.02, discordance=0.2) == expected
    # observed drop 0.05 against an allowed 0.02: items to show the *regression*, i.e. that the
    # drop is beyond 0.02 (distance 0.03), not merely below zero
    expected = _fleiss((z_a + z_b) ** 2 * (0.2 - 0.05**2) / 0.03**2, 0.03)
    assert items_needed(-0.05, 0.02, discordance=0.2) == expected
    # the gate's Holm step tests regressions at a lower level: more items
    assert items_needed(-0.05, 0.02, discordance=0.2, alpha_regression=0.01) > expected
    # clustered items count less; other scores are not continuity-corrected
    assert items_needed(0.0, 0.02, discordance=0.2, design_effect=2.0) == _fleiss(
        (z_a + z_b) ** 2 * 0.4 / 0.02**2, 0.02
    )
    assert items_needed(0.0, 0.02, sd=0.3) == np.ceil((z_a + z_b) ** 2 * 0.09 / 0.02**2)
    # seed noise more items cannot remove
    assert items_needed(0.0, 0.02, sd=0.3, seed_var=0.021**2 / (z_a + z_b) ** 2) is None
    # on the allowed change itself no number of items settles it
    assert items_needed(-0.02, 0.02, discordance=0.2) is None
    assert items_needed(0.01, 0.05, sd=0.3) < items_needed(0.0, 0.05, sd=0.3)


def test_items_needed_gives_the_power_it_promises() -> None:
    """At the returned n, a true change equal to the observed one is settled ~80% of the time,
    on both sides: a pass when it is within the allowed change, a regression when beyond
    (400 studies each: Monte Carlo standard error 2 points)."""
    allowed, churn = 0.05, 0.1
    rng = np.random.default_rng(0)
    for drop, wanted in ((0.0, "pass"), (0.12, "regression")):
        n = items_needed(-drop, allowed, discordance=2 * churn + drop)
        hits = 0
        for _ in range(400):
            x, y, rest = rng.multinomial(n, [churn, churn + drop, 1 - 2 * churn - drop])
            a = [0] * x + [1] * y + [1] * rest
            b = [1] * x + [0] * y + [1] * rest
            hits += verdict(paired_comparison(a, b), allowed, True) == wanted
        assert 0.76 <= hits / 400 <= 0.93, (drop, n, hits)


def test_min_detectable_effect_inverts_items_needed() -> None:
    mde = min_detectable_effect(1000, discordance=0.2)
    assert mde == pytest.approx((sps.norm.ppf(0.95) + sps.norm.ppf(0.8)) * np.sqrt(0.2 / 1000))
    assert min_detectable_effect(1000, discordance=0.2, design_effect=4) == pytest.approx(2 * mde)
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


# ------------------------------------------------------------------------------------------
# the decision rule, multiplicity, clusters, seed noise, shared configurations
# ------------------------------------------------------------------------------------------


def test_adjust_p_against_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    # Holm: sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 -> 0.09 (monotone), 0.2
    assert adjust_p(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.2])
    # BH: times 4/1, 4/2, 4/3, 4/4 = 0.04, 0.06, 0.0533, 0.2; step-up minimum from the top
    assert adjust_p(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert adjust_p([0.5, 0.9], "holm") == [1.0, 1.0]
    assert adjust_p([], "bh") == []
    with pytest.raises(HarnessError, match="method"):
        adjust_p(p, "bonferroni")
    with pytest.raises(HarnessError, match=r"\[0, 1\]"):
        adjust_p([0.1, 1.5])


def test_verdict_tests_against_the_allowed_change_not_zero() -> None:
    """A drop of half the allowed change, well measured, is a pass, never a regression; a drop
    of twice the allowed change is a regression; one on the allowed change is inconclusive."""
    n, allowed = 4000, 0.04

    def run(drop: float) -> tuple[list[int], list[int]]:  # candidate loses `drop` of items
        lost = int(round(drop * n))
        return [1] * (n // 2) + [0] * (n // 2), [1] * (n // 2 - lost) + [0] * (n // 2 + lost)

    assert verdict(paired_comparison(*run(0.02)), allowed, True) == "pass"
    assert verdict(paired_comparison(*run(0.08)), allowed, True) == "regression"
    assert verdict(paired_comparison(*run(0.04)), allowed, True) == "inconclusive"
    # the same rates, read as lower-is-better (a rise is bad): mirrored
    a, b = run(0.08)
    assert verdict(paired_comparison(b, a), allowed, False) == "regression"
    assert verdict(paired_comparison(a, b), allowed, False) == "pass"
    p_pass, p_regression = margin_tests(paired_comparison(*run(0.04)), allowed, True)
    assert p_pass == pytest.approx(1 - p_regression) and 0.3 < p_pass < 0.7


def test_verdicts_holm_adjust_the_regression_side_only() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, 400)
    noise = rng.normal(0, 1, 400)
    noise = 0.5 * (noise - noise.mean()) / noise.std(ddof=1)  # exactly mean 0, sd 0.5
    worse = paired_comparison(a, a - 0.2 + noise)  # t = -0.05 / 0.025 = -2 against -0.15
    fine = paired_comparison(a, a + noise)
    _, p = margin_tests(worse, 0.15, True)
    assert p == pytest.approx(sps.t.cdf(-2.0, 399))
    assert verdict(worse, 0.15, True) == "regression"
    assert verdicts([worse], [0.15], [True]) == ["regression"]
    # among four gated metrics Holm needs p <= 0.05 / 4 for the smallest: not shown any more
    assert verdicts([worse, fine, fine, fine], [0.15] * 4, [True] * 4)[0] == "inconclusive"
    assert verdicts([fine], [0.15], [True]) == ["pass"]  # the pass side is not adjusted


def _clustered(rng: np.random.Generator, families: int, drop: float) -> tuple:
    """Families of 3 paraphrases of one fact, known together (each answer flips with chance
    0.1); the candidate knows a fact with chance 0.6 - drop / 0.8, so its accuracy is lower by
    `drop` (0.1 + 0.8 x the chance)."""
    know_a = rng.random(families) < 0.6
    know_b = rng.random(families) < 0.6 - drop / 0.8
    flip = lambda k: np.repeat(k, 3) ^ (rng.random(3 * families) < 0.1)  # noqa: E731
    return flip(know_a).astype(float), flip(know_b).astype(float), np.repeat(np.arange(families), 3)


def test_clusters_keep_the_false_regression_rate_treating_items_as_independent_breaks_it() -> None:
    """At a true drop equal to the allowed change, families treated as independent items are
    called a regression far more than 5% of the time; declared as clusters, about 5%."""
    rng = np.random.default_rng(2)
    allowed, studies = 0.05, 300
    clustered = independent = 0
    for _ in range(studies):
        a, b, families = _clustered(rng, 150, allowed)
        c = paired_comparison(a, b, clusters=families)
        assert c.interval == "tango_score_clustered" and c.clusters == 150
        assert c.design_effect > 1.5
        clustered += verdict(c, allowed, True) == "regression"
        independent += verdict(paired_comparison(a, b), allowed, True) == "regression"
    assert clustered / studies <= 0.05 + 2 * (0.05 * 0.95 / studies) ** 0.5
    assert independent / studies > 0.09
    with pytest.raises(HarnessError, match="one label per item"):
        paired_comparison([1, 0], [1, 1], clusters=["x"])


def test_seed_noise_is_in_the_interval_with_two_runs_per_side() -> None:
    """Every seed shifts all its items by N(0, 0.05): with two runs per side the interval
    covers the recipes' true change ~95% of the time (an item-only interval would not)."""
    rng = np.random.default_rng(3)
    q = rng.uniform(0.2, 0.8, 300)
    covered = item_only = 0
    for _ in range(200):
        runs = [
            (rng.random((2, 300)) < np.clip(q + rng.normal(0, 0.05, (2, 1)), 0, 1)).astype(float)
            for _ in range(2)
        ]
        c = pooled_comparison(*runs)
        assert c.question == "recipes" and c.df < 10
        covered += c.ci_low <= 0 <= c.ci_high
        flat = paired_comparison(runs[0].mean(0), runs[1].mean(0))
        item_only += flat.ci_low <= 0 <= flat.ci_high
    assert covered >= 0.9 * 200
    assert item_only < 0.8 * 200
    assert seed_noise([runs[0][:1], runs[1][:1]]) is None  # one run each: no seed estimate


def test_a_configuration_in_several_pairs_counts_once() -> None:
    """A reference shared by two pairs puts the same noise in both: the pooled interval is
    wider than for two independent references with the same scores."""
    rng = np.random.default_rng(4)
    ref, l1, l2 = (
        (rng.random((2, 200)) < 0.5 + rng.normal(0, 0.1, (2, 1))).astype(float) for _ in range(3)
    )
    shared = pooled_effect([(ref, l1), (ref, l2)], configs=[("r", "l1"), ("r", "l2")])
    apart = pooled_effect([(ref, l1), (ref, l2)], configs=[("r1", "l1"), ("r2", "l2")])
    assert shared.diff == pytest.approx(apart.diff)
    assert shared.se > apart.se
    by_content = pooled_effect([(ref, l1), (ref, l2)])  # identical scores: one configuration
    assert by_content.se == pytest.approx(shared.se)


def test_importing_harness_is_cheap_and_exports_the_contract() -> None:
    import subprocess
    import sys

    code = (
        "import sys, harness; assert 'numpy' not in sys.modules, 'numpy loaded'; "
        "from harness import pooled_comparison, verdict, adjust_p, items_needed; "
        "print(verdict(pooled_comparison([[1, 0] * 200], [[1, 0] * 200]), 0.05, True))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pass"


def test_identical_replicates_do_not_collapse_the_interval() -> None:
    """Two identical runs per side on 5 items show no disagreement, which 5 items cannot rule
    out: inconclusive, not a pass (as Tango's interval does for one run per side)."""
    runs = [[1, 0, 1, 1, 0]] * 2
    c = pooled_comparison(runs, runs)
    assert c.ci_low < -0.1 and c.ci_high > 0.1
    assert verdict(c, 0.05, True) == "inconclusive"
