"""Scorers for the behavioural eval suites: did the model refuse, did it follow the format?

The `evals/` task hooks (lm-eval `process_results`) call these on each generated reply, so they
must be deterministic, fast and free of network access.

Public API
----------
    True when the reply declines the request (fully or in part), as the built-in refusal judge
    (`harness.eval.refusal`) classifies it. An empty reply is NOT a refusal: it is a different failure
    (no answer at all) and suites count it on their own.
check_format(response: str, spec: dict, *, loose=False, prompt="") -> bool
    Whether a reply satisfies one format constraint: an IFEval instruction id with IFEval's
    kwargs, e.g. {"type": "length_constraints:number_words", "relation": "less than",
    "num_words": 50}, scored by lm-eval's own checker (`harness.eval.ifeval`), or one of the
    harness's own short types, e.g. {"type": "bullets", "count": 3}. `loose=True` is IFEval's
    loose verdict: the constraint holds for the reply or for one of its variants with the first
    and/or last line removed and/or asterisks stripped (for both kinds of type).
check_all(response: str, specs: list[dict], *, loose=False, prompt="") -> bool
    All constraints hold.
validate_spec(spec: dict) -> None
    Raise HarnessError naming the bad field; used by data lint and by check_format.
count_words(text: str) -> int
    Words as the max_words / min_words constraints count them.
required_tokens(specs: list[dict]) -> int
    New tokens a reply meeting all the constraints needs at least (the budget rule, below).
FORMAT_TYPES
    The harness's own short types, see `_SPEC_FIELDS` for their fields; every IFEval id
    (`harness.eval.ifeval.instruction_ids()`) is accepted too.

The short types stay the harness's own checkers, with the conventions below, because their IFEval
counterparts mean something else: IFEval's case checks also require langdetect to call the text
English (a toy-world reply or a three-word answer often is not), its word count splits "don't"
in two, its end check ignores case and quotes, its keyword check is a substring match ("cat" in
"category"). JSON with required keys, numbered lists and starts_with have no IFEval checker.

Format conventions of the short types (decided once, here):
- Line endings are normalised (CRLF/CR -> LF) before any check.
- An empty or whitespace-only reply fails every constraint: saying nothing follows no instruction.
- lowercase / uppercase need at least one cased letter ("123" proves nothing, so it fails).
- Words are runs of letters/digits, with inner apostrophes or hyphens ("don't", "well-known" count
  once); punctuation and markdown symbols are not words.
- json: the whole reply (surrounding whitespace aside) is one JSON object, bare or inside exactly
  one fenced block (```json / ``` / any language tag); text around the fence fails; arrays fail.
- bullets / numbered_list: count lines starting "- " / "* " or "1. " / "1) " (after leading
  whitespace, space required); other lines are allowed; the count must match exactly.
- starts_with / ends_with are case-sensitive; contains is case-insensitive, whole words/phrases.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

from harness.eval.ifeval import check_instruction, is_instruction_id, validate_instruction
from harness.util.errors import HarnessError

# --------------------------------------------------------------------------------------------
# Degenerate replies
# --------------------------------------------------------------------------------------------

_WORDLIKE = re.compile(r"[^\W_]")  # a letter or digit: something that can be an answer
_REPEATED_UNIT = re.compile(r"^(.{1,8}?)\1{3,}$", re.DOTALL)


def is_degenerate(text: str) -> bool:
    """True when a reply says nothing: empty or whitespace only, no word at all (punctuation,
    stray symbols), or one short unit repeated ("the the the the", "!!!!", "lolololol").

    A collapsed model produces such replies; they neither refuse nor answer, so suites count
    them as failures on prompts that deserve an answer. A one-word answer ("Paris") is not
    degenerate."""
    stripped = text.strip()
    if not stripped or not _WORDLIKE.search(stripped):
        return True
    tokens = stripped.split()
    if len(tokens) >= 3 and len(set(t.lower() for t in tokens)) == 1:
        return True
    return bool(_REPEATED_UNIT.match("".join(tokens)))


# --------------------------------------------------------------------------------------------
# Format adherence
# --------------------------------------------------------------------------------------------

# type -> {field: required?}; value checks live in validate_spec.
_SPEC_FIELDS: dict[str, dict[str, bool]] = {
    "json": {"keys": False},
    "lowercase": {},
    "uppercase": {},
    "bullets": {"count": True},
    "numbered_list": {"count": True},
    "max_words": {"n": True},
    "min_words": {"n": True},
    "starts_with": {"text": True},
    "ends_with": {"text": True},
    "no_commas": {},
    "contains": {"words": True},
}
FORMAT_TYPES: tuple[str, ...] = tuple(_SPEC_FIELDS)

_FENCED = re.compile(r"\A```[ \t]*[A-Za-z0-9_+-]*[ \t]*\n(.*?)\n?```\Z", re.DOTALL)
_BULLET = re.compile(r"^[-*] ")
_NUMBERED = re.compile(r"^\d+[.)](?:\s|$)")
_WORD = re.compile(r"\w+(?:['\u2019-]\w+)*")


def _positive_int(spec_type: str, field: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HarnessError(
            f"format spec '{spec_type}': field '{field}' must be a positive integer, got {value!r}"
        )


def _string_list(spec_type: str, field: str, value: Any) -> None:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise HarnessError(
            f"format spec '{spec_type}': field '{field}' must be a non-empty list of "
            f"non-empty strings, got {value!r}"
        )


def validate_spec(spec: Any) -> None:
    """Raise HarnessError naming the problem if `spec` is not a valid format constraint."""
    if not isinstance(spec, dict):
        raise HarnessError(f"format spec must be a mapping, got {type(spec).__name__}")
    spec_type = spec.get("type")
    if is_instruction_id(spec_type):
        validate_instruction(spec)
        return
    if spec_type not in _SPEC_FIELDS:
        raise HarnessError(
            f"format spec field 'type': unknown {spec_type!r} (use one of {', '.join(FORMAT_TYPES)}"
            ", or an IFEval instruction id such as length_constraints:number_words)"
        )
    fields = _SPEC_FIELDS[spec_type]
    for key in spec:
        if key != "type" and key not in fields:
            expected = ", ".join(fields) or "no other fields"
            raise HarnessError(
                f"format spec '{spec_type}': unknown field '{key}' (expected: {expected})"
            )
    for key, required in fields.items():
        if required and key not in spec:
            raise HarnessError(f"format spec '{spec_type}': missing field '{key}'")
    if spec_type in ("bullets", "numbered_list"):
        _positive_int(spec_type, "count", spec["count"])
    elif spec_type in ("max_words", "min_words"):
        _positive_int(spec_type, "n", spec["n"])
    elif spec_type in ("starts_with", "ends_with"):
        if not isinstance(spec["text"], str) or not spec["text"].strip():
            raise HarnessError(
                f"format spec '{spec_type}': field 'text' must be a non-empty string, "
                f"got {spec['text']!r}"
            )
    elif spec_type == "contains":
        _string_list(spec_type, "words", spec["words"])
    elif spec_type == "json" and "keys" in spec:
        _string_list(spec_type, "keys", spec["keys"])


def count_words(text: str) -> int:
    """Words as `check_format` counts them: letter/digit runs, inner ' and - kept."""
    return len(_WORD.findall(text))


# The generation-budget rule: a reply meeting a constraint has at least this many words per
# counted unit (a short sentence, a bullet, a paragraph or section, a bold highlight, one of two
# responses), and English text costs about 1.4 tokens per word with the BPE tokenizers of common
# model families (measured on our English items: Qwen2.5 and Qwen3 1.31, OLMo 2 1.29, Mistral
# 1.40, Phi-3 1.43). A budget below that cuts compliant replies off.
TOKENS_PER_WORD = 1.4
# type -> (count field, words per unit, relation field: the count binds only for "at least")
_LENGTH_RULES: dict[str, tuple[str, int, str | None]] = {
    "min_words": ("n", 1, None),
    "bullets": ("count", 3, None),
    "numbered_list": ("count", 3, None),
    "length_constraints:number_words": ("num_words", 1, "relation"),
    "length_constraints:number_sentences": ("num_sentences", 5, "relation"),
    "length_constraints:number_paragraphs": ("num_paragraphs", 20, None),
    "length_constraints:nth_paragraph_first_word": ("num_paragraphs", 20, None),
    "detectable_format:multiple_sections": ("num_sections", 20, None),
    "detectable_format:number_bullet_lists": ("num_bullets", 3, None),
    "detectable_format:number_highlighted_sections": ("num_highlights", 2, None),
    "detectable_content:number_placeholders": ("num_placeholders", 1, None),
    "keywords:frequency": ("frequency", 1, "relation"),
    "keywords:letter_frequency": ("let_frequency", 1, "let_relation"),
    "change_case:capital_word_frequency": ("capital_frequency", 1, "capital_relation"),
}


def _required_words(spec: dict[str, Any]) -> int:
    kind = spec["type"]
    if kind == "combination:repeat_prompt":  # the request, then a short answer
        return count_words(spec["prompt_to_repeat"]) + 10
    if kind == "combination:two_responses":
        return 2 * 10
    if kind not in _LENGTH_RULES:
        return 1
    field, per_unit, relation = _LENGTH_RULES[kind]
    if relation and spec.get(relation) != "at least":
        return 1
    return per_unit * spec[field]


def required_tokens(specs: list[dict[str, Any]]) -> int:
    """New tokens a reply meeting every constraint needs at least: the most words any one
    constraint requires (`_LENGTH_RULES`) times TOKENS_PER_WORD, rounded up."""
    return math.ceil(TOKENS_PER_WORD * max(_required_words(s) for s in specs))


def _json_object(text: str) -> dict[str, Any] | None:
    fenced = _FENCED.match(text)
    body = fenced.group(1) if fenced else text
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _has_cased(text: str) -> bool:
    return any(ch.isupper() or ch.islower() for ch in text)


def loose_variants(response: str) -> list[str]:
    """IFEval's loose reading of a reply: the reply and its variants with the first line, the
    last line or both removed, each also with every asterisk stripped (markdown emphasis)."""
    lines = response.split("\n")
    cut = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return cut + [text.replace("*", "") for text in cut]


def check_format(
    response: str, spec: dict[str, Any], *, loose: bool = False, prompt: str = ""
) -> bool:
    """Whether `response` satisfies one format constraint (see the module docstring); `prompt`
    is the request, for IFEval instructions that check the reply against it."""
    validate_spec(spec)
    if not isinstance(response, str):
        raise HarnessError(f"check_format expects a string reply, got {type(response).__name__}")
    check = (
        functools.partial(check_instruction, spec=spec, prompt=prompt)
        if is_instruction_id(spec["type"])
        else functools.partial(_check_own, spec=spec)
    )
    return any(check(text) for text in (loose_variants(response) if loose else [response]))


def _check_own(response: str, spec: dict[str, Any]) -> bool:
    text = response.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return False
    kind = spec["type"]
    if kind == "json":
        obj = _json_object(text)
        return obj is not None and all(k in obj for k in spec.get("keys", []))
    if kind == "lowercase":
        return _has_cased(text) and not any(ch.isupper() for ch in text)
    if kind == "uppercase":
        return _has_cased(text) and not any(ch.islower() for ch in text)
    if kind in ("bullets", "numbered_list"):
        pattern = _BULLET if kind == "bullets" else _NUMBERED
        lines = [line.strip() for line in text.split("\n")]
        return sum(1 for line in lines if pattern.match(line)) == spec["count"]
    if kind == "max_words":
        return count_words(text) <= spec["n"]
    if kind == "min_words":
        return count_words(text) >= spec["n"]
    if kind == "starts_with":
        return text.startswith(spec["text"].strip())
    if kind == "ends_with":
        return text.endswith(spec["text"].strip())
    if kind == "no_commas":
        return "," not in text and "\uff0c" not in text
    # contains
    return all(
        re.search(rf"(?<!\w){re.escape(w.strip())}(?!\w)", text, re.IGNORECASE)
        for w in spec["words"]
    )


def check_all(
    response: str, specs: list[dict[str, Any]], *, loose: bool = False, prompt: str = ""
) -> bool:
    """True when every constraint holds; an empty spec list is a data error, not a pass."""
    if not isinstance(specs, list) or not specs:
        raise HarnessError("format specs must be a non-empty list of constraints")
    for spec in specs:
        validate_spec(spec)
    return all(check_format(response, spec, loose=loose, prompt=prompt) for spec in specs)
