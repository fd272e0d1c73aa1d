"""Shared test setup: offline, one CPU thread (tiny models are far slower with thread contention),
and session-scoped fixtures for the toy world."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HARNESS_CACHE", str(Path(__file__).resolve().parents[1] / ".harness-cache"))
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_tiny():
    """The tiny toy world (0.16M-parameter Llama + data), built once per cache."""
    from harness.models.toy.build import build_toy_world

    return build_toy_world("tiny")
