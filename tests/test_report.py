"""Study reports read back from a real MLflow sqlite store in the harness layout."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from mlflow_store import build_factor_study, build_study, new_store

from harness.cli import main
from harness.config.search import SearchSpace
from harness.stats.pareto import pareto_front
from harness.util.errors import HarnessError
from harness.verdicts import analysis
from harness.verdicts.analysis import Study, Trial, main_effects, matched_pairs
from harness.verdicts.report import write_study_report


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mlflow")
    uri, client = new_store(root)
    done = build_study(client, root, "mixdemo", n_trials=3)
    running = build_study(client, root, "midway", n_trials=2, finished=False)
    build_factor_study(client, root, "factors")
    build_factor_study(client, root, "factors-old-spec", names_only=True)
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
        "forgetting per task vs the base model",
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
    # No search space in this study's spec: no effects, said plainly, and an empty effects.json.
    assert "records no search space" in text.split("## Effects of searched factors")[1]
    assert json.loads((md.parent / "effects.json").read_text()) == []
    # Wide tables scroll in their own box instead of widening the page.
    assert (
        '<div class="table"><table>' in html.read_text() and "overflow-x: auto" in html.read_text()
    )


def test_effects_of_searched_factors(store: dict, tmp_path: Path) -> None:
    """Replay weight 0.5 raises harmful refusals in the study's records; the scheduler does
    nothing: the table, effects.json, the sentence and the plot say so."""
    md, _ = write_study_report("factors", store["uri"], tmp_path)
    effects = json.loads((tmp_path / "effects.json").read_text())
    keys = {"factor", "level", "reference", "metric", "diff", "low", "high", "n"}
    assert all(keys <= set(e) for e in effects)
    by_factor = {e["factor"]: e for e in effects}
    # Only the metric the spec declares gated: read from the spec, not the suite folder.
    assert {e["metric"] for e in effects} == {"refusal/harmful_refusal_rate"}
    weight, scheduler = by_factor["data.sources.replay.weight"], by_factor["train.scheduler"]
    assert (weight["level"], weight["reference"]) == ("0.5", "0.0")
    assert 0 < weight["low"] < weight["diff"] < weight["high"] and weight["decided"]
    # every harmful item complied with at weight 0 is refused at 0.5 (~10% of 120), less noise
    assert weight["diff"] == pytest.approx(0.1, abs=0.04)
    assert (weight["n"], weight["pairs"], weight["replicates"]) == (120, 2, 2)
    assert scheduler["low"] < 0 < scheduler["high"] and not scheduler["decided"]
    text = md.read_text()
    section = text.split("## Effects of searched factors")[1].split("\n## ")[0]
    assert "| data.sources.replay.weight | 0.5 | 0.0 | refusal/harmful_refusal_rate |" in section
    assert "| yes |" in section and "| not decided |" in section
    assert "Decided (adjusted p <= 0.05): data.sources.replay.weight = 0.5" in section
    assert "Not decided: train.scheduler = linear" in section
    # raw and adjusted p-values, the method in the header, seed noise from the replicates
    assert weight["p_adjusted"] == pytest.approx(min(1.0, 2 * weight["p_value"]))  # Holm, 2 cells
    assert {e["multiplicity"] for e in effects} == {"holm"} and weight["seed_noise"]
    assert "with Holm (the chance that a study with no true effect" in section
    assert "seed noise (estimated from the study's own replicated configurations" in section
    assert "plots/effects.png" in section and (tmp_path / "plots" / "effects.png").is_file()
    assert "Behaviour against searched parameters" not in text


def test_effects_of_an_old_spec_take_metrics_from_the_suite_folders(
    store: dict, tmp_path: Path
) -> None:
    write_study_report("factors-old-spec", store["uri"], tmp_path)
    effects = json.loads((tmp_path / "effects.json").read_text())
    assert {e["metric"] for e in effects} == {
        "refusal/harmful_refusal_rate",
        "refusal/benign_refusal_rate",
    }


def test_one_run_per_configuration_decides_nothing_and_says_why(store: dict) -> None:
    """With one run per configuration the intervals hold item noise only: the report says so
    and calls no effect decided, however small its p-value; Benjamini-Hochberg on request."""
    from harness.verdicts.analysis import load_study
    from harness.verdicts.effect_blocks import effects_header

    study = load_study("factors", store["uri"])
    for t in study.trials:
        t.run_ids = t.run_ids[:1]
    effects = main_effects(study, method="bh")
    weight = next(e for e in effects.rows if e.factor == "data.sources.replay.weight")
    assert weight.estimate.p_value < 0.05 and not weight.estimate.seed_noise
    assert not any(e.decided for e in effects.rows)
    assert effects.method == "bh" and set(effects.seed_df.values()) == {None}
    header = effects_header(effects)
    assert "seed noise is NOT included" in header and "Benjamini-Hochberg" in header


def test_factors_without_matched_pairs_or_with_ranges_are_named() -> None:
    search = {
        "data.sources.replay.weight": SearchSpace(type="grid", choices=[0, 0.5]),
        "train.learning_rate": SearchSpace(type="float", low=1e-4, high=1e-2),
        "train.scheduler": SearchSpace(type="categorical", choices=["cosine", "linear"]),
    }
    trials = [
        Trial(0, "COMPLETE", "a", {"data.sources.replay.weight": "0", "train.scheduler": "cosine"}),
        Trial(1, "COMPLETE", "b", {"data.sources.replay.weight": "0.5", "train.scheduler": "cosine"}),
        Trial(2, "FAIL", "c", {"data.sources.replay.weight": "0.5", "train.scheduler": "linear"}),
        Trial(3, "COMPLETE", "d", {"data.sources.replay.weight": "0.5"}),
    ]  # fmt: skip
    for t in trials:
        t.run_ids = [t.run_id]
    study = Study("s", "sqlite://", None, None, {}, {}, trials, [], [], [], search=search)
    effects = main_effects(study)
    assert effects.continuous == ["train.learning_rate"]
    assert effects.unmatched == ["train.scheduler"]  # linear only in the failed trial
    assert effects.rows == []  # no trial logged a headline metric
    # "0.0" logged for the choice 0 pairs; trial 3 (scheduler not sampled) pairs with none.
    trials[0].params["data.sources.replay.weight"] = "0.0"
    pairs = matched_pairs(trials, "data.sources.replay.weight", ["0", "0.5"])
    assert [[(a.number, b.number) for (a,), (b,) in p] for p in pairs.values()] == [[(0, 1)]]


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


def test_a_learning_rate_per_method_goes_with_the_method() -> None:
    """LoRA and full fine-tuning each with their own learning rate (`cases`) still pair up:
    the rate is part of the method's level, not another factor that differs."""
    search = {
        "peft.enabled": SearchSpace(type="grid", choices=[True, False]),
        "train.learning_rate": SearchSpace(
            cases=[
                SearchSpace(when={"peft.enabled": True}, type="grid", choices=[1e-2]),
                SearchSpace(when={"peft.enabled": False}, type="grid", choices=[1e-3]),
            ]
        ),
        "data.sources.replay.weight": SearchSpace(type="grid", choices=[0, 0.5]),
    }
    trials = [
        Trial(i, "COMPLETE", f"r{i}", {"peft.enabled": lora, "train.learning_rate": lr,
                                       "data.sources.replay.weight": replay})
        for i, (lora, lr, replay) in enumerate(
            [("true", "0.01", "0"), ("false", "0.001", "0"), ("true", "0.01", "0.5"),
             ("false", "0.001", "0.5")]
        )
    ]  # fmt: skip
    assert analysis.followers(search, "peft.enabled") == ["train.learning_rate"]
    assert analysis.followers(search, "data.sources.replay.weight") == []
    follows = analysis.followers(search, "peft.enabled")
    pairs = matched_pairs(trials, "peft.enabled", ["true", "false"], follows)
    assert [[(a.number, b.number) for (a,), (b,) in p] for p in pairs.values()] == [
        [(0, 1), (2, 3)]
    ]
    assert matched_pairs(trials, "peft.enabled", ["true", "false"]) == {}  # rates differ

    # Two rates for LoRA: two configurations, not replicates of one; each meets full's.
    trials += [Trial(4, "COMPLETE", "r4", {**trials[0].params, "train.learning_rate": "0.003"})]
    pairs = matched_pairs(trials, "peft.enabled", ["true", "false"], follows)
    assert sorted((a.number, b.number) for p in pairs.values() for (a,), (b,) in p) == [
        (0, 1), (2, 3), (4, 1)
    ]  # fmt: skip


def test_forgetting_per_task_takes_replicates_as_a_second_level() -> None:
    """Two replicates that disagree about a whole task (one seed forgot more) give a wider
    interval than either run alone; a replicate whose item differs in content is refused."""
    from harness.verdicts.analysis import forgetting_by_task

    rng = np.random.default_rng(0)

    def run(acc: float) -> list[dict]:
        return [
            {"task": "arc", "id": str(i), "base_score": float(i % 2),
             "score": float(rng.random() < acc), "item_hash": f"h{i}"}
            for i in range(300)
        ]  # fmt: skip

    one = forgetting_by_task([run(0.3)])[0]
    two = forgetting_by_task([run(0.3), run(0.45)])[0]
    assert (one["runs"], two["runs"]) == (1, 2) and one["test"] == "mcnemar_exact"
    assert two["high"] - two["low"] > 2 * (one["high"] - one["low"])
    edited = run(0.3)
    edited[5]["item_hash"] = "other"
    with pytest.raises(HarnessError, match="suite 'forgetting' has 1 item.*arc/5"):
        forgetting_by_task([run(0.3), edited])


def test_forgetting_per_task_pools_seed_noise_over_the_study() -> None:
    """Two seeds that differ on one item give a t with one degree of freedom on their own: an
    interval as wide as the scale (the real pilot showed +-0.5 on 20 items). Seed noise pooled
    over the study's replicated configurations gives it the study's degrees of freedom; a noisy
    configuration elsewhere widens it again."""
    from harness.verdicts.analysis import forgetting_by_task, task_seed_noise

    def run(
        changed: int, n: int = 20
    ) -> list[dict]:  # the first `changed` answers differ from the base
        return [
            {"task": "arc", "id": str(i), "base_score": float(i % 2),
             "score": float(i % 2 if i >= changed else 1 - i % 2), "item_hash": f"h{i}"}
            for i in range(n)
        ]  # fmt: skip

    trial = [run(0), run(1)]
    alone = forgetting_by_task(trial)[0]
    assert alone["high"] - alone["low"] > 0.5
    study = [trial, [run(1), run(1)], [run(2), run(2)], [run(0), run(0)]]
    noise = task_seed_noise(study)
    assert noise["arc"].df == 4
    pooled = forgetting_by_task(trial, noise=noise)[0]
    assert (pooled["high"] - pooled["low"]) < 0.5 * (alone["high"] - alone["low"])
    assert pooled["delta"] == alone["delta"]
    noisy = task_seed_noise([*study, [run(0), run(12)]])
    wide = forgetting_by_task(trial, noise=noisy)[0]
    assert (wide["high"] - wide["low"]) > (pooled["high"] - pooled["low"])
    assert forgetting_by_task([run(2)], noise=noise)[0]["test"] == "mcnemar_exact"


def test_detectable_change_counts_families() -> None:
    """A suite that declares item families (`cluster_by`) detects less than its item count
    suggests: the 'What these suites can detect' row says how many families and widens."""
    from harness.config.suite import MetricSpec, SuiteMetrics
    from harness.verdicts.report import _detectable_blocks

    spec = MetricSpec(name="accuracy", score="correct", gate=True, threshold=0.02)
    rng = np.random.default_rng(1)
    know_base, know = rng.random(100) < 0.6, rng.random(100) < 0.6
    rows = [
        {"task": "c", "id": f"{f}-{i}", "doc": {"fact": f"f{f}"},
         "scores": {"correct": float(know[f])}, "base_score": float(know_base[f])}
        for f in range(100)
        for i in range(3)
    ]  # fmt: skip
    trial = Trial(0, "COMPLETE", "r1", {})
    texts = {}
    for cluster_by in (None, "fact"):
        suite = SuiteMetrics(name="consistency", metrics=[spec], cluster_by=cluster_by)
        study = Study("s", "sqlite://", None, None, {}, {}, [trial], [], [], [], suites=[suite])
        study._records["r1"] = {"consistency": rows}
        texts[cluster_by] = _detectable_blocks(study, [trial])[1].rows[0]
    assert "100 families" in texts["fact"][3] and "families" not in texts[None][3]
    assert float(texts["fact"][4]) > 1.5 * float(texts[None][4])
