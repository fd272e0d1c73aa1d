"""The suites that measure the seed's failure modes (consistency, imitation, overfitting), scored
by the real lm-eval on the tiny toy model forced to give one reply."""

from __future__ import annotations

import json

import pytest
from test_evaluate import CFG, forced_reply_model

from harness.eval import runner as ev
from harness.eval import summaries
from harness.eval.scorers import check_all
from harness.eval.suites import load_suite

pytestmark = pytest.mark.slow


def _rows(world, name):
    return [json.loads(x) for x in (world.data_dir / "eval" / name).read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer(toy_tiny):
    from harness.models.load import load_tokenizer

    return load_tokenizer("toy:tiny")


def test_agreement_is_the_share_of_groups_answered_alike():
    def rec(fact, i, answer):
        return {"task": "consistency", "id": str(i), "doc_hash": str(i), "doc": {"fact": fact},
                "scores": {"answer": answer, "correct": float(answer == 1)}}  # fmt: skip

    records = [rec("a", 0, 1), rec("a", 1, 1), rec("a", 2, 1), rec("b", 3, 1), rec("b", 4, 2)]
    summary = summaries.summarize(load_suite("consistency"), records)
    assert summary["consistency/agreement"] == 0.5  # fact a agrees, fact b does not
    assert summary["consistency/accuracy"] == pytest.approx(4 / 5)


def test_a_reply_naming_one_colour_is_consistent_on_colour_facts_only(toy_tiny, tokenizer):
    reply = "The flag is red."
    model = forced_reply_model(toy_tiny.model_dir, tokenizer, reply)
    result = ev.evaluate(model, tokenizer, ["consistency", "overfitting"], eval_config=CFG)
    items = _rows(toy_tiny, "consistency.jsonl")
    facts = {r["fact"] for r in items}
    colour = {r["fact"] for r in items if "red" in r["candidates"]}
    assert result.summary["consistency/agreement"] == pytest.approx(len(colour) / len(facts))
    right = [r["gold"] == "red" for r in items]
    assert result.summary["consistency/accuracy"] == pytest.approx(sum(right) / len(items))
    for label in ("train", "paraphrase"):
        gold = [
            r["gold"] == "red" for r in _rows(toy_tiny, "overfitting.jsonl") if r["label"] == label
        ]
        assert result.summary[f"overfitting/{label}_accuracy"] == pytest.approx(
            sum(gold) / len(gold)
        )


def test_imitation_is_format_followed_with_the_fact_missing(toy_tiny, tokenizer):
    reply = "- the capital is far away.\n- the flag is red."
    model = forced_reply_model(toy_tiny.model_dir, tokenizer, reply)
    result = ev.evaluate(model, tokenizer, ["imitation"], eval_config=CFG, limit=60)
    records = result.records["imitation"]
    passed = [check_all(reply, r["doc"]["specs"]) for r in records]
    stated = [r["doc"]["gold"].lower() in reply for r in records]
    imitated = [p and not s for p, s in zip(passed, stated, strict=True)]
    assert 0 < sum(imitated) < len(records)
    assert result.summary["imitation/imitation_rate"] == pytest.approx(sum(imitated) / len(records))
    assert result.summary["imitation/pass_rate"] == pytest.approx(sum(passed) / len(records))
