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


def machine() -> str:
    """The machine a result came from, in words: CPU model and count, GPU, OS, Python."""
    import os
    import platform
    from pathlib import Path

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {gpu}, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}"
    )
