"""`harness run` end to end on the tiny toy model: real Optuna, real MLflow, real lm-eval."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import main
from harness.config.load import load_experiment
from harness.config.schema import StudySpec
from harness.study.run import run_study
from harness.verdicts.report import write_study_report

EXPERIMENT = """
name: {name}
seed: 0
model: toy:tiny
data:
  budget: 160
  max_length: 192
  sources:
    - {{name: qa, path: "toy:sft/qa.jsonl", weight: 1.0, licence: toy world (ours)}}
    - {{name: refusal, path: "toy:sft/refusal.jsonl", weight: 0.3}}
    - {{name: replay, path: "toy:sft/replay.jsonl", weight: 0.0}}
train: {{learning_rate: 0.003, max_steps: 8, batch_tokens: 2048}}
eval: {{suites: [target, forgetting, refusal, format], limit: 12, batch_size: 32, max_new_tokens: 24}}
search:
  data.sources.replay.weight: {{type: grid, choices: [0.0, 0.5]}}
objectives: [{{metric: target/accuracy}}, {{metric: forgetting/delta}}]
sampler: grid
pruner: none
n_trials: 2
tracking_uri: sqlite:///{tmp}/mlflow.db
storage: sqlite:///{tmp}/optuna.db
output_dir: {tmp}/runs
"""


def _experiment(tmp_path, name="study", extra=""):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(EXPERIMENT.format(name=name, tmp=tmp_path)) + extra)
    return path


def _read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def _runs(tmp_path, name):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    exp_id = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp_id])
    parents = [r for r in runs if r.data.tags.get("harness.role") == "study"]
    children = [r for r in runs if r.data.tags.get("harness.role") == "trial"]
    return client, parents, children


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, toy_tiny):
    tmp_path = tmp_path_factory.mktemp("study")
    exp = load_experiment(_experiment(tmp_path))
    outcome = run_study(exp, n_trials=1)
    return tmp_path, exp, outcome


def test_parent_and_child_runs_with_metrics_and_records(finished_study):
    tmp_path, _, outcome = finished_study
    client, parents, children = _runs(tmp_path, "study")
    assert len(parents) == 1 and len(children) == 1
    child = children[0]
    assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert child.info.status == "FINISHED" and child.data.tags["harness.state"] == "COMPLETE"
    metrics = child.data.metrics
    for name in (
        "target/accuracy",
        "forgetting/delta",
        "refusal/harmful_refusal_rate",
        "refusal/benign_refusal_rate",
        "format/pass_rate",
        "train/final_loss",
    ):
        assert name in metrics, name
    assert len(client.get_metric_history(child.info.run_id, "train/loss")) >= 2
    assert "trial.data.sources.replay.weight" in child.data.params
    shares = [metrics[f"mix/{s}/share"] for s in ("qa", "refusal", "replay")]
    assert sum(shares) == pytest.approx(1.0, abs=0.01) and metrics["mix/qa/examples"] > 0
    assert any(k.startswith("lineage.source.qa.sha256") for k in child.data.params)
    assert child.data.params["judge/refusal"] == "rules"  # who judged, and how well:
    assert metrics["judge/refusal/accuracy"] >= 0.93
    # The mix's sources are the run's dataset inputs; the experiment opens on training runs.
    datasets = {d.dataset.name: d for d in child.inputs.dataset_inputs}
    assert {"qa", "refusal"} <= set(datasets)
    assert {t.key: t.value for t in datasets["qa"].tags}["mlflow.data.context"] == "training"
    kind = client.get_experiment(child.info.experiment_id).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"

    # The summary agrees with the per-sample records logged beside it.
    local = client.download_artifacts(child.info.run_id, "records", str(tmp_path / "dl"))
    target = _read_jsonl(f"{local}/target.jsonl")
    assert len(target) == 12
    accuracy = sum(r["score"] for r in target) / len(target)
    assert metrics["target/accuracy"] == pytest.approx(accuracy)
    format_rows = _read_jsonl(f"{local}/format.jsonl")
    assert metrics["format/pass_rate"] == pytest.approx(
        sum(r["score"] for r in format_rows) / len(format_rows)
    )

    trial = outcome.study.trials[0]
    assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
    assert child.data.tags["optuna.trial_id"] == str(trial._trial_id)


def test_resume_adds_trials_to_the_same_study_and_parent(finished_study):
    tmp_path, exp, _ = finished_study
    outcome = run_study(exp)  # n_trials: 2 in the file; one is already done
    assert len(outcome.study.trials) == 2
    assert {t.params["data.sources.replay.weight"] for t in outcome.study.trials} == {0.0, 0.5}
    _, parents, children = _runs(tmp_path, "study")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}


def test_failed_trial_is_recorded_and_the_study_goes_on(tmp_path, toy_tiny, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the CLI writes its report under ./reports
    # A sampled value that breaks validation (a bad sample) fails that trial with its reason;
    # the other trial completes.
    path = _experiment(tmp_path, "diverge")
    text = path.read_text().replace(
        "  data.sources.replay.weight: {type: grid, choices: [0.0, 0.5]}",
        "  data.max_length: {type: grid, choices: [192, 4]}",
    )
    path.write_text(text)
    assert main(["run", str(path)]) == 0
    _, _, children = _runs(tmp_path, "diverge")
    states = sorted(c.data.tags["harness.state"] for c in children)
    assert states == ["COMPLETE", "FAIL"]
    failed = next(c for c in children if c.data.tags["harness.state"] == "FAIL")
    assert failed.info.status == "FAILED"
    assert "data.max_length: must be > 8" in failed.data.tags["harness.fail_reason"]
    assert "FAILED" in capsys.readouterr().out


def test_bad_experiment_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _experiment(tmp_path, "bad")
    assert main(["run", str(path), "--set", "train.learning_rate=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.learning_rate: must be > 0" in err


def test_pruner_stops_a_trial_that_is_worse_midway(tmp_path, toy_tiny):
    # One objective, evaluated on a few items every 3 steps. A harmless trial (learning rate
    # ~0) runs first; then one whose huge learning rate wrecks the model's knowledge: at its
    # first interval it is far below the median of the first, so the pruner stops it.
    for lr, trials in ((1e-9, 1), (0.05, 2)):
        exp = load_experiment(
            _experiment(tmp_path, "prune"),
            [
                "objectives=[{metric: forgetting/acc}]",
                "pruner=median",
                "sampler=tpe",
                "train.max_steps=9",
                "eval.interval=3",
                "eval.proxy_limit=40",
                f"train.learning_rate={lr}",
                "search={}",
            ],
        )
        outcome = run_study(exp, n_trials=trials)
    states = [t.state.name for t in outcome.study.trials]
    assert states == ["COMPLETE", "PRUNED"]
    pruned = outcome.study.trials[1]
    kept = outcome.study.trials[0]
    step = min(pruned.intermediate_values)
    assert pruned.intermediate_values[step] < kept.intermediate_values[step]
    _, _, children = _runs(tmp_path, "prune")
    assert sorted(c.data.tags["harness.state"] for c in children) == ["COMPLETE", "PRUNED"]


def test_replicates_run_each_configuration_at_consecutive_seeds(tmp_path, toy_tiny):
    # Two replicates of one configuration: two child runs sharing a config_id, trained at seeds
    # 0 and 1 (different mixes and orders), and Optuna's value is their mean.
    exp = load_experiment(
        _experiment(tmp_path, "replicated"),
        ["replicates=2", "search={data.sources.replay.weight: {type: grid, choices: [0.5]}}"],
    )
    outcome = run_study(exp, n_trials=1)
    trial = outcome.study.trials[0]
    assert trial.state.name == "COMPLETE"
    reps = trial.user_attrs["replicates"]
    assert [(r["replicate"], r["seed"]) for r in reps] == [(0, 0), (1, 1)]
    for i, metric in enumerate(["target/accuracy", "forgetting/delta"]):
        mean = sum(r["summary"][metric] for r in reps) / 2
        assert trial.values[i] == pytest.approx(mean)
        assert trial.user_attrs["summary"][metric] == pytest.approx(mean)

    client, parents, children = _runs(tmp_path, "replicated")
    assert len(children) == 2
    assert {c.data.tags["config_id"] for c in children} == {trial.user_attrs["config_id"]}
    by_rep = {c.data.tags["replicate"]: c for c in children}
    assert {r["mlflow_run_id"] for r in reps} == {c.info.run_id for c in children}
    assert (by_rep["0"].data.params["cfg.seed"], by_rep["1"].data.params["cfg.seed"]) == ("0", "1")
    # every setting reaches MLflow, defaults the YAML never named included
    assert by_rep["0"].data.params["cfg.train.precision"] == "auto"
    assert "cfg.train.gradient_checkpointing" in by_rep["0"].data.params
    lineages = [client.download_artifacts(c.info.run_id, "lineage.json", str(tmp_path / r))
                for r, c in sorted(by_rep.items())]  # fmt: skip
    picks = [json.loads(Path(p).read_text())["mix"]["seed"] for p in lineages]
    assert picks == [0, 1]
    # The base model's own metrics sit on the parent run, next to the trials.
    parent = parents[0].data.metrics
    assert parent["base/forgetting/delta"] == 0.0 and "base/target/accuracy" in parent

    # By study name alone the report reads what the study was from its spec (study/spec.json).
    md, _ = write_study_report("replicated", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "r")
    text = md.read_text()
    assert "| base |" in text and " ± " in text and "replicates" in text
    assert "Objectives: target/accuracy (maximize), forgetting/delta (maximize)" in text
    # where the numbers came from: commit, command, machine, and each source's licence
    assert "Command: `" in text and "Machine: " in text and "CPUs" in text
    commit = by_rep["0"].data.params["lineage.git_commit"]
    assert f"Code: commit {commit[:12]}" in text
    assert "| qa | toy:sft/qa.jsonl |" in text and "| toy world (ours) |" in text
    assert "| refusal | toy:sft/refusal.jsonl |" in text and "| not declared |" in text
    # The spec carries each suite's metric declarations; one grid level: no effect to show.
    spec = client.download_artifacts(parents[0].info.run_id, "study/spec.json", str(tmp_path))
    suites = StudySpec.model_validate_json(Path(spec).read_text()).suites
    forgetting = next(s for s in suites if s.name == "forgetting")
    assert any(m.gate and m.compare_base and m.threshold == 0.01 for m in forgetting.metrics)
    assert json.loads((tmp_path / "r" / "effects.json").read_text()) == []
    assert "data.sources.replay.weight: no two completed trials differ only" in text
