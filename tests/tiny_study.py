"""A small grid study on the tiny toy model, run as real `harness run` subprocesses by the
resume and multi-worker tests."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

_EXPERIMENT = """
name: {name}
model: toy:tiny
data:
  budget: 64
  max_length: 192
  sources:
    - {{name: qa, path: "toy:sft/qa.jsonl", weight: 1.0}}
    - {{name: replay, path: "toy:sft/replay.jsonl", weight: 0.0}}
train: {{learning_rate: 0.003, max_steps: {max_steps}, batch_tokens: 2048}}
eval: {{suites: [forgetting], limit: 4, batch_size: 32, max_new_tokens: 8}}
search:
  data.sources.replay.weight: {{type: grid, choices: {grid}}}
sampler: grid
pruner: none
n_trials: {n}
tracking_uri: sqlite:///{tmp}/mlflow.db
storage: {storage}
output_dir: {tmp}/runs
"""


def grid_study_yaml(
    tmp: Path, *, name: str, grid: list[float], max_steps: int, storage: str | None = None
) -> str:
    """One trial per grid value of the replay weight; sqlite storage in `tmp` by default."""
    return textwrap.dedent(
        _EXPERIMENT.format(
            name=name,
            grid=grid,
            n=len(grid),
            max_steps=max_steps,
            tmp=tmp,
            storage=storage or f"sqlite:///{tmp}/optuna.db",
        )
    )


def harness_env() -> dict[str, str]:
    """One thread per worker and a 2 s heartbeat, so a dead worker's trial is stale after 6 s
    (a restarted worker takes longer than that to start), while a live worker on a loaded
    2-core machine never misses three beats in a row."""
    return os.environ | {
        "OMP_NUM_THREADS": "1",
        "HARNESS_HEARTBEAT_SECONDS": "2",
        "MLFLOW_ENABLE_TELEMETRY": "false",
        "PYTHONUNBUFFERED": "1",
    }


def start_worker(cmd: list[str], cwd: Path) -> subprocess.Popen:
    """A `harness run` worker with `harness_env()`, its output (stdout and stderr) piped as text.

    Ctrl-C reaches it as from a terminal even when these tests run as a background job, whose
    shell starts them with SIGINT ignored: an ignored signal stays ignored across exec (and Python
    then never raises KeyboardInterrupt), a handled one is reset to the default."""
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            env=harness_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
