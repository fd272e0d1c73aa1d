"""Versions of the libraries that compute, train or score a result: recorded on every trial
and in the base-model cache key, so a result names what produced it."""

from __future__ import annotations

import importlib.metadata

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


def package_versions() -> dict[str, str]:
    """`LIBRARIES` -> installed version ("missing" when not installed), read afresh each call."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out
