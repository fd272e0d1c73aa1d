"""Standard lm-eval tasks on local rows (`eval.tasks` entries with `data_files`): every dataset in
../shared/realworld/datasets runs with lm-eval's own task definition on the tiny toy model, its
metrics land under forgetting/<task>/..., and its records pair item by item with the base."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from realworld import REALWORLD, needs_realworld

from harness.config.load import load_experiment
from harness.config.schema import EvalConfig, StandardTask
from harness.eval import runner as ev
from harness.eval.lm_tasks import task_config
from harness.util.errors import HarnessError

pytestmark = pytest.mark.slow
DATASETS = REALWORLD / "datasets"


def _entries() -> list[StandardTask]:
    """One entry per task of the shared overrides file, with only its `data_files`: the
    splits are derived from the files, not copied from the override."""
    overrides = json.loads((DATASETS / "lm_eval_overrides.json").read_text())
    return [
        StandardTask(
            task=name,
            data_files={k: str(DATASETS / v) for k, v in o["dataset_kwargs"]["data_files"].items()},
        )
        for name, o in overrides.items()
        if not name.startswith("_")
    ]


@pytest.fixture(scope="module")
def tiny_model(toy_tiny):
    from harness.models.load import load_model, load_tokenizer

    return load_model("toy:tiny"), load_tokenizer("toy:tiny")


@needs_realworld
def test_every_shared_dataset_runs_with_lm_evals_definition_and_pairs(tiny_model):
    model, tokenizer = tiny_model
    entries = _entries()
    cfg = EvalConfig(tasks=entries, batch_size=8, max_new_tokens=8)
    base = ev.evaluate(model, tokenizer, ["forgetting"], eval_config=cfg, limit=2)
    damaged = copy.deepcopy(model)
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    cand = ev.evaluate(damaged, tokenizer, ["forgetting"], eval_config=cfg, base=base, limit=2)

    s = cand.summary
    for result in (base, cand):
        keys = [(r["task"], r["id"]) for r in result.records["forgetting"]]
        assert len(keys) == len(set(keys)), "one record per item, whatever lm-eval's filters"
    base_keys = {(r["task"], r["id"]) for r in base.records["forgetting"]}
    for e in entries:
        rows = [r for r in cand.records["forgetting"] if r["task"] == e.task]
        assert len(rows) == 2, e.task
        assert {(e.task, r["id"]) for r in rows} <= base_keys  # the gate can pair them
        assert all(isinstance(r["score"], float) and r["base_score"] is not None for r in rows)
        if "acc" in rows[0]["scores"]:
            mean = sum(r["scores"]["acc"] for r in rows) / 2
            assert s[f"forgetting/{e.task}/acc"] == pytest.approx(mean)
            base_mean = sum(r["base_score"] for r in rows) / 2
            assert s[f"forgetting/{e.task}/base_acc"] == pytest.approx(base_mean)
            assert s[f"forgetting/{e.task}/delta"] == pytest.approx(mean - base_mean)
    for task in ("arc_easy", "arc_challenge", "hellaswag"):
        assert f"forgetting/{task}/acc_norm" in s and f"forgetting/{task}/acc_norm_delta" in s
    gsm = [r for r in cand.records["forgetting"] if r["task"] == "gsm8k"]
    assert set(gsm[0]["scores"]) == {"exact_match_strict-match", "exact_match_flexible-extract"}
    assert "forgetting/gsm8k/exact_match_strict-match_delta" in s
    # lm-eval's own prompts and splits: ARC has only validation rows and is scored on them
    arc = [r for r in cand.records["forgetting"] if r["task"] == "arc_easy"]
    lines = (DATASETS / "arc_easy/validation.jsonl").read_text().splitlines()
    first = [json.loads(line)["id"] for line in lines[:2]]
    assert [r["id"] for r in arc] == first
    assert all(
        r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:") for r in arc
    )
    assert gsm[0]["prompt"].count("Question: ") == 6  # gsm8k's default 5-shot from train.jsonl
    assert "forgetting/toy_facts/acc" in s  # the suite's own probes still run beside them


@needs_realworld
def test_splits_follow_the_files_and_overrides_apply(tmp_path):
    by_name = {e.task: e for e in _entries()}
    rows_file = str(DATASETS / "winogrande/validation.jsonl")
    arc = task_config(by_name["arc_easy"])
    assert (arc["test_split"], arc["validation_split"], arc["training_split"]) == (
        None,
        "validation",
        None,
    )
    assert arc["dataset_path"] == "json" and arc["doc_to_text"] == "Question: {{question}}\nAnswer:"
    mmlu = task_config(by_name["mmlu_anatomy"].model_copy(update={"num_fewshot": 5}))
    assert (mmlu["test_split"], mmlu["fewshot_split"], mmlu["num_fewshot"]) == ("test", "dev", 5)

    no_shots = by_name["gsm8k"].model_copy(
        update={"data_files": {"test": str(DATASETS / "gsm8k/test.jsonl")}}
    )
    with pytest.raises(HarnessError, match="eval.tasks.gsm8k: the task takes 5 few-shot"):
        task_config(no_shots)
    assert task_config(no_shots.model_copy(update={"num_fewshot": 0}))["fewshot_split"] is None
    only_train = StandardTask(
        task="hellaswag", data_files={"train": str(DATASETS / "hellaswag/validation.jsonl")}
    )
    with pytest.raises(HarnessError, match="scored on validation_split validation; name that"):
        task_config(only_train)
    rows = (DATASETS / "winogrande/validation.jsonl").read_text().splitlines()[:3]
    pd.DataFrame([json.loads(r) for r in rows]).to_parquet(tmp_path / "wino.parquet")
    parquet = StandardTask(
        task="winogrande", data_files={"validation": str(tmp_path / "wino.parquet")}
    )
    assert task_config(parquet)["dataset_path"] == "parquet"
    mixed = parquet.model_copy(update={"data_files": {**parquet.data_files, "train": rows_file}})
    with pytest.raises(HarnessError, match="one kind for all splits"):
        task_config(mixed)
    typo = by_name["arc_easy"].model_copy(update={"num_fewshots": 5})
    with pytest.raises(HarnessError, match="eval.tasks.arc_easy.num_fewshots: not a field"):
        task_config(typo)
    with pytest.raises(HarnessError, match="no task named 'arc_nope'"):
        task_config(
            StandardTask(
                task="arc_nope", data_files={"test": str(DATASETS / "arc_easy/validation.jsonl")}
            )
        )


def test_relative_data_files_resolve_against_the_experiment_file(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "val.jsonl").write_text("{}\n")
    (tmp_path / "data.jsonl").write_text('{"text": "x"}\n')
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        "name: t\ndata: {sources: [{name: a, path: data.jsonl}]}\n"
        "eval:\n  tasks:\n    - arc_easy\n"
        "    - {task: arc_challenge, data_files: {validation: rows/val.jsonl}, num_fewshot: 0}\n"
    )
    exp = load_experiment(exp_file)
    assert exp.eval.tasks[0] == "arc_easy"
    entry = exp.eval.tasks[1]
    assert entry.data_files == {"validation": str(tmp_path / "rows" / "val.jsonl")}
    assert entry.model_dump()["num_fewshot"] == 0

    exp_file.write_text(exp_file.read_text().replace("rows/val", "rows/missing"))
    with pytest.raises(
        HarnessError, match="eval.tasks.arc_challenge.data_files.validation: .*not found"
    ):
        load_experiment(exp_file)
    exp_file.write_text(
        exp_file.read_text().replace("data_files: {validation: rows/missing.jsonl}, ", "")
    )
    with pytest.raises(HarnessError, match="eval.tasks: arc_challenge.data_files: is required"):
        load_experiment(exp_file)


@needs_realworld
def test_full_form_task_names_its_per_task_metrics_before_a_study(tmp_path, capsys):
    """Regression: `{task, data_files}` entries reached the forgetting suite's `by: task` metric
    as objects ("unhashable type: 'StandardTask'", exit 3). Now a study on real ARC-Easy rows
    accepts forgetting/arc_easy/acc as an objective, and a wrong name is refused before any data is read, listing the per-task shape."""
    from harness.cli import main
    from harness.config.schema import task_name
    from harness.eval.suites import check_metric_names, load_suites

    rows = DATASETS / "arc_easy" / "validation.jsonl"
    (tmp_path / "exp.yaml").write_text(
        "name: full-form\nmodel: toy:tiny\n"
        "data: {sources: [{name: a, path: a.jsonl}]}\n"
        "eval:\n  suites: [forgetting]\n  dataset: english\n"
        f"  tasks: [{{task: arc_easy, data_files: {{validation: {rows}}}}}]\n"
        "objectives: [{metric: forgetting/arc_easy/acc}]\n"
    )
    exp = load_experiment(tmp_path / "exp.yaml")
    assert [task_name(t) for t in exp.eval.tasks] == ["arc_easy"]
    suites = load_suites(exp.eval.suites)
    check_metric_names(["forgetting/arc_easy/acc"], suites, "english", exp.eval.tasks)

    code = main(["run", str(tmp_path / "exp.yaml"), "--set", "objectives.0.metric=forgetting/arc"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "'forgetting/arc'" in err[0] and "forgetting/*/acc" in err[0]
