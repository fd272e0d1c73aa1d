"""A `harness run` killed mid-trial (SIGKILL: no cleanup runs) resumes cleanly when started again:
finished trials and their runs stay, the killed trial is FAIL in Optuna and KILLED in MLflow, and
its configuration is run again, so the study still ends with `n_trials` counted trials."""

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
from tiny_study import grid_study_yaml, harness_env


def _trials(db: Path) -> dict[int, tuple[str, bool]]:
    """{number: (state, has an MLflow run)} read straight from Optuna's sqlite tables."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=1) as con:
            rows = con.execute(
                "select t.number, t.state, exists(select 1 from trial_user_attributes u where"
                " u.trial_id = t.trial_id and u.key = 'mlflow_run_id') from trials t"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return {}
    return {n: (state, bool(run)) for n, state, run in rows}


def _kill_during_second_trial(cmd: list[str], tmp_path: Path, timeout: float = 120) -> None:
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=harness_env(), stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            trials = _trials(tmp_path / "optuna.db")
            if trials.get(0, ("",))[0] == "COMPLETE" and trials.get(1) == ("RUNNING", True):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(
        f"never saw trial 0 COMPLETE and trial 1 RUNNING: {_trials(tmp_path / 'optuna.db')}"
    )


@pytest.mark.slow
def test_killed_study_resumes_and_finishes(tmp_path, toy_tiny):
    path = tmp_path / "resume.yaml"
    path.write_text(grid_study_yaml(tmp_path, name="resume", grid=[0.0, 0.25, 0.5], max_steps=20))
    cmd = [sys.executable, "-m", "harness", "run", str(path)]

    _kill_during_second_trial(cmd, tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp_id = client.get_experiment_by_name("resume").experiment_id
    before = {r.data.tags["harness.trial"]: r for r in client.search_runs([exp_id])
              if r.data.tags.get("harness.role") == "trial"}  # fmt: skip
    assert before["0"].info.status == "FINISHED" and before["1"].info.status == "RUNNING"

    again = subprocess.run(
        cmd, cwd=tmp_path, env=harness_env(), capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"], states
    killed = study.trials[1]
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 1)
    assert retry.params == killed.params
    done = [
        t.params["data.sources.replay.weight"] for t in study.trials if t.state.name == "COMPLETE"
    ]
    assert sorted(done) == [0.0, 0.25, 0.5]  # the killed configuration ran; none twice

    runs = client.search_runs([exp_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "study"]
    children = {r.data.tags["harness.trial"]: r for r in runs
                if r.data.tags.get("harness.role") == "trial"}  # fmt: skip
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(children) == ["0", "1", "2", "3"]
    assert {c.data.tags["mlflow.parentRunId"] for c in children.values()} == {
        parents[0].info.run_id
    }
    assert children["0"].info.run_id == before["0"].info.run_id
    assert children["0"].data.metrics == before["0"].data.metrics
    assert (
        children["1"].info.status == "KILLED" and children["1"].data.tags["harness.state"] == "FAIL"
    )
    assert all(c.info.status == "FINISHED" for n, c in children.items() if n != "1")
