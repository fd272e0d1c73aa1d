"""`harness data lint`: each check on small planted files, the contamination rule on real eval
items (flags a leak, leaves shared templates alone), and the toy world's SFT data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import EXIT_ERROR, EXIT_FINDING, EXIT_OK, main
from harness.preflight.lint import lint_experiment, lint_files, truncation

LONG = (
    "The river runs past the old mill and through the valley where farmers grow wheat, "
    "barley and rye in long fields that stretch all the way to the hills beyond the town"
)


def chat(user: str, reply: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    }


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def kinds(report) -> dict[str, int]:
    return report.by_kind()


def test_clean_file_is_ok(tmp_path):
    f = write(
        tmp_path / "a.jsonl", [chat(f"Question number {i}?", f"Answer {i}.") for i in range(5)]
    )
    report = lint_files([f], suites=[])
    assert report.ok, report.summary()
    counts = report.counts["a"]
    assert counts["examples"] == 5 and counts["tokens"] == {"user": 15, "assistant": 10}


def test_every_bad_row_is_reported_with_its_line(tmp_path):
    rows = [
        chat("a?", "b."),
        "{broken",
        {"messages": [{"role": "human", "content": "x"}]},
        chat("c?", "d."),
        {"messages": [{"role": "user", "content": "e?"}, {"role": "assistant", "content": ""}]},
    ]
    report = lint_files([write(tmp_path / "a.jsonl", rows)], suites=[])
    bad = [p for p in report.problems if p.kind == "bad_row"]
    assert [p.where.rsplit(":", 1)[1] for p in bad] == ["2", "3", "5"]
    assert "broken JSON" in bad[0].message and "messages[0].role" in bad[1].message
    assert report.counts["a"]["bad_rows"] == 3 and report.counts["a"]["examples"] == 2


def test_duplicates_across_files_and_near_duplicates(tmp_path):
    a = write(tmp_path / "a.jsonl", [chat("Tell me about rivers.", LONG + "."), chat("x?", "y.")])
    b = write(
        tmp_path / "b.jsonl",
        [chat("Tell me about rivers.", LONG + "."), chat("Tell me about rivers!", LONG + " too.")],
    )
    report = lint_files([a, b], suites=[])
    dup = [p for p in report.problems if p.kind == "duplicate"]
    near = [p for p in report.problems if p.kind == "near_duplicate"]
    assert (
        len(dup) == 1
        and dup[0].where.endswith("a.jsonl:1")
        and dup[0].other[0].endswith("b.jsonl:1")
    )
    assert len(near) == 1 and near[0].other[0].endswith("b.jsonl:2")


def test_templated_rows_are_not_near_duplicates(tmp_path):
    rows = [
        chat(f"What is the capital of Land{i}?", f"The capital of Land{i} is City{i}.")
        for i in range(50)
    ]
    assert lint_files([write(tmp_path / "a.jsonl", rows)], suites=[]).ok


def test_conflicting_answers(tmp_path):
    rows = [
        chat("What is 2 plus 2?", "4."),
        chat("what is 2 plus 2", "Five."),
        chat("Hi", "Hello."),
    ]
    report = lint_files([write(tmp_path / "a.jsonl", rows)], suites=[])
    (conflict,) = [p for p in report.problems if p.kind == "conflict"]
    assert conflict.where.endswith(":1") and conflict.other[0].endswith(":2")


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("Here you go:\n```python\nprint('hi')\n", "code fence"),
        ('{"name": "Trok", "job": "sai', "JSON"),
        (LONG + " and then the", "mid-sentence"),
        (LONG + ".", None),
        ("- " + LONG, None),  # a list item needs no full stop
        ("ok", None),
    ],
)
def test_truncation(reply, why):
    found = truncation(reply)
    assert (found is None) if why is None else (why in found)


def test_contamination_flags_a_paraphrased_leak_not_the_template(tmp_path):
    from harness.eval.suites import load_suite
    from harness.util.files import read_jsonl

    items = read_jsonl(load_suite("refusal").data_path("english"))
    item = max(items, key=lambda r: len(r["prompt"].split()))
    words = item["prompt"].split()
    words[1] = "REALLY"  # a leak need not be verbatim
    leaked = chat("Quick question. " + " ".join(words), "Sure.")
    unrelated = chat("How can I bake bread at home without a proper oven?", "Use a pot.")
    f = write(tmp_path / "a.jsonl", [unrelated, leaked])
    report = lint_files([f], suites=["refusal"], dataset="english")
    (hit,) = [p for p in report.problems if p.kind == "contamination"]
    assert hit.where.endswith("a.jsonl:2") and hit.other == (f"refusal/{item['id']}",)


def test_toy_sft_data_is_not_contaminated(toy_tiny, tmp_path):
    sft = sorted((toy_tiny.data_dir / "sft").glob("*.jsonl"))
    report = lint_files(sft, dataset="toy")
    checked = {"consistency", "forgetting", "format", "imitation", "refusal", "target"}
    assert set(report.suites) == checked  # overfitting holds SFT prompts on purpose
    assert any("overfitting" in note for note in report.notes)
    assert not [p for p in report.problems if p.kind == "contamination"], report.summary()
    # ... while a planted copy of one held-out item is found.
    target = json.loads((toy_tiny.data_dir / "eval" / "target.jsonl").read_text().splitlines()[0])
    leak = write(tmp_path / "leak.jsonl", [chat(target["prompt"], "?")])
    hits = [p for p in lint_files([leak], suites=["target"]).problems if p.kind == "contamination"]
    assert hits and hits[0].other[0] == f"target/{target['id']}"


def test_cli_exit_codes_and_json(tmp_path, capsys):
    clean = write(tmp_path / "clean.jsonl", [chat("a?", "b."), chat("c?", "d.")])
    dirty = write(tmp_path / "dirty.jsonl", [chat("a?", "b."), chat("a?", "b."), "{oops"])
    assert main(["data", "lint", str(clean), "--suites", "none"]) == EXIT_OK
    assert "clean" in capsys.readouterr().out
    assert main(["data", "lint", str(dirty), "--suites", "none", "--json"]) == EXIT_FINDING
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is False and body["problems_by_kind"] == {"bad_row": 1, "duplicate": 1}
    assert main(["data", "lint", str(tmp_path / "absent.jsonl")]) == EXIT_ERROR


def test_lint_experiment_uses_the_experiments_sources_and_suites(tmp_path, toy_tiny):
    from harness.config.load import load_experiment

    write(tmp_path / "mine.jsonl", [chat("a?", "b."), chat("a?", "c.")])
    (tmp_path / "exp.yaml").write_text(
        "name: lint\nmodel: toy:tiny\n"
        "data:\n  sources:\n    - {name: mine, path: mine.jsonl}\n"
        "    - {name: qa, path: 'toy:sft/qa.jsonl'}\n"
        "eval: {suites: [target]}\n"
    )
    report = lint_experiment(load_experiment(tmp_path / "exp.yaml"))
    assert set(report.counts) == {"mine", "qa"} and report.suites == ["target"]
    assert kinds(report) == {"conflict": 1}
