"""Behavioural suites on lm-eval with the tiny toy model: summaries agree with the per-sample
records, the base cache is hit without model calls, forced replies score as they must, forgetting
deltas are paired, and `harness eval` works end to end."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from harness.config.schema import EvalConfig
from harness.eval import runner as ev
from harness.eval import summaries
from harness.eval.refusal import COMPLIANCE, classify
from harness.eval.scorers import check_all
from harness.eval.suites import load_suite, select_docs
from harness.models.toy.world import REFUSAL_REPLY
from harness.util.errors import HarnessError
from harness.util.names import metric_name

pytestmark = pytest.mark.slow
CFG = EvalConfig(batch_size=32, max_new_tokens=48)
MLFLOW_SAFE = re.compile(r"^[A-Za-z0-9_\-. /]+$")


@pytest.fixture(scope="module")
def tiny(toy_tiny):
    """Loaded as the base cache loads it (same device and dtype), so base-vs-itself is exact."""
    from harness.models.load import load_model, load_tokenizer

    return load_model("toy:tiny"), load_tokenizer("toy:tiny")


def forced_reply_model(model_dir, tokenizer, reply: str):
    """The tiny Llama whose logits are overridden to emit `reply` then end-of-turn, token by
    token through the real `generate` loop (all rows of a left-padded batch share the step)."""
    from transformers import LlamaForCausalLM

    class ForcedReply(LlamaForCausalLM):
        def forward(self, input_ids=None, **kwargs):
            out = super().forward(input_ids=input_ids, **kwargs)
            self.step = 0 if input_ids.shape[1] > 1 else self.step + 1
            token = self.reply_ids[min(self.step, len(self.reply_ids) - 1)]
            out.logits[:, -1, :] = -1e4
            out.logits[:, -1, token] = 1e4
            return out

    model = ForcedReply.from_pretrained(model_dir)
    ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
    model.reply_ids = [*ids, tokenizer.eos_token_id]
    return model


# ---------------------------------------------------------------- end to end on the tiny model


def test_all_suites_run_and_summaries_match_records(tiny, tmp_path):
    model, tokenizer = tiny
    model.train()
    suites = ["forgetting", "refusal", "format", "target"]
    result = ev.evaluate(model, tokenizer, suites, eval_config=CFG, limit=12, out_dir=tmp_path)
    assert model.training, "train mode must be restored after evaluating mid-training"
    model.eval()

    s, rec = result.summary, result.records
    assert set(rec) == set(suites)
    assert all(MLFLOW_SAFE.match(k) for k in s), [k for k in s if not MLFLOW_SAFE.match(k)]
    assert all(0.0 <= v <= 1.0 for v in s.values())

    def mean(xs):
        return sum(xs) / len(xs)

    fg = rec["forgetting"]
    assert {r["task"] for r in fg} == {"toy_facts", "toy_arith"} and len(fg) == 24  # 12 per task
    for task in ("toy_facts", "toy_arith"):
        acc = mean([r["scores"]["acc"] for r in fg if r["task"] == task])
        assert s[f"forgetting/{task}/acc"] == pytest.approx(acc)
    for r in fg:  # acc is argmax log-likelihood == gold
        assert r["scores"]["acc"] == float(r["response"] == r["target"])
        assert r["prompt"] == r["doc"]["context"]

    refusal = rec["refusal"]
    assert {r["doc"]["label"] for r in refusal} == {"harmful", "benign"}  # interleaved by label
    for r in refusal:
        assert r["scores"]["refused"] == float(classify(r["response"]) != COMPLIANCE)
        assert r["prompt"].endswith("<|assistant|>\n")  # chat template with generation prompt
    for label in ("harmful", "benign"):
        rows = [r["scores"]["refused"] for r in refusal if r["doc"]["label"] == label]
        assert s[f"refusal/{label}_refusal_rate"] == pytest.approx(mean(rows))
        assert s[f"refusal/{label}_refusal_rate_low"] <= s[f"refusal/{label}_refusal_rate"]
        assert s[f"refusal/{label}_refusal_rate"] <= s[f"refusal/{label}_refusal_rate_high"]
    assert s["judge/refusal/accuracy"] >= 0.93  # the judge's measured accuracy rides along

    fmt = rec["format"]
    for r in fmt:
        assert r["scores"]["pass"] == float(check_all(r["response"], r["doc"]["specs"]))
    assert s["format/pass_rate"] == pytest.approx(mean([r["scores"]["pass"] for r in fmt]))
    for kind in {spec["type"] for r in fmt for spec in r["doc"]["specs"]}:
        rows = [r for r in fmt if kind in {spec["type"] for spec in r["doc"]["specs"]}]
        assert s[f"format/{kind}/pass_rate"] == pytest.approx(
            mean([r["scores"]["pass"] for r in rows])
        )

    target = rec["target"]
    correct = [float(r["doc"]["gold"].lower() in r["response"].lower()) for r in target]
    assert s["target/accuracy"] == pytest.approx(mean(correct))

    saved = ev.load_result(tmp_path)
    assert saved.summary == s and saved.records == json.loads(json.dumps(rec))
    assert (tmp_path / "refusal.jsonl").read_text().count("\n") == len(refusal)


def test_english_data_sets_load_and_normalise(tiny):
    model, tokenizer = tiny
    cfg = CFG.model_copy(update={"max_new_tokens": 430})  # English format items need up to 420
    result = ev.evaluate(
        model, tokenizer, ["forgetting", "refusal", "format"], eval_config=cfg,
        dataset="english", limit=2,
    )  # fmt: skip
    fg = result.records["forgetting"]
    assert len({r["task"] for r in fg}) >= 2 and all(len(r["choices"]) >= 2 for r in fg)
    assert all(
        r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:") for r in fg
    )
    assert all(c.startswith(" ") for r in fg for c in r["choices"])
    assert {r["doc"]["label"] for r in result.records["refusal"]} == {"harmful", "benign"}
    assert "format/pass_rate" in result.summary


def test_base_cache_is_hit_without_model_calls(monkeypatch, tmp_path):
    real_path = ev._cache_path
    monkeypatch.setattr(ev, "_cache_path", lambda *a: tmp_path / real_path(*a).name)
    calls = {"load": 0, "run": 0}
    import harness.models.load

    real_load, real_run = harness.models.load.load_model, ev._evaluate_records

    def counting_load(*a, **k):
        calls["load"] += 1
        return real_load(*a, **k)

    def counting_run(*a, **k):
        calls["run"] += 1
        return real_run(*a, **k)

    monkeypatch.setattr(harness.models.load, "load_model", counting_load)
    monkeypatch.setattr(ev, "_evaluate_records", counting_run)

    first = ev.evaluate_base("toy:tiny", ["forgetting", "format"], CFG, "toy", limit=5)
    assert calls == {"load": 1, "run": 1} and first.info["cached"] == []
    assert len(list(tmp_path.glob("*.json"))) == 2 and not list(tmp_path.glob(".*tmp"))

    second = ev.evaluate_base("toy:tiny", ["forgetting", "format"], CFG, "toy", limit=5)
    assert calls == {"load": 1, "run": 1}, "a cache hit must not load or run the model"
    assert second.records == first.records and second.summary == first.summary
    assert second.summary["forgetting/delta"] == 0.0  # the base against itself

    ev.evaluate_base("toy:tiny", ["forgetting"], CFG, "toy", limit=6)  # other settings: a miss
    assert calls == {"load": 2, "run": 2}


@pytest.mark.parametrize(
    ("reply", "expected"),
    [(REFUSAL_REPLY, 1.0), ("Pull the weeds out by the root and water the soil.", 0.0)],
)
def test_refusal_rates_of_models_that_always_or_never_refuse(toy_tiny, tiny, reply, expected):
    tokenizer = tiny[1]
    model = forced_reply_model(toy_tiny.model_dir, tokenizer, reply)
    result = ev.evaluate(model, tokenizer, ["refusal"], eval_config=CFG, limit=10)
    assert {r["response"] for r in result.records["refusal"]} == {reply}
    assert result.summary["refusal/harmful_refusal_rate"] == expected
    assert result.summary["refusal/benign_refusal_rate"] == expected
    # a stratified sample of both labels, in proportion to the file; one side right
    labels = [r["label"] for r in result.records["refusal"]]
    assert 0 < labels.count("harmful") < len(labels)
    right = labels.count("harmful" if expected else "benign")
    assert result.summary["refusal/accuracy"] == pytest.approx(right / len(labels))


def test_format_scores_of_a_forced_reply(toy_tiny, tiny):
    tokenizer = tiny[1]
    reply = "- the capital is far away.\n- the flag is red."
    model = forced_reply_model(toy_tiny.model_dir, tokenizer, reply)
    result = ev.evaluate(model, tokenizer, ["format"], eval_config=CFG, limit=40)
    records = result.records["format"]
    assert {r["response"] for r in records} == {reply}
    expected = [check_all(reply, r["doc"]["specs"]) for r in records]
    assert [bool(r["scores"]["pass"]) for r in records] == expected
    assert 0 < sum(expected) < len(expected)  # some constraints hold for this reply, some do not
    assert result.summary["format/pass_rate"] == pytest.approx(sum(expected) / len(expected))
    assert result.summary["format/lowercase/pass_rate"] > 0  # all-lowercase reply
    assert result.summary["format/uppercase/pass_rate"] == 0.0


def test_forgetting_delta_is_zero_for_the_base_and_negative_when_weights_are_damaged(tiny):
    model, tokenizer = tiny
    same = ev.evaluate(model, tokenizer, ["forgetting"], eval_config=CFG, base="toy:tiny", limit=20)
    s = same.summary
    assert s["forgetting/delta"] == 0.0 and s["forgetting/mcnemar_p"] == 1.0
    assert s["forgetting/acc"] == s["forgetting/base_acc"]
    assert s["forgetting/toy_arith/delta"] == 0.0 and s["forgetting/toy_facts/delta"] == 0.0

    damaged = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in damaged.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p) * p.std())
    base = ev.evaluate_base("toy:tiny", ["forgetting"], CFG, "toy", limit=20)
    worse = ev.evaluate(damaged, tokenizer, ["forgetting"], eval_config=CFG, base=base, limit=20)
    w = worse.summary
    assert w["forgetting/delta"] < 0
    assert w["forgetting/delta"] == pytest.approx(w["forgetting/acc"] - w["forgetting/base_acc"])
    assert w["forgetting/delta_low"] <= w["forgetting/delta"] <= w["forgetting/delta_high"]
    assert 0.0 <= w["forgetting/mcnemar_p"] <= 1.0


def test_unmerged_peft_model_is_evaluated_in_memory(tiny):
    from peft import LoraConfig, get_peft_model

    from harness.models.load import load_model

    base_model = load_model("toy:tiny")
    peft_model = get_peft_model(base_model, LoraConfig(r=4, target_modules="all-linear"))
    # A fresh LoRA adds exactly zero (B = 0): the same answers as the base, item by item. The
    # data set is found from the model's own path (auto -> toy).
    result = ev.evaluate(
        peft_model, tiny[1], ["forgetting"], eval_config=CFG, base="toy:tiny", limit=8
    )
    assert result.dataset == "toy"
    assert result.summary["forgetting/delta"] == 0.0


def test_open_suite_from_an_extra_folder(tiny, tmp_path):
    """A user suite: a folder with suite.yaml + task YAML + data, no engine change."""
    model, tokenizer = tiny
    folder = tmp_path / "capitals"
    folder.mkdir()
    rows = [
        {"id": f"q{i}", "prompt": "What is the capital of Drouken?", "gold": "a"} for i in range(3)
    ]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_suite("target").task_files[0].read_text()  # reuses harness.eval.hooks.score_target
    (folder / "capitals.yaml").write_text(task.replace("task: target", "task: capitals"))
    (folder / "suite.yaml").write_text(
        "name: capitals\ntasks: [capitals.yaml]\ndata: {english: data.jsonl}\n"
        "output_type: generate_until\nmetrics:\n  - {name: accuracy, score: correct}\n"
    )
    result = ev.evaluate(
        model, tokenizer, ["capitals"], eval_config=CFG, dataset="english", suite_dirs=[tmp_path]
    )
    assert len(result.records["capitals"]) == 3
    assert 0.0 <= result.summary["capitals/accuracy"] <= 1.0


# ---------------------------------------------------------------- the CLI


def test_cli_eval_prints_a_table_and_writes_records(tmp_path, capsys):
    from harness.cli import main

    code = main(
        ["eval", "--model", "toy:tiny", "--suites", "forgetting,format", "--limit", "4",
         "--out", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"forgetting/delta\s+0\.000", out) and "format/pass_rate" in out
    summary = json.loads((tmp_path / "summary.json").read_text())["summary"]
    assert summary["forgetting/delta"] == 0.0
    assert (tmp_path / "forgetting.jsonl").is_file() and (tmp_path / "format.jsonl").is_file()


def test_cli_eval_of_an_adapter_compares_with_its_base(toy_tiny, tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.cli import main

    model = AutoModelForCausalLM.from_pretrained(toy_tiny.model_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(
        tmp_path / "adapter"
    )
    args = ["eval", "--model", "toy:tiny", "--adapter", str(tmp_path / "adapter")]
    code = main([*args, "--suites", "forgetting", "--limit", "4", "--out", str(tmp_path / "o")])
    assert code == 0
    assert re.search(r"forgetting/base_acc\s+\d\.\d{3}", capsys.readouterr().out)
    saved = ev.load_result(tmp_path / "o")
    assert saved.summary["forgetting/delta"] == 0.0  # a fresh LoRA changes nothing
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["info"]["adapter"]


def test_cli_unknown_suite_is_one_line_and_exit_2(capsys):
    from harness.cli import main

    assert main(["eval", "--model", "toy:tiny", "--suites", "forgetting,nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nope" in err and "known suites: consistency, forgetting" in err


# ---------------------------------------------------------------- pure logic, no model


def _rec(task, i, score, **doc):
    return {"task": task, "id": str(i), "doc_hash": f"h{i}", "scores": {"acc": score}, "doc": doc}


def test_summarize_pairs_items_with_the_base():
    suite = load_suite("forgetting")
    base = [_rec("a", i, 1.0) for i in range(10)] + [_rec("b", i, 1.0) for i in range(10)]
    cand = [_rec("a", i, float(i >= 4)) for i in range(10)] + [_rec("b", i, 1.0) for i in range(10)]
    s = summaries.summarize(suite, cand, base)
    assert s["forgetting/a/acc"] == 0.6 and s["forgetting/a/base_acc"] == 1.0
    assert s["forgetting/a/delta"] == pytest.approx(-0.4) and s["forgetting/b/delta"] == 0.0
    assert s["forgetting/delta"] == pytest.approx(-0.2)
    assert s["forgetting/delta_low"] < -0.05 and s["forgetting/delta_high"] <= 0.0
    assert s["forgetting/mcnemar_p"] == pytest.approx(0.125)  # 4 discordant pairs, all one way
    assert "forgetting/base_acc" in summaries.summarize(suite, cand, base)
    assert "forgetting/delta" not in summaries.summarize(suite, cand)  # no base: no comparison

    changed = [dict(r, doc_hash="other") for r in base]
    with pytest.raises(HarnessError, match="differs between base and candidate"):
        summaries.summarize(suite, cand, changed)


def test_select_docs_interleaves_labels_and_splits_tasks():
    import datasets

    rows = [{"label": "h", "task": "x"}] * 3 + [{"label": "b", "task": "y"}] * 2
    ds = datasets.Dataset.from_list(rows)
    assert select_docs(ds, interleave="label")["label"] == ["h", "b", "h", "b", "h"]
    assert len(select_docs(ds, field="task", value="y")) == 2


def test_select_docs_orders_a_seeded_stratified_sample():
    """A file sorted by category: any first N rows hold every category in proportion."""
    import datasets

    cats = ["a"] * 40 + ["b"] * 40 + ["c"] * 20
    rows = [
        {"id": f"r{i}", "category": c, "specs": [{"type": c.upper()}]} for i, c in enumerate(cats)
    ]
    ds = datasets.Dataset.from_list(rows)
    first = select_docs(ds)["category"][:10]
    assert (first.count("a"), first.count("b"), first.count("c")) == (4, 4, 2)
    assert select_docs(ds)["id"] == select_docs(ds)["id"]  # seeded: every run the same items
    assert select_docs(ds, seed=1)["id"] != select_docs(ds)["id"]
    by_type = select_docs(ds.remove_columns("category"), interleave="specs.type")
    assert sorted(r["type"] for s in by_type["specs"][:5] for r in s) == ["A", "A", "B", "B", "C"]


def test_suite_validation_and_names(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "suite.yaml").write_text("name: bad\ntasks: [t.yaml]\ncolour: red\n")
    with pytest.raises(HarnessError, match=r"suite.yaml: colour: is not a known field"):
        load_suite("bad", [tmp_path])
    with pytest.raises(HarnessError, match="unknown eval suite 'zzz'; known suites: .*refusal"):
        load_suite("zzz")
    assert metric_name("forgetting", "arc,easy (v2)", "acc") == "forgetting/arc_easy _v2_/acc"
    table = summaries.format_summary(
        {"a/rate": 0.5, "a/rate_low": 0.25, "a/rate_high": 0.75, "b": 1.0}
    )
    assert "[+0.250, +0.750]" in table and "rate_low" not in table
