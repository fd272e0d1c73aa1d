"""Fault drills: real `harness run` workers killed (SIGKILL) at each phase of a trial,
interrupted with Ctrl-C (SIGINT), and cut off from their tracking store. Each drill ends with the
study whole: every grid point COMPLETE exactly once, every other trial failed *and* queued again
(so not counted), no trial left RUNNING, and MLflow agreeing with Optuna on every run.

Kills that no outside observer could time (between claiming a trial and its first heartbeat,
between MLflow's COMPLETE and Optuna's record) use the `HARNESS_TEST_KILL_AT` hook of
`harness.study.run._drill`."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from tiny_study import grid_study_yaml, harness_env, start_worker

GRID = [0.0, 0.5]
PARAM = "data.sources.replay.weight"
RUN_TIMEOUT = 300


def _study_file(tmp_path: Path, name: str) -> list[str]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(grid_study_yaml(tmp_path, name=name, grid=GRID, max_steps=4))
    return [sys.executable, "-m", "harness", "run", str(path)]


def _run(cmd: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd,
        cwd=tmp_path,
        env=harness_env() | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def _running_with_run(db: Path) -> bool:
    """A trial is RUNNING in Optuna and has its MLflow run (so it is training or evaluating)."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return bool(
                con.execute(
                    "select 1 from trials t join trial_user_attributes u on u.trial_id ="
                    " t.trial_id and u.key = 'mlflow_run_id' where t.state = 'RUNNING'"
                ).fetchall()
            )
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return False


def _wait_for_a_running_trial(proc: subprocess.Popen, db: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if _running_with_run(db):
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no trial started: {proc.communicate()[0][-3000:]}")


def _assert_whole(tmp_path: Path, name: str, logs: str) -> None:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")
    trials = study.get_trials()
    states = [(t.number, t.state.name, t.params.get(PARAM)) for t in trials]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.params[PARAM] for t in complete) == GRID, (states, logs[-4000:])
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    assert all(
        t.state.name == "FAIL" and t.number in retried for t in trials if t not in complete
    ), states

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
    optuna_state = {t._trial_id: t.state.name for t in trials}
    for r in children:
        state = optuna_state[int(r.data.tags["optuna.trial_id"])]
        assert r.data.tags.get("harness.state") == state, (r.data.tags, states)
        expected = "FINISHED" if state == "COMPLETE" else "KILLED"
        assert r.info.status == expected, (
            r.info,
            r.data.tags.get("harness.fail_reason"),
            logs[-3000:],
        )
    finished = sorted(
        int(r.data.tags["optuna.trial_id"]) for r in children if r.info.status == "FINISHED"
    )
    assert finished == sorted(t._trial_id for t in complete)


@pytest.mark.slow
def test_killed_at_every_phase_the_study_completes_once(tmp_path, toy_tiny):
    cmd = _study_file(tmp_path, "kills")
    logs = ""
    for phase in ("claimed", "training", "evaluating", "recorded"):
        killed = _run(cmd, tmp_path, HARNESS_TEST_KILL_AT=phase)
        logs += killed.stdout
        assert killed.returncode == -signal.SIGKILL, (phase, killed.stdout[-3000:])
    last = _run(cmd, tmp_path)
    logs += last.stdout
    assert last.returncode == 0, last.stdout[-3000:]
    _assert_whole(tmp_path, "kills", logs)
    assert "fatal: not a git repository" not in logs


@pytest.mark.slow
def test_ctrl_c_and_a_tracking_outage_cost_no_grid_point(tmp_path, toy_tiny):
    cmd = _study_file(tmp_path, "outage")
    proc = start_worker(cmd, tmp_path)
    _wait_for_a_running_trial(proc, tmp_path / "optuna.db")
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out[-3000:]
    study = optuna.load_study(study_name="outage", storage=f"sqlite:///{tmp_path}/optuna.db")
    interrupted = [t for t in study.get_trials() if t.state.name == "FAIL"]
    assert len(interrupted) == 1 and "interrupted" in interrupted[0].user_attrs["fail_reason"]

    # The tracking store is locked (as by a long write elsewhere) for longer than MLflow waits
    # (20 s) while the next run's first trial is under way.
    proc = start_worker(cmd, tmp_path)
    _wait_for_a_running_trial(proc, tmp_path / "optuna.db")
    with sqlite3.connect(tmp_path / "mlflow.db", timeout=30, isolation_level=None) as lock:
        lock.execute("begin exclusive")
        time.sleep(25)
        lock.execute("rollback")
    out += proc.communicate(timeout=RUN_TIMEOUT)[0]
    assert proc.returncode == 0, out[-3000:]
    _assert_whole(tmp_path, "outage", out)
