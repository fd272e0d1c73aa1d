"""The base-model cache key covers everything that changes a base score: each change below gives
another key (a miss), an irrelevant one (a README) does not, and one real round trip hits, then
misses when the eval batch size changes."""

from __future__ import annotations

import importlib.metadata
import json
import shutil

import pytest
import torch

import harness.models.load
from harness.config.schema import EvalConfig, StandardTask
from harness.eval import base_cache
from harness.eval import runner as ev
from harness.eval.suites import EVALS_DIR, load_suite
from harness.models.load import load_tokenizer, resolve_model_path

CFG = EvalConfig(batch_size=8, max_new_tokens=48)  # the toy format suite needs up to 48


def key(suite="refusal", cfg=CFG, *, model="toy:tiny", tokenizer=None, extra=(), limit=5):
    tok = tokenizer or load_tokenizer("toy:tiny")
    s = load_suite(suite, list(extra))
    context = base_cache._base_context(model, tok)
    return base_cache.cache_key(base_cache.model_fingerprint(model), s, cfg, "toy", limit, context)


@pytest.fixture(scope="module")
def base_key(toy_tiny):
    return key()


def test_run_settings_change_the_key(base_key, tmp_path):
    assert key() == base_key  # deterministic
    assert key(cfg=CFG.model_copy(update={"batch_size": 9})) != base_key
    assert key(cfg=CFG.model_copy(update={"max_new_tokens": 49})) != base_key
    assert key(limit=6) != base_key
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "q"}\n')
    with_task = CFG.model_copy(
        update={"tasks": [StandardTask(task="arc_easy", data_files={"validation": str(rows)})]}
    )
    first = key("forgetting", with_task)
    assert first != key("forgetting")
    rows.write_text('{"question": "another q"}\n')
    assert key("forgetting", with_task) != first  # the task's rows, not only its entry


def test_dtype_stop_strings_and_chat_template_change_the_key(base_key, tmp_path, monkeypatch):
    tok = load_tokenizer("toy:tiny")
    tok.chat_template = "System: be brief.\n" + tok.chat_template
    assert key(tokenizer=tok) != base_key

    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model_path("toy:tiny"), model_dir)
    other = next(i for t, i in tok.get_vocab().items() if t == "<|user|>")
    (model_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [other]}))
    moved = base_cache._base_context(str(model_dir), tok)
    assert "<|user|>" in moved["stop"]
    assert moved["stop"] != base_cache._base_context("toy:tiny", tok)["stop"]

    monkeypatch.setattr(harness.models.load, "train_dtype", lambda precision="auto": torch.bfloat16)
    assert key() != base_key


def test_suite_files_judge_data_and_hook_modules_change_the_key(base_key, tmp_path, monkeypatch):
    suites = tmp_path / "suites"
    shutil.copytree(EVALS_DIR / "refusal", suites / "refusal")  # a later folder wins the name
    copied = key(extra=[suites])
    (suites / "refusal" / "README.md").write_text("edited\n")
    assert key(extra=[suites]) == copied, "a README does not change a score"
    replies = suites / "refusal" / "replies.jsonl"  # the refusal judge's labelled replies
    replies.write_text(replies.read_text() + replies.read_text().splitlines()[0] + "\n")
    assert key(extra=[suites]) != copied

    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "h12e_hooks.py").write_text("def score(doc, results):\n    return {'ok': 1.0}\n")
    monkeypatch.syspath_prepend(str(lib))
    mine = suites / "mine"
    shutil.copytree(EVALS_DIR / "target", mine)
    task = mine / "target.yaml"
    task.write_text(task.read_text().replace("harness.eval.hooks.score_target", "h12e_hooks.score"))
    (mine / "suite.yaml").write_text((mine / "suite.yaml").read_text().replace("target", "mine", 1))
    before = key("mine", extra=[suites])
    (lib / "h12e_hooks.py").write_text("def score(doc, results):\n    return {'ok': 0.0}\n")
    assert key("mine", extra=[suites]) != before

    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "0.0-test" if name == "scikit-learn" else real_version(name),
    )
    assert key() != base_key


def test_a_real_round_trip_hits_then_misses_on_batch_size(toy_tiny, tmp_path, monkeypatch):
    real_path = ev._cache_path
    monkeypatch.setattr(ev, "_cache_path", lambda *a: tmp_path / real_path(*a).name)
    loads = []
    real_load = harness.models.load.load_model
    monkeypatch.setattr(
        harness.models.load, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )

    first = ev.evaluate_base("toy:tiny", ["format"], CFG, "toy", limit=3)
    second = ev.evaluate_base("toy:tiny", ["format"], CFG, "toy", limit=3)
    assert len(loads) == 1 and second.records == first.records
    assert second.info["cached"] == ["format"]
    ev.evaluate_base(
        "toy:tiny", ["format"], CFG.model_copy(update={"batch_size": 3}), "toy", limit=3
    )
    assert len(loads) == 2 and len(list(tmp_path.glob("format-*.json"))) == 2
