"""Chat template -> `input_ids` + `labels`, training only what the assistant says.

Public API
    encode_messages(tokenizer, messages, max_length=None, *, train_on="all", overlong="truncate")
        -> {"input_ids", "labels", "num_trainable", "truncated", "dropped", "eot_truncated",
            "dropped_messages"}
    encode_text(tokenizer, text, max_length=None) -> same keys; full loss, eos appended (replay data)
    check_stop_token(tokenizer) -> str: the trained end-of-turn text, or HarnessError
    encode_examples(tokenizer, examples, max_length, *, train_on, overlong, on_bad_row)
        -> Encoded(rows, audit)
    MaskAudit / SourceAudit: plain, JSON-serialisable numbers a run logs (`audit.to_dict()`)

Labels are *not* shifted (the model shifts); `-100` marks tokens without loss. A label equals its
input id on the tokens of each trained assistant turn: its content and the end-of-turn marker the
template writes right after it (`<|im_end|>`, `<|eot_id|>`, `</s>`, `<end_of_turn>`, ...).

How the assistant spans are found, in characters of the fully rendered conversation S:
- Templates with `{% generation %}` tags: the template author marked them; we take transformers'
  generation indices as they are, and `check_stop_token` verifies they include the end-of-turn.
- Any other template: for assistant message i, P = render(messages[:i], add_generation_prompt=True)
  is where the model starts writing and B = render(messages[:i+1]) is where the turn has been
  written. The turn is S[lcp(P, S) : lcp(B, S)] (lcp = longest common prefix), so whatever the
  template adds after the content (end-of-turn marker, eos) is trained, and whatever it adds only
  at the end of a conversation is not, because S continues differently there. The turn must
  contain the message's content (for a turn of tool calls only: the first call's function
  name), searched from where the turn starts, so a reply that also occurs in its prompt is
  found in the right place; otherwise we raise rather than train the wrong tokens.
Char spans become token labels through the fast tokenizer's offsets, tokenising S once. A token
cut by the span's end (e.g. `<|user|>` when lcp stopped after its first characters) is not
trained, and trailing whitespace-only tokens (separators between turns) are not trained.

BOS, one rule for training and evaluation: a rendered chat is tokenised with no special tokens
added (`CHAT_ADDS_SPECIAL_TOKENS`), so the model sees a BOS exactly where the template writes one
(Llama-3, Mistral and Gemma templates write `bos_token`; ChatML and Phi templates do not). That is
what `apply_chat_template(tokenize=True)` and chat serving (vLLM, TGI) feed the model, and
`harness.eval.runner` tells lm-eval's HFLM the same for chat-template suites (`add_bos_token`), whose
own default would add the tokenizer's BOS to a template that does not write one. Plain text
(replay rows, likelihood suites) keeps the tokenizer's own special tokens in both.

Why not diff token ids or rely on tags alone: tags are rare in real templates; token diffs break
when BPE merges across a turn boundary. Character prefixes need nothing from the template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from harness.util.errors import HarnessError

if TYPE_CHECKING:
    from harness.sft.sources import Example

IGNORE_INDEX = -100
CHAT_ADDS_SPECIAL_TOKENS = False
TrainOn = Literal["all", "last"]
Overlong = Literal["truncate", "drop"]

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_NEXT_USER = {"role": "user", "content": "And next?"}
_PROBE = [
    {"role": "user", "content": "Is the stop token trained?"},
    {"role": "assistant", "content": "Probe reply."},
    {"role": "user", "content": "Thanks."},
]


def encode_messages(
    tokenizer: Any,
    messages: list[dict],
    max_length: int | None = None,
    *,
    train_on: TrainOn = "all",
    overlong: Overlong = "truncate",
) -> dict:
    """Tokenise one conversation with labels on assistant turns only.

    `dropped` is None for a usable row, "overlong" when `overlong="drop"` and the row is too long,
    or "no_trainable" when no assistant token survives (e.g. truncation cut it): callers count
    these instead of training on a row whose loss would silently be zero. `eot_truncated`: the
    cut fell inside a trained turn, so its end-of-turn is not trained on this row.
    `dropped_messages`: messages with content that the rendered conversation does not contain
    (a template that ignores a system prompt, say).
    """
    if train_on not in ("all", "last"):
        raise HarnessError(f"train_on must be 'all' or 'last', got {train_on!r}")
    if overlong not in ("truncate", "drop"):
        raise HarnessError(f"overlong must be 'truncate' or 'drop', got {overlong!r}")
    text, ids, offsets, spans = _render_and_tokenize(tokenizer, messages)
    if train_on == "last":
        spans = spans[-1:]
    labels = [IGNORE_INDEX] * len(ids)
    for j in _trained_tokens(text, offsets, spans):
        labels[j] = ids[j]
    encoded = _finish(ids, labels, max_length, overlong)
    encoded["dropped_messages"] = sum(
        1 for m in messages if (m.get("content") or "").strip() not in text
    )
    return encoded


def encode_text(tokenizer: Any, text: str, max_length: int | None = None) -> dict:
    """Tokenise plain text with loss on every token and eos appended, for replay of pretraining-like
    data; too-long text keeps its start (and is flagged `truncated`)."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return _finish(ids, list(ids), max_length, "truncate")


def check_stop_token(tokenizer: Any) -> str:
    """Render user -> assistant -> user and require the first token after the assistant's content
    to be trained: if it is not, the model never learns to end its turn and generates forever.

    Returns the trained end-of-turn text (e.g. "<|im_end|>") for the audit.
    """
    text, ids, offsets, spans = _render_and_tokenize(tokenizer, _PROBE)
    content = _PROBE[1]["content"]
    content_end = text.find(content) + len(content)
    trained = set(_trained_tokens(text, offsets, spans))
    after = [j for j, (s, e) in enumerate(offsets) if s >= content_end and text[s:e].strip() != ""]
    if not after or after[0] not in trained:
        nxt = text[offsets[after[0]][0] : offsets[after[0]][1]] if after else "end of text"
        raise HarnessError(
            f"chat template: the end-of-turn after an assistant reply ({nxt!r}) is not trained, "
            "so the model would never learn to stop; put it inside {% generation %} or use a "
            "template that closes assistant turns with an end-of-turn token"
        )
    stop = [j for j in after if j in trained]
    return tokenizer.decode([ids[j] for j in stop], skip_special_tokens=False)


@dataclass
class SourceAudit:
    """What masking did to one source; `trainable_share` near 0 or 1 is a red flag."""

    examples: int = 0
    kept: int = 0
    tokens: int = 0
    trainable_tokens: int = 0
    truncated: int = 0
    eot_truncated: int = 0  # truncation cut a trained turn before its end-of-turn
    dropped_overlong: int = 0
    dropped_no_trainable: int = 0
    dropped_unmaskable: int = 0  # on_bad_row=skip: the template's turns could not be located
    dropped_messages: int = 0  # messages whose content the template does not render

    @property
    def trainable_share(self) -> float:
        return self.trainable_tokens / self.tokens if self.tokens else 0.0


@dataclass
class MaskAudit:
    """The mask audit a run logs: per-source counts, the stop token, and marked samples."""

    end_of_turn: str | None
    sources: dict[str, SourceAudit] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the first rows skipped as unmaskable

    def to_dict(self) -> dict:
        sources = {
            name: {**asdict(a), "trainable_share": round(a.trainable_share, 6)}
            for name, a in self.sources.items()
        }
        total = SourceAudit()
        for a in self.sources.values():
            for key, value in asdict(a).items():
                setattr(total, key, getattr(total, key) + value)
        return {
            "end_of_turn": self.end_of_turn,
            # check_stop_token raises when it is not trained; None: no conversations to check
            "stop_token_trained": True if self.end_of_turn else None,
            "sources": sources,
            "total": {**asdict(total), "trainable_share": round(total.trainable_share, 6)},
            "samples": self.samples,
            "failures": self.failures,
        }


@dataclass
class Encoded:
    """Encoded rows (dicts with input_ids, labels, source, row) and the audit of how they were made."""

    rows: list[dict]
    audit: MaskAudit


def encode_examples(
    tokenizer: Any,
    examples: Iterable[Example],
    max_length: int | None,
    *,
    train_on: TrainOn = "all",
    overlong: Overlong = "truncate",
    on_bad_row: Literal["error", "skip"] = "error",
    n_samples: int = 2,
) -> Encoded:
    """Encode normalised examples, drop (and count) unusable rows, and audit the masks.

    The stop-token check runs first, once per tokenizer, when any example is a conversation.
    A row whose turns cannot be located raises, naming its source and row; with
    `on_bad_row="skip"` it is counted (`dropped_unmaskable`) and the first few are kept in
    `audit.failures`.
    """
    examples = list(examples)
    eot = None
    if any(ex.messages is not None for ex in examples):
        eot = check_stop_token(tokenizer)
    audit = MaskAudit(end_of_turn=eot)
    rows = []
    for ex in examples:
        a = audit.sources.setdefault(ex.source, SourceAudit())
        a.examples += 1
        try:
            if ex.messages is not None:
                enc = encode_messages(
                    tokenizer, ex.messages, max_length, train_on=train_on, overlong=overlong
                )
            else:
                enc = encode_text(tokenizer, ex.text or "", max_length)
        except HarnessError as err:
            message = f"source {ex.source!r} row {ex.row}: {err}"
            if on_bad_row == "error":
                raise HarnessError(message) from err
            a.dropped_unmaskable += 1
            if len(audit.failures) < 5:
                audit.failures.append(message)
            continue
        a.truncated += enc["truncated"]
        a.eot_truncated += enc["eot_truncated"]
        a.dropped_messages += enc.get("dropped_messages", 0)
        if enc["dropped"] == "overlong":
            a.dropped_overlong += 1
            continue
        if enc["dropped"] == "no_trainable":
            a.dropped_no_trainable += 1
            continue
        a.kept += 1
        a.tokens += len(enc["input_ids"])
        a.trainable_tokens += enc["num_trainable"]
        shown = audit.samples.setdefault(ex.source, [])
        if len(shown) < n_samples:
            shown.append(mark_trained(tokenizer, enc["input_ids"], enc["labels"]))
        rows.append(
            {
                "input_ids": enc["input_ids"],
                "labels": enc["labels"],
                "source": ex.source,
                "row": ex.row,
            }
        )
    return Encoded(rows=rows, audit=audit)


def mark_trained(tokenizer: Any, input_ids: list[int], labels: list[int], limit: int = 2000) -> str:
    """Decode a row with trained text wrapped in [[ ]], so a person can see the mask at a glance."""
    parts, run, trained = [], [], None
    for tok, lab in zip(input_ids, labels, strict=True):
        is_trained = lab != IGNORE_INDEX
        if run and is_trained != trained:
            parts.append(_decode_run(tokenizer, run, trained))
            run = []
        run.append(tok)
        trained = is_trained
    if run:
        parts.append(_decode_run(tokenizer, run, trained))
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + " ..."


def _decode_run(tokenizer: Any, ids: list[int], trained: bool | None) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    return f"[[{text}]]" if trained else text


def _finish(ids: list[int], labels: list[int], max_length: int | None, overlong: str) -> dict:
    truncated = max_length is not None and len(ids) > max_length
    if truncated and overlong == "drop":
        return {
            "input_ids": [],
            "labels": [],
            "num_trainable": 0,
            "truncated": False,
            "eot_truncated": False,
            "dropped": "overlong",
        }
    # the trained run goes on past the cut: the turn's end-of-turn is lost
    eot_truncated = bool(
        truncated
        and max_length
        and labels[max_length - 1] != IGNORE_INDEX
        and labels[max_length] != IGNORE_INDEX
    )
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    n = sum(lab != IGNORE_INDEX for lab in labels)
    return {
        "input_ids": ids,
        "labels": labels,
        "num_trainable": n,
        "truncated": truncated,
        "eot_truncated": eot_truncated,
        "dropped": None if n else "no_trainable",
    }


def _render_and_tokenize(
    tokenizer: Any, messages: list[dict]
) -> tuple[str, list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """Render once, tokenise once; return text, ids, char offsets and assistant char spans."""
    if not getattr(tokenizer, "is_fast", False):
        raise HarnessError(
            "masking needs a fast tokenizer (offset mapping); load it with use_fast=True"
        )
    template = getattr(tokenizer, "chat_template", None)
    if not template or not isinstance(template, str):
        raise HarnessError("tokenizer has no chat template; set tokenizer.chat_template")
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    if _GENERATION_TAG.search(template):
        text, spans = _tagged_spans(tokenizer, messages, template)
    else:
        text = _render(tokenizer, messages)
        spans = _prefix_spans(tokenizer, messages, text)
    # CHAT_ADDS_SPECIAL_TOKENS: the template alone decides BOS (module doc)
    enc = tokenizer(text, add_special_tokens=CHAT_ADDS_SPECIAL_TOKENS, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    return text, ids, offsets, spans


def _render(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as err:  # jinja raise_exception, TypeError in templates, ...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HarnessError(f"chat template failed to render the conversation: {msg}") from err


def _tagged_spans(tokenizer: Any, messages: list[dict], template: str) -> tuple[str, list]:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, indices = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            return_assistant_tokens_mask=True,
            **tokenizer.special_tokens_map,
        )
    except Exception as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HarnessError(f"chat template failed to render the conversation: {msg}") from err
    return rendered[0], [tuple(span) for span in indices[0]]


def _prefix_spans(tokenizer: Any, messages: list[dict], text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        needle = _needle(message)
        floor = spans[-1][1] if spans else 0
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else None
        anchored = prompt is not None and text.startswith(prompt)
        # search for the content from where the turn starts: the reply may occur in its prompt
        search_from = max(len(prompt), floor) if anchored else floor
        full = _render(tokenizer, messages[: i + 1])
        end = _lcp(full, text)
        if needle and needle not in text[search_from:end]:
            # History renders this turn differently from a final turn (Qwen3 drops its
            # <think> block): end after the content plus what the template puts after it.
            end = _end_after_content(text, full, needle, search_from)
        if anchored:
            start = search_from
        else:
            # No usable prompt prefix (first message, or a template that moves the system
            # prompt, as Mistral v3 does): start at the content itself, never before it.
            found = text.rfind(needle, floor, end) if needle else -1
            start = found if found >= 0 else max(floor, _lcp(prompt or "", text))
        if i == len(messages) - 1:  # do not train what templates add only at a conversation's end
            end = _end_before_next_turn(tokenizer, messages, text, start, end, needle)
        if end <= start or (needle and needle not in text[start:end]):
            turn = sum(m.get("role") == "assistant" for m in messages[: i + 1])
            raise HarnessError(
                f"assistant turn {turn}: the chat template does not render its content where "
                "the conversation prefix says it starts, so its tokens cannot be located; "
                "add {% generation %} tags to the template"
            )
        spans.append((start, end))
    return spans


def _needle(message: dict) -> str:
    """What a rendered assistant turn must contain: its content, or for a turn carrying only
    tool calls the first call's function name (every template writes it, in its own syntax)."""
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        return content.strip()
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            function = call.get("function") if isinstance(call.get("function"), dict) else call
            if isinstance(function.get("name"), str):
                return function["name"]
    return ""


def _end_after_content(text: str, full: str, needle: str, floor: int) -> int:
    """End of a turn found by its content: content end + what follows it in both renderings."""
    found = text.find(needle, floor)
    if found < 0:
        return floor
    tail = full.rfind(needle)
    tail = tail + len(needle) if tail >= 0 else len(full)
    cut = found + len(needle)
    return cut + _lcp(full[tail:], text[cut:])


def _end_before_next_turn(
    tokenizer: Any, messages: list[dict], text: str, start: int, end: int, needle: str
) -> int:
    """Where a final assistant turn ends if the conversation went on (Phi-3 writes eos after the
    last `<|end|>`; that eos is not the end-of-turn and is not trained)."""
    try:
        longer = _render(tokenizer, [*messages, _NEXT_USER])
    except HarnessError:
        return end
    cut = _lcp(longer, text)
    return cut if start < cut < end and needle in text[start:cut] else end


def _trained_tokens(
    text: str, offsets: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[int]:
    """Token indices inside the char spans: a token cut by a span's start is kept when it carries
    span text; one cut by the span's end only when what spills over is whitespace; trailing
    whitespace-only tokens (turn separators) are dropped."""
    out: list[int] = []
    for a, b in spans:
        picked = []
        for j, (s, e) in enumerate(offsets):
            if e <= a or s >= b or s == e:
                continue
            if s < a and not text[a:e].strip():
                continue
            if e > b and text[b:e].strip():
                continue
            picked.append(j)
        while picked and not text[offsets[picked[-1]][0] : offsets[picked[-1]][1]].strip():
            picked.pop()
        out.extend(picked)
    return out


def _lcp(a: str, b: str) -> int:
    if b.startswith(a):  # the usual case: a prefix renders as a prefix
        return len(a)
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
