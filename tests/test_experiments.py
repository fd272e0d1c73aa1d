"""The shipped experiment files validate, and they say what they claim to."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.load import load_experiment
from harness.config.search import grid_points
from harness.eval.suites import load_suites
from harness.study.sampling import objectives_of

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_file_validates(path):
    exp = load_experiment(path)
    assert exp.data.sources and objectives_of(
        exp, load_suites(exp.eval.suites, exp.eval.suite_dirs)
    )


def test_demo_is_a_grid_ablation_of_mix_and_method_on_the_toy_world():
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml")
    assert exp.is_toy and exp.sampler == "grid"
    assert set(exp.search) == {
        "data.sources.replay.weight",
        "data.sources.refusal.weight",
        "peft.enabled",
        "train.learning_rate",
    }
    # each method at its own learning rate: 2 methods x 2 replay x 2 refusal shares, 3 seeds each
    rates = {p["peft.enabled"]: p["train.learning_rate"] for p in grid_points(exp.search)}
    assert len(grid_points(exp.search)) == exp.n_trials == 8 and rates[True] > rates[False]
    assert exp.replicates >= 3
    assert {"forgetting", "refusal", "format", "target"} <= set(exp.eval.suites)


def test_real_model_example_is_lora_bf16_with_standard_forgetting_tasks():
    exp = load_experiment(
        Path(__file__).resolve().parents[1] / "experiments" / "qwen2.5-0.5b-lora.yaml"
    )
    assert not exp.is_toy and exp.peft.enabled and exp.train.precision == "bf16"
    assert exp.eval.dataset == "english" and exp.eval.tasks
    assert all(s.path.startswith("hf:") for s in exp.data.sources)
    assert exp.constraints and exp.pruner == "median" and exp.eval.interval


def test_real_study_is_lora_and_full_times_four_mixes_on_the_real_suites():
    """experiments/real-smollm2.yaml: the real study's design, as its header comment claims."""
    exp = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "real-smollm2.yaml")
    points = grid_points(exp.search)
    assert exp.sampler == "grid" and exp.n_trials == len(points) == 8 and exp.replicates >= 2

    def safety_share(p: dict) -> float:
        weights = {s.name: s.weight for s in exp.data.sources}
        weights |= {k.split(".")[2]: v for k, v in p.items() if k.startswith("data.sources.")}
        return round(weights["safety"] / sum(weights.values()), 2)

    mixes = {
        (p["peft.enabled"], p["data.sources.gsm8k.weight"] > 0, safety_share(p)) for p in points
    }
    for lora in (True, False):  # general alone, + 3% and + 10% safety, narrow alone
        assert {
            (lora, False, 0.0),
            (lora, False, 0.03),
            (lora, False, 0.1),
            (lora, True, 0.0),
        } <= mixes
    narrow = [p for p in points if p["data.sources.gsm8k.weight"] > 0]
    assert all(p["data.sources.hh_helpful.weight"] == 0 for p in narrow)
    assert {"forgetting", "xstest", "ifeval"} <= set(exp.eval.suites)
    tasks = {t.task for t in exp.eval.tasks}
    assert tasks == {"arc_easy", "arc_challenge", "hellaswag"}
    assert all("shared/realworld/sft/" in s.path for s in exp.data.sources)
