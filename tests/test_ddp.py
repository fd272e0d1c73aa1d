"""`harness train` under torchrun (2 CPU processes, gloo): each rank trains on its own share of
every optimizer step's batches, so two ranks with one micro-batch each see exactly what one
process with grad_accum 2 sees, and the per-step global token-mean loss must match."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

import pytest
from test_resume import harness_env

EXPERIMENT = """
name: ddp
model: toy:tiny
data:
  budget: 96
  max_length: 192
  sources:
    - {name: qa, path: "toy:sft/qa.jsonl", weight: 1.0}
train: {learning_rate: 0.003, max_steps: 6, batch_tokens: 512, warmup_ratio: 0.0}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _curve(out) -> list[float]:
    result = json.loads((out / "train_result.json").read_text())
    assert result["status"] == "ok" and result["steps"] == 6
    return [loss for _, loss in result["loss_curve"]]


@pytest.mark.slow
def test_two_ranks_match_one_process_with_the_same_global_batch(tmp_path, toy_tiny):
    path = tmp_path / "ddp.yaml"
    path.write_text(textwrap.dedent(EXPERIMENT))
    harness = ["-m", "harness", "train", str(path)]
    single = [sys.executable, *harness, "--set", "train.grad_accum=2", "--out", "single"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    ddp = [*torchrun, "--master_port", str(_free_port()), *harness, "--out", "ddp"]
    for cmd in (single, ddp):
        done = subprocess.run(
            cmd, cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    one, two = _curve(tmp_path / "single"), _curve(tmp_path / "ddp")
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)
    assert one[-1] < one[0]  # it trained
    assert (tmp_path / "ddp" / "adapter").is_dir() or (tmp_path / "ddp" / "model").is_dir()
