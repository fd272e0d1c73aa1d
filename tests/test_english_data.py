"""Shape checks for the English eval suites used with real models (refusal, format, forgetting)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from harness.eval.ifeval import instruction_ids
from harness.eval.refusal import COMPLIANCE, classify
from harness.eval.scorers import FORMAT_TYPES, check_all, required_tokens, validate_spec

EVALS = Path(__file__).resolve().parent.parent / "evals"


def _rows(relative: str) -> list[dict]:
    path = EVALS / relative
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def refusal() -> list[dict]:
    return _rows("refusal/english.jsonl")


@pytest.fixture(scope="module")
def fmt() -> list[dict]:
    return _rows("format/english.jsonl")


@pytest.fixture(scope="module")
def forgetting() -> list[dict]:
    return _rows("forgetting/english.jsonl")


def _assert_unique_ids(rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    assert all(isinstance(i, str) and i for i in ids)
    dupes = [i for i, c in Counter(ids).items() if c > 1]
    assert not dupes, dupes


def test_refusal_suite(refusal: list[dict]) -> None:
    _assert_unique_ids(refusal)
    for row in refusal:
        assert set(row) == {"id", "label", "category", "prompt"}, row["id"]
        assert row["label"] in ("harmful", "benign"), row["id"]
        assert isinstance(row["prompt"], str) and len(row["prompt"]) > 10, row["id"]
    labels = Counter(r["label"] for r in refusal)
    assert labels["harmful"] >= 150 and labels["benign"] >= 150
    harmful_categories = Counter(r["category"] for r in refusal if r["label"] == "harmful")
    benign_categories = Counter(r["category"] for r in refusal if r["label"] == "benign")
    assert len(harmful_categories) >= 6 and min(harmful_categories.values()) >= 10
    assert len(benign_categories) >= 6 and min(benign_categories.values()) >= 10
    assert not set(harmful_categories) & set(benign_categories)
    prompts = [r["prompt"].strip().lower() for r in refusal]
    assert len(set(prompts)) == len(prompts)


def test_format_suite(fmt: list[dict]) -> None:
    _assert_unique_ids(fmt)
    assert len(fmt) >= 150
    per_type: Counter[str] = Counter()
    for row in fmt:
        assert set(row) == {"id", "prompt", "specs"}, row["id"]
        assert isinstance(row["specs"], list) and 1 <= len(row["specs"]) <= 3, row["id"]
        for spec in row["specs"]:
            validate_spec(spec)
            per_type[spec["type"]] += 1
    assert set(per_type) == set(FORMAT_TYPES) | set(instruction_ids())
    assert min(per_type[t] for t in FORMAT_TYPES) >= 10, per_type
    assert min(per_type[t] for t in instruction_ids()) >= 4, per_type
    assert sum(len(r["specs"]) >= 2 for r in fmt) >= 20
    longest = max(required_tokens(r["specs"]) for r in fmt)
    assert 400 <= longest <= 640  # the 300-word item fits format.yaml's budget


def test_format_prompts_state_their_numbers(fmt: list[dict]) -> None:
    """A constraint the prompt never states in words cannot be followed."""
    words = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    # "under 30 words" is n = 29; a language is named, not coded; relations are paraphrased
    unstated = {"type", "n", "relation", "capital_relation", "let_relation", "language"}
    for row in fmt:
        prompt = row["prompt"].lower()
        for spec in row["specs"]:
            for key, value in spec.items():
                if key in unstated:
                    continue
                for v in value if isinstance(value, list) else [value]:
                    if isinstance(v, int):
                        assert str(v) in prompt or words.get(v, "?") in prompt, (row["id"], key)
                    else:
                        assert v.lower() in prompt, (row["id"], key)


COMPLIANT_REPLIES = {
    "format-001": '```json\n{"title": "The Glass Orchard", "author": "Mina Hale", "year": 2019}\n```',
    "format-014": "a slow breakfast, a long walk by the river, and a nap in the sun.\r\n"
    "then dinner with friends and an old film.",
    "format-026": "CAUTION: WET FLOOR! 2 STEPS AHEAD.",
    "format-038": "Here you go:\n- Stronger heart\n- Better sleep\n- More energy",
    "format-050": "1. Fold the paper in half.\n2. Fold the top corners in.\n3. Fold the edges again."
    "\n4. Fold the wings down.\n5. Throw it gently.",
    "format-062": "The pull between masses.",
    "format-074": "My hometown is a small harbor town on a windy northern coast. In the morning the "
    "fishing boats leave before sunrise, and by noon the market by the pier is full of fresh cod, "
    "mussels and loud conversation. The streets are narrow and steep, lined with painted wooden "
    "houses in red, yellow and blue. There is one bakery everyone agrees is the best, a library "
    "that used to be a church, and a lighthouse you can climb on summer weekends. In winter the "
    "town grows quiet, and neighbors gather for long dinners while storms roll in from the sea.",
    "format-086": "Dear neighbor, thanks for watering my plants last week!",
    "format-098": "Autumn: crisp air, golden leaves, warm soup. That is all.  ",
    "format-110": "The street hums with buses and bicycles while vendors call out to the crowd.",
    "format-122": "I forgot my umbrella and stepped straight into a puddle.",
    "format-134": "- red\n- orange\n- yellow",
    "format-136": "1. Slice the bread\n2. Put it in the toaster\n3. Wait two minutes\n4. Butter it",
    "format-137": '{"name": "banana", "color": "yellow"}',
    "format-139": "Summary: a global network of computers that share information.",
    "format-148": '{"haiku": "white hush on the field / footprints fill before sunrise / the pines hold '
    'their breath"}',
}


IFEVAL_REPLIES = {
    "format-159": "Meet the AeroShell: LIGHT, STRONG and SAFE. It fits every head and every ride.",
    "format-163": "CARRY MORE WATER THAN YOU THINK YOU NEED. THIRST ON A TRAIL CAN TURN DANGEROUS FAST.",
    "format-167": "leaves change colour because trees stop making green chlorophyll in autumn, "
    "so the yellow and orange pigments that were hidden all summer finally show.",
    "format-171": "Name three uses of a paperclip. Holding papers, resetting a router, and "
    "marking a page.",
    "format-175": "Every can counts.\n******\nSort it today, keep it tomorrow.",
    "format-179": "Dear [name], we are happy to offer you the role of [position] starting on "
    "[date].",
    "format-184": "Hi team, our meeting is on Friday at ten in room four.\n\nP.P.S. Bring your "
    "laptops.",
    "format-188": "Penguins have wings but cannot fly through the air. My answer is no.",
    "format-191": '```json\n{"name": "Veloria", "size": "twice Earth", "climate": "cold"}\n```',
    "format-195": "Section 1\nPick a sunny spot.\nSection 2\nWater deeply twice a week.\n"
    "Section 3\nHarvest when the fruit is red.",
    "format-200": "* sunscreen\n* a towel\n* cold water",
    "format-204": "Arrive *on time*, research *the company* and ask *good questions*.",
    "format-207": "<<City Lights>>\nA thousand windows hum at night,\neach one a small and "
    "patient light.",
    "format-211": "Soft green moss covers the stones, and sunlight falls through the leaves.",
    "format-215": "The sea stretches to the horizon, restless and salty, full of hidden life.",
    "format-219": "We work together, we win together, and we grow together.",
    "format-223": "Seven sly snakes slid silently past sleeping swans, sipping sweet sap.",
    "format-227": "Mon plat préféré est la ratatouille. Elle est simple, colorée et pleine de "
    "légumes du soleil. Je la mange souvent en été avec du pain frais.",
    "format-232": "Yesterday I lost the key to my bike somewhere in the park.\n\nToday I found "
    "it under a bench, shining in the grass.",
    "format-236": "I would spend the first week hiking in the mountains.\n***\nThen I would "
    "rest by a quiet lake and read.",
    "format-239": "A rainbow is light split into colours by raindrops. You see it when the sun "
    "is behind you.",
    "format-244": "A budget is a plan for how you will spend and save your money each month.",
    "format-247": "I wake up at seven and drink a glass of water. Then I walk the dog and eat "
    "breakfast.",
    "format-251": "Sunlight scatters off air molecules, and blue light scatters the most. Any "
    "other questions?",
    "format-255": '"Start in shallow water with an instructor and practise floating first."',
}


def test_compliant_replies_pass(fmt: list[dict]) -> None:
    by_id = {r["id"]: r for r in fmt}
    for item_id, reply in COMPLIANT_REPLIES.items():
        assert check_all(reply, by_id[item_id]["specs"]), (item_id, by_id[item_id]["prompt"])
    assert not check_all("Here you go!", by_id["format-001"]["specs"])
    assert not check_all("- red\n- Orange\n- yellow", by_id["format-134"]["specs"])
    assert {s["type"] for i in COMPLIANT_REPLIES for s in by_id[i]["specs"]} == set(FORMAT_TYPES)


def test_compliant_replies_pass_for_every_ifeval_id(fmt: list[dict]) -> None:
    """One reply per IFEval id, written to follow the item: lm-eval's checker agrees."""
    by_id = {r["id"]: r for r in fmt}
    for item_id, reply in IFEVAL_REPLIES.items():
        row = by_id[item_id]
        assert check_all(reply, row["specs"], prompt=row["prompt"]), (item_id, row["prompt"])
        assert not check_all("", row["specs"], prompt=row["prompt"])
    covered = {s["type"] for i in IFEVAL_REPLIES for s in by_id[i]["specs"]}
    assert covered == set(instruction_ids())


def test_forgetting_suite(forgetting: list[dict]) -> None:
    _assert_unique_ids(forgetting)
    assert len(forgetting) >= 200
    for row in forgetting:
        assert set(row) == {"id", "task", "question", "choices", "gold"}, row["id"]
        assert len(row["choices"]) == 4, row["id"]
        assert len({c.strip().lower() for c in row["choices"]}) == 4, row["id"]
        assert isinstance(row["gold"], int) and 0 <= row["gold"] < 4, row["id"]
    tasks = Counter(r["task"] for r in forgetting)
    assert len(tasks) >= 7 and min(tasks.values()) >= 30
    # log-likelihood scoring favours short continuations: the gold answer must not be the
    # shortest choice often, or a model gets items right for its length alone
    shortest = sum(
        len(r["choices"][r["gold"]])
        < min(len(c) for i, c in enumerate(r["choices"]) if i != r["gold"])
        for r in forgetting
    )
    assert shortest <= 0.25 * len(forgetting), shortest
    golds = Counter(r["gold"] for r in forgetting)
    assert max(golds.values()) - min(golds.values()) <= 0.05 * len(forgetting), golds
    questions = [r["question"] for r in forgetting]
    assert len(set(questions)) == len(questions)


def test_refusal_scorer_on_canned_replies(refusal: list[dict]) -> None:
    """The wiring the lm-eval hook will do: a canned refusal is a refusal for every prompt."""
    harmful = next(r for r in refusal if r["label"] == "harmful")
    assert harmful["prompt"]
    assert classify("I'm sorry, but I can't help with that. It could hurt someone.") != COMPLIANCE
    assert classify("To kill a Python process, run `kill <pid>`.") == COMPLIANCE
