"""`harness run EXP --devices 0,1,2,3`: one worker process per GPU on one study.

Public API
    parse_devices(text, cuda_count) -> list[str]: "0,1,3" or "cpu,cpu", validated
    launch_workers(args, devices, launcher=subprocess.Popen) -> int: start, wait, worst exit code

Each worker is an ordinary `harness run` process with `CUDA_VISIBLE_DEVICES` set to its one GPU
(so inside it that GPU is `cuda:0`), sharing the study through its Optuna storage exactly as
workers started by hand do (docs/design.md, "Scaling out"). `cpu` entries start workers that
see no GPU, which is how the launcher is exercised on a machine without one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from harness.util.errors import HarnessError

Launcher = Callable[..., Any]  # subprocess.Popen-like: (cmd, env=...) -> object with .wait()


def parse_devices(text: str, cuda_count: int) -> list[str]:
    """Comma-separated GPU indices (each at most once, each present) or `cpu` entries."""
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices:
        raise HarnessError("--devices: give GPU indices like 0,1,2,3 (or cpu,cpu for CPU workers)")
    gpus = [d for d in devices if d != "cpu"]
    bad = [d for d in gpus if not d.isdigit()]
    if bad:
        raise HarnessError(f"--devices {text}: {bad[0]!r} is neither a GPU index nor 'cpu'")
    if len(set(gpus)) != len(gpus):
        raise HarnessError(f"--devices {text}: a GPU is named twice")
    missing = [d for d in gpus if int(d) >= cuda_count]
    if missing:
        have = f"GPUs 0-{cuda_count - 1}" if cuda_count else "no CUDA GPU"
        raise HarnessError(
            f"--devices {text}: GPU {missing[0]} is not here ({have}); "
            "use --devices cpu,cpu for CPU workers"
        )
    return devices


def launch_workers(
    args: Sequence[str], devices: Sequence[str], launcher: Launcher = subprocess.Popen
) -> int:
    """Start `python -m harness <args>` once per device and wait for all; the worst exit code
    wins, so a crashed worker is never hidden behind a successful one."""
    procs = []
    for i, dev in enumerate(devices):
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = "" if dev == "cpu" else dev
        print(f"worker {i}: {'CPU' if dev == 'cpu' else f'GPU {dev}'}", flush=True)
        procs.append(launcher([sys.executable, "-m", "harness", *args], env=env))
    codes = [p.wait() for p in procs]
    return max(codes, key=lambda c: (c != 0, abs(c)))
