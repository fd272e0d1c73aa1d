"""Fast checks of the reliability rules: credentials redacted, every problem of an experiment
file listed, exit codes, atomic writes with normal permissions, best trials under constraints,
stale-trial rules and where the default storage goes. The multi-process drills are in
tests/test_drills.py."""

from __future__ import annotations

import os
import sqlite3
import stat
import textwrap
from pathlib import Path

import mlflow
import optuna
import pytest

from harness.cli import EXIT_ERROR, EXIT_INTERNAL, main
from harness.config.load import default_storage, load_experiment
from harness.study import tracking
from harness.util.errors import HarnessError
from harness.util.files import replaced_atomically, write_atomic
from harness.util.redact import redact
from harness.util.retry import interrupted, transient

SECRET = "s3cr3t-pw"

EXPERIMENT = """
name: rel
model: toy:tiny
data:
  sources:
    - {name: qa, path: "toy:sft/qa.jsonl"}
eval: {suites: [target]}
objectives: [{metric: target/accuracy}]
"""


def _write(tmp_path: Path, text: str = EXPERIMENT, extra: str = "") -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra))
    return path


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        (
            f"postgresql+psycopg2://alice:{SECRET}@db:5432/optuna",
            "postgresql+psycopg2://alice:***@db",
        ),
        (f"https://bob:{SECRET}@mlflow.example.com/", "https://bob:***@mlflow.example.com/"),
        (f"mysql://:{SECRET}@h/db", "mysql://:***@h/db"),
        (f"postgresql://h/db?user=a&password={SECRET}&sslmode=require", "password=***&sslmode"),
    ],
)
def test_redact_hides_credentials_in_urls(url, kept):
    assert SECRET not in redact(f"storage {url}: cannot open") and kept in redact(url)


def test_redact_leaves_plain_text_alone():
    text = "sqlite:////tmp/a:b/optuna.db and http://host:5000/x and ratio 1:2@3"
    assert redact(text) == text


def test_mlflow_params_and_tags_are_redacted(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    url = f"postgresql://alice:{SECRET}@db/optuna"
    with mlflow.start_run() as run:
        tracking.log_params({"study.storage": url, "study.search": {"where": url}})
        tracking.end_run("FAIL", f"OperationalError: could not reach {url}")
    data = mlflow.get_run(run.info.run_id).data
    assert SECRET not in str(data.params) + str(data.tags)
    assert data.params["study.storage"] == "postgresql://alice:***@db/optuna"


def test_every_problem_is_listed_one_line_each(tmp_path):
    path = _write(tmp_path, extra="train: {learning_rate: -1, epochs: 0}\nsampler: annealing\n")
    with pytest.raises(HarnessError) as e:
        load_experiment(path)
    lines = str(e.value).splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert {"train.learning_rate", "train.epochs", "sampler"} == {
        line.split(": ")[1] for line in lines
    }


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            "search: {train.learning_rate: {type: float, low: 0.0001, high: 0.1, log: true, step: 0.001}}",
            "log-scale search cannot have a step",
        ),
        (
            "search: {name: {type: categorical, choices: [a, b]}}",
            "'name' is a setting of the study",
        ),
        ("search: {storage: {type: categorical, choices: ['sqlite:///a.db']}}", "'storage'"),
        ("search: {tracking_uri: {type: categorical, choices: [x]}}", "'tracking_uri'"),
        ("search: {model: {type: categorical, choices: [toy, toy:tiny]}}", "'model'"),
    ],
)
def test_search_checks(tmp_path, extra, needle):
    with pytest.raises(HarnessError, match=needle):
        load_experiment(_write(tmp_path, extra=extra))


def test_two_search_problems_are_two_lines(tmp_path):
    extra = "search:\n  name: {type: categorical, choices: [a]}\n  train.nope: {type: categorical, choices: [1]}\n"
    with pytest.raises(HarnessError) as e:
        load_experiment(_write(tmp_path, extra=extra))
    assert len(str(e.value).splitlines()) == 2, str(e.value)


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../up"])
def test_study_names_cannot_leave_their_folder(tmp_path, name):
    with pytest.raises(HarnessError, match="name: must match"):
        load_experiment(_write(tmp_path, EXPERIMENT.replace("name: rel", f"name: '{name}'")))


def test_non_utf8_experiment_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: café\n".encode("latin-1"))
    assert main(["train", str(path)]) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: not UTF-8 text (byte 9); save it as UTF-8"]


def test_internal_error_is_one_line_exit_3(tmp_path, capsys, monkeypatch):
    import harness.config.load

    def broken(*args, **kwargs):
        raise ZeroDivisionError(f"division by zero near postgresql://u:{SECRET}@h/db")

    monkeypatch.setattr(harness.config.load, "load_experiment", broken)
    assert main(["train", str(_write(tmp_path))]) == EXIT_INTERNAL
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ZeroDivisionError" in err[0], err
    assert "run with --debug for the traceback" in err[0] and SECRET not in err[0]


def test_write_atomic_respects_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "report.md", "hello")
        with replaced_atomically(tmp_path / "model") as tmp:
            (tmp / "weights.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    assert (tmp_path / "model" / "weights.bin").read_bytes() == b"w"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "report.md"]


def test_model_folder_is_replaced_whole_or_not_at_all(tmp_path):
    with replaced_atomically(tmp_path / "model") as tmp:
        (tmp / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError), replaced_atomically(tmp_path / "model") as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-save")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["old.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_default_storage_sits_by_the_tracking_db_or_the_experiment_file(tmp_path):
    assert default_storage(f"sqlite:///{tmp_path}/t/mlflow.db", tmp_path / "exp") == (
        f"sqlite:///{tmp_path}/t/optuna.db"
    )
    assert default_storage("http://mlflow:5000", tmp_path / "exp") == (
        f"sqlite:///{tmp_path}/exp/optuna.db"
    )


def test_transient_errors_are_told_apart():
    import sqlalchemy.exc

    locked = sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked"))
    assert transient(locked)
    assert transient(RuntimeError("API request failed with error code 503 != 200"))
    assert not transient(ValueError("data.max_length: must be > 8"))
    assert not transient(RuntimeError("loss is NaN at step 5000"))


def test_a_ctrl_c_inside_a_library_call_is_still_an_interrupt():
    """SIGINT during a sqlite commit comes out of SQLAlchemy as "database is locked", raised
    while handling the KeyboardInterrupt: the worker must stop (and give the trial back), not
    retry it as an infrastructure error and go on."""

    def commit():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")  # noqa: B904

    try:
        commit()
    except RuntimeError as e:
        assert interrupted(e) and transient(e)
    assert not interrupted(RuntimeError("database is locked"))


def test_best_trial_honours_constraints_for_every_sampler():
    from harness.study.table import best_trials

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler())
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for value, violation in [(0.9, 0.1), (0.5, -0.2), (0.7, 0.0)]:
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": value},
                distributions=dist,
                value=value,
                user_attrs={"constraints": [violation]},
            )
        )
    assert [t.value for t in best_trials(study)] == [0.7]  # 0.9 breaks its constraint


def test_a_trial_claimed_without_a_heartbeat_is_failed_and_retried(tmp_path):
    from harness.study.storage import _fail_stale_trials, storage_for

    exp = load_experiment(_write(tmp_path, extra=f"storage: sqlite:///{tmp_path}/optuna.db\n"))
    storage, _ = storage_for(exp)
    study = optuna.create_study(study_name="rel", storage=storage, direction="maximize")
    study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # its worker dies here
    with sqlite3.connect(tmp_path / "optuna.db") as con:  # ... long ago
        con.execute("update trials set datetime_start = '2000-01-01 00:00:00'")
    _fail_stale_trials(study)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING"]
    assert study.get_trials()[1].params == study.get_trials()[0].params


def test_reconcile_touches_only_its_own_study(tmp_path):
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp_id = client.create_experiment("same-name")

    def trial_run(uid: str) -> str:
        tags = {
            tracking.ROLE: "trial",
            tracking.STUDY: "same-name",
            tracking.TRIAL: "0",
            "optuna.trial_id": "1",
            tracking.STUDY_UID: uid,
        }
        return client.create_run(exp_id, tags=tags).info.run_id

    mine, elsewhere = trial_run("here"), trial_run("elsewhere")  # same name, number and id
    assert tracking.reconcile(exp_id, "here", {1: "FAIL"}) == 1
    assert client.get_run(mine).info.status == "KILLED"
    assert client.get_run(mine).data.tags[tracking.STATE] == "FAIL"
    assert client.get_run(elsewhere).info.status == "RUNNING"
