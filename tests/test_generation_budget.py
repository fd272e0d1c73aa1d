"""Generation budgets: each task's own max_gen_toks unless the run overrides it, and items whose
constraints cannot fit the budget rejected when the suite is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config.schema import EvalConfig
from harness.eval.scorers import TOKENS_PER_WORD, required_tokens
from harness.eval.suites import load_suite, task_configs
from harness.util.errors import HarnessError


def _budgets(suite: str, dataset: str, override: int | None) -> list[int]:
    built = task_configs(load_suite(suite), dataset, max_new_tokens=override, stop=[])
    return [config["generation_kwargs"]["max_gen_toks"] for config, _ in built.values()]


def test_budget_comes_from_the_task_unless_overridden(toy_tiny) -> None:
    assert EvalConfig().max_new_tokens is None
    assert _budgets("format", "english", None) == [640]  # format.yaml
    assert _budgets("format", "toy", None) == [48]  # suite.yaml max_gen_toks: {toy: 48}
    assert _budgets("refusal", "english", None) == [48]
    assert _budgets("format", "english", 900) == [900]
    assert _budgets("format", "toy", 30) == [30]


def test_required_tokens_rule() -> None:
    words = {"type": "length_constraints:number_words", "relation": "at least", "num_words": 300}
    assert required_tokens([words]) == 420 == round(300 * TOKENS_PER_WORD)
    assert required_tokens([{**words, "relation": "less than"}]) == 2
    paragraphs = {"type": "length_constraints:number_paragraphs", "num_paragraphs": 4}
    assert required_tokens([paragraphs, {"type": "min_words", "n": 50}]) == 112  # 4 x 20 words
    repeat = {"type": "combination:repeat_prompt", "prompt_to_repeat": "Say one two three."}
    assert required_tokens([repeat]) == 20  # the request's 4 words + a 10-word answer


def _suite_with(tmp_path, rows: list[dict], budget: str = "") -> None:
    folder = tmp_path / "longform"
    folder.mkdir()
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = load_suite("format").task_files[0].read_text().replace("task: format", "task: longform")
    (folder / "longform.yaml").write_text(task)
    (folder / "suite.yaml").write_text(
        "name: longform\ntasks: [longform.yaml]\ndata: {english: data.jsonl}\n"
        f"output_type: generate_until\n{budget}metrics:\n  - {{name: pass_rate, score: pass}}\n"
    )


def test_item_that_cannot_fit_is_rejected_naming_file_and_line(tmp_path) -> None:
    long = {"type": "length_constraints:number_words", "relation": "at least", "num_words": 500}
    rows = [
        {"id": "ok", "prompt": "Say hi.", "specs": [{"type": "max_words", "n": 3}]},
        {"id": "essay", "prompt": "Write 500 words.", "specs": [long]},
    ]
    _suite_with(tmp_path, rows)
    suite = load_suite("longform", [tmp_path])
    with pytest.raises(HarnessError, match=r"data\.jsonl:2: item essay needs about 700 new tokens"):
        task_configs(suite, "english", max_new_tokens=None, stop=[])
    assert task_configs(suite, "english", max_new_tokens=700, stop=[])


def test_bad_suite_budget_names_the_field(tmp_path) -> None:
    _suite_with(
        tmp_path,
        [{"id": "a", "prompt": "x", "specs": [{"type": "lowercase"}]}],
        "max_gen_toks: {english: 0}\n",
    )
    with pytest.raises(HarnessError, match="max_gen_toks"):
        load_suite("longform", [tmp_path])


def test_cli_max_new_tokens_overrides_and_is_checked(toy_tiny, tmp_path, capsys) -> None:
    from harness.cli import main

    args = ["eval", "--model", "toy:tiny", "--suites", "format", "--limit", "2"]
    assert main([*args, "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens 0" in capsys.readouterr().err
    assert main([*args, "--max-new-tokens", "12", "--out", str(tmp_path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the model-loading progress
    assert "format.jsonl:" in last and "generation budget is 12" in last
    # the English budget (640) cannot fit the toy model's 512-token context: one line, exit 2
    assert main([*args, "--dataset", "english", "--out", str(tmp_path)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "budget 640 new tokens does not fit the model's context of 512" in last


MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "realworld" / "models"


@pytest.mark.skipif(not MODELS.is_dir(), reason=f"{MODELS} not found (shared/ absent)")
def test_tokens_per_word_rule_matches_real_tokenizers() -> None:
    """The budget rule's 1.4 tokens per word, against real tokenizers on our English items."""
    from tokenizers import Tokenizer

    from harness.eval.scorers import count_words
    from harness.util.files import read_jsonl

    evals = Path(__file__).resolve().parents[1] / "evals"
    texts = [r["prompt"] for r in read_jsonl(evals / "format" / "english.jsonl")]
    texts += [r["question"] for r in read_jsonl(evals / "forgetting" / "english.jsonl")]
    words = sum(count_words(t) for t in texts)
    ratios = {}
    for family in ("qwen2.5-instruct", "mistral-7b-instruct-v0.3", "phi-3-mini-128k-instruct"):
        tokenizer = Tokenizer.from_file(str(MODELS / family / "tokenizer.json"))
        tokens = sum(len(tokenizer.encode(t, add_special_tokens=False).ids) for t in texts)
        ratios[family] = tokens / words
    assert all(abs(r - TOKENS_PER_WORD) <= 0.15 for r in ratios.values()), ratios
