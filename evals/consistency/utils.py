"""Scoring hook of the consistency suite: which candidate object a reply names."""

from __future__ import annotations

import re


def score_consistency(doc: dict, results: list[str]) -> dict[str, float]:
    """`answer`: the index of the candidate the reply names first; a reply naming none gets a
    negative value of its own (from the item id), so it agrees with no other paraphrase.
    `correct`: the candidate named first is the gold one."""
    reply = results[0]
    found = [
        (m.start(), i)
        for i, c in enumerate(doc["candidates"])
        if (m := re.search(rf"(?<!\w){re.escape(c)}(?!\w)", reply, re.IGNORECASE))
    ]
    if not found:
        return {"answer": -1.0 - int(doc["id"].rsplit("-", 1)[-1]), "correct": 0.0}
    index = min(found)[1]
    return {"answer": float(index), "correct": float(doc["candidates"][index] == doc["gold"])}
