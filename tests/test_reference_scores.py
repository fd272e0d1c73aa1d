"""`eval.reference_scores`: the base model measured against its published scores, with 95%
intervals, flagged where a published figure falls outside (an eval setup that differs from the
publication's), in `harness eval` and in the study report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realworld import REALWORLD, needs_realworld

from harness.cli import main
from harness.config.load import load_experiment
from harness.config.schema import ReferenceScore
from harness.eval.reference import check_references, format_references
from harness.stats.comparison import wilson_interval
from harness.util.errors import HarnessError
from harness.verdicts.analysis import Study
from harness.verdicts.render import Heading, Table
from harness.verdicts.report import study_blocks


def _records(task: str, scores: list[float], metric: str = "acc") -> list[dict]:
    return [{"task": task, "id": str(i), "scores": {metric: s}} for i, s in enumerate(scores)]


def test_reference_inside_outside_and_unmeasured() -> None:
    records = {"forgetting": _records("arc_easy", [1.0] * 60 + [0.0] * 40)}
    refs = [
        ReferenceScore(metric="arc_easy/acc", value=0.55, source="published A"),
        ReferenceScore(metric="arc_easy/acc", value=0.40, source="published B"),
        ReferenceScore(metric="piqa/acc_norm", value=0.66, source="published C"),
    ]
    inside, outside, absent = check_references(records, refs)
    assert (inside.measured, inside.n) == (0.6, 100)
    assert (inside.low, inside.high) == wilson_interval(60, 100)
    assert (inside.verdict, outside.verdict, absent.verdict) == (
        "within",
        "outside",
        "not measured",
    )
    text = format_references([inside, outside, absent])
    assert text.count("MISMATCH") == 1 and "published B" in text and "not measured" in text


def test_a_percentage_is_refused_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "exp.yaml").write_text(
        "name: r\nmodel: toy:tiny\ndata: {sources: [{name: a, path: a.jsonl}]}\n"
        "eval: {reference_scores: [{metric: arc_easy/acc, value: 54.12, source: x}]}\n"
    )
    with pytest.raises(HarnessError) as err:
        load_experiment(tmp_path / "exp.yaml")
    assert "reference_scores" in str(err.value) and "<= 1" in str(err.value)


def test_the_study_report_shows_the_base_origin_and_flags_a_mismatch() -> None:
    checks = check_references(
        {"forgetting": _records("arc_easy", [1.0] * 50 + [0.0] * 50)},
        [
            ReferenceScore(metric="arc_easy/acc", value=0.5412, source="lm-eval, 0-shot"),
            ReferenceScore(metric="arc_easy/acc", value=0.70, source="model card"),
        ],
    )
    study = Study("s", "sqlite://", None, None, {}, {}, [], [], [], [])
    study.base_origin = "base dequantized from 4-bit Q4_1 weights (x.gguf, sha256 abc)"
    study.references = [c.to_dict() for c in checks]
    blocks = study_blocks(study)
    heading = [i for i, b in enumerate(blocks) if isinstance(b, Heading)][0]
    table = blocks[heading + 1]
    assert blocks[heading].text == "Base model vs reference scores" and isinstance(table, Table)
    assert [row[4] for row in table.rows] == ["yes", "**MISMATCH**"]
    assert any("4-bit Q4_1" in getattr(b, "text", "") for b in blocks[:heading])


@pytest.mark.slow
@needs_realworld
def test_harness_eval_with_an_experiment_prints_measured_vs_reference(
    toy_tiny, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rows = REALWORLD / "datasets" / "arc_easy" / "validation.jsonl"
    (tmp_path / "exp.yaml").write_text(
        "name: refs\nmodel: toy:tiny\ndata: {sources: [{name: a, path: a.jsonl}]}\n"
        "eval:\n  suites: [forgetting]\n  dataset: english\n"
        f"  tasks: [{{task: arc_easy, data_files: {{validation: {rows}}}}}]\n"
        "  reference_scores:\n"
        "    - {metric: arc_easy/acc, value: 0.99, source: far too high}\n"
        "    - {metric: arc_easy/acc_norm, value: 0.3, source: plausible}\n"
    )
    out = tmp_path / "eval"
    argv = ["eval", "--experiment", str(tmp_path / "exp.yaml"), "--limit", "8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reference scores (base model" in printed and "MISMATCH" in printed
    checks = json.loads((out / "reference.json").read_text())
    assert [c["n"] for c in checks] == [8, 8]
    assert checks[0]["verdict"] == "outside"  # a tiny random model is not at 0.99
