"""Bad input anywhere gives exit code 2 and one line naming the file, line or field, never a
traceback (unless --debug). Every case goes through `harness.cli.main`, as a user would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cli import EXIT_ERROR, main

GOOD_ROW = {
    "messages": [
        {"role": "user", "content": "What is the capital of Gafa?"},
        {"role": "assistant", "content": "The capital of Gafa is Sovus."},
    ]
}


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_tiny) -> Iterator[Path]:
    """A small valid experiment on the tiny toy model, with every output kept in tmp_path.
    Optuna's INFO line ("A new study created") is not ours to judge here, and its handler keeps
    a stream pytest has closed by then, so only its warnings are let through."""
    import optuna

    monkeypatch.chdir(tmp_path)
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _write_jsonl(tmp_path / "good.jsonl", [json.dumps(GOOD_ROW)] * 4)
    (tmp_path / "exp.yaml").write_text(
        "name: bad-input\n"
        "model: toy:tiny\n"
        "data:\n"
        "  budget: 4\n"
        "  sources:\n"
        "    - {name: sft, path: data.jsonl}\n"
        "train: {max_steps: 1}\n"
        "eval: {suites: [target], limit: 2}\n"
        "objectives: [{metric: target/accuracy}]\n"
        f"tracking_uri: sqlite:///{tmp_path / 'mlflow.db'}\n"
        f"storage: sqlite:///{tmp_path / 'optuna.db'}\n"
    )
    yield tmp_path
    optuna.logging.set_verbosity(level)


def _fails(capsys: pytest.CaptureFixture, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_ERROR, err
    # Progress bars (a model loading) may come first; the error itself is one, last, line.
    lines = [line for line in err.splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _train_with_data(workdir: Path, capsys, lines: list[str], *needles: str) -> str:
    _write_jsonl(workdir / "data.jsonl", lines)
    argv = ["train", str(workdir / "exp.yaml"), "--out", str(workdir / "out")]
    return _fails(capsys, argv, "data.jsonl", *needles)


GOOD = json.dumps(GOOD_ROW)


def test_broken_jsonl_names_the_line(workdir, capsys):
    _train_with_data(workdir, capsys, [GOOD, '{"messages": [', GOOD], "line 2", "broken JSON")


def test_unknown_role(workdir, capsys):
    row = {"messages": [{"role": "human", "content": "hi"}, GOOD_ROW["messages"][1]]}
    _train_with_data(
        workdir, capsys, [GOOD, GOOD, json.dumps(row)], "line 3", "messages[0].role", "human"
    )


def test_empty_assistant_turn(workdir, capsys):
    row = {"messages": [GOOD_ROW["messages"][0], {"role": "assistant", "content": "  "}]}
    _train_with_data(workdir, capsys, [json.dumps(row)], "line 1", "messages[1].content", "empty")


def test_missing_assistant_turn(workdir, capsys):
    row = {"messages": [GOOD_ROW["messages"][0]]}
    _train_with_data(workdir, capsys, [GOOD, json.dumps(row)], "line 2", "no assistant turn")


def test_wrong_field_type(workdir, capsys):
    row = {"messages": [{"role": "user", "content": 5}, GOOD_ROW["messages"][1]]}
    _train_with_data(workdir, capsys, [json.dumps(row)], "line 1", "messages[0].content", "int")


def test_wrong_type_for_prompt_completion(workdir, capsys):
    row = {"prompt": ["not", "messages"], "completion": "x"}
    _train_with_data(workdir, capsys, [json.dumps(row)], "line 1", "prompt[0]")


def test_missing_data_file(workdir, capsys):
    argv = ["train", str(workdir / "exp.yaml"), "--set", "data.sources.sft.path=nope.jsonl"]
    _fails(capsys, argv, "nope.jsonl", "not found")


def test_invalid_yaml_names_the_line(workdir, capsys):
    bad = workdir / "broken.yaml"
    bad.write_text("name: x\ndata:\n  sources: [\n    {name: a, path: b.jsonl\n  budget: 3\n")
    _fails(capsys, ["train", str(bad)], "broken.yaml", "line", "invalid YAML")


def test_missing_experiment_file(workdir, capsys):
    _fails(capsys, ["run", str(workdir / "absent.yaml")], "absent.yaml", "not found")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.learning_rate=-1", "train.learning_rate"),
        ("data.sources.sft.weight=-2", "data.sources.sft.weight"),
        ("eval.dataset=klingon", "eval.dataset"),
        ("train.bogus=1", "train.bogus"),
    ],
)
def test_schema_value_names_the_field_path(workdir, capsys, override, field):
    _fails(capsys, ["train", str(workdir / "exp.yaml"), "--set", override], "exp.yaml", field)


def test_unknown_suite_before_training(workdir, capsys):
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    argv = ["run", str(workdir / "exp.yaml"), "--set", "eval.suites=[bogus]"]
    _fails(capsys, argv, "bogus", "known suites")
    assert not (workdir / "runs").exists()


def test_unknown_suite_in_eval(workdir, capsys):
    _fails(capsys, ["eval", "--model", "toy:tiny", "--suites", "bogus"], "bogus")


def test_unknown_lm_eval_task(workdir, capsys):
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    argv = [
        "run",
        str(workdir / "exp.yaml"),
        "--set",
        "eval.suites=[forgetting]",
        "--set",
        "eval.tasks=[no_such_task_xyz]",
        "--set",
        "objectives=[{metric: forgetting/delta}]",
    ]
    _fails(capsys, argv, "eval.tasks", "no_such_task_xyz")
    assert not (workdir / "runs").exists()


def test_missing_model_path(workdir, capsys):
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    missing = workdir / "no-model"
    argv = ["train", str(workdir / "exp.yaml"), "--set", f"model={missing}"]
    _fails(capsys, argv, "no-model")


def test_model_dir_without_config(workdir, capsys):
    (workdir / "empty-model").mkdir()
    _fails(capsys, ["eval", "--model", str(workdir / "empty-model")], "empty-model", "config.json")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://user@127.0.0.1:1/db",  # driver present: connection refused
        "postgresql://user@127.0.0.1:1/db",  # SQLAlchemy 2's default driver, psycopg 3: absent
    ],
)
def test_unreachable_storage_fails_fast(workdir, capsys, url):
    import time

    pytest.importorskip("psycopg2")
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    started = time.monotonic()
    _fails(capsys, ["run", str(workdir / "exp.yaml"), "--storage", url], "127.0.0.1:1/db")
    assert time.monotonic() - started < 20


def test_data_lint_missing_file(workdir, capsys):
    _fails(capsys, ["data", "lint", str(workdir / "absent.jsonl")], "absent.jsonl", "not found")


def test_data_lint_unknown_suite(workdir, capsys):
    argv = ["data", "lint", str(workdir / "good.jsonl"), "--suites", "bogus"]
    _fails(capsys, argv, "bogus")


def test_data_lint_unusable_file_type(workdir, capsys):
    (workdir / "data.csv").write_text("a,b\n")
    _fails(capsys, ["data", "lint", str(workdir / "data.csv")], "data.csv", ".csv")


def test_debug_shows_the_traceback(workdir, capsys):
    code = main(["--debug", "train", str(workdir / "absent.yaml")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert "Traceback" in err and "absent.yaml" in err.splitlines()[-1]


def test_default_objective_needs_a_base_compared_suite(workdir, capsys):
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    argv = ["run", str(workdir / "exp.yaml"), "--set", "objectives=[]"]
    _fails(capsys, argv, "objectives: none given", "compares a metric with the base", "eval.suites")
    assert not (workdir / "runs").exists()


def test_resuming_with_other_objectives_fails_before_evaluating(workdir, capsys):
    import optuna

    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    earlier = optuna.create_study(study_name="bad-input", storage=storage, direction="maximize")
    earlier.set_metric_names(["target/accuracy"])
    other = "objectives=[{metric: target/accuracy, direction: minimize}]"
    code = main(["run", str(workdir / "exp.yaml"), "--set", other])
    out, err = capsys.readouterr()
    assert code == EXIT_ERROR, err
    assert err.strip().splitlines() == [
        "error: study bad-input: exists with objectives target/accuracy (maximize), not "
        "target/accuracy (minimize); keep them, or choose a new study name"
    ]
    assert "base model" not in out  # refused before the base evaluation


def test_storage_password_is_never_printed(workdir, capsys):
    pytest.importorskip("psycopg2")
    _write_jsonl(workdir / "data.jsonl", [GOOD] * 4)
    url = "postgresql+psycopg2://user:hunter2@127.0.0.1:1/db"
    line = _fails(
        capsys, ["run", str(workdir / "exp.yaml"), "--storage", url], "user:***@127.0.0.1"
    )
    assert "hunter2" not in line


def test_unknown_objective_metric_is_refused_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A typo in an objective is a config problem: refused before the toy world is built (over
    five minutes on a fresh machine), a tokenizer is loaded or a data file is read."""
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text(
        "name: typo\nmodel: toy\n"
        "data: {sources: [{name: sft, path: 'toy:sft/sft.jsonl'}]}\n"
        "eval: {suites: [forgetting, refusal]}\n"
        "objectives: [{metric: refusal/harmful_refusal_rat}]\n"
    )
    _fails(capsys, ["run", "exp.yaml"], "refusal/harmful_refusal_rat", "is not produced")
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))
    assert not (tmp_path / "mlflow.db").exists()
