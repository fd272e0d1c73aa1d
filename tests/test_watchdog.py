"""A stalled evaluation fails its trial with a one-line reason and every thread's stack, instead
of hanging the study (`eval.timeout`, `harness.util.watchdog.deadline`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import optuna
import pytest
from tiny_study import grid_study_yaml, harness_env

from harness.util.errors import HarnessError
from harness.util.watchdog import deadline


def spin_forever() -> None:
    while True:
        time.sleep(0.01)


def test_a_stalled_block_fails_with_its_name_and_every_threads_stack(tmp_path):
    stacks = tmp_path / "eval" / "stalled-stacks.txt"
    started = time.monotonic()
    with (
        pytest.raises(HarnessError) as err,
        deadline(0.5, "trial 2: evaluation (eval.timeout)", stacks=stacks),
    ):
        spin_forever()
    assert time.monotonic() - started < 5
    assert str(err.value) == (
        f"trial 2: evaluation (eval.timeout): still running after 0.5 s; every thread's stack "
        f"is in {stacks}"
    )
    assert "in spin_forever" in stacks.read_text()


def test_a_stalled_block_in_another_thread_fails_too():
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with deadline(0.5, "in a worker thread"):
                spin_forever()
        except HarnessError as e:
            errors.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert [str(e) for e in errors] == ["in a worker thread: still running after 0.5 s"]


def test_a_block_within_its_deadline_is_left_alone(tmp_path):
    handler = signal.getsignal(signal.SIGALRM)
    with deadline(5, "quick", stacks=tmp_path / "stacks.txt"):
        time.sleep(0.05)
    assert not (tmp_path / "stacks.txt").exists()  # nothing stalled, nothing written
    with deadline(None, "no deadline"):
        pass
    assert signal.getsignal(signal.SIGALRM) is handler
    time.sleep(0.1)  # a late alarm would raise here


def test_a_block_stuck_outside_python_ends_the_process_with_the_stacks(tmp_path):
    """Sleeping in C in a thread cannot be interrupted: after the grace period faulthandler
    writes every stack and ends the process, so a study fails the trial as stale."""
    script = textwrap.dedent(
        """
        import threading, time
        from harness.util.watchdog import deadline

        def worker():
            with deadline(0.3, "stuck", grace=0.5):
                time.sleep(60)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        """
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - started < 30
    assert proc.returncode != 0
    assert "stuck: past its deadline of 0.3 s" in proc.stderr
    assert "Timeout" in proc.stderr and "in worker" in proc.stderr


@pytest.mark.slow
def test_a_stalled_trial_evaluation_becomes_a_failed_trial(tmp_path):
    """A real `harness run` whose evaluation hangs (a fault drill) records the trial as failed,
    with the reason and the stacks, and ends instead of waiting forever."""
    path = tmp_path / "stall.yaml"
    path.write_text(grid_study_yaml(tmp_path, name="stall", grid=[0.0], max_steps=2))
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path), "--set", "eval.timeout=3"],
        cwd=tmp_path,
        env=harness_env() | {"HARNESS_TEST_STALL_AT": "evaluating"},
        capture_output=True,
        text=True,
        timeout=400,
    )
    reason = "trial 0: evaluation (eval.timeout): still running after 3 s"
    assert reason in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    study = optuna.load_study(study_name="stall", storage=f"sqlite:///{tmp_path}/optuna.db")
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert reason in trial.user_attrs["fail_reason"]
    stacks = Path(tmp_path, "runs", "stall", "trial-0", "eval", "stalled-stacks.txt")
    assert "in drill" in stacks.read_text()
