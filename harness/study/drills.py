"""Fault drills: tests make a worker fail at a named phase of a trial (HARNESS_DRILL), to prove
the study survives kills, Ctrl-C and crashes where they really happen."""

from __future__ import annotations

import os
import signal


def drill(phase: str) -> None:
    """Fault drills (tests/test_drills.py): `HARNESS_TEST_KILL_AT=<phase>` kills this worker
    with SIGKILL at that point of a trial, where no outside observer could time it."""
    if os.environ.get("HARNESS_TEST_KILL_AT") == phase:
        os.kill(os.getpid(), signal.SIGKILL)
