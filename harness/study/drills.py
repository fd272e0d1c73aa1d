"""Fault drills: tests make a worker fail at a named phase of a trial, to prove the study
survives kills, Ctrl-C, crashes and stalls where they really happen."""

from __future__ import annotations

import os
import signal
import time


def drill(phase: str) -> None:
    """Fault drills (tests/test_drills.py, tests/test_watchdog.py): `HARNESS_TEST_KILL_AT=<phase>`
    kills this worker with SIGKILL at that point of a trial, where no outside observer could time
    it; `HARNESS_TEST_STALL_AT=<phase>` makes it hang there."""
    if os.environ.get("HARNESS_TEST_KILL_AT") == phase:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("HARNESS_TEST_STALL_AT") == phase:  # a loop that never ends, in Python
        while True:
            time.sleep(0.05)
