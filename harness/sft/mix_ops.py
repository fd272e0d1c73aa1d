"""The seed's failure modes of SFT data, applied to a mix on purpose so a study can ablate them.

Three operators, set under `data.ops` in the experiment file (searchable like any weight:
`data.ops.conflict: {type: grid, choices: [0.0, 0.3]}`), seeded by the experiment's seed and
recorded in the trial's lineage:

- `narrow` (share of prompts kept, default 1): each affected source keeps that share of its
  distinct examples and the budget stays the same, so fewer prompts are repeated more often
  (narrow data overfits).
- `conflict` (rate, default 0): that share of the affected examples in the mix is replaced by a
  copy of another example of the mix whose answer is swapped for a different answer of the same
  source, so the mix holds one prompt with two answers (conflicting examples make behaviour
  inconsistent).
- `corrupt` (rate, default 0): that share of the affected examples gets a degraded final answer,
  its words shuffled and its last third cut (low-quality examples teach low-quality behaviour).

Only chat sources are affected (replay text never is); `data.ops.sources` narrows them further.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from harness.sft.sources import Example


def narrow(
    sources: dict[str, list[Example]], share: float, names: set[str], seed: int
) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """Each source in `names` keeps a seeded `share` of its examples (at least one)."""
    out, kept = dict(sources), {}
    if share >= 1:
        return out, {"share": share}
    for name in sorted(n for n in names if sources[n]):
        rows = sources[name]
        n = max(1, math.ceil(share * len(rows)))
        positions = sorted(random.Random(f"{seed}/narrow/{name}").sample(range(len(rows)), n))
        out[name] = [rows[i] for i in positions]
        kept[name] = {"kept": n, "available": len(rows)}
    return out, {"share": share, "sources": kept}


def _eligible(examples: list[Example], names: set[str]) -> list[int]:
    """Positions of the examples an answer operator may change: an affected source's chats."""
    return [i for i, ex in enumerate(examples) if _answer(ex) is not None and ex.source in names]


def conflict(
    examples: list[Example], rate: float, names: set[str], seed: int
) -> tuple[list[Example], dict[str, Any]]:
    """Replace `rate` of the affected examples with contradicting copies of others."""
    eligible = _eligible(examples, names)
    k = min(round(rate * len(eligible)), len(eligible) // 2)
    if k == 0:
        return examples, {"rate": rate, "examples": 0}
    rng = random.Random(f"{seed}/conflict")
    slots = rng.sample(eligible, k)
    templates = [i for i in eligible if i not in set(slots)]
    answers: dict[str, list[str]] = {}
    for i in eligible:
        answers.setdefault(examples[i].source, []).append(_answer(examples[i]))
    out = list(examples)
    made = 0
    for slot in slots:
        template = examples[rng.choice(templates)]
        others = [a for a in answers[template.source] if a != _answer(template)]
        if others:
            out[slot] = _with_answer(template, rng.choice(others))
            made += 1
    return out, {"rate": rate, "examples": made}


def corrupt(
    examples: list[Example], rate: float, names: set[str], seed: int
) -> tuple[list[Example], dict[str, Any]]:
    """Degrade the final answer of `rate` of the affected examples."""
    eligible = _eligible(examples, names)
    k = round(rate * len(eligible))
    rng = random.Random(f"{seed}/corrupt")
    out = list(examples)
    for i in rng.sample(eligible, k):
        words = _answer(examples[i]).split()
        rng.shuffle(words)
        out[i] = _with_answer(examples[i], " ".join(words[: max(1, math.ceil(len(words) * 2 / 3))]))
    return out, {"rate": rate, "examples": k}


def _answer(ex: Example) -> str | None:
    """The final assistant turn's text (None for replay text or a chat ending otherwise)."""
    if not ex.messages or ex.messages[-1]["role"] != "assistant":
        return None
    content = ex.messages[-1]["content"]
    return content if isinstance(content, str) else None


def _with_answer(ex: Example, answer: str) -> Example:
    messages = [dict(m) for m in ex.messages or []]
    messages[-1]["content"] = answer
    return replace(ex, messages=messages)
