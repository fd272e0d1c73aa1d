"""The public-data suites (XSTest refusal, IFEval format) read their rows in place from the shared
data folder, run through the real lm-eval path, and say clearly when the folder is absent."""

from __future__ import annotations

import pytest

from harness.config.schema import EvalConfig
from harness.eval.suites import load_suite, shared_dir, summary_names, task_configs
from harness.util.errors import HarnessError
from harness.util.files import numbered_rows

XSTEST = shared_dir() / "xstest" / "prompts.csv"
IFEVAL = shared_dir() / "ifeval" / "input_data.jsonl"
needs_shared = pytest.mark.skipif(
    not (XSTEST.is_file() and IFEVAL.is_file()),
    reason=f"{shared_dir()} is absent: check out shared/ beside the repo",
)


@needs_shared
def test_suites_read_the_shared_files_in_place() -> None:
    xstest, ifeval = load_suite("xstest"), load_suite("ifeval")
    assert xstest.data_path("english") == XSTEST
    assert ifeval.data_path("english") == IFEVAL
    rows = [row for _, row in numbered_rows(XSTEST)]
    assert len(rows) == 450
    assert sum(r["label"] == "unsafe" for r in rows) == 200
    names = summary_names(xstest, "english")
    for name in ("harmful_refusal_rate", "over_refusal_rate", "unsafe/delta", "safe/delta"):
        assert f"xstest/{name}" in names
    assert "xstest/contrast_homonyms/refused" in names  # one per XSTest prompt type
    assert {"ifeval/prompt_strict_acc_low", "ifeval/inst_strict_acc_high"} <= set(
        summary_names(ifeval, "english")
    )
    gated = {m.name for s in (xstest, ifeval) for m in s.metrics if m.gate}
    assert {"harmful_refusal_rate", "over_refusal_rate", "prompt_strict_acc"} <= gated


def test_absent_shared_folder_is_one_clear_line(toy_tiny, tmp_path, monkeypatch, capsys) -> None:
    from harness.cli import main

    monkeypatch.setenv("HARNESS_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(HarnessError, match=r"shared data folder .*nowhere, which is absent"):
        task_configs(load_suite("xstest"), "english", max_new_tokens=None, stop=[])
    args = ["eval", "--model", "toy:tiny", "--suites", "ifeval", "--dataset", "english"]
    assert main([*args, "--limit", "2", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "shared:ifeval/input_data.jsonl" in err


def test_csv_rows_are_numbered_by_their_first_line(tmp_path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('id,prompt\n1,"two\nlines"\n2,plain\n')
    assert numbered_rows(path) == [
        (2, {"id": "1", "prompt": "two\nlines"}),
        (4, {"id": "2", "prompt": "plain"}),
    ]
    path.write_text("id,prompt\n1,a,extra\n")
    with pytest.raises(HarnessError, match=r"rows\.csv:2: more fields"):
        numbered_rows(path)


@needs_shared
def test_xstest_and_ifeval_run_on_the_toy_model_through_lm_eval(toy_tiny) -> None:
    """A handful of items of each, on the tiny toy model, through `harness eval`'s path: XSTest's
    labels meet the refusal judge; lm-eval's own IFEval verdicts are kept per prompt and per
    instruction; replies that use the whole budget are marked truncated; IFEval items that
    cannot fit the budget are left out and counted."""
    from harness.eval.ifeval import row_specs
    from harness.eval.runner import evaluate_model
    from harness.eval.scorers import check_all
    from harness.eval.suites import tokens_needed
    from harness.models.load import load_tokenizer

    budget = 24
    result = evaluate_model(
        "toy:tiny",
        suites=["xstest", "ifeval"],
        eval_config=EvalConfig(batch_size=8, max_new_tokens=budget),
        dataset="english",
        limit=6,
    )
    xstest, ifeval = result.records["xstest"], result.records["ifeval"]
    assert len(xstest) == len(ifeval) == 6
    assert {r["doc"]["label"] for r in xstest} == {"safe", "unsafe"}
    summary = result.summary
    unsafe = [r["scores"]["refused"] for r in xstest if r["doc"]["label"] == "unsafe"]
    assert summary["xstest/harmful_refusal_rate"] == pytest.approx(sum(unsafe) / len(unsafe))
    assert summary["xstest/unsafe/delta"] == 0.0  # the base against itself
    assert summary["judge/xstest/accuracy"] > 0.9  # the judge's measured accuracy on XSTest

    tokenizer = load_tokenizer("toy:tiny")
    for r in xstest + ifeval:
        n = len(tokenizer(r["response"], add_special_tokens=False)["input_ids"])
        assert r["scores"]["truncated"] == float(n >= budget - 1)
    parts = []
    for r in ifeval:
        assert tokens_needed(r["doc"]) <= budget
        specs = row_specs(r["doc"])
        strict = check_all(r["response"], specs, prompt=r["doc"]["prompt"])
        assert r["scores"]["prompt_level_strict_acc"] == float(strict)
        assert len(r["scores"]["inst_level_strict_acc"]) == len(specs)
        parts += r["scores"]["inst_level_strict_acc"]
    assert summary["ifeval/inst_strict_acc"] == pytest.approx(sum(parts) / len(parts))
    low, high = summary["ifeval/inst_strict_acc_low"], summary["ifeval/inst_strict_acc_high"]
    assert 0 <= low <= summary["ifeval/inst_strict_acc"] <= high <= 1
    over = sum((tokens_needed(row) or 0) > budget for _, row in numbered_rows(IFEVAL))
    assert result.info["over_budget"] == {"ifeval": over} and 0 < over < 541


def test_part_interval_is_wider_when_parts_cluster() -> None:
    from harness.stats.comparison import ratio_interval, wilson_interval

    # 40 items of 3 instructions each, half passing all three, half failing all: clustered
    clustered = ratio_interval([3.0] * 20 + [0.0] * 20, [3] * 40)
    independent = wilson_interval(60, 120)
    assert clustered[0] < independent[0] and clustered[1] > independent[1]
    assert clustered == pytest.approx(wilson_interval(20, 40), abs=0.02)  # ~ 40 independent units
    low, high = ratio_interval([2.0] * 10, [2] * 10)  # all pass: still an interval
    assert high == 1.0 and low < 1.0


def test_bad_part_metric_names_the_field(tmp_path) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "suite.yaml").write_text(
        load_suite("ifeval")
        .path.joinpath("suite.yaml")
        .read_text()
        .replace("interval: cluster", "interval: wilson", 1)
        .replace("name: ifeval", "name: parts")
    )
    with pytest.raises(
        HarnessError, match=r"metrics\.inst_strict_acc: interval: must be 'cluster'"
    ):
        load_suite("parts", [folder])


def test_bad_over_budget_names_the_field(tmp_path) -> None:
    folder = tmp_path / "skips"
    folder.mkdir()
    text = load_suite("ifeval").path.joinpath("suite.yaml").read_text()
    (folder / "suite.yaml").write_text(
        text.replace("name: ifeval", "name: skips").replace(
            "over_budget: skip", "over_budget: drop"
        )
    )
    with pytest.raises(
        HarnessError, match=r"suite\.yaml: over_budget: must be one of 'error' or 'skip'"
    ):
        load_suite("skips", [folder])


def test_lint_of_every_suite_notes_absent_shared_data(tmp_path, monkeypatch) -> None:
    """`harness data lint` checks every suite by default: without the shared folder the public
    suites are noted as not checked, not fatal; naming one of them is an error."""
    import json

    from harness.preflight.lint import lint_files

    rows = tmp_path / "chats.jsonl"
    chat = [{"role": "user", "content": "Hi there."}, {"role": "assistant", "content": "Hello."}]
    rows.write_text(json.dumps({"messages": chat}) + "\n")
    monkeypatch.setenv("HARNESS_SHARED", str(tmp_path / "nowhere"))
    report = lint_files([rows], dataset="english")
    assert "xstest" not in report.suites and "refusal" in report.suites
    assert any("shared data folder" in note for note in report.notes)
    with pytest.raises(HarnessError, match="shared data folder"):
        lint_files([rows], suites=["xstest"], dataset="english")
