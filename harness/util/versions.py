"""Versions of the libraries that compute, train or score a result: recorded on every trial
and in the base-model cache key, so a result names what produced it."""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

LIBRARIES = (
    "sft-harness",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "lm_eval",
    "scikit-learn",
    "optuna",
    "mlflow",
)


@functools.cache
def package_versions() -> dict[str, str]:
    """`LIBRARIES` -> installed version ("missing" when not installed)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out
