"""A tiny byte-level BPE and real-world-style chat templates for masking and batching tests.

The templates follow the shapes of the published ones (ChatML/Qwen, Llama-3, Mistral [INST],
Gemma, Phi-3, Zephyr) closely enough to exercise the same edge cases: bos in the template,
`| trim` on content, end-of-conversation eos, newline separators, system prompts folded into the
first user turn, and one template with `{% generation %}` tags.
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<bos>",
    "<eos>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "[INST]",
    "[/INST]",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
    "<|endoftext|>",
]

_WORDS = """
the quick brown fox jumps over the lazy dog while a small model learns to answer questions
about capitals rivers mountains and numbers paris is the capital of france berlin of germany
rome of italy madrid of spain the river nile flows north the amazon is long what is two plus
two it is four please call the weather tool with the city name the tool returned sunny and warm
you are a helpful assistant answer briefly and politely thank you very much goodbye hello how
are you today i am fine a function call returns json with name and arguments get weather city
london tokyo new york the answer is yes no maybe sure of course here is a short poem about
the sea waves roll and the wind sings over sand and stone the end system user assistant tool
count from one to ten one two three four five six seven eight nine ten done
"""


@functools.lru_cache(maxsize=1)
def _backend() -> str:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = _WORDS.split("\n")
    tok.train_from_iterator(
        text * 5 + [_WORDS.title(), _WORDS.upper(), "{}[]\":,.?!'-_0123456789"], trainer
    )
    return tok.to_str()


def make_tokenizer(
    chat_template: str | None = None,
    *,
    bos: str | None = None,
    eos: str = "</s>",
    pad: str = "<pad>",
) -> PreTrainedTokenizerFast:
    """A fresh fast tokenizer over the shared tiny BPE, with the given template and specials."""
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_backend()),
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
    )
    tok.chat_template = chat_template
    return tok


CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' }}"
    "{% if m.get('content') %}{{ m['content'] }}{% endif %}"
    "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}"
    "{{ '<tool_call>\\n' + c['function'] | tojson + '\\n</tool_call>' }}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = (
    "{% for m in messages %}"
    "{% set content = '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n'"
    " + m['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)

# Mistral v0.1-style: bos in the template, eos after each reply, a system prompt folded into the
# first user turn, and alternation enforced with raise_exception.
MISTRAL = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
    "{{ bos_token }}"
    "{% for m in loop_messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if m['role'] == 'user' %}"
    "{% if loop.first %}{{ '[INST] ' + system + m['content'] + ' [/INST]' }}"
    "{% else %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

GEMMA = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = m['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + m['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Phi-3: eos only at the very end of a conversation without a generation prompt.
PHI3 = (
    "{% for m in messages %}"
    "{% if m['role'] in ['system', 'user', 'assistant', 'tool'] %}"
    "{{ '<|' + m['role'] + '|>\\n' + m['content'] + '<|end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Zephyr, written the way it ships: statements on their own lines, relying on trim_blocks.
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n"
    "{{ '<|system|>\\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n"
    "{{ '<|assistant|>' }}\n"
    "{% endif %}\n"
    "{% endfor %}"
)

# The toy-world shape: role tokens, eos `<|end|>` inside the generation tags.
TAGGED = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|assistant|>' }}{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ '<|' + m['role'] + '|>' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

# Broken on purpose: the generation tags leave the end-of-turn token outside.
TAGGED_NO_EOS = TAGGED.replace(
    "{% generation %}{{ m['content'] + eos_token }}{% endgeneration %}",
    "{% generation %}{{ m['content'] }}{% endgeneration %}{{ eos_token }}",
)

# No end-of-turn marker at all: turns are separated by newlines only.
PLAIN_NO_EOT = (
    "{% for m in messages %}{{ m['role'] | capitalize + ': ' + m['content'] + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

# name -> (template, tokenizer kwargs, end-of-turn text the assistant turn must end with)
TEMPLATES = {
    "chatml": (CHATML, {"eos": "<|im_end|>"}, "<|im_end|>"),
    "llama3": (LLAMA3, {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}, "<|eot_id|>"),
    "mistral": (MISTRAL, {"bos": "<s>", "eos": "</s>"}, "</s>"),
    "gemma": (GEMMA, {"bos": "<bos>", "eos": "<eos>"}, "<end_of_turn>"),
    "phi3": (PHI3, {"eos": "<|endoftext|>"}, "<|end|>"),
    "zephyr": (ZEPHYR, {"eos": "</s>"}, "</s>"),
    "tagged": (TAGGED, {"bos": "<s>", "eos": "<|end|>"}, "<|end|>"),
}


def template_tokenizer(name: str) -> PreTrainedTokenizerFast:
    template, kwargs, _ = TEMPLATES[name]
    return make_tokenizer(template, **kwargs)


# Qwen3 shape: a final reply gets an empty <think> block, replies in history do not.
QWEN3_LIKE = (
    "{% set ns = namespace(last_user=-1) %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{% set ns.last_user = loop.index0 %}"
    "{% endif %}{% endfor %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and loop.index0 > ns.last_user %}"
    "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Mistral v3 shape: the system prompt is written into the LAST user message only when that user
# message ends the conversation, so a generation prompt is not a prefix of the full render.
MISTRAL_V3_LIKE = (
    "{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{{ bos_token }}"
    "{% for m in loop_messages %}"
    "{% if m['role'] == 'user' %}"
    "{% if loop.last and system_message is defined %}"
    "{{ '[INST] ' + system_message + '\\n\\n' + m['content'] + '[/INST]' }}"
    "{% else %}{{ '[INST] ' + m['content'] + '[/INST]' }}{% endif %}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
