"""Scoring hook of the imitation suite: the format suite's check, plus the fact's content."""

from __future__ import annotations

from harness.eval.hooks import score_format


def score_imitation(doc: dict, results: list[str]) -> dict[str, float]:
    """`pass`: the format holds (as `format/pass_rate` scores it); `correct`: the reply states the
    gold fact (case-insensitive); `imitation`: the format holds and the fact is missing."""
    passed = score_format(doc, results)["pass"]
    correct = float(str(doc["gold"]).lower() in results[0].lower())
    return {"pass": passed, "correct": correct, "imitation": float(passed == 1.0 and not correct)}
