"""Suites as data: metric declarations (direction, gate, threshold, label) in suite.yaml drive
summaries, the gate, the study table and reports; `harness run` checks objective names up front;
degenerate replies to benign prompts fail."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.config.schema import EvalConfig, StandardTask
from harness.eval import hooks
from harness.eval import runner as ev
from harness.eval.scorers import is_degenerate
from harness.eval.suites import (
    check_metric_names,
    key_metrics,
    load_suite,
    load_suites,
    summary_names,
)
from harness.util.errors import HarnessError

# ---------------------------------------------------------------- degenerate replies


@pytest.mark.parametrize(
    ("reply", "degenerate"),
    [("", True), ("  \n ", True), ("!!! ...", True), ("the the the the", True),
     ("lololololo", True), ("Paris", False), ("7", False), ("I can't help with that.", False),
     ("Sure: boil water, add pasta, wait ten minutes.", False)],
)  # fmt: skip
def test_is_degenerate(reply: str, degenerate: bool) -> None:
    assert is_degenerate(reply) is degenerate


def test_a_degenerate_reply_to_a_benign_prompt_is_a_failure() -> None:
    benign, harmful = {"id": "b", "label": "benign"}, {"id": "h", "label": "harmful"}
    collapsed = hooks.score_refusal(benign, ["the the the the the"])
    assert collapsed == {
        "refused": 1.0,
        "full_refusal": 0.0,  # the judge sees no refusal: the degenerate rule decides
        "partial_refusal": 0.0,
        "correct": 0.0,
        "empty": 0.0,
        "degenerate": 1.0,
    }
    assert hooks.score_refusal(benign, [""])["empty"] == 1.0
    assert hooks.score_refusal(benign, ["Boil water, then add the pasta."])["correct"] == 1.0
    # on a harmful prompt silence is not a refusal either: it stays incorrect
    assert hooks.score_refusal(harmful, ["!!!!"])["correct"] == 0.0


def test_refusal_declares_empty_and_degenerate_rates_as_gated() -> None:
    metrics = {m.name: m for m in load_suite("refusal").metrics}
    for name in ("empty_rate", "degenerate_rate"):
        assert metrics[name].gate and not metrics[name].higher_is_better


# ---------------------------------------------------------------- declarations


def test_key_metrics_come_from_the_declarations() -> None:
    keys = {k.name: k for k in key_metrics(load_suites(["forgetting", "refusal", "format"]))}
    assert keys["forgetting/delta"].label == "forget Δ"  # compared with the base: its change
    assert not keys["refusal/benign_refusal_rate"].higher_is_better
    assert "refusal/accuracy" not in keys  # declared, not gated


def test_objective_names_are_checked_against_the_suites() -> None:
    suites = load_suites(["forgetting", "refusal"])
    names = set(summary_names(suites[0], "toy")) | set(summary_names(suites[1], "toy"))
    assert {"forgetting/delta", "forgetting/delta_low", "refusal/empty_rate"} <= names
    assert any(
        n.startswith("forgetting/") and n.endswith("/acc") and n.count("/") == 2 for n in names
    )
    check_metric_names(["forgetting/delta", "refusal/harmful_refusal_rate"], suites, "toy")
    with pytest.raises(HarnessError) as err:
        check_metric_names(["format/pass_rate"], suites, "toy")
    line = str(err.value)
    assert "\n" not in line and "'format/pass_rate'" in line and "forgetting/delta" in line


def test_standard_tasks_on_local_rows_name_their_per_task_metrics(tmp_path: Path) -> None:
    """`eval.tasks` entries with `data_files` (StandardTask) add per-task metrics by name."""
    (tmp_path / "test.jsonl").write_text("{}\n")
    task = StandardTask(task="arc_easy", data_files={"test": str(tmp_path / "test.jsonl")})
    suites = load_suites(["forgetting"])
    names = set(summary_names(suites[0], "english", [task, "hellaswag"]))
    assert {"forgetting/arc_easy/delta", "forgetting/hellaswag/delta"} <= names, sorted(names)
    check_metric_names(["forgetting/delta"], suites, "english", extra_tasks=[task])


def test_harness_run_refuses_an_unknown_objective_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(f"""
        name: bad-objective
        model: toy:tiny
        data: {{sources: [{{name: qa, path: "toy:sft/qa.jsonl"}}]}}
        eval: {{suites: [refusal]}}
        objectives: [{{metric: refusal/harmful_rate, direction: maximize}}]
        tracking_uri: sqlite:///{tmp_path}/mlflow.db
        storage: sqlite:///{tmp_path}/optuna.db
        output_dir: {tmp_path}/runs
    """))  # fmt: skip
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refusal/harmful_rate" in err
    assert "refusal/harmful_refusal_rate" in err
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------- a user's suite, end to end


@pytest.mark.slow
def test_a_new_suite_folder_is_scored_gated_and_reported(toy_tiny, tmp_path: Path) -> None:
    """A suite with its own metric, direction and threshold: no engine edit."""
    from harness.models.load import load_model, load_tokenizer
    from harness.verdicts.gate import gate

    folder = tmp_path / "suites" / "capitals"
    folder.mkdir(parents=True)
    rows = [{"id": f"q{i}", "prompt": f"Name a capital ({i}).", "gold": "a", "region": "north" if i % 2 else "south"} for i in range(6)]  # fmt: skip
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_suite("target").task_files[0].read_text()  # reuses harness.eval.hooks.score_target
    (folder / "capitals.yaml").write_text(task.replace("task: target", "task: capitals"))
    (folder / "suite.yaml").write_text(
        textwrap.dedent("""
        name: capitals
        tasks: [capitals.yaml]
        data: {english: data.jsonl}
        output_type: generate_until
        metrics:
          - {name: hit_rate, score: correct, gate: true, threshold: 0.6, label: capitals}
          - {name: hit_rate, score: correct, by: region}
    """)
    )
    dirs = [tmp_path / "suites"]
    cfg = EvalConfig(suites=["capitals"], suite_dirs=[str(d) for d in dirs], max_new_tokens=4)
    model, tokenizer = load_model("toy:tiny"), load_tokenizer("toy:tiny")
    outs = []
    for side in ("a", "b"):
        result = ev.evaluate(model, tokenizer, ["capitals"], eval_config=cfg, dataset="english",
                             out_dir=tmp_path / side)  # fmt: skip
        outs.append(tmp_path / side)
    names = set(summary_names(load_suite("capitals", dirs), "english"))
    assert set(result.summary) <= names  # the up-front check knows every name it produces
    assert {"capitals/hit_rate", "capitals/north/hit_rate"} <= set(result.summary)
    rec = result.records["capitals"][0]
    assert rec["generation"]["max_gen_toks"] == 4 and len(rec["item_hash"]) == 16

    g = gate(str(outs[0]), str(outs[1]), suite_dirs=dirs, out_dir=tmp_path / "gate")
    by_name = {m.metric: m for m in g.metrics}
    hit = by_name["capitals/hit_rate"]
    assert hit.gated and hit.threshold == 0.6 and hit.comparison.n == 6
    assert not by_name["capitals/south/hit_rate"].gated
    assert g.verdict == "pass"  # identical runs; 6 items settle a 0.6 allowed change
    assert "capitals/hit_rate" in (tmp_path / "gate" / "report.md").read_text()
    assert [k.label for k in key_metrics(load_suites(["capitals"], dirs))] == ["capitals"]
