"""Operating characteristics of the release gate (seeded Monte Carlo, see
benchmarks/gate_calibration.py for the model and the full table)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from harness.stats.comparison import paired_comparison
from harness.verdicts.gate import verdict

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_calibration.py"
_SPEC = importlib.util.spec_from_file_location("gate_calibration", _PATH)
calibration = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(calibration)

SIMS = 2000  # per cell; the Monte Carlo standard error at 5% is 0.5 points


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("churn", [0.05, 0.10])
@pytest.mark.parametrize("margin", [0.02, 0.05])
@pytest.mark.parametrize("n", [30, 60, 210, 500])
def test_false_pass_and_false_regression_at_most_5_percent(
    n: int, margin: float, churn: float, higher_is_better: bool
) -> None:
    kw = {"higher_is_better": higher_is_better, "sims": SIMS, "seed": n}
    at_margin = calibration.rates(n, margin, margin, churn, **kw)
    assert at_margin["pass"] <= 0.05, at_margin
    no_change = calibration.rates(n, margin, 0.0, churn, **kw)
    assert no_change["regression"] <= 0.05, no_change


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("margin", [0.02, 0.05])
def test_power_at_twice_the_allowed_change(margin: float, higher_is_better: bool) -> None:
    kw = {"higher_is_better": higher_is_better, "sims": SIMS, "seed": 1}
    double = calibration.rates(1000, margin, 2 * margin, 0.05, **kw)
    assert double["regression"] >= 0.80, double


def test_the_simulation_measures_the_public_verdict() -> None:
    """The vectorised path the calibration uses gives the same verdicts as
    `verdict(paired_comparison(a, b), ...)` on item-level scores."""
    rng = np.random.default_rng(5)
    n, margin = 120, 0.05
    for higher in (True, False):
        b_only, a_only = calibration.disagreeing_counts(n, 0.08, 0.1, higher, 40, rng)
        low, high = calibration.tango_interval(b_only, a_only, n)
        p_lower, p_higher = calibration.mcnemar_one_sided(b_only, a_only)
        fast = calibration.decide(
            (b_only - a_only) / n, low, high, p_lower, p_higher, margin, higher
        )
        for i in range(len(b_only)):
            x, y = int(b_only[i]), int(a_only[i])
            a = [0] * x + [1] * y + [1] * (n - x - y)
            b = [1] * x + [0] * y + [1] * (n - x - y)
            assert verdict(paired_comparison(a, b), margin, higher) == fast[i]
        assert len(set(fast)) >= 2  # the check covered more than one kind of verdict


def test_no_disagreement_passes_only_with_enough_items() -> None:
    """Identical runs: the interval keeps a width of ~z^2/n, so a 2-point allowed change passes
    only from ~190 items on (the old bootstrap's [0, 0] passed at n = 1)."""
    assert verdict(paired_comparison([1], [1]), 0.02, True) == "inconclusive"
    assert verdict(paired_comparison([1, 0] * 50, [1, 0] * 50), 0.02, True) == "inconclusive"
    assert verdict(paired_comparison([1, 0] * 100, [1, 0] * 100), 0.02, True) == "pass"
    assert verdict(paired_comparison([0, 1] * 100, [0, 1] * 100), 0.02, False) == "pass"
