"""Several `harness run` workers on one study: Optuna's RDB storage hands out the trials (a real
PostgreSQL server, and sqlite), every grid point runs exactly once however many workers start
(and start again), and every trial's MLflow run lands under the one parent run. The PostgreSQL
URL carries a password: it must appear nowhere the harness logs, writes or prints."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from postgres import postgres_server
from tiny_study import grid_study_yaml, start_worker

WORKERS = 3
ROUNDS = 2
GRID = [0.0, 0.1, 0.2, 0.3]
PASSWORD = "hunter2-not-logged"


@pytest.fixture(scope="module")
def postgres_url():
    try:
        with postgres_server() as url:
            yield url.replace("postgres@", f"postgres:{PASSWORD}@")  # trust auth ignores it
    except RuntimeError as e:
        if os.environ.get("CI"):  # CI installs PostgreSQL (.ci/run): its absence is a failure
            pytest.fail(f"no PostgreSQL server in CI: {e}")
        pytest.skip(f"no PostgreSQL server for the multi-worker test: {e}")


def _workers(cmd: list[str], cwd) -> str:
    procs = [start_worker(cmd, cwd) for _ in range(WORKERS)]
    try:
        outputs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return "".join(outputs)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_workers_run_every_grid_point_once(backend, tmp_path, toy_tiny, request):
    storage = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path}/optuna.db"
    )
    name = f"workers-{backend}"
    path = tmp_path / "workers.yaml"
    path.write_text(grid_study_yaml(tmp_path, name=name, grid=GRID, max_steps=4, storage=storage))
    cmd = [sys.executable, "-m", "harness", "run", str(path)]
    logs = "".join(_workers(cmd, tmp_path) for _ in range(ROUNDS))  # the 2nd round finds it done

    study = optuna.load_study(study_name=name, storage=storage)
    trials = [(t.state.name, t.params, t.user_attrs.get("fail_reason")) for t in study.trials]
    notes = [line for line in logs.splitlines() if line.startswith(("trial ", "error"))]
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(GRID), (trials, notes)
    assert sorted(t.params["data.sources.replay.weight"] for t in study.trials) == GRID

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "study"]
    children = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    assert sorted(int(c.data.tags["harness.trial"]) for c in children) == list(range(len(GRID)))
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {
        c.info.run_id for c in children
    }
    assert all(c.info.status == "FINISHED" for c in children)

    if backend == "postgresql":
        resolved = client.download_artifacts(children[0].info.run_id, "config/resolved.yaml")
        written = Path(resolved).read_text()
        assert "postgres:***@" in written
        logged = [str(r.data.params) + str(r.data.tags) for r in runs]
        assert not [text for text in [logs, written, *logged] if PASSWORD in text]
