"""Paired comparisons of runs on the same items, the decision rule built on them, and the
best-trial rule. The public contract (`pooled_comparison`, `verdict`, `verdicts`, `adjust_p`,
`items_needed`, ...) is importable from here and from `harness` itself."""

from harness.stats.comparison import (
    INCONCLUSIVE,
    PASS,
    REGRESSION,
    PairedComparison,
    PooledEffect,
    SeedNoise,
    paired_comparison,
    pooled_comparison,
    pooled_effect,
    seed_noise,
)
from harness.stats.decision import (
    adjust_p,
    decide_effects,
    design_to_decide,
    items_needed,
    items_to_decide,
    judge_release,
    margin_p,
    margin_tests,
    min_detectable_effect,
    verdict,
    verdicts,
)

__all__ = [
    "INCONCLUSIVE",
    "PASS",
    "REGRESSION",
    "PairedComparison",
    "PooledEffect",
    "SeedNoise",
    "adjust_p",
    "decide_effects",
    "design_to_decide",
    "judge_release",
    "items_needed",
    "items_to_decide",
    "margin_p",
    "margin_tests",
    "min_detectable_effect",
    "paired_comparison",
    "pooled_comparison",
    "pooled_effect",
    "seed_noise",
    "verdict",
    "verdicts",
]
