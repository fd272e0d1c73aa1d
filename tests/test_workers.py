"""Several `harness run` workers on one study: Optuna's RDB storage hands out the trials (a real
PostgreSQL server, and sqlite), and every trial's MLflow run lands under the one parent run."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient
from postgres import postgres_server
from tiny_study import grid_study_yaml, harness_env

WORKERS = 2
GRID = [0.0, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def postgres_url():
    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as e:
        pytest.skip(f"no PostgreSQL server for the multi-worker test: {e}")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_workers_share_one_study_and_one_parent_run(backend, tmp_path, toy_tiny, request):
    storage = (
        request.getfixturevalue("postgres_url")
        if backend == "postgresql"
        else f"sqlite:///{tmp_path}/optuna.db"
    )
    name = f"workers-{backend}"
    path = tmp_path / "workers.yaml"
    path.write_text(grid_study_yaml(tmp_path, name=name, grid=GRID, max_steps=4, storage=storage))
    cmd = [sys.executable, "-m", "harness", "run", str(path)]
    workers = [
        subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=harness_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-3000:]

    study = optuna.load_study(study_name=name, storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * len(GRID)
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
