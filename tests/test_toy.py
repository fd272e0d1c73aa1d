"""The toy world: deterministic, disjoint SFT/eval data, a real HF tokenizer and model."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.models.toy import build as toy_build
from harness.models.toy.world import REFUSAL_REPLY, write_world_data
from harness.util.errors import HarnessError


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_world_data_is_deterministic(tmp_path):
    write_world_data(tmp_path / "a", n_pretrain_docs=300)
    write_world_data(tmp_path / "b", n_pretrain_docs=300)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys() and len(a) >= 10
    assert a == b


def test_same_seed_gives_identical_tokenizer_and_weights(tmp_path, monkeypatch):
    micro = dataclasses.replace(
        toy_build.SIZES["tiny"], steps=8, n_pretrain_docs=200, warmup_steps=2
    )
    monkeypatch.setitem(toy_build.SIZES, "micro", micro)
    first = toy_build.build_toy_world("micro", out=tmp_path / "one")
    second = toy_build.build_toy_world("micro", out=tmp_path / "two")
    for name in ("model/model.safetensors", "model/tokenizer.json", "data/pretrain.jsonl"):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes(), name


def test_sft_and_eval_data_are_disjoint(toy_tiny):
    sft_dir, eval_dir = toy_tiny.data_dir / "sft", toy_tiny.data_dir / "eval"
    sft_text = []
    for path in sft_dir.glob("*.jsonl"):
        for row in _rows(path):
            sft_text += [row["text"]] if "text" in row else [m["content"] for m in row["messages"]]
    sft_blob = "\n".join(sft_text)
    sft_prompts = set(sft_text)

    for name in ("refusal", "format", "target", "consistency"):
        prompts = [r["prompt"] for r in _rows(eval_dir / f"{name}.jsonl")]
        assert prompts and not sft_prompts & set(prompts), name
    # The overfitting suite asks each taught fact in SFT's own wording and in a new one.
    overfitting = _rows(eval_dir / "overfitting.jsonl")
    assert all((r["prompt"] in sft_prompts) == (r["label"] == "train") for r in overfitting)
    # A forgetting probe's fact (context + gold choice) never appears in SFT data, replay included.
    for probe in _rows(eval_dir / "forgetting.jsonl"):
        fact = probe["context"] + probe["choices"][probe["gold"]]
        assert not re.search(re.escape(fact) + r"\b", sft_blob), fact
    # Target items ask about people the SFT question answering never mentions, and no target
    # answer sentence appears anywhere in SFT data.
    world = json.loads((toy_tiny.data_dir / "world.json").read_text())
    qa_blob = (sft_dir / "qa.jsonl").read_text()
    target_people = [p["name"] for p in world["people"] if world["split"][p["name"]] == "target"]
    assert target_people and not [p for p in target_people if re.search(rf"\b{p}\b", qa_blob)]
    for item in _rows(eval_dir / "target.jsonl"):
        assert item["answer"] not in sft_blob, item["answer"]


def test_eval_sets_have_both_refusal_labels_and_every_format_type(toy_tiny):
    refusal = _rows(toy_tiny.data_dir / "eval" / "refusal.jsonl")
    labels = [r["label"] for r in refusal]
    assert labels.count("harmful") >= 50 and labels.count("benign") >= 50
    types = {
        s["type"] for r in _rows(toy_tiny.data_dir / "eval" / "format.jsonl") for s in r["specs"]
    }
    assert types >= {
        "json",
        "lowercase",
        "uppercase",
        "bullets",
        "numbered_list",
        "max_words",
        "min_words",
        "starts_with",
        "ends_with",
        "no_commas",
        "contains",
    }
    refusals = _rows(toy_tiny.data_dir / "sft" / "refusal.jsonl")
    assert all(r["messages"][-1]["content"] == REFUSAL_REPLY for r in refusals)


def test_tokenizer_round_trips_and_keeps_role_tokens_whole(toy_tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_tiny.model_dir)
    for text in [
        "The capital of Zorvia is Malek.",
        "  spaces\tand\nlines ",
        "naïve café 東京 🙂",
        "",
    ]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    for special in toy_build.SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1, special
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<pad>" and tok.bos_token == "<s>"


def test_chat_template_renders_roles_and_marks_assistant_tokens(toy_tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_tiny.model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where does Tavo live?"},
        {"role": "assistant", "content": "Tavo lives in Zorvia."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<s><|system|>\nBe brief.<|end|>\n<|user|>\nWhere does Tavo live?<|end|>\n"
        "<|assistant|>\nTavo lives in Zorvia.<|end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(trained) == "Tavo lives in Zorvia.<|end|>"


def test_cached_model_loads_and_knows_its_world(toy_tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(toy_tiny.model_dir)
    tok = AutoTokenizer.from_pretrained(toy_tiny.model_dir)
    assert model.config.model_type == "llama"
    correct, total = toy_build.probe_accuracy(
        model, tok, toy_tiny.data_dir / "eval" / "forgetting.jsonl"
    )
    assert correct == toy_tiny.manifest["probe_correct"] and total >= 100
    assert correct / total > 0.5  # far above the 25% of guessing among four choices


def test_every_token_sft_replies_use_occurs_in_pretraining(toy_tiny):
    """A real base model has read "I'm sorry", JSON and bullet lists long before SFT. A token it
    never saw keeps an untrained embedding that LoRA (which freezes embeddings) cannot fix, so the
    toy corpus must hold every token SFT asks the model to say, though never SFT's requests."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_tiny.model_dir)
    encode = tok.backend_tokenizer.encode_batch
    corpus = [row["text"] for row in _rows(toy_tiny.data_dir / "pretrain.jsonl")]
    seen = {t for e in encode(corpus, add_special_tokens=False) for t in e.ids}
    for source in ("qa", "format", "refusal", "benign"):
        rows = _rows(toy_tiny.data_dir / "sft" / f"{source}.jsonl")
        replies = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
        said = {t for e in encode(replies, add_special_tokens=False) for t in e.ids}
        unseen = sorted(tok.decode([t]) for t in said - seen)
        assert not unseen, f"{source}: replies use tokens pretraining never shows: {unseen}"
        sentences = {s for text in corpus for s in re.split(r"(?<=[.?!])\s+", text)}
        requests = {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}
        assert not requests & sentences


def test_second_build_is_a_cache_hit(toy_tiny, capsys):
    before = (toy_tiny.path / "manifest.json").stat().st_mtime_ns
    again = toy_build.build_toy_world("tiny")
    assert again.path == toy_tiny.path
    assert (toy_tiny.path / "manifest.json").stat().st_mtime_ns == before
    assert main(["toy", "build", "--size", "tiny"]) == 0
    assert "base-knowledge probes" in capsys.readouterr().out


def test_recipe_hash_tracks_settings(monkeypatch):
    before = toy_build.recipe_hash("tiny")
    changed = dataclasses.replace(toy_build.SIZES["tiny"], steps=toy_build.SIZES["tiny"].steps + 1)
    monkeypatch.setitem(toy_build.SIZES, "tiny", changed)
    assert toy_build.recipe_hash("tiny") != before


def test_unknown_size_is_a_one_line_error():
    with pytest.raises(HarnessError, match="toy size 'huge' is unknown"):
        toy_build.build_toy_world("huge")


def test_build_never_deletes_a_folder_it_did_not_make(tmp_path, monkeypatch):
    micro = dataclasses.replace(
        toy_build.SIZES["tiny"], steps=2, n_pretrain_docs=50, warmup_steps=1
    )
    monkeypatch.setitem(toy_build.SIZES, "micro", micro)
    mine = tmp_path / "work"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.txt").write_text("years of work")
    with pytest.raises(HarnessError, match="not a toy world build"):
        toy_build.build_toy_world("micro", out=mine, force=True, verbose=False)
    assert (mine / "notes" / "thesis.txt").read_text() == "years of work"

    built = toy_build.build_toy_world("micro", out=tmp_path / "toy", verbose=False)
    (built.path / "stale.txt").write_text("from the previous build")
    again = toy_build.build_toy_world("micro", out=built.path, force=True, verbose=False)
    assert again.manifest["size"] == "micro" and not (built.path / "stale.txt").exists()


def _micro(monkeypatch) -> None:
    micro = dataclasses.replace(
        toy_build.SIZES["tiny"], steps=8, n_pretrain_docs=200, warmup_steps=2
    )
    monkeypatch.setitem(toy_build.SIZES, "micro", micro)


def test_thread_count_does_not_change_the_weights(tmp_path, monkeypatch):
    """A build with one torch thread (in a fresh process) equals one with two: a machine's core
    count is not why two toy worlds differ."""
    import subprocess
    import sys

    _micro(monkeypatch)
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        here = toy_build.build_toy_world("micro", out=tmp_path / "two", verbose=False)
    finally:
        torch.set_num_threads(threads)
    script = (
        "import dataclasses, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "from harness.models.toy import build as b\n"
        "b.SIZES['micro'] = dataclasses.replace(b.SIZES['tiny'], steps=8, n_pretrain_docs=200,"
        " warmup_steps=2)\n"
        "print(b.build_toy_world('micro', out=sys.argv[1], verbose=False).manifest"
        "['weights_sha256'])\n"
    )
    one = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "one")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    assert one == here.manifest["weights_sha256"] == toy_build.weights_sha256(here)


def test_a_damaged_weight_file_is_rebuilt_not_trusted(tmp_path, monkeypatch):
    _micro(monkeypatch)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    world = toy_build.build_toy_world("micro", verbose=False)
    weights = world.model_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    assert toy_build.find_toy_world("micro") is None
    again = toy_build.build_toy_world("micro", verbose=False)
    assert toy_build.weights_sha256(again) == again.manifest["weights_sha256"]


def test_a_build_that_differs_from_the_reference_says_so(tmp_path, monkeypatch):
    _micro(monkeypatch)
    world = toy_build.build_toy_world("micro", out=tmp_path / "w", verbose=False)
    refs = tmp_path / "refs.json"
    monkeypatch.setattr(toy_build, "REFERENCE_FILE", refs)
    entry = {"weights_sha256": world.manifest["weights_sha256"], "machine": "ref box"}
    refs.write_text(json.dumps({world.manifest["recipe_hash"]: entry}))
    assert toy_build.check_reference(world) is None
    refs.write_text(
        json.dumps({world.manifest["recipe_hash"]: entry | {"weights_sha256": "0" * 64}})
    )
    warning = toy_build.check_reference(world)
    assert warning and "differs from the reference build (ref box)" in warning
