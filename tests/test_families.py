"""Real model families end to end on CPU: for every tokenizer folder and chat template in
../shared/realworld, a tiny random-init model of the real architecture (its config with sizes
shrunk, vocabulary as the tokenizer's) goes through masking (system, multi-turn, tool turns where
the template has them), one LoRA and one full fine-tuning step on the harness's train path, and
generation through lm-eval's HFLM, which must feed the model exactly the prefix training saw
before the assistant's first trained token (one BOS rule for both)."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from realworld import REALWORLD, needs_realworld

from harness.config.load import validate
from harness.eval.lm_tasks import stop_strings
from harness.sft.masking import CHAT_ADDS_SPECIAL_TOKENS, IGNORE_INDEX, encode_messages
from harness.sft.train import prepare_data, train
from harness.util.errors import HarnessError

pytestmark = [pytest.mark.slow, needs_realworld]

DOLMA2 = "models/olmo2-dolma2-tokenizer"
SP_HOST = "models/mistral-7b-instruct-v0.3"  # a SentencePiece tokenizer that adds BOS itself
GPT_OSS_SPECIALS = [
    "<|startoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>", "<|end|>",
    "<|message|>", "<|call|>", "<|endofprompt|>",
]  # fmt: skip


@dataclass(frozen=True)
class Family:
    """A tokenizer folder with its own template, or a template-only family on a host tokenizer
    given the template's special tokens. `config`: a config.json in the shared folder, else
    `arch` (a transformers model_type with its default config). `tools`: how the template takes
    an assistant tool call: beside text ("content"), alone ("call": Mistral refuses text beside
    it, Llama 3.2 drops it) or flattened without `function` ("flat", gpt-oss); None: no tools."""

    name: str
    tokenizer: str
    template: str | None = None
    config: str | None = None
    arch: str | None = None
    specials: tuple[str, ...] = ()
    bos: str | None = None
    eos: str | None = None
    system: bool = True
    tools: str | None = None
    overrides: tuple[tuple[str, int], ...] = ()


FAMILIES = [
    Family("qwen2.5", "models/qwen2.5-instruct", config="models/qwen2.5-instruct/config.json",
           tools="content"),
    Family("qwen3", "models/qwen3", config="models/qwen3/config.json", tools="content"),
    Family("phi-3-mini", "models/phi-3-mini-128k-instruct",
           config="models/phi-3-mini-128k-instruct/config.json"),
    Family("mistral-v0.3", SP_HOST, arch="mistral", tools="call"),
    Family("llama-3.2", DOLMA2, "templates/llama-3.2-instruct.jinja",
           config="configs/llama-3.2-3b.config.json",
           specials=("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"),
           bos="<|begin_of_text|>", eos="<|eot_id|>", tools="call"),
    Family("phi-3.5-mini", "models/phi-3-mini-128k-instruct",
           "templates/phi-3.5-mini-instruct.jinja", arch="phi3", eos="<|end|>"),
    Family("phi-4-mini", DOLMA2, "templates/phi-4-mini-instruct.jinja", arch="phi3",
           specials=("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>"),
           eos="<|end|>", tools="content"),
    Family("gemma", SP_HOST, "templates/gemma-it.jinja", arch="gemma2",
           specials=("<start_of_turn>", "<end_of_turn>"), eos="<end_of_turn>", system=False),
    Family("gemma-3", SP_HOST, "templates/gemma-3-it.jinja", arch="gemma3_text",
           specials=("<start_of_turn>", "<end_of_turn>"), eos="<end_of_turn>"),
    Family("granite-3.0", DOLMA2, "templates/granite-3.0-instruct.jinja", arch="granite",
           specials=("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>"),
           eos="<|end_of_text|>", tools="content"),
    Family("gpt-oss", DOLMA2, "templates/gpt-oss.jinja", arch="gpt_oss",
           specials=tuple(GPT_OSS_SPECIALS), bos="<|startoftext|>", eos="<|return|>", tools="flat",
           overrides=(("num_local_experts", 4), ("num_experts_per_tok", 2))),
]  # fmt: skip
IDS = [f.name for f in FAMILIES]
SYSTEM = {"role": "system", "content": "You are a terse geography assistant."}
TURNS = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
    {"role": "user", "content": "And of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]
CALL = {
    "id": "call00001",
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
}
CALL_TURNS = {
    "content": {"content": "Let me look that up for you.", "tool_calls": [CALL]},
    "call": {"tool_calls": [CALL]},
    "flat": {"content": "Let me look that up.", "tool_calls": [CALL["function"]]},
}


def tool_conversation(family: Family) -> list[dict]:
    return [
        *([SYSTEM] if family.system else []),
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", **CALL_TURNS[family.tools]},
        {"role": "tool", "tool_call_id": "call00001", "name": "get_weather", "content": "overcast"},
        {"role": "assistant", "content": "It is cloudy in Paris."},
    ]


@functools.cache
def tokenizer_for(family: Family):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(REALWORLD / family.tokenizer)
    if family.specials:
        tok.add_tokens(list(family.specials), special_tokens=True)
    named = {k: v for k, v in (("bos_token", family.bos), ("eos_token", family.eos)) if v}
    if named:
        tok.add_special_tokens(named)
    if family.template:
        tok.chat_template = (REALWORLD / family.template).read_text()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def tiny_model(family: Family, tokenizer, seed: int = 0):
    """The family's architecture at hidden 32, 2 layers, 2 heads, vocabulary len(tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if family.config:
        raw = json.loads((REALWORLD / family.config).read_text())
    else:
        raw = AutoConfig.for_model(family.arch).to_dict()
    for drop in ("layer_types", "max_window_layers", "architectures", "torch_dtype", "dtype"):
        raw.pop(drop, None)
    if raw.get("model_type") == "phi3":  # longrope factor lists are sized for the real head_dim
        raw.pop("rope_scaling", None)
        raw.pop("rope_parameters", None)
    raw |= {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **dict(family.overrides),
    }
    config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def conversation(family: Family) -> list[dict]:
    return ([SYSTEM] if family.system else []) + TURNS


def trained_text(tokenizer, enc: dict) -> str:
    ids = [i for i, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE_INDEX]
    return tokenizer.decode(ids, skip_special_tokens=False)


def assert_assistant_only(tokenizer, enc: dict, messages: list[dict]) -> None:
    trained = trained_text(tokenizer, enc)
    for m in messages:
        content = m.get("content") or ""
        if m["role"] == "assistant":
            assert content in trained, (content, trained)
        elif content:
            assert content not in trained, (m["role"], trained)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_masking_trains_assistant_turns_only(family):
    tok = tokenizer_for(family)
    messages = conversation(family)
    assert_assistant_only(tok, encode_messages(tok, messages), messages)
    if family.tools:
        messages = tool_conversation(family)
        enc = encode_messages(tok, messages)
        assert_assistant_only(tok, enc, messages)
        rendered = tok.decode(enc["input_ids"], skip_special_tokens=False)
        if "get_weather" in rendered.split("overcast")[0]:  # the template renders the call
            assert "get_weather" in trained_text(tok, enc)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
@pytest.mark.parametrize("peft", ["lora", "full"])
def test_one_training_step_on_the_harness_path(family, peft, tmp_path):
    tok = tokenizer_for(family)
    rows = [{"messages": conversation(family)}, {"messages": TURNS[:2]}]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = {
        "name": f"family-{family.name.replace('.', '_')}",
        "data": {"sources": [{"name": "chat", "path": "chat.jsonl"}], "budget": 2},
        "train": {"max_steps": 1, "learning_rate": 1e-2, "batch_tokens": 4096, "warmup_ratio": 0},
        "peft": {"r": 4, "alpha": 8} if peft == "lora" else "none",
    }
    exp = validate(raw, "family.yaml", tmp_path)
    data = prepare_data(exp, tok)
    audit = data.lineage["mask_audit"]
    assert audit["stop_token_trained"] is True and audit["end_of_turn"].strip()
    assert 0 < audit["total"]["trainable_share"] < 1
    replies = {1: 2, 2: 1}  # assistant turns per input row
    for row in data.rows:
        assert trained_text(tok, row).count(audit["end_of_turn"]) == replies[row["row"]]
    model = tiny_model(family, tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(exp, model, tok, data, verbose=False)
    assert result.status == "ok" and result.steps == 1
    assert math.isfinite(result.final_loss) and result.final_loss > 0
    changed = [n for n, p in result.model.named_parameters() if p.requires_grad]
    if peft == "lora":
        assert changed and all("lora_" in n for n in changed)
        assert result.trainable_params < result.total_params / 2
    else:
        after = dict(result.model.named_parameters())
        assert any(not torch.equal(before[n], after[n]) for n in before)


def training_prefix(tokenizer, chat: list[dict]) -> list[int]:
    """The ids a training row holds before its first trained token when `chat` is followed by
    an assistant reply: what the model sees before it starts to answer."""
    reply = {"role": "assistant", "content": "Fine."}
    enc = encode_messages(tokenizer, [*chat, reply], train_on="last")
    first = next(i for i, lab in enumerate(enc["labels"]) if lab != IGNORE_INDEX)
    return enc["input_ids"][:first]


def hflm_generate(
    model, tokenizer, chats: list[list[dict]], add_bos_token=CHAT_ADDS_SPECIAL_TOKENS
):
    """Greedy replies through lm-eval's HFLM as harness.eval.runner sets it up for chat suites,
    and the prompt ids it fed the model (one request per batch, so no padding)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    lm.add_bos_token = add_bos_token
    fed: list[list[int]] = []

    def record(_module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[1] > 1:  # the prompt; later calls feed one new token each
            fed.append(ids[0].tolist())

    gen = {"until": stop_strings(tokenizer, model), "max_gen_toks": 3, "do_sample": False}
    requests = [
        Instance("generate_until", {}, (lm.apply_chat_template(c), gen), idx=i)
        for i, c in enumerate(chats)
    ]
    hook = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        replies = lm.generate_until(requests)
    finally:
        hook.remove()
    return replies, fed


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_generation_through_hflm_sees_the_training_prefix(family):
    tok = tokenizer_for(family)
    model = tiny_model(family, tok).eval()
    chats = [conversation(family)[:-3], conversation(family)[:-1]]
    replies, fed = hflm_generate(model, tok, chats)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    for chat in chats:
        assert training_prefix(tok, chat) in fed


@pytest.mark.parametrize(
    ("template", "bos_count"),
    [(None, 1), ("templates/phi-3.5-mini-instruct.jinja", 0)],
    ids=["mistral-template-writes-bos", "phi-template-writes-none"],
)
def test_bos_is_the_same_in_training_and_evaluation(template, bos_count):
    """Mistral's tokenizer adds BOS itself. Its own template writes BOS; Phi's does not. Both
    training rows and lm-eval's prompts carry exactly the BOS the template writes; lm-eval's own
    default (`add_bos_token=None`) would prepend one the template does not write."""
    family = Family(f"mistral-{template}", SP_HOST, template, arch="mistral", eos="</s>")
    tok = tokenizer_for(family)
    assert tok("a")["input_ids"][0] == tok.bos_token_id
    chat = [TURNS[0]]
    prefix = training_prefix(tok, chat)
    assert prefix.count(tok.bos_token_id) == bos_count
    assert (prefix[0] == tok.bos_token_id) == bool(bos_count)
    model = tiny_model(family, tok).eval()
    assert hflm_generate(model, tok, [chat])[1] == [prefix]
    default = hflm_generate(model, tok, [chat], add_bos_token=None)[1]
    assert default == [prefix if bos_count else [tok.bos_token_id, *prefix]]


OLMO2 = Family("olmo2", DOLMA2, arch="olmo2", eos="<|endoftext|>")


def test_olmo2_tokenizer_without_template_is_refused_for_chats_and_trains_on_text(tmp_path):
    tok = tokenizer_for(OLMO2)
    with pytest.raises(HarnessError, match="no chat template"):
        encode_messages(tok, TURNS)
    (tmp_path / "text.jsonl").write_text(json.dumps({"text": "Paris is the capital."}) + "\n")
    raw = {
        "name": "family-olmo2",
        "data": {"sources": [{"name": "replay", "path": "text.jsonl"}], "budget": 1},
        "train": {"max_steps": 1, "learning_rate": 1e-2, "warmup_ratio": 0},
    }
    exp = validate(raw, "family.yaml", tmp_path)
    data = prepare_data(exp, tok)
    result = train(exp, tiny_model(OLMO2, tok), tok, data, verbose=False)
    assert result.status == "ok" and math.isfinite(result.final_loss)


def test_every_shared_tokenizer_and_template_is_covered():
    folders = {p.name for p in (REALWORLD / "models").iterdir() if p.is_dir()}
    used = {Path(f.tokenizer).name for f in [*FAMILIES, OLMO2]}
    assert folders <= used
    templates = {p.name for p in (REALWORLD / "templates").glob("*.jinja")}
    assert templates <= {Path(f.template).name for f in FAMILIES if f.template}


@pytest.mark.parametrize("name", ["qwen2.5", "mistral-v0.3"])
def test_the_harness_chat_suites_run_on_real_templates(name):
    """`harness.eval.runner.evaluate` end to end (chat template, stop strings, BOS rule, scoring)
    on the English format and refusal suites, two items each."""
    from harness.config.schema import EvalConfig
    from harness.eval.runner import evaluate

    family = next(f for f in FAMILIES if f.name == name)
    tok = tokenizer_for(family)
    cfg = EvalConfig(batch_size=2, max_new_tokens=430)  # the longest English format item fits
    result = evaluate(
        tiny_model(family, tok),
        tok,
        ["format", "refusal"],
        eval_config=cfg,
        dataset="english",
        limit=2,
    )
    for suite in ("format", "refusal"):
        records = result.records[suite]
        assert records and all(isinstance(r["response"], str) for r in records)
        bos = tok.bos_token
        assert all(r["prompt"].count(bos) <= 1 for r in records) if bos else True
        assert all(
            r["prompt"]
            == tok.apply_chat_template(
                [{"role": "user", "content": r["doc"]["prompt"]}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for r in records
        )
    assert "format/pass_rate" in result.summary and "refusal/accuracy" in result.summary
