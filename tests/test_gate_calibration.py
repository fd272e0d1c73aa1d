"""Operating characteristics of the decision rule at small Monte Carlo sizes (the full table:
`nice -n 10 python benchmarks/gate_calibration.py`). Tolerances are two to three Monte Carlo
standard errors above the 5% bound, so a rule that is wrong by a few points fails."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gate_calibration.py"
_SPEC = importlib.util.spec_from_file_location("gate_calibration", _PATH)
calibration = importlib.util.module_from_spec(_SPEC)
sys.modules["gate_calibration"] = calibration  # its dataclasses look their module up
_SPEC.loader.exec_module(calibration)
Scenario = calibration.Scenario

N, M = 600, 0.05


def _bound(studies: int) -> float:
    return 0.05 + 2.5 * math.sqrt(0.05 * 0.95 / studies)


def test_the_simulated_true_change_is_the_columns() -> None:
    """The simulator's drop is solved so that the true change is exactly the column's: the
    observed mean change over many studies matches it (recipes: over seeds and items)."""
    rng = np.random.default_rng(0)
    for s in (Scenario(0.09, 2, True, "mixed"), Scenario(0.03, 1, False, "uniform")):
        a, b, _ = calibration.simulate(s, M, 400, N, rng)
        assert (b.mean() - a.mean()) == pytest.approx(-M, abs=0.006)
    x = np.array([0.05, 0.5, 0.97])
    draws = np.clip(x[:, None] + rng.normal(0, 0.09, (3, 200_000)), 0, 1).mean(axis=1)
    assert calibration.expected_clip(x, 0.09) == pytest.approx(draws, abs=0.002)


@pytest.mark.parametrize(
    "scenario",
    [
        Scenario(0.0, 1, True, "mixed"),  # two checkpoints, families of paraphrases
        Scenario(0.03, 2, False, "uniform"),  # two recipes, 2 seeds each
        Scenario(0.09, 3, True, "mixed"),  # large seed noise, 3 seeds, families
    ],
)
def test_wrong_verdicts_stay_within_5_percent(scenario: Scenario) -> None:
    studies = 300
    at_margin = calibration.rates(scenario, M, margin=M, studies=studies, n=N, seed=1)
    assert at_margin["pass"] <= _bound(studies), at_margin
    assert at_margin["regression"] <= _bound(studies), at_margin  # on the boundary: ~5%
    half = calibration.rates(scenario, M / 2, margin=M, studies=studies, n=N, seed=2)
    assert half["regression"] <= _bound(studies), half
    twice = calibration.rates(scenario, 2 * M, margin=M, studies=studies, n=N, seed=3)
    assert twice["pass"] <= 0.01 and twice["regression"] > half["regression"], twice


def test_checkpoints_are_decided_and_seed_noise_makes_recipes_inconclusive_not_wrong() -> None:
    studies = 200
    clear = calibration.rates(Scenario(0.0, 1, False, "mixed"), 0.0, margin=M, studies=studies,
                              n=N, seed=4)  # fmt: skip
    assert clear["pass"] >= 0.6
    noisy = calibration.rates(Scenario(0.09, 2, False, "mixed"), 0.0, margin=M, studies=studies,
                              n=N, seed=5)  # fmt: skip
    assert noisy["inconclusive"] >= 0.7 and noisy["regression"] <= _bound(studies)


def test_a_release_with_ten_gated_metrics_fails_falsely_at_most_5_percent() -> None:
    studies = 200
    rate = calibration.release_false_failures(metrics=10, change=M, studies=studies, n=N, seed=6)
    assert rate <= _bound(studies)


def test_items_needed_power_on_both_sides() -> None:
    for drop, churn in ((0.0, 0.05), (0.12, 0.10)):
        _, power = calibration.promised_power(drop=drop, margin=M, churn=churn, studies=300, seed=7)
        assert power >= 0.8 - 2.5 * math.sqrt(0.16 / 300), (drop, power)


def test_null_effects_tables_holm_controls_any_false_cell() -> None:
    """Without adjustment about half of null 15-cell tables decide some cell; with Holm
    about 5%; with one run per configuration nothing is decided."""
    tables = 150
    three = calibration.null_effects_tables(runs=3, seed_sd=0.03, tables=tables, n=300, seed=8)
    assert three["unadjusted"] >= 0.35
    assert three["holm"] <= _bound(tables) and three["bh"] <= _bound(tables)
    one = calibration.null_effects_tables(runs=1, seed_sd=0.03, tables=40, n=300, seed=9)
    assert one["holm"] == one["bh"] == 0.0
