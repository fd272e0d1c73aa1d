"""Where ../shared/realworld lives (real tokenizers, chat templates, configs and benchmark rows):
beside the repository as CI checks it out, or wherever `HARNESS_SHARED_DIR` points (a git worktree
elsewhere). Tests that need it skip with the reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(
    os.environ.get("HARNESS_SHARED_DIR") or Path(__file__).resolve().parents[1].parent / "shared"
)
REALWORLD = SHARED / "realworld"
needs_realworld = pytest.mark.skipif(
    not REALWORLD.is_dir(),
    reason=f"{REALWORLD} is absent: check out shared/ beside the repo or set HARNESS_SHARED_DIR",
)
