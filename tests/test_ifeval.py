"""IFEval instruction ids in `check_format`: lm-eval's own checkers, offline, strict and loose."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.eval.ifeval import instruction_ids
from harness.eval.scorers import check_all, check_format, loose_variants, validate_spec
from harness.util.errors import HarnessError

IFEVAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "ifeval"
REFERENCE = IFEVAL_DIR / "reference_verdicts_gpt4.jsonl"


def _instances() -> list[tuple[str, dict, str, str, bool | None, bool | None]]:
    """(response, spec, id, prompt, strict, loose) per instruction of the reference file."""
    out = []
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        for iid, kw, strict, loose in zip(
            row["instruction_id_list"],
            row["kwargs"],
            row["strict_follow_list"],
            row["loose_follow_list"],
            strict=True,
        ):
            spec = {"type": iid, **{k: v for k, v in kw.items() if v is not None}}
            out.append((row["response"], spec, iid, row["prompt"], strict, loose))
    return out


@pytest.mark.skipif(not REFERENCE.is_file(), reason=f"{REFERENCE} not found (shared/ absent)")
def test_agrees_with_lm_eval_verdicts_on_gpt4_responses() -> None:
    """The reference verdicts are lm-eval's own, computed on the IFEval authors' GPT-4 replies;
    this is also the before-stop hook's measurement (no prompt passed for strict)."""
    strict_ok: Counter[str] = Counter()
    strict_n: Counter[str] = Counter()
    loose_ok = loose_n = 0
    for response, spec, iid, prompt, strict, loose in _instances():
        if strict is not None:
            strict_n[iid] += 1
            strict_ok[iid] += check_format(response, spec) == strict
        if loose is not None:
            loose_n += 1
            loose_ok += check_format(response, spec, loose=True, prompt=prompt) == loose
    total = sum(strict_n.values())
    assert len(strict_n) >= 20
    assert sum(strict_ok.values()) / total >= 0.99, {
        i: f"{strict_ok[i]}/{strict_n[i]}" for i in strict_n if strict_ok[i] < strict_n[i]
    }
    assert loose_ok / loose_n >= 0.99


def test_every_ifeval_id_is_accepted() -> None:
    assert len(instruction_ids()) == 25
    assert "length_constraints:number_words" in instruction_ids()


def test_ifeval_semantics_are_lm_evals() -> None:
    words = {"type": "length_constraints:number_words", "relation": "less than", "num_words": 4}
    assert check_format("Short and sweet.", words)
    assert not check_format("Don't stop now.", words)  # \w+ tokens: "don't" counts twice
    end = {"type": "startend:end_checker", "end_phrase": "Any other questions?"}
    assert check_format('That is all. "any other questions?"', end)  # quotes and case ignored
    bullets = {"type": "detectable_format:number_bullet_lists", "num_bullets": 2}
    assert check_format("* one\n- two", bullets)
    assert not check_format("* one\n- two\n- three", bullets)
    assert not check_format("   ", {"type": "punctuation:no_comma"})  # empty fails, as in lm-eval


def test_sentence_checkers_work_offline() -> None:
    """number_sentences and capital_word_frequency need NLTK's Punkt data (no download)."""
    sentences = {"type": "length_constraints:number_sentences", "relation": "less than"}
    reply = "Dr. Lee arrived at 5 p.m. on Jan. 3. She left early. Nobody noticed."
    assert check_format(reply, {**sentences, "num_sentences": 4})
    assert not check_format(reply, {**sentences, "num_sentences": 3})
    caps = {"type": "change_case:capital_word_frequency", "capital_relation": "at least"}
    assert check_format("The NASA and ESA teams met the WHO.", {**caps, "capital_frequency": 3})
    assert not check_format("The NASA team met.", {**caps, "capital_frequency": 3})


def test_prompt_dependent_instruction() -> None:
    spec = {"type": "combination:repeat_prompt", "prompt_to_repeat": "Name a colour."}
    assert check_format("Name a colour. Blue.", spec, prompt="Name a colour. Repeat it first.")
    assert not check_format("Blue.", spec, prompt="Name a colour. Repeat it first.")


def test_loose_reading() -> None:
    spec = {"type": "startend:end_checker", "end_phrase": "See you soon."}
    reply = "Sure, here it is.\nThe note ends here. See you soon.\n(Written for you.)"
    assert not check_format(reply, spec)
    assert check_format(reply, spec, loose=True)
    lower = {"type": "lowercase"}  # the loose reading applies to the short types too
    assert not check_format("Here you go:\nall lower here", lower)
    assert check_format("Here you go:\nall lower here", lower, loose=True)
    assert not check_all("intro\nThe Middle\nend", [lower], loose=True)
    assert "the Bold start" in loose_variants("Sure:\nthe **Bold** start")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "length_constraints:number_words", "num_words": 5}, "relation"),
        ({"type": "length_constraints:number_words", "relation": "less than"}, "num_words"),
        (
            {"type": "length_constraints:number_words", "relation": "less than", "num_words": 0},
            "num_words",
        ),
        ({"type": "punctuation:no_comma", "strict": True}, "strict"),
        ({"type": "detectable_format:nope"}, "type"),
    ],
)
def test_bad_ifeval_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(HarnessError, match=f"'{field}'"):
        validate_spec(spec)


def test_bad_ifeval_value_is_one_line() -> None:
    spec = {"type": "length_constraints:number_words", "relation": "about", "num_words": 5}
    with pytest.raises(HarnessError, match="length_constraints:number_words") as err:
        check_format("x", spec)
    assert "\n" not in str(err.value)


def test_punkt_data_is_written_where_nltk_finds_it(tmp_path, monkeypatch) -> None:
    import nltk
    from nltk.tokenize import PunktTokenizer
    from punkt.data import load_module

    from harness.eval.ifeval import _install_punkt

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "elsewhere")])
    _install_punkt()
    assert (tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english").is_dir()
    assert nltk.data.path == [str(tmp_path / "elsewhere"), str(tmp_path / "nltk_data")]
    params = PunktTokenizer("english")._params  # NLTK's own loader read every file back
    model = load_module("english")
    assert params.abbrev_types == set(model.ABBREV_TYPES)
    assert params.collocations == set(model.COLLOCATIONS)
    assert params.sent_starters == set(model.SENT_STARTERS)
    assert dict(params.ortho_context) == dict(model.ORTHO_CONTEXT)
    assert nltk.sent_tokenize("Mr. Smith paid $5.50 today. Then he left.") == [
        "Mr. Smith paid $5.50 today.",
        "Then he left.",
    ]


def test_a_list_valued_score_cannot_be_summarised() -> None:
    """lm-eval ifeval's inst_level_* scores are one verdict per instruction: kept in records,
    refused as a per-item metric's score (a mean of lists is no accuracy; `unit: part` metrics
    pool the verdicts instead, tests/test_public_suites.py)."""
    import dataclasses

    from harness.config.suite import MetricSpec
    from harness.eval.suites import load_suite
    from harness.eval.summaries import summarize

    metric = MetricSpec(name="inst_rate", score="inst_level_strict_acc")
    suite = dataclasses.replace(load_suite("format"), metrics=(metric,))
    records = [{"task": "ifeval", "id": "1", "doc": {}, "scores": {metric.score: [1.0, 0.0]}}]
    with pytest.raises(HarnessError, match="inst_level_strict_acc' is a list"):
        summarize(suite, records)
