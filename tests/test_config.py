"""Experiment files: validated up front, errors name the field, overrides and trial params."""

from __future__ import annotations

import textwrap

import pytest

from harness.config.load import load_experiment, resolve_tracking_uri, with_params
from harness.config.schema import Constraint
from harness.util.errors import HarnessError

BASE = """
name: t
model: toy:tiny
data:
  sources:
    - {name: qa, path: "toy:sft/qa.jsonl"}
    - {name: replay, path: data/replay.jsonl, weight: 0.2}
train: {learning_rate: 0.001}
search:
  data.sources.replay.weight: {type: categorical, choices: [0.0, 0.2]}
  train.learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}
objectives: [{metric: target/accuracy}, {metric: forgetting/delta}]
constraints: ["forgetting/delta >= -0.02"]
"""


def _write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_valid_experiment_loads_with_defaults(tmp_path):
    exp = load_experiment(_write(tmp_path, BASE))
    assert exp.is_toy and exp.toy_size == "tiny"
    assert exp.peft.enabled and exp.peft.target_modules == "all-linear"
    assert exp.constraints == [Constraint(metric="forgetting/delta", op=">=", value=-0.02)]
    assert exp.constraints[0].violation(-0.05) == pytest.approx(0.03)
    assert exp.constraints[0].violation(0.0) <= 0
    assert exp.base_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rate=0", "train.learning_rate: must be > 0"),
        ("data.sources.replay.weight=-1", "data.sources.replay.weight: must be >= 0"),
        ("train.bogus=1", "train.bogus: is not a known field"),
        ("sampler=annealing", "sampler: must be one of"),
        ("train.scheduler=step", "train.scheduler: must be one of"),
        ("data.sources.qa.weight=0", "at least one source needs a weight > 0"),
    ],
)
def test_bad_values_name_the_field(tmp_path, override, message):
    path = _write(tmp_path, BASE)
    extra = ["data.sources.replay.weight=0"] if "qa.weight=0" in override else []
    with pytest.raises(HarnessError) as e:
        load_experiment(path, [override, *extra])
    assert str(e.value).startswith(str(path)) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_invalid_yaml_names_the_line(tmp_path):
    path = _write(tmp_path, "name: t\ndata:\n  sources: [\n    {name: a\n")
    with pytest.raises(HarnessError, match=r"exp.yaml: line \d+: invalid YAML"):
        load_experiment(path)


def test_missing_file_and_bad_override_syntax(tmp_path):
    with pytest.raises(HarnessError, match="experiment file not found"):
        load_experiment(tmp_path / "nope.yaml")
    with pytest.raises(HarnessError, match="expected KEY.PATH=VALUE"):
        load_experiment(_write(tmp_path, BASE), ["train.learning_rate"])
    with pytest.raises(HarnessError, match="no list item named 'nosuch'"):
        load_experiment(_write(tmp_path, BASE), ["data.sources.nosuch.weight=1"])


def test_search_path_must_name_a_field(tmp_path):
    text = BASE.replace("  train.learning_rate: {", "  train.learning_rat: {")
    with pytest.raises(HarnessError, match="'train.learning_rat' names nothing"):
        load_experiment(_write(tmp_path, text))


def test_search_space_checks(tmp_path):
    bad = BASE.replace("low: 0.0001, high: 0.01", "low: 0.01, high: 0.0001")
    with pytest.raises(HarnessError, match="needs low < high"):
        load_experiment(_write(tmp_path, bad))
    with pytest.raises(HarnessError, match="sampler 'grid' needs every search dimension"):
        load_experiment(_write(tmp_path, BASE), ["sampler=grid"])


def test_overrides_and_trial_params_are_revalidated(tmp_path):
    exp = load_experiment(_write(tmp_path, BASE), ["train.learning_rate=5e-4", "peft=none"])
    assert exp.train.learning_rate == 5e-4 and not exp.peft.enabled
    trial = with_params(exp, {"data.sources.replay.weight": 0.0, "train.epochs": 2})
    assert trial.data.sources[1].weight == 0.0 and trial.train.epochs == 2
    assert exp.data.sources[1].weight == 0.2  # the original is untouched
    with pytest.raises(HarnessError, match="train.epochs: must be > 0"):
        with_params(exp, {"train.epochs": -1})


def test_relative_sqlite_uri_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("sqlite:///mlflow.db") == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("postgresql://h/db") == "postgresql://h/db"
