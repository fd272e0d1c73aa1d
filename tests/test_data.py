"""Loading sources in every format, bad-row errors, and seeded mixes."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.sft.sources import Example, build_mix, load_source
from harness.util.errors import HarnessError

CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Italy?"},
        {"role": "assistant", "content": "Rome."},
    ]
}
TOOL_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Tokyo?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "get_weather"}}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "1"},
        {"role": "assistant", "content": "Sunny."},
    ]
}


def write_jsonl(path, rows) -> str:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_messages_format_is_detected_and_kept(tmp_path):
    src = load_source(write_jsonl(tmp_path / "c.jsonl", [CHAT, TOOL_CHAT]), name="chat")
    assert src.format == "messages" and src.skipped == 0
    first, second = src.examples
    assert first == Example("chat", 1, messages=CHAT["messages"])
    assert second.row == 2 and second.messages[1]["content"] == ""
    assert second.messages[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert second.messages[2]["tool_call_id"] == "1"
    assert len(src.sha256) == 64 and json.dumps(src.to_dict())


def test_prompt_completion_strings_and_message_lists(tmp_path):
    rows = [
        {"prompt": "Two plus two?", "completion": "Four."},
        {
            "prompt": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
            "completion": [{"role": "assistant", "content": "Hello."}],
        },
    ]
    src = load_source(write_jsonl(tmp_path / "pc.jsonl", rows), name="pc")
    assert src.format == "prompt_completion"
    assert src.examples[0].messages == [
        {"role": "user", "content": "Two plus two?"},
        {"role": "assistant", "content": "Four."},
    ]
    assert [m["role"] for m in src.examples[1].messages] == ["system", "user", "assistant"]


def test_alpaca_with_and_without_input(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "bonjour", "output": "hello"},
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ]
    src = load_source(write_jsonl(tmp_path / "a.jsonl", rows), name="alpaca")
    assert src.format == "alpaca"
    assert src.examples[0].messages[0]["content"] == "Translate\n\nbonjour"
    assert (
        src.examples[1].messages
        == src.examples[2].messages
        == [
            {"role": "user", "content": "Say hi"},
            {"role": "assistant", "content": "hi"},
        ]
    )


def test_text_format_from_json_and_parquet(tmp_path):
    rows = [{"text": "the quick brown fox"}, {"text": "jumps over"}]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.json", "t.parquet"):
        src = load_source(tmp_path / name, name="replay")
        assert src.format == "text"
        assert [(e.row, e.text, e.messages) for e in src.examples] == [
            (1, "the quick brown fox", None),
            (2, "jumps over", None),
        ]
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    assert len(load_source(tmp_path / "wrapped.json", name="w").examples) == 2


def test_parquet_messages(tmp_path):
    pq.write_table(pa.Table.from_pylist([CHAT]), tmp_path / "c.parquet")
    src = load_source(tmp_path / "c.parquet", name="chat")
    assert src.examples[0].messages == CHAT["messages"]


def test_declared_format_overrides_detection(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "t", "prompt": "p", "completion": "c"}])
    assert load_source(path, name="x").format == "prompt_completion"
    assert load_source(path, name="x", format="text").examples[0].text == "t"


ALPACA = {"instruction": "i", "output": "o"}
PC = {"prompt": "a", "completion": "b"}
BAD_ROWS = [  # (a good first row, the bad second row, field named, problem named)
    (CHAT, '{"messages": [', None, "broken JSON"),
    (
        CHAT,
        {"messages": [{"role": "bot", "content": "x"}]},
        "messages[0].role",
        "unknown role 'bot'",
    ),
    (
        CHAT,
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]},
        "messages[1].content",
        "empty assistant reply",
    ),
    (CHAT, {"messages": [{"role": "user", "content": "q"}]}, "messages", "no assistant turn"),
    (
        CHAT,
        {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]},
        "messages[0].content",
        "expected a string, got int",
    ),
    (CHAT, {"messages": "hello"}, "messages", "non-empty list"),
    (CHAT, [1, 2], None, "expected an object, got list"),
    (PC, {"prompt": "q", "completion": ""}, "completion", "empty"),
    (
        PC,
        {"prompt": "q", "completion": [{"role": "user", "content": "x"}]},
        "completion",
        "no assistant",
    ),
    (ALPACA, {"instruction": "q"}, "output", "missing"),
    (ALPACA, {"instruction": "q", "input": 1, "output": "o"}, "input", "expected a string"),
    ({"text": "t"}, {"text": None}, "text", "missing"),
]


@pytest.mark.parametrize(("first", "row", "field", "problem"), BAD_ROWS)
def test_bad_rows_name_source_line_and_field(tmp_path, first, row, field, problem):
    path = write_jsonl(tmp_path / "bad.jsonl", [first, row])
    with pytest.raises(HarnessError) as err:
        load_source(path, name="mysource")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"source 'mysource' ({path}) line 2: ")
    assert problem in message
    if field:
        assert f"field '{field}'" in message


def test_undetectable_first_row_says_declare_a_format(tmp_path):
    path = write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(HarnessError, match=r"line 1: cannot detect the format.*declare"):
        load_source(path, name="u")


def test_json_and_file_errors(tmp_path):
    (tmp_path / "broken.json").write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(HarnessError, match=r"source 'b' .*broken.json\) line 3: broken JSON"):
        load_source(tmp_path / "broken.json", name="b")
    with pytest.raises(HarnessError, match=r"source 'm' .*missing.jsonl\): file not found"):
        load_source(tmp_path / "missing.jsonl", name="m")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(HarnessError, match="unsupported file type"):
        load_source(tmp_path / "x.csv", name="x")
    (tmp_path / "rows.json").write_text(json.dumps([{"text": "a"}, {"text": 5}]))
    with pytest.raises(HarnessError, match=r"row 2: field 'text': expected a string"):
        load_source(tmp_path / "rows.json", name="r")


def test_skip_counts_bad_rows_by_reason(tmp_path):
    rows = [
        CHAT,
        "{not json",
        {"messages": [{"role": "bot", "content": "x"}]},
        {"messages": [{"role": "user", "content": "q"}]},
        "",
        CHAT,
    ]
    src = load_source(write_jsonl(tmp_path / "s.jsonl", rows), name="s", on_bad_row="skip")
    assert [e.row for e in src.examples] == [1, 6]
    assert src.skipped == 3
    assert src.skip_reasons == {"broken JSON": 1, "unknown role": 1, "no assistant turn": 1}
    assert "line 2" in src.first_skips[0] and src.to_dict()["skipped"] == 3


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", ["{x"])
    with pytest.raises(HarnessError, match="no usable rows"):
        load_source(path, name="s", on_bad_row="skip")


# ---------------------------------------------------------------------------------------- mixes


def pool(name: str, n: int) -> list[Example]:
    return [Example(name, i + 1, text=f"{name} {i}") for i in range(n)]


SOURCES = {"a": pool("a", 50), "b": pool("b", 10), "c": pool("c", 30)}


def test_mix_is_deterministic_per_seed():
    weights = {"a": 1.0, "b": 1.0, "c": 2.0}
    one = build_mix(SOURCES, weights, 40, seed=1)
    assert one.picks == build_mix(SOURCES, weights, 40, seed=1).picks
    assert one.picks != build_mix(SOURCES, weights, 40, seed=2).picks
    assert [e.source for e in one.examples] == [s for s, _ in one.picks]


def test_mix_shares_follow_weights_within_rounding():
    mix = build_mix(SOURCES, {"a": 0.5, "b": 0.2, "c": 0.3}, 33, seed=0)
    counts = Counter(s for s, _ in mix.picks)
    assert sum(counts.values()) == 33
    for name, share in {"a": 0.5, "b": 0.2, "c": 0.3}.items():
        assert abs(counts[name] - 33 * share) < 1
        assert mix.composition[name]["examples"] == counts[name]
        assert abs(mix.composition[name]["realised_share"] - share) < 1 / 33
    json.dumps(mix.to_dict())


def test_upsampling_repeats_whole_source_then_a_seeded_remainder():
    mix = build_mix(SOURCES, {"a": 0.0, "b": 1.0, "c": 0.0}, 25, seed=3)
    counts = Counter(i for _, i in mix.picks)
    assert sorted(counts.values()) == [2] * 5 + [3] * 5  # 2 full passes + 5 distinct extras
    entry = mix.composition["b"]
    assert entry["examples"] == 25 and entry["unique_examples"] == 10 and entry["epochs"] == 2.5
    assert mix.composition["a"]["examples"] == 0


def test_downsampling_picks_distinct_examples():
    mix = build_mix(SOURCES, {"a": 1.0, "b": 0.0, "c": 0.0}, 20, seed=0)
    assert len({i for _, i in mix.picks}) == 20


def test_tokens_budget():
    counts = {"a": [10] * 50, "b": [40] * 10, "c": [5] * 30}
    mix = build_mix(
        SOURCES, {"a": 1, "b": 1, "c": 0}, 1000, unit="tokens", seed=0, token_counts=counts
    )
    comp = mix.composition
    assert comp["a"]["tokens"] == 500 and comp["b"]["tokens"] == 480  # 12 x 40 fits under 500
    assert comp["c"]["tokens"] == 0
    assert abs(comp["a"]["realised_share"] - 0.5) < 0.02
    upsampled = build_mix(
        SOURCES, {"a": 0, "b": 1, "c": 0}, 1000, unit="tokens", seed=0, token_counts=counts
    )
    assert (
        upsampled.composition["b"]["tokens"] == 1000 and upsampled.composition["b"]["epochs"] == 2.5
    )


@pytest.mark.parametrize(
    ("weights", "kwargs", "message"),
    [
        ({"a": 1, "b": 1}, {}, "source 'c' has no weight"),
        ({"a": 1, "b": 1, "c": 1, "d": 1}, {}, "unknown source 'd'"),
        ({"a": -1, "b": 1, "c": 1}, {}, "weight of source 'a'"),
        ({"a": 0, "b": 0, "c": 0}, {}, "all weights are 0"),
        ({"a": 1, "b": 1, "c": 1}, {"unit": "tokens"}, "needs token_counts"),
        ({"a": 1, "b": 1, "c": 1}, {"unit": "bytes"}, "unit must be"),
    ],
)
def test_mix_argument_errors(weights, kwargs, message):
    with pytest.raises(HarnessError, match=message):
        build_mix(SOURCES, weights, 10, seed=0, **kwargs)


def test_mix_accepts_numpy_numbers_from_a_search():
    import numpy as np

    weights = {"a": np.float32(0.7), "b": np.float64(0.3), "c": 0}
    counts = {n: list(np.full(len(v), 7)) for n, v in SOURCES.items()}
    mix = build_mix(SOURCES, weights, np.int64(20), seed=0, token_counts=counts)
    assert len(mix.picks) == 20 and mix.composition["a"]["tokens"] == 7 * 14
    json.dumps(mix.to_dict())
