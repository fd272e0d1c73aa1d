"""Conditional search spaces: written in the experiment file, validated up front, and turned
into Optuna suggestions in one place (`study.sample`) — checked with real Optuna samplers."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from harness.config.load import load_experiment
from harness.config.search import grid_points
from harness.study.sampling import enqueue_grid, make_sampler, sample
from harness.util.errors import HarnessError

EXPERIMENT = """
name: conditional
model: toy:tiny
data:
  sources:
    - {name: qa, path: "toy:sft/qa.jsonl"}
    - {name: replay, path: "toy:sft/replay.jsonl", weight: 0.0}
search:
  peft.enabled: {type: grid, choices: [true, false]}
  train.learning_rate:
    cases:
      - {when: {peft.enabled: true}, type: float, low: 1.0e-3, high: 1.0e-2, log: true}
      - {when: {peft.enabled: false}, type: float, low: 1.0e-5, high: 1.0e-4, log: true}
  peft.r: {when: {peft.enabled: true}, type: categorical, choices: [4, 16]}
  data.sources.replay.weight: {type: grid, choices: [0.0, 0.5]}
sampler: tpe
"""


def _load(tmp_path, text=EXPERIMENT, overrides=()):
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text))
    return load_experiment(path, list(overrides))


def _sampled(exp, n):
    out = []

    def objective(trial):
        out.append(sample(trial, exp))
        return 0.0

    study = optuna.create_study(sampler=make_sampler(exp))
    if exp.sampler == "grid":
        enqueue_grid(study, exp)
    study.optimize(objective, n_trials=n)
    return out


def test_cases_pick_the_range_of_the_value_they_depend_on(tmp_path):
    for params in _sampled(_load(tmp_path), 24):
        lr = params["train.learning_rate"]
        if params["peft.enabled"]:
            assert 1e-3 <= lr <= 1e-2 and params["peft.r"] in (4, 16)
        else:  # full fine-tuning: its own range, and no LoRA rank sampled
            assert 1e-5 <= lr <= 1e-4 and "peft.r" not in params


def test_a_conditional_grid_runs_each_valid_configuration_once(tmp_path):
    text = EXPERIMENT.replace("type: float, low: 1.0e-3, high: 1.0e-2, log: true",
                              "type: grid, choices: [0.001, 0.003]")  # fmt: skip
    text = text.replace("type: float, low: 1.0e-5, high: 1.0e-4, log: true",
                        "type: grid, choices: [0.0001]").replace("type: categorical", "type: grid")  # fmt: skip
    exp = _load(tmp_path, text, ["sampler=grid"])
    points = grid_points(exp.search)
    # LoRA: 2 learning rates x 2 ranks; full fine-tuning: 1 learning rate; both x 2 replay weights.
    assert len(points) == (2 * 2 + 1) * 2
    sampled = _sampled(exp, len(points))
    key = lambda p: tuple(sorted(p.items()))  # noqa: E731
    assert sorted(map(key, sampled)) == sorted(map(key, points))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        # `when` must name a dimension declared before it...
        (("  peft.r: {when: {peft.enabled: true}", "  peft.r: {when: {peft.dropout: 0.1}"),
         "search.peft.r: 'when' names 'peft.dropout', which is not a search dimension"),
        # ...with one of its values...
        (("  peft.r: {when: {peft.enabled: true}", "  peft.r: {when: {peft.enabled: 3}"),
         r"search.peft.r: when peft.enabled = 3, but peft.enabled takes \[True, False\]"),
        # ...and cases must cover every value once.
        (("{when: {peft.enabled: false}, type: float", "{when: {peft.enabled: true}, type: float"),
         "search.train.learning_rate: 2 cases match peft.enabled = True"),
        (("      - {when: {peft.enabled: false}, type: float, low: 1.0e-5, high: 1.0e-4, log: true}\n", ""),
         "search.train.learning_rate: no case covers peft.enabled = False"),
        (("  train.learning_rate:\n    cases:", "  train.learning_rate:\n    type: float\n    cases:"),
         "a dimension with 'cases' takes its type and 'when' per case"),
    ],
)  # fmt: skip
def test_bad_conditions_are_one_line_naming_the_dimension(tmp_path, edit, message):
    text = EXPERIMENT.replace(*edit)
    assert text != EXPERIMENT
    with pytest.raises(HarnessError, match=message):
        _load(tmp_path, text)


def test_a_when_on_a_later_dimension_is_refused(tmp_path):
    first = "  peft.enabled: {type: grid, choices: [true, false]}\n"
    last = "  data.sources.replay.weight: {type: grid, choices: [0.0, 0.5]}\n"
    text = EXPERIMENT.replace(first, "").replace(last, last + first)
    with pytest.raises(HarnessError, match="not a search dimension declared before it"):
        _load(tmp_path, text)
