"""sft-harness: evaluation-first supervised fine-tuning experiments.

The statistics others build on are importable from here (`from harness import
pooled_comparison, verdict, adjust_p`); they load on first use, so `import harness` stays cheap
(no numpy until asked)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_STATS = (
    "PairedComparison",
    "PooledEffect",
    "SeedNoise",
    "adjust_p",
    "decide_effects",
    "judge_release",
    "items_needed",
    "margin_p",
    "margin_tests",
    "min_detectable_effect",
    "paired_comparison",
    "pooled_comparison",
    "pooled_effect",
    "seed_noise",
    "verdict",
    "verdicts",
)
__all__ = ["__version__", *_STATS]


def __getattr__(name: str) -> Any:
    if name in _STATS:
        import harness.stats

        return getattr(harness.stats, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
