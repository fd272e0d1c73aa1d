"""Masking on the rows that used to stop a run: a reply that also occurs in its prompt, turns
that carry only tool calls (Llama-3.1/3.2 and Qwen3 templates, read from ../shared/realworld),
per-row failures skipped and counted under on_bad_row=skip, and the audit's counts of
end-of-turn tokens lost to truncation and of messages a template does not render."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers_tokenizers import CHATML, QWEN3_LIKE, make_tokenizer, template_tokenizer
from test_masking import trained_runs

from harness.sft.masking import encode_examples, encode_messages
from harness.sft.sources import Example
from harness.util.errors import HarnessError

SHARED = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))
REALWORLD = SHARED / "realworld"
needs_realworld = pytest.mark.skipif(
    not REALWORLD.is_dir(), reason=f"{REALWORLD} (real tokenizers and templates) is absent"
)

ECHO = [
    {"role": "user", "content": "Say Paris."},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "Again: Paris."},
    {"role": "assistant", "content": "Paris."},
]
CALL = [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
TOOL_ONLY = [  # as data.py normalises it: content "" next to the tool calls
    {"role": "user", "content": "Weather in Oslo?"},
    {"role": "assistant", "content": "", "tool_calls": CALL},
    {"role": "tool", "content": "rain"},
    {"role": "assistant", "content": "It rains."},
]


@pytest.mark.parametrize("name", ["chatml", "llama3", "phi3", "zephyr"])
def test_reply_that_also_occurs_in_its_prompt(name):
    tok = template_tokenizer(name)
    runs = trained_runs(tok, encode_messages(tok, ECHO))
    assert len(runs) == 2 and all(run.strip().startswith("Paris.") for run in runs)


def test_reply_in_its_prompt_with_history_rendered_differently():
    tok = make_tokenizer(QWEN3_LIKE, eos="<|im_end|>")
    runs = trained_runs(tok, encode_messages(tok, ECHO))
    assert runs == ["Paris.<|im_end|>", "<think>\n\n</think>\n\nParis.<|im_end|>"]


@needs_realworld
def test_llama_tool_call_only_turn_is_trained():
    template = (REALWORLD / "templates" / "llama-3.2-instruct.jinja").read_text()
    tok = make_tokenizer(template, bos="<|begin_of_text|>", eos="<|eot_id|>")
    for messages in (TOOL_ONLY, TOOL_ONLY[:2]):  # in history, and as the final turn
        runs = trained_runs(tok, encode_messages(tok, messages))
        assert runs[0] == '{"name": "get_weather", "parameters": {"city": "Oslo"}}<|eot_id|>'
    assert trained_runs(tok, encode_messages(tok, TOOL_ONLY))[1] == "It rains.<|eot_id|>"


@needs_realworld
def test_qwen3_tool_call_only_turn_is_trained():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REALWORLD / "models" / "qwen3")
    history = trained_runs(tok, encode_messages(tok, TOOL_ONLY))
    assert history[0].startswith("<tool_call>") and '"get_weather"' in history[0]
    assert history[0].endswith("</tool_call><|im_end|>")
    final = trained_runs(tok, encode_messages(tok, TOOL_ONLY[:2]))
    assert len(final) == 1 and '"get_weather"' in final[0] and final[0].endswith("<|im_end|>")


def _rewriting():
    """Cuts history replies that mention Paris: the stop-token probe passes, ECHO cannot."""
    rewriting = CHATML.replace(
        "{{ m['content'] }}",
        "{% if loop.last or 'Paris' not in m['content'] %}{{ m['content'] }}"
        "{% else %}{{ m['content'][:3] }}{% endif %}",
    )
    return make_tokenizer(rewriting, eos="<|im_end|>")


def test_unmaskable_rows_are_skipped_and_counted_under_skip():
    tok = _rewriting()
    good = Example("chat", 1, messages=TOOL_ONLY[:1] + [{"role": "assistant", "content": "Rain."}])
    bad = [Example("chat", n, messages=ECHO) for n in (2, 3)]
    with pytest.raises(HarnessError, match=r"source 'chat' row 2: assistant turn 2"):
        encode_examples(tok, [good, *bad], max_length=None)
    out = encode_examples(tok, [good, *bad], max_length=None, on_bad_row="skip")
    assert [r["row"] for r in out.rows] == [1]
    audit = out.audit.to_dict()
    assert audit["sources"]["chat"]["dropped_unmaskable"] == 2
    assert audit["sources"]["chat"]["kept"] == 1
    assert audit["failures"][0].startswith("source 'chat' row 2: assistant turn 2")


def test_audit_counts_end_of_turn_lost_to_truncation():
    tok = template_tokenizer("chatml")
    full = encode_messages(tok, ECHO)
    last_eot = max(i for i, lab in enumerate(full["labels"]) if lab != -100)
    cut_inside = encode_messages(tok, ECHO, max_length=last_eot)  # drops the final <|im_end|>
    cut_after = encode_messages(tok, ECHO, max_length=last_eot + 1)
    assert cut_inside["truncated"] and cut_inside["eot_truncated"]
    assert cut_after["truncated"] and not cut_after["eot_truncated"]
    rows = [Example("chat", 1, messages=ECHO), Example("chat", 2, messages=ECHO[:2])]
    audit = encode_examples(tok, rows, max_length=last_eot).audit.to_dict()
    assert audit["sources"]["chat"]["eot_truncated"] == 1
    assert audit["sources"]["chat"]["truncated"] == 1


def test_audit_counts_messages_the_template_drops():
    ignores_system = CHATML.replace(
        "{% for m in messages %}", "{% for m in messages if m['role'] != 'system' %}"
    )
    tok = make_tokenizer(ignores_system, eos="<|im_end|>")
    system = {"role": "system", "content": "Answer in French."}
    rows = [Example("chat", 1, messages=[system, *ECHO]), Example("chat", 2, messages=ECHO)]
    audit = encode_examples(tok, rows, max_length=None).audit.to_dict()
    assert audit["sources"]["chat"]["dropped_messages"] == 1
    kept = encode_examples(template_tokenizer("chatml"), rows, max_length=None).audit
    assert kept.to_dict()["sources"]["chat"]["dropped_messages"] == 0


def test_prepare_data_skips_unmaskable_rows_under_on_bad_row_skip(tmp_path):
    from harness.config.load import validate
    from harness.sft.train import prepare_data

    good = {"messages": [TOOL_ONLY[0], {"role": "assistant", "content": "Rain."}]}
    rows = [good, {"messages": ECHO}, good]
    (tmp_path / "chats.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    raw = {
        "name": "skip",
        "data": {"sources": [{"name": "chat", "path": "chats.jsonl"}], "budget": 3},
    }
    with pytest.raises(HarnessError, match=r"source 'chat' row 2: assistant turn 2"):
        prepare_data(validate(raw, "skip.yaml", tmp_path), _rewriting())
    raw["data"]["on_bad_row"] = "skip"
    data = prepare_data(validate(raw, "skip.yaml", tmp_path), _rewriting())
    assert sorted(r["row"] for r in data.rows) == [1, 3]
    audit = data.lineage["mask_audit"]
    assert audit["sources"]["chat"]["dropped_unmaskable"] == 1
    assert audit["failures"] == [
        "source 'chat' row 2: assistant turn 2: the chat template does not render its content "
        "where the conversation prefix says it starts, so its tokens cannot be located; add "
        "{% generation %} tags to the template"
    ]
