"""Study reports read back from a real MLflow sqlite store in the harness layout."""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow_store import build_study, new_store

from harness.cli import main
from harness.report import pareto_front, write_study_report


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri, client = new_store(root)
    done = build_study(client, root, "mixdemo", n_trials=3)
    running = build_study(client, root, "midway", n_trials=2, finished=False)
    return {"uri": uri, "root": root, "done": done, "running": running}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_cell = tag in ("td", "th")

    def handle_endtag(self, tag: str) -> None:
        self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def test_report_writes_markdown_and_self_contained_html(store: dict, tmp_path: Path) -> None:
    md, html = write_study_report("mixdemo", store["uri"], tmp_path / "out")
    assert md.is_file() and html.is_file()
    page = _Page()
    page.feed(html.read_text())
    page.close()
    prefix = "data:image/png;base64,"
    assert len(page.images) >= 4  # pareto, ablation, forgetting of the best trial(s), loss
    for src in page.images:
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    for label in ("#0", "#1", "#2", "COMPLETE", "replay share", "data.sources.replay.weight"):
        assert label in page.cells
    text = md.read_text()
    assert "PARTIAL" not in text
    for heading in (
        "Best trial(s)",
        "Trials",
        "Pareto front",
        "Forgetting per task",
        "What these suites can detect",
        "Training loss",
    ):
        assert f"## {heading}" in text
    assert "plots/pareto.png" in text and (md.parent / "plots" / "pareto.png").is_file()
    assert "95% paired CI" in text and "capitals" in text  # per-task forgetting from records
    # each gated metric with its n and detectable change (forgetting: disagreement vs base)
    assert "| refusal/harmful_refusal_rate |" in text and "observed vs base" in text
    assert "Pareto-optimal on target/accuracy (maximize), forgetting/delta (maximize)" in text
    assert "refusal rates are only as good as their judge: 0.943 agreement" in text


def test_report_of_a_running_study_says_partial_at_the_top(store: dict, tmp_path: Path) -> None:
    md, html = write_study_report("midway", store["uri"], tmp_path)
    head = md.read_text().splitlines()[:3]
    assert head[0] == "# Study report: midway (partial)"
    assert "PARTIAL REPORT" in head[2] and "1 trial(s) still RUNNING" in head[2]
    assert "parent run is RUNNING" in head[2]
    assert 'class="warn">PARTIAL REPORT' in html.read_text()


def test_cli_report_from_experiment_file_and_default_out(
    store: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        "name: mixdemo\n"
        "data:\n  sources:\n    - {name: task, path: task.jsonl}\n"
        f"tracking_uri: {store['uri']}\n"
        "objectives:\n  - {metric: target/accuracy}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(exp)]) == 0
    text = (tmp_path / "reports" / "mixdemo" / "report.md").read_text()
    assert "among trials that satisfy" not in text  # the file declares no constraints
    assert "est target/accuracy (maximize) among completed trials" in text
    assert "| #2 |" in text.split("## Best trial(s)")[1].split("##")[0]


def test_cli_unknown_study_is_one_line_exit_2(
    store: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["report", "nope", "--tracking-uri", store["uri"], "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "no study named 'nope'" in err and "mixdemo" in err


def test_pareto_front() -> None:
    pts = [(0.5, -0.1), (0.7, -0.2), (0.6, -0.3), (0.7, -0.1)]
    assert pareto_front(pts, [True, True]) == [3]
    assert pareto_front(pts[:3], [True, True]) == [0, 1]
