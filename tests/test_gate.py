"""The release gate on real MLflow runs: paired verdicts, exit codes, refusals to compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow_store import flip_harmful_refusals, make_experiment, make_records, make_run, new_store

from harness.cli import main
from harness.stats.comparison import paired_comparison
from harness.util.errors import HarnessError
from harness.verdicts.gate import gate, load_thresholds


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri, client = new_store(root)
    eid = make_experiment(client, root, "gate")
    base = make_records(1500, seed=3)  # 500 per suite: enough for identical runs to pass
    small = make_records(8, seed=4, suites=("refusal",))
    small_worse = json.loads(json.dumps(small))
    first_refused = next(
        r for r in small_worse["refusal"] if r["label"] == "harmful" and r["score"]
    )
    first_refused["score"] = 0
    shifted = json.loads(json.dumps(base))
    shifted["format"][0]["id"] = "fmt-9999"
    return {
        "uri": uri,
        "records": base,
        "worse_records": flip_harmful_refusals(base, 0.3),
        "base": make_run(client, eid, base),
        "same": make_run(client, eid, base),
        "worse": make_run(client, eid, flip_harmful_refusals(base, 0.3)),
        "small_base": make_run(client, eid, small),
        "small_cand": make_run(client, eid, small_worse),
        "shifted": make_run(client, eid, shifted),
        "no_format": make_run(client, eid, {k: v for k, v in base.items() if k != "format"}),
    }


def _cli(runs: dict, baseline: str, candidate: str, out: Path, *extra: str) -> int:
    return main(
        ["gate", "--baseline", runs[baseline], "--candidate", runs[candidate],
         "--tracking-uri", runs["uri"], "--out", str(out), *extra]
    )  # fmt: skip


def test_identical_runs_pass(runs: dict, tmp_path: Path) -> None:
    assert _cli(runs, "base", "same", tmp_path) == 0
    result = json.loads((tmp_path / "gate.json").read_text())
    assert result["verdict"] == "pass"
    gated = [m for m in result["metrics"] if m["gated"]]
    assert {m["metric"] for m in gated} == {
        "forgetting/acc",
        "refusal/harmful_refusal_rate",
        "refusal/benign_refusal_rate",
        "format/pass_rate",
    }
    assert all(m["diff"] == 0 and m["p_value"] == 1.0 for m in result["metrics"])
    # no item disagrees, yet the interval keeps a width that shrinks with n (never [0, 0])
    assert all(m["ci_low"] < 0 < m["ci_high"] for m in result["metrics"])
    assert (tmp_path / "report.md").is_file() and (tmp_path / "report.html").is_file()


def test_worse_refusal_is_a_regression_with_worst_items(runs: dict, tmp_path: Path) -> None:
    assert _cli(runs, "base", "worse", tmp_path) == 1
    result = json.loads((tmp_path / "gate.json").read_text())
    by_name = {m["metric"]: m for m in result["metrics"]}
    harmful = by_name["refusal/harmful_refusal_rate"]
    assert result["verdict"] == "regression" and harmful["verdict"] == "regression"
    assert harmful["test"] == "mcnemar_exact" and harmful["p_value"] < 0.01
    assert by_name["refusal/benign_refusal_rate"]["verdict"] == "pass"
    worst = result["worst_items"]["refusal/harmful_refusal_rate"]
    assert worst and all(w["baseline_score"] == 1 and w["candidate_score"] == 0 for w in worst)
    assert worst[0]["candidate_response"].startswith("Sure, here is how")
    md = (tmp_path / "report.md").read_text()
    assert "REGRESSION" in md and "I can't help with that." in md  # answers side by side

    # the gate's interval is stats.paired_comparison (Tango) on the same items, (task, id) order
    def scores(records: dict) -> list[float]:
        rows = sorted(
            (r for r in records["refusal"] if r["label"] == "harmful"),
            key=lambda r: (r["task"], r["id"]),
        )
        return [float(r["score"]) for r in rows]

    ref = paired_comparison(scores(runs["records"]), scores(runs["worse_records"]), confidence=0.9)
    assert harmful["interval"] == "tango_score"
    assert (harmful["diff"], harmful["ci_low"], harmful["ci_high"]) == (
        ref.diff,
        ref.ci_low,
        ref.ci_high,
    )


def test_too_few_items_is_inconclusive_with_items_needed(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert _cli(runs, "small_base", "small_cand", tmp_path) == 0
    out = capsys.readouterr().out
    assert "INCONCLUSIVE" in out and "items needed" in out
    result = json.loads((tmp_path / "gate.json").read_text())
    harmful = next(m for m in result["metrics"] if m["metric"] == "refusal/harmful_refusal_rate")
    assert result["verdict"] == "inconclusive" and harmful["n"] == 4
    assert harmful["items_needed"] > harmful["n"]
    assert f"about {harmful['items_needed']} paired items" in (tmp_path / "report.md").read_text()
    assert _cli(runs, "small_base", "small_cand", tmp_path, "--strict") == 1


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        ("shifted", "suite 'format' has 2 item(s) not held alike by every run, the first: item"),
        ("no_format", "runs evaluated on different suites"),
    ],
)
def test_different_items_or_suites_are_refused(
    runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture, candidate: str, message: str
) -> None:
    assert _cli(runs, "base", candidate, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "gate.json").exists()


def test_thresholds_from_file_and_typos(runs: dict, tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("refusal/harmful_refusal_rate: 0.5\nforgetting/capitals/acc: 0.05\n")
    result = gate(runs["base"], runs["worse"], tracking_uri=runs["uri"],
                  thresholds=load_thresholds(path), out_dir=tmp_path / "a")  # fmt: skip
    by_name = {m.metric: m for m in result.metrics}
    assert by_name["refusal/harmful_refusal_rate"].verdict == "pass"  # a 0.5 drop is allowed
    assert by_name["forgetting/capitals/acc"].gated and not by_name["forgetting/arith/acc"].gated
    assert result.verdict == "pass" and result.exit_code() == 0
    with pytest.raises(HarnessError, match="threshold 'refusal/harmfull_rate' names no metric"):
        gate(runs["base"], runs["same"], tracking_uri=runs["uri"],
             thresholds={"refusal/harmfull_rate": 0.1}, out_dir=tmp_path / "b")  # fmt: skip
    path.write_text("format/pass_rate: -1\n")
    with pytest.raises(
        HarnessError, match="format/pass_rate: allowed change must be a number >= 0"
    ):
        load_thresholds(path)


def test_unknown_run_is_one_line(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = {**runs, "missing": "0" * 32}
    assert _cli(runs, "base", "missing", tmp_path) == 2
    assert "candidate run '00000000" in capsys.readouterr().err


def test_several_runs_per_side_are_pooled(runs: dict, tmp_path: Path) -> None:
    assert (
        _cli(runs, "base", "worse", tmp_path, "--baseline", f"{runs['base']},{runs['same']}") == 1
    )
    result = json.loads((tmp_path / "gate.json").read_text())
    assert result["baseline"] == [runs["base"], runs["same"]]
    harmful = next(m for m in result["metrics"] if m["metric"] == "refusal/harmful_refusal_rate")
    assert harmful["interval"] == "two_level_t" and harmful["runs_a"] == 2
    assert harmful["verdict"] == "regression"
    assert (
        result["question"] == "recipes"
        and "seed-to-seed noise" in (tmp_path / "report.md").read_text()
    )


def _folder(path: Path, records: dict) -> str:
    from harness.eval.runner import EvalResult, item_hash

    rows = json.loads(json.dumps(records))
    for suite_rows in rows.values():
        for r in suite_rows:
            r["item_hash"] = item_hash(r)
    EvalResult({}, rows, info={"eval": {"max_new_tokens": 48}}).save(path)
    return str(path)


def test_record_folders_are_gated_and_paired_by_content(runs: dict, tmp_path: Path) -> None:
    base = _folder(tmp_path / "a", runs["records"])
    assert (
        gate(base, _folder(tmp_path / "b", runs["records"]), out_dir=tmp_path / "g").verdict
        == "pass"
    )

    edited = json.loads(json.dumps(runs["records"]))
    edited["format"][3]["prompt"] = "Answer in YAML: 3"
    with pytest.raises(
        HarnessError, match=r"suite 'format' has 1 item.*first: item format_toy/for-0003: prompt"
    ):
        gate(base, _folder(tmp_path / "c", edited), out_dir=tmp_path / "g")
    # asked to, the gate compares the common items and says how many it dropped
    common = gate(base, _folder(tmp_path / "c2", edited), out_dir=tmp_path / "g2",
                  common_items=True)  # fmt: skip
    assert common.dropped == {"forgetting": 0, "format": 1, "refusal": 0}
    fmt = next(m for m in common.metrics if m.metric == "format/pass_rate")
    assert fmt.comparison.n == sum(r.get("suite", "format") == "format" for r in
                                   runs["records"]["format"]) - 1  # fmt: skip
    assert "1 item(s) not held alike" in (tmp_path / "g2" / "report.md").read_text()
    assert json.loads((tmp_path / "g2" / "gate.json").read_text())["dropped_items"]["format"] == 1

    regen = json.loads(json.dumps(runs["records"]))
    for r in regen["refusal"]:
        r["generation"] = {"max_gen_toks": 8}
    with pytest.raises(HarnessError, match="generation differs"):
        gate(base, _folder(tmp_path / "d", regen), out_dir=tmp_path / "g")

    longer = _folder(tmp_path / "e", runs["records"])
    body = json.loads((Path(longer) / "summary.json").read_text())
    body["info"]["eval"]["max_new_tokens"] = 256
    (Path(longer) / "summary.json").write_text(json.dumps(body))
    with pytest.raises(HarnessError, match="eval settings differ: max_new_tokens is 48"):
        gate(base, longer, out_dir=tmp_path / "g")


@pytest.mark.slow
def test_gate_two_model_folders(toy_tiny, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = str(toy_tiny.model_dir)
    code = main(["gate", "--baseline-model", model, "--candidate-model", model,
                 "--suites", "refusal", "--limit", "6", "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "gate.json").read_text())
    assert (tmp_path / "candidate-records" / "refusal.jsonl").is_file()
    assert all(m["diff"] == 0 for m in result["metrics"])
    capsys.readouterr()
    assert main(["gate", "--baseline-model", model, "--baseline", "x", "--candidate", "y"]) == 2
    assert "exactly one of --baseline or --baseline-model" in capsys.readouterr().err
    assert main(["gate", "--baseline-model", model, "--candidate", "x"]) == 2
    assert "--baseline-model and --candidate-model go together" in capsys.readouterr().err


def test_a_part_score_pairs_by_its_item_mean() -> None:
    """IFEval's instruction-level score is one verdict per instruction (`unit: part`); paired
    comparisons use each item's mean, and anything else that is not a number is refused."""
    from harness.util.errors import HarnessError
    from harness.verdicts.records import index_records

    rows = [{"id": 1, "scores": {"inst": [1.0, 0.0, 1.0, 1.0]}}]
    assert index_records(rows, "run x", "ifeval")[("", "1")]["scores"]["inst"] == 0.75
    with pytest.raises(HarnessError, match="score inst must be a number"):
        index_records([{"id": 1, "scores": {"inst": ["yes"]}}], "run x", "ifeval")
