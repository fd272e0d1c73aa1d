"""Where ../shared/realworld lives (real tokenizers, chat templates, configs and benchmark rows):
beside the repository, as CI checks it out. Tests that need it skip with the reason when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REALWORLD = Path(__file__).resolve().parents[1].parent / "shared" / "realworld"
needs_realworld = pytest.mark.skipif(
    not REALWORLD.is_dir(), reason=f"{REALWORLD} is absent: check out shared/ beside the repo"
)
