"""What training settles before its first step, on any device: optimizer steps and warmup,
where collectives reduce, which attention kernel loads, and when packing is refused."""

from __future__ import annotations

import pytest
import torch

from harness.config.load import validate
from harness.models.load import load_model
from harness.sft.train import (
    _training_args,
    batching_mode,
    optimizer_steps,
    reduction_device,
    warmup_steps,
)
from harness.util.errors import HarnessError


def test_optimizer_steps_count_like_trainer():
    assert optimizer_steps(10, 1, 1.0, None, 1) == 10
    assert optimizer_steps(10, 3, 1.0, None, 1) == 4  # the last step takes one batch
    assert optimizer_steps(10, 1, 2.5, None, 1) == 25
    assert optimizer_steps(10, 1, 1.0, None, 4) == 3  # ceil(10 / 4) batches per rank
    assert optimizer_steps(10, 2, 1.0, 7, 4) == 7  # max_steps wins
    assert optimizer_steps(1, 8, 1.0, None, 1) == 1


def _exp(tmp_path, **train):
    raw = {
        "name": "t",
        "model": "toy:tiny",
        "data": {"sources": [{"name": "a", "path": "a.jsonl"}]},
        "train": train,
    }
    return validate(raw, "t.yaml", tmp_path)


def test_warmup_is_a_whole_number_of_steps(tmp_path):
    """transformers < 5 reads warmup_steps=0.05 as 0.05 steps (no warmup): we pass an int."""
    assert warmup_steps(0.05, 200) == 10 and warmup_steps(0.05, 30) == 2
    assert warmup_steps(0.0, 200) == 0
    args = _training_args(_exp(tmp_path, warmup_ratio=0.1), tmp_path, False, total_steps=45)
    assert args.warmup_steps == 5 and isinstance(args.warmup_steps, int)
    assert args.get_warmup_steps(45) == 5


def test_collectives_reduce_on_the_process_groups_device():
    assert reduction_device("nccl", 3) == torch.device("cuda", 3)
    assert reduction_device("NCCL", 0).type == "cuda"
    assert reduction_device("gloo") == torch.device("cpu")
    assert reduction_device("mpi") == torch.device("cpu")


def test_attn_implementation_reaches_the_model(tmp_path, toy_tiny):
    exp = _exp(tmp_path)
    assert exp.model_options.attn_implementation == "auto"
    raw = {**exp.raw, "model_options": {"attn_implementation": "eager"}}
    assert validate(raw, "t.yaml", tmp_path).model_options.attn_implementation == "eager"
    model = load_model("toy:tiny", attn_implementation="eager")
    assert model.config._attn_implementation == "eager"
    with pytest.raises(HarnessError, match=r"t.yaml: model_options.attn_implementation: must be"):
        validate(
            {**exp.raw, "model_options": {"attn_implementation": "fast please"}}, "t.yaml", tmp_path
        )


def test_auto_batching_groups_on_cpu(toy_tiny):
    model = load_model("toy:tiny")  # SDPA on CPU: per-example attention is exact but not fused
    assert batching_mode("auto", model) == "grouped"
    assert batching_mode("grouped", model) == "grouped"
    assert batching_mode("packed", model) == "packed"  # runs anywhere (tests/test_packing.py)
