"""sft-harness: evaluation-first supervised fine-tuning experiments.

The statistics others build on are importable from here (`from harness import
pooled_comparison, verdict, adjust_p`); they load on first use, so `import harness` stays cheap
(no numpy until asked)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The public statistics (`harness.stats.__all__`), imported on first use."""
    import harness.stats

    if name in harness.stats.__all__:
        return getattr(harness.stats, name)
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
