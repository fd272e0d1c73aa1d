"""Assistant-only masking on real-world-style chat templates, and the mask audit."""

from __future__ import annotations

import json

import pytest
from helpers_tokenizers import (
    CHATML,
    MISTRAL_V3_LIKE,
    PLAIN_NO_EOT,
    QWEN3_LIKE,
    TAGGED_NO_EOS,
    TEMPLATES,
    make_tokenizer,
    template_tokenizer,
)
from tokenizers import processors

from harness.sft.masking import (
    IGNORE_INDEX,
    check_stop_token,
    encode_examples,
    encode_messages,
    encode_text,
)
from harness.sft.sources import Example
from harness.util.errors import HarnessError

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATION = [
    {"role": "user", "content": "What is two plus two?"},
    {"role": "assistant", "content": "It is four."},
    {"role": "user", "content": "And the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
]
TOOL_TURNS = [
    {"role": "user", "content": "What is the weather in London?"},
    {
        "role": "assistant",
        "content": "Let me call the weather tool.",
        "tool_calls": [
            {
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "london"}},
            }
        ],
    },
    {"role": "tool", "content": "sunny and warm"},
    {"role": "assistant", "content": "It is sunny and warm in London."},
]
NO_SYSTEM = {"gemma"}  # Gemma's template has no system role
NO_TOOLS = {"gemma", "mistral", "zephyr"}  # these templates have no tool role


@pytest.fixture(scope="module", params=sorted(TEMPLATES))
def template(request):
    name = request.param
    return name, template_tokenizer(name), TEMPLATES[name][2]


def trained_runs(tokenizer, enc) -> list[str]:
    """Decoded runs of consecutive trained tokens."""
    runs, run = [], []
    for tok, lab in zip(enc["input_ids"], enc["labels"], strict=True):
        if lab != IGNORE_INDEX:
            assert lab == tok
            run.append(tok)
        elif run:
            runs.append(run)
            run = []
    if run:
        runs.append(run)
    return [tokenizer.decode(r, skip_special_tokens=False) for r in runs]


def conversation(name: str) -> list[dict]:
    return CONVERSATION if name in NO_SYSTEM else [SYSTEM, *CONVERSATION]


def test_trains_exactly_assistant_content_and_end_of_turn(template):
    name, tok, eot = template
    enc = encode_messages(tok, conversation(name))
    assert len(enc["input_ids"]) == len(enc["labels"])
    assert enc["dropped"] is None and not enc["truncated"]
    runs = trained_runs(tok, enc)
    # Mistral writes " " + content after [/INST]: the model has to generate that space too.
    assert [r.lstrip(" ") for r in runs] == [
        "It is four." + eot,
        "Paris is the capital of France." + eot,
    ]
    assert enc["num_trainable"] == sum(lab != IGNORE_INDEX for lab in enc["labels"])


def test_train_on_last_trains_only_the_final_reply(template):
    name, tok, eot = template
    enc = encode_messages(tok, conversation(name), train_on="last")
    assert [r.lstrip(" ") for r in trained_runs(tok, enc)] == [
        "Paris is the capital of France." + eot
    ]


@pytest.mark.parametrize("name", sorted(set(TEMPLATES) - NO_TOOLS))
def test_tool_turns_are_never_trained(name):
    tok, eot = template_tokenizer(name), TEMPLATES[name][2]
    runs = trained_runs(tok, encode_messages(tok, [SYSTEM, *TOOL_TURNS]))
    assert len(runs) == 2
    assert runs[0].startswith("Let me call the weather tool.") and runs[0].endswith(eot)
    assert runs[1] == "It is sunny and warm in London." + eot


def test_tool_calls_rendered_by_the_template_are_trained():
    tok = template_tokenizer("chatml")
    runs = trained_runs(tok, encode_messages(tok, TOOL_TURNS))
    assert '"name": "get_weather"' in runs[0] and "</tool_call><|im_end|>" in runs[0]


def test_stop_token_check_passes_on_every_template(template):
    _, tok, eot = template
    assert check_stop_token(tok) == eot


@pytest.mark.parametrize("bad", [TAGGED_NO_EOS, PLAIN_NO_EOT], ids=["tags-without-eos", "no-eot"])
def test_stop_token_check_fails_loudly(bad):
    tok = make_tokenizer(bad, bos="<s>", eos="<|end|>")
    with pytest.raises(HarnessError, match="never learn to stop"):
        check_stop_token(tok)


def test_bos_only_where_the_template_writes_it():
    mistral = template_tokenizer("mistral")
    ids = encode_messages(mistral, CONVERSATION)["input_ids"]
    assert ids[0] == mistral.bos_token_id and ids.count(mistral.bos_token_id) == 1

    # A Llama-style tokenizer adds bos itself; the ChatML template does not write it, so (as
    # apply_chat_template(tokenize=True), chat serving and the harness's eval) no bos.
    chatml = make_tokenizer(CHATML, bos="<s>", eos="<|im_end|>")
    bos = chatml.bos_token_id
    chatml.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    assert chatml("a")["input_ids"][0] == bos
    enc = encode_messages(chatml, CONVERSATION)
    assert bos not in enc["input_ids"]
    assert enc["input_ids"] == chatml.apply_chat_template(CONVERSATION, tokenize=True)["input_ids"]


def test_truncation_keeps_the_start_and_flags_it():
    tok = template_tokenizer("chatml")
    full = encode_messages(tok, CONVERSATION)
    cut = len(full["input_ids"]) - 4  # inside the final reply
    enc = encode_messages(tok, CONVERSATION, max_length=cut)
    assert enc["truncated"] and enc["dropped"] is None
    assert enc["input_ids"] == full["input_ids"][:cut]
    assert enc["labels"] == full["labels"][:cut]


def test_overlong_drop_and_zero_trainable_rows_are_markers_not_zero_loss():
    tok = template_tokenizer("chatml")
    n = len(encode_messages(tok, CONVERSATION)["input_ids"])
    dropped = encode_messages(tok, CONVERSATION, max_length=n - 1, overlong="drop")
    assert dropped["dropped"] == "overlong" and dropped["input_ids"] == []
    assert encode_messages(tok, CONVERSATION, max_length=n, overlong="drop")["dropped"] is None
    # Truncated before the first reply: nothing left to learn from.
    empty = encode_messages(tok, CONVERSATION, max_length=5)
    assert empty["truncated"] and empty["dropped"] == "no_trainable" and empty["num_trainable"] == 0
    # train_on="last" with the last reply cut off is empty too.
    labels = encode_messages(tok, CONVERSATION, train_on="last")["labels"]
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    last = encode_messages(tok, CONVERSATION, max_length=first, train_on="last")
    assert last["dropped"] == "no_trainable"


def test_history_rendered_differently_from_a_final_reply():
    tok = make_tokenizer(QWEN3_LIKE, eos="<|im_end|>")
    runs = trained_runs(tok, encode_messages(tok, [SYSTEM, *CONVERSATION]))
    assert runs == [
        "It is four.<|im_end|>",
        "<think>\n\n</think>\n\nParis is the capital of France.<|im_end|>",
    ]
    assert check_stop_token(tok) == "<|im_end|>"


def test_system_prompt_moved_by_the_template_is_never_trained():
    tok = make_tokenizer(MISTRAL_V3_LIKE, bos="<s>", eos="</s>")
    enc = encode_messages(tok, [SYSTEM, *CONVERSATION])
    runs = trained_runs(tok, enc)
    assert [r.lstrip(" ") for r in runs] == [
        "It is four.</s>",
        "Paris is the capital of France.</s>",
    ]
    assert check_stop_token(tok) == "</s>"


def test_template_that_rewrites_history_is_refused():
    rewriting = CHATML.replace(
        "{{ m['content'] }}",
        "{% if loop.last %}{{ m['content'] }}{% else %}{{ m['content'][:3] }}{% endif %}",
    )
    tok = make_tokenizer(rewriting, eos="<|im_end|>")
    with pytest.raises(HarnessError, match="assistant turn 1"):
        encode_messages(tok, CONVERSATION)


def test_template_errors_become_harness_errors():
    tok = template_tokenizer("mistral")
    with pytest.raises(HarnessError, match="roles must alternate"):
        encode_messages(tok, [CONVERSATION[0], CONVERSATION[0], CONVERSATION[1]])


def test_encode_text_trains_everything_and_appends_eos():
    tok = template_tokenizer("chatml")
    enc = encode_text(tok, "the quick brown fox")
    assert enc["input_ids"][-1] == tok.eos_token_id
    assert enc["labels"] == enc["input_ids"] and enc["num_trainable"] == len(enc["input_ids"])
    short = encode_text(tok, "the quick brown fox", max_length=2)
    assert short["truncated"] and len(short["input_ids"]) == 2


def test_encode_examples_audits_per_source():
    tok = template_tokenizer("chatml")
    chat = [Example("chat", i + 1, messages=CONVERSATION) for i in range(3)]
    replay = [Example("replay", 1, text="the quick brown fox jumps over the lazy dog")]
    n = len(encode_messages(tok, CONVERSATION)["input_ids"])
    long_chat = [Example("long", 1, messages=CONVERSATION * 20)]
    out = encode_examples(tok, chat + replay + long_chat, max_length=n)
    audit = out.audit.to_dict()
    json.dumps(audit)  # loggable as is
    assert audit["end_of_turn"] == "<|im_end|>" and audit["stop_token_trained"] is True
    assert audit["total"]["examples"] == 5 and audit["total"]["kept"] == 5
    assert audit["sources"]["chat"]["kept"] == 3 and audit["sources"]["chat"]["truncated"] == 0
    assert 0 < audit["sources"]["chat"]["trainable_share"] < 1
    assert audit["sources"]["replay"]["trainable_share"] == 1.0
    assert audit["sources"]["long"]["truncated"] == 1 and audit["sources"]["long"]["kept"] == 1
    assert "[[It is four.<|im_end|>]]" in audit["samples"]["chat"][0]
    assert len(audit["samples"]["chat"]) == 2
    assert [r["source"] for r in out.rows] == ["chat"] * 3 + ["replay", "long"]

    tiny = encode_examples(tok, chat, max_length=5)
    assert tiny.rows == [] and tiny.audit.sources["chat"].dropped_no_trainable == 3
    dropped = encode_examples(tok, long_chat, max_length=n, overlong="drop")
    assert dropped.audit.sources["long"].dropped_overlong == 1


def test_encode_examples_names_source_and_row_on_errors():
    tok = template_tokenizer("mistral")
    bad = Example("chat", 7, messages=[CONVERSATION[0], CONVERSATION[0], CONVERSATION[1]])
    with pytest.raises(HarnessError, match=r"source 'chat' row 7: .*alternate"):
        encode_examples(tok, [bad], max_length=None)


def test_encode_examples_refuses_a_template_that_never_trains_the_stop_token():
    tok = make_tokenizer(TAGGED_NO_EOS, bos="<s>", eos="<|end|>")
    with pytest.raises(HarnessError, match="never learn to stop"):
        encode_examples(tok, [Example("chat", 1, messages=CONVERSATION)], max_length=None)


def test_generation_tags_agree_with_transformers_assistant_mask():
    tok = template_tokenizer("tagged")
    messages = [SYSTEM, *TOOL_TURNS]
    ours = encode_messages(tok, messages)
    theirs = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ours["input_ids"] == list(theirs["input_ids"])
    assert [int(lab != IGNORE_INDEX) for lab in ours["labels"]] == list(theirs["assistant_masks"])
