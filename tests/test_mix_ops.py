"""Mix operators (harness.sft.mix_ops): the seed's data failure modes, applied on purpose."""

from __future__ import annotations

from collections import defaultdict

from harness.sft import mix_ops
from harness.sft.sources import Example, build_mix


def _chat(source: str, n: int) -> list[Example]:
    return [
        Example(source, i + 1, messages=[
            {"role": "user", "content": f"What is fact {i} of {source}?"},
            {"role": "assistant", "content": f"Fact {i} of {source} is number {i * 7}."},
        ])
        for i in range(n)
    ]  # fmt: skip


def _text(n: int) -> list[Example]:
    return [Example("replay", i + 1, text=f"Replay line {i}.") for i in range(n)]


def _answers_by_prompt(examples: list[Example]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for ex in examples:
        if ex.messages:
            out[ex.messages[0]["content"]].add(ex.messages[-1]["content"])
    return out


def test_narrow_keeps_a_share_of_prompts_at_the_same_budget():
    sources = {"qa": _chat("qa", 100), "replay": _text(50)}
    narrowed, record = mix_ops.narrow(sources, 0.2, {"qa"}, seed=3)
    assert len(narrowed["qa"]) == 20 and narrowed["replay"] == sources["replay"]
    assert record["sources"]["qa"] == {"kept": 20, "available": 100}
    assert mix_ops.narrow(sources, 0.2, {"qa"}, seed=3)[0] == narrowed  # seeded
    assert mix_ops.narrow(sources, 0.2, {"qa"}, seed=4)[0] != narrowed
    full = build_mix(sources, {"qa": 1, "replay": 0}, 100, seed=0)
    narrow = build_mix(narrowed, {"qa": 1, "replay": 0}, 100, seed=0)
    assert len(narrow.examples) == len(full.examples) == 100  # same budget...
    assert len(set(map(id, narrow.examples))) == 20  # ...over fewer prompts, each seen 5 times


def test_conflict_gives_prompts_two_answers_and_leaves_replay_alone():
    mixed = _chat("qa", 60) + _text(20)
    out, record = mix_ops.conflict(mixed, 0.25, {"qa"}, seed=0)
    assert len(out) == len(mixed) and record["examples"] == 15
    contradicted = [p for p, answers in _answers_by_prompt(out).items() if len(answers) > 1]
    assert 1 <= len(contradicted) <= 15  # a template may be contradicted twice
    assert out[60:] == mixed[60:]
    assert all(ex.messages[-1]["content"].startswith("Fact") for ex in out[:60])
    assert mix_ops.conflict(mixed, 0.0, {"qa"}, seed=0)[0] == mixed


def test_corrupt_degrades_a_share_of_answers_from_their_own_words():
    mixed = _chat("qa", 40)
    out, record = mix_ops.corrupt(mixed, 0.5, {"qa"}, seed=1)
    changed = [(a, b) for a, b in zip(mixed, out, strict=True) if a != b]
    assert record["examples"] == 20 and len(changed) == 20
    for before, after in changed:
        old, new = before.messages[-1]["content"].split(), after.messages[-1]["content"].split()
        assert len(new) < len(old) and set(new) <= set(old)
        assert after.messages[0] == before.messages[0]  # the prompt is untouched
    assert mix_ops.corrupt(mixed, 0.5, {"qa"}, seed=1)[0] == out
    assert mix_ops.corrupt(mixed, 0.5, {"other"}, seed=1)[0] == mixed
