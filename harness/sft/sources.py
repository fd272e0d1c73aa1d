"""Data sources -> normalised examples -> a seeded mix.

Public API
    Example(source, row, messages, text): one normalised row; `messages` for chat, `text` for replay
    load_source(path, *, name, format="auto", on_bad_row="error", hub=None) -> LoadedSource
    build_mix(sources, weights, budget, *, unit="examples", seed, token_counts=None) -> Mix
    FORMATS: the row formats a source may declare

Sources are JSONL, JSON (a list of objects) or parquet files, or `hf:NAME[:SPLIT]` for a
`datasets` dataset: a hub name (needs the hub or its local cache; `hub` gives its config name,
`data_dir` and split), a local folder written by `save_to_disk` (a Dataset, or a DatasetDict
whose split is chosen), or a local folder of data files a `datasets` builder reads. Each source
has one format, declared or detected from its first row's keys:
    messages           {"messages": [{"role": "system|user|assistant|tool", "content": ...}, ...]}
    prompt_completion  {"prompt": str | messages, "completion": str | messages}
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    text               {"text": str}   (full loss, for replay of general data)
A bad row raises one line naming the source, the line (JSONL) or row, and the field; with
`on_bad_row="skip"` it is skipped and counted in `LoadedSource.skipped` instead, never silently.
An empty `text` row (a blank line of a corpus such as wikitext) is always skipped and counted
under "empty text": it holds nothing to train and nothing wrong.

Mix ratios are plain numbers (weights per source) so an Optuna trial can set them; the same seed
gives the same mix, and the realised composition is reported next to the requested one.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.config.schema import Experiment
from harness.util.errors import HarnessError

FORMATS = ("messages", "prompt_completion", "alpaca", "text")
ROLES = ("system", "user", "assistant", "tool")
OnBadRow = Literal["error", "skip"]


@dataclass(frozen=True)
class Example:
    """One normalised row. `row` is the 1-based line (JSONL) or record number, for error messages."""

    source: str
    row: int
    messages: list[dict] | None = None
    text: str | None = None


@dataclass
class LoadedSource:
    """A loaded source: its examples plus what was skipped and the file's hash, for the run log."""

    name: str
    path: str
    format: str
    examples: list[Example]
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    first_skips: list[str] = field(default_factory=list)
    sha256: str | None = None
    bad_rows: list[tuple[int, str]] = field(default_factory=list)  # every skip, for `data lint`

    def to_dict(self) -> dict:
        """Everything but the examples, JSON-serialisable."""
        return {
            "name": self.name,
            "path": self.path,
            "format": self.format,
            "examples": len(self.examples),
            "skipped": self.skipped,
            "skip_reasons": dict(self.skip_reasons),
            "first_skips": list(self.first_skips),
            "sha256": self.sha256,
        }


class _BadRow(Exception):
    def __init__(self, field: str | None, problem: str, reason: str):
        super().__init__(problem)
        self.field, self.problem, self.reason = field, problem, reason


def load_source(
    path: str | Path,
    *,
    name: str,
    format: str = "auto",
    on_bad_row: OnBadRow = "error",
    hub: dict[str, str | None] | None = None,
) -> LoadedSource:
    """Load and validate one source, normalising every row to an `Example`. `hub`: the
    `datasets` arguments of an `hf:` source (`config`, `data_dir`, `split`)."""
    if format != "auto" and format not in FORMATS:
        raise HarnessError(
            f"source {name!r}: unknown format {format!r} (expected auto or one of {', '.join(FORMATS)})"
        )
    if on_bad_row not in ("error", "skip"):
        raise HarnessError(
            f"source {name!r}: on_bad_row must be 'error' or 'skip', got {on_bad_row!r}"
        )
    path = str(path)
    label = f"source {name!r} ({path})"
    rows, unit, sha = _read_rows(path, label, hub or {})
    loaded = LoadedSource(name=name, path=path, format=format, examples=[], sha256=sha)
    skips: Counter[str] = Counter()
    for number, row in rows:
        try:
            if isinstance(row, _BadRow):
                raise row
            if not isinstance(row, dict):
                raise _BadRow(
                    None, f"expected an object, got {type(row).__name__}", "not an object"
                )
            if loaded.format == "auto":
                loaded.format = _detect(row)
            loaded.examples.append(_normalise(row, loaded.format, name, number))
        except _BadRow as bad:
            where = f"{label} {unit} {number}"
            where += f": field {bad.field!r}" if bad.field else ""
            message = f"{where}: {bad.problem}"
            if loaded.format == "text" and bad.reason == "empty field":
                skips["empty text"] += 1
                continue
            if on_bad_row == "error":
                raise HarnessError(message) from None
            skips[bad.reason] += 1
            loaded.bad_rows.append((number, message))
            if len(loaded.first_skips) < 5:
                loaded.first_skips.append(message)
    loaded.skipped = sum(skips.values())
    loaded.skip_reasons = dict(skips)
    if not loaded.examples:
        raise HarnessError(f"{label}: no usable rows ({loaded.skipped} skipped)")
    return loaded


def _read_rows(
    path: str, label: str, hub: dict[str, str | None]
) -> tuple[list[tuple[int, Any]], str, str | None]:
    """Rows as (1-based number, object or _BadRow), the word for a number, and the file's sha256."""
    if path.startswith("hf:"):
        return _read_hub(path[3:], label, hub)
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"{label}: file not found")
    raw = p.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        rows: list[tuple[int, Any]] = []
        for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                rows.append((number, _BadRow(None, f"broken JSON ({err.msg})", "broken JSON")))
        return rows, "line", sha
    if suffix == ".json":
        try:
            data = json.loads(raw.decode("utf-8"))
        except json.JSONDecodeError as err:
            raise HarnessError(f"{label} line {err.lineno}: broken JSON ({err.msg})") from None
        if (
            isinstance(data, dict)
            and len(data) == 1
            and isinstance(next(iter(data.values())), list)
        ):
            data = next(iter(data.values()))
        if not isinstance(data, list):
            raise HarnessError(f"{label}: expected a JSON list of objects (or one key holding it)")
        return list(enumerate(data, start=1)), "row", sha
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as err:
            raise HarnessError(f"{label}: cannot read parquet ({err})") from None
        return list(enumerate(table.to_pylist(), start=1)), "row", sha
    raise HarnessError(f"{label}: unsupported file type {suffix!r} (use .jsonl, .json or .parquet)")


def _read_hub(
    spec: str, label: str, hub: dict[str, str | None]
) -> tuple[list[tuple[int, Any]], str, str | None]:
    import datasets

    name, _, split_in_spec = spec.partition(":")
    split = hub.get("split") or split_in_spec or "train"
    folder = Path(name).expanduser()
    try:
        if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
            if hub.get("config") or hub.get("data_dir"):
                raise HarnessError(
                    f"{label}: hf_config and data_dir do not apply to a save_to_disk folder"
                )
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise HarnessError(
                        f"{label}: no split {split!r} (the folder has {', '.join(ds)}); set split"
                    )
                ds = ds[split]
        else:
            ds = datasets.load_dataset(
                name, hub.get("config"), data_dir=hub.get("data_dir"), split=split
            )
    except HarnessError:
        raise
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise HarnessError(f"{label}: cannot load dataset ({first})") from None
    return list(enumerate(ds, start=1)), "row", getattr(ds, "_fingerprint", None)


def _detect(row: dict) -> str:
    keys = set(row)
    if "messages" in keys:
        return "messages"
    if {"prompt", "completion"} <= keys:
        return "prompt_completion"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if "text" in keys:
        return "text"
    raise _BadRow(
        None,
        f"cannot detect the format from keys {sorted(keys)}; declare one of {', '.join(FORMATS)}",
        "unknown format",
    )


def _normalise(row: dict, fmt: str, source: str, number: int) -> Example:
    if fmt == "text":
        return Example(source, number, text=_string(row, "text"))
    if fmt == "alpaca":
        prompt = _string(row, "instruction")
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            raise _BadRow("input", f"expected a string, got {type(extra).__name__}", "wrong type")
        if extra and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        messages = [{"role": "user", "content": prompt}]
        messages.append({"role": "assistant", "content": _string(row, "output")})
        return Example(source, number, messages=messages)
    if fmt == "prompt_completion":
        messages = _part(row, "prompt", "user") + _part(row, "completion", "assistant")
        _require_assistant(messages, "completion")
        return Example(source, number, messages=messages)
    if "messages" not in row:
        raise _BadRow("messages", "missing", "missing field")
    messages = _messages(row["messages"], "messages")
    _require_assistant(messages, "messages")
    return Example(source, number, messages=messages)


def _string(row: dict, key: str) -> str:
    if key not in row or row[key] is None:
        raise _BadRow(key, "missing", "missing field")
    value = row[key]
    if not isinstance(value, str):
        raise _BadRow(key, f"expected a string, got {type(value).__name__}", "wrong type")
    if not value.strip():
        raise _BadRow(key, "empty", "empty field")
    return value


def _part(row: dict, key: str, role: str) -> list[dict]:
    value = row.get(key)
    if isinstance(value, list):
        return _messages(value, key)
    return [{"role": role, "content": _string(row, key)}]


def _messages(value: Any, key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise _BadRow(key, "expected a non-empty list of messages", "wrong type")
    out = []
    for i, m in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise _BadRow(where, f"expected an object, got {type(m).__name__}", "wrong type")
        role = m.get("role")
        if role not in ROLES:
            raise _BadRow(
                f"{where}.role",
                f"unknown role {role!r} (expected one of {', '.join(ROLES)})",
                "unknown role",
            )
        content = m.get("content")
        tool_calls = m.get("tool_calls")
        if content is not None and not isinstance(content, str):
            raise _BadRow(
                f"{where}.content", f"expected a string, got {type(content).__name__}", "wrong type"
            )
        if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
            raise _BadRow(
                f"{where}.tool_calls",
                "only assistant messages carry a list of tool calls",
                "wrong type",
            )
        if role == "assistant" and not (content and content.strip()) and not tool_calls:
            raise _BadRow(f"{where}.content", "empty assistant reply", "empty assistant reply")
        if content is None and role != "assistant":
            raise _BadRow(f"{where}.content", "missing", "missing field")
        message = {"role": role, "content": content or ""}
        if tool_calls:
            message["tool_calls"] = tool_calls
        for extra in ("name", "tool_call_id"):
            if m.get(extra) is not None:
                message[extra] = m[extra]
        out.append(message)
    return out


def _require_assistant(messages: list[dict], key: str) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise _BadRow(key, "no assistant turn to train on", "no assistant turn")


# ---------------------------------------------------------------------------------------- mixes


@dataclass
class Mix:
    """A seeded mix: `picks` are (source, position in that source's list), in training order."""

    picks: list[tuple[str, int]]
    examples: list[Example]
    composition: dict[str, dict]
    unit: str
    budget: int
    seed: int

    def to_dict(self) -> dict:
        """The composition and how it was asked for, JSON-serialisable (no examples)."""
        return {
            "unit": self.unit,
            "budget": self.budget,
            "seed": self.seed,
            "size": len(self.picks),
            "sources": self.composition,
        }


def build_mix(
    sources: dict[str, list[Example]],
    weights: dict[str, float],
    budget: int,
    *,
    unit: Literal["examples", "tokens"] = "examples",
    seed: int,
    token_counts: dict[str, list[int]] | None = None,
) -> Mix:
    """Sample `budget` examples (or tokens) with each source's share = weight / sum(weights).

    A source smaller than its share is repeated whole, plus a seeded sample for the remainder (as
    open-instruct does), so upsampling never favours a random few rows; a larger one is
    subsampled. Weight 0 leaves a source out. With unit="tokens" the caller passes the token
    count of every example (after encoding), and shares are shares of tokens.
    """
    _check_mix_args(sources, weights, budget, unit, token_counts)
    budget = int(budget)
    total_weight = sum(weights.values())
    names = sorted(n for n in sources if weights[n] > 0)
    targets = {n: budget * weights[n] / total_weight for n in names}
    if unit == "examples":
        counts = _largest_remainder(targets, budget)
        chosen = {n: _sample_count(len(sources[n]), counts[n], seed, n) for n in names}
    else:
        assert token_counts is not None
        chosen = {n: _sample_tokens(token_counts[n], targets[n], seed, n) for n in names}
    picks = [(n, i) for n in names for i in chosen[n]]
    random.Random(f"{seed}/order").shuffle(picks)
    composition = _composition(sources, weights, chosen, token_counts, unit)
    return Mix(
        picks=picks,
        examples=[sources[n][i] for n, i in picks],
        composition=composition,
        unit=unit,
        budget=budget,
        seed=seed,
    )


def _check_mix_args(sources, weights, budget, unit, token_counts) -> None:
    if unit not in ("examples", "tokens"):
        raise HarnessError(f"mix: unit must be 'examples' or 'tokens', got {unit!r}")
    if not isinstance(budget, numbers.Integral) or budget <= 0:
        raise HarnessError(f"mix: budget must be a positive integer, got {budget!r}")
    for name in sources:
        if name not in weights:
            raise HarnessError(f"mix: source {name!r} has no weight (give 0 to leave it out)")
    for name, w in weights.items():
        if name not in sources:
            raise HarnessError(f"mix: weight given for unknown source {name!r}")
        if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise HarnessError(f"mix: weight of source {name!r} must be a number >= 0, got {w!r}")
        if w > 0 and not sources[name]:
            raise HarnessError(f"mix: source {name!r} has weight {w} but no examples")
    if sum(weights.values()) <= 0:
        raise HarnessError("mix: all weights are 0; give at least one source a positive weight")
    if unit == "tokens":
        for name in sources:
            if weights[name] <= 0:
                continue
            counts = (token_counts or {}).get(name)
            if counts is None or len(counts) != len(sources[name]):
                raise HarnessError(
                    f"mix: unit='tokens' needs token_counts[{name!r}] with one count per example"
                )
            if sum(counts) <= 0:
                raise HarnessError(f"mix: source {name!r} has no tokens")


def _largest_remainder(targets: dict[str, float], budget: int) -> dict[str, int]:
    counts = {n: math.floor(t) for n, t in targets.items()}
    by_remainder = sorted(targets, key=lambda n: (-(targets[n] - counts[n]), n))
    for n in by_remainder[: budget - sum(counts.values())]:
        counts[n] += 1
    return counts


def _sample_count(available: int, count: int, seed: int, name: str) -> list[int]:
    repeats, remainder = divmod(count, available)
    rng = random.Random(f"{seed}/{name}")
    return list(range(available)) * repeats + sorted(rng.sample(range(available), remainder))


def _sample_tokens(counts: list[int], target: float, seed: int, name: str) -> list[int]:
    repeats = int(target // sum(counts))
    rest = target - repeats * sum(counts)
    picked = list(range(len(counts))) * repeats
    order = list(range(len(counts)))
    random.Random(f"{seed}/{name}").shuffle(order)
    taken = 0
    for i in order:
        if taken + counts[i] <= rest:
            picked.append(i)
            taken += counts[i]
    return picked


def _composition(sources, weights, chosen, token_counts, unit) -> dict[str, dict]:
    total_weight = sum(weights.values())
    sizes = {n: len(chosen.get(n, [])) for n in sources}
    tokens = None
    if token_counts is not None:
        tokens = {n: int(sum(token_counts[n][i] for i in chosen.get(n, []))) for n in sources}
    realised = tokens if unit == "tokens" else sizes
    assert realised is not None
    total = sum(realised.values()) or 1
    out = {}
    for n in sorted(sources):
        entry = {
            "weight": float(weights[n]),
            "requested_share": round(weights[n] / total_weight, 6),
            "realised_share": round(realised[n] / total, 6),
            "examples": sizes[n],
            "unique_examples": len(set(chosen.get(n, []))),
            "available": len(sources[n]),
            "epochs": round(sizes[n] / len(sources[n]), 4) if sources[n] else 0.0,
        }
        if tokens is not None:
            entry["tokens"] = tokens[n]
        out[n] = entry
    return out


def resolve_data_path(exp: Experiment, path: str) -> str:
    """Source paths: `toy:` → the toy world's data dir; `hf:` hub names unchanged and `hf:./dir`
    made absolute; else relative to the experiment file."""
    if path.startswith("toy:"):
        from harness.models.toy.build import build_toy_world

        return str(build_toy_world(exp.toy_size if exp.is_toy else "demo").data_dir / path[4:])
    if path.startswith("hf:"):
        local = path[3:]
        if local.startswith((".", "~")):  # a local folder, relative to the experiment file
            return "hf:" + str((exp.base_dir / Path(local).expanduser()).resolve())
        return path
    if Path(path).is_absolute():
        return path
    return str((exp.base_dir / path).resolve())
