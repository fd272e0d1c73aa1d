"""`harness data lint`: what is wrong with SFT data before a GPU hour is spent on it.

Public API
    lint_files(paths, *, suites=None, dataset="toy", format="auto", model=None, suite_dirs=())
        -> LintReport
    lint_experiment(exp) -> LintReport: an experiment's sources against its own eval suites
    LintReport: `.problems`, `.counts`, `.ok`, `.to_dict()`, `.summary()`

Checks, each problem naming file:line:
    bad_row         every row `load_source` rejects (skipped and reported, not just the first)
    duplicate       identical conversations (across all files: they end up in one mix)
    near_duplicate  word 3-shingle Jaccard >= 0.9 (MinHash LSH candidates, verified exactly)
    conflict        the same context (every turn before the last reply) with different replies
    truncated       a reply with an unclosed code fence, a JSON reply that does not parse, or a
                    long reply (>= 32 words) that ends without closing punctuation
    contamination   an eval item whose text the SFT data holds (rule below)

Contamination rule. Text is compared as lowercase `\\w+` words. Each eval item gives text units:
its string fields (prompt, question, context, answer, ...) and, for multiple choice, the context
followed by the gold choice. A unit of 5-7 words is contaminated when it appears whole inside one
SFT example (prompt and replies together). A unit of 8+ words is contaminated when one SFT example
holds all of its 8-grams, or at least half of its *distinctive* 8-grams: those found in fewer
than 5 SFT examples and fewer than 5 items of the suite. The distinctive filter is what makes
templated data work: an instruction shared by many rows ("answer in json with the keys ...") is
a template both sides use on purpose, while the n-grams carrying an item's own entity or wording
are what a leak copies. Units under 5 words are too short to call either way.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.sft.sources import Example, load_source
from harness.util.errors import HarnessError

if TYPE_CHECKING:
    from harness.config.schema import Experiment

NGRAM = 8
MIN_UNIT_WORDS = 5
TEMPLATE_ROWS = 5
CONTAMINATION_SHARE = 0.5
NEAR_DUP_JACCARD = 0.9
LONG_REPLY_WORDS = 32
_WORD = re.compile(r"\w+")
_ID_KEYS = {"id", "label", "task", "category", "type", "split", "gold", "source"}
_CLOSING = tuple(".!?…:;)]}\"'`*>|")


@dataclass(frozen=True)
class Problem:
    """One finding. `where` is file:line; `other` the matching file:line or suite/item id."""

    kind: str
    where: str
    message: str
    other: tuple[str, ...] = ()


@dataclass
class LintReport:
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def by_kind(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def to_dict(self) -> dict:
        """JSON for machines (`--json`) and the run log."""
        return {
            "ok": self.ok,
            "problems_by_kind": self.by_kind(),
            "counts": self.counts,
            "suites": self.suites,
            "notes": self.notes,
            "problems": [asdict(p) | {"other": list(p.other)} for p in self.problems],
        }

    def summary(self, max_per_kind: int = 10) -> str:
        """Readable text: counts per source, then problems grouped by kind (capped per kind)."""
        roles = sorted({r for c in self.counts.values() for r in c.get("tokens", {})})
        header = ["source", "format", "examples", "bad rows", *(f"{r} tokens" for r in roles)]
        rows = [
            [
                name,
                c["format"],
                str(c["examples"]),
                str(c["bad_rows"]),
                *(str(c["tokens"].get(r, 0)) for r in roles),
            ]
            for name, c in self.counts.items()
        ]
        widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
        lines = [
            "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) for r in [header, *rows]
        ]
        lines.append(f"contamination checked against: {', '.join(self.suites) or 'no suites'}")
        lines += [f"note: {n}" for n in self.notes]
        grouped: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            grouped[p.kind].append(p)
        for kind, items in grouped.items():
            lines.append(f"{kind}: {len(items)}")
            for p in items[:max_per_kind]:
                other = f" <-> {', '.join(p.other[:3])}" if p.other else ""
                more = f" (+{len(p.other) - 3} more)" if len(p.other) > 3 else ""
                lines.append(f"  {p.where}: {p.message}{other}{more}")
            if len(items) > max_per_kind:
                lines.append(f"  ... and {len(items) - max_per_kind} more (see --json)")
        lines.append("clean" if self.ok else f"{len(self.problems)} problem(s)")
        return "\n".join(lines)


# ---------------------------------------------------------------- entry points


def lint_files(
    paths: Sequence[str | Path],
    *,
    suites: Sequence[str] | None = None,
    dataset: str = "toy",
    format: str = "auto",
    model: str | None = None,
    suite_dirs: Sequence[str | Path] = (),
) -> LintReport:
    """Lint data files. `suites=None` checks every suite that has `dataset` data; `[]` none.
    `dataset="auto"` means toy when every file lies in the toy world cache, else english."""
    if not paths:
        raise HarnessError("data lint: no files given")
    names = _unique_names([Path(str(p)).stem for p in paths])
    sources = [(n, str(p), format, None) for n, p in zip(names, paths, strict=True)]
    if dataset == "auto":
        dataset = "toy" if all(_in_toy_cache(str(p)) for p in paths) else "english"
    return _lint(sources, suites, dataset, model, suite_dirs)


def lint_experiment(exp: Experiment) -> LintReport:
    """An experiment's sources against the suites it will be judged on (what `harness run`
    logs before its first trial)."""
    from harness.eval.runner import resolve_dataset
    from harness.sft.sources import resolve_data_path

    sources = [
        (s.name, resolve_data_path(exp, s.path), s.format, s.hub_options())
        for s in exp.data.sources
    ]
    dataset = resolve_dataset(exp.eval.dataset, exp.model)
    return _lint(sources, exp.eval.suites, dataset, None, exp.eval.suite_dirs)


def _lint(
    sources: list[tuple[str, str, str, dict | None]],  # name, path, format, hub options
    suites: Sequence[str] | None,
    dataset: str,
    model: str | None,
    suite_dirs: Sequence[str | Path],
) -> LintReport:
    if dataset not in ("toy", "english"):
        raise HarnessError(f"data lint: dataset must be toy, english or auto, got {dataset!r}")
    eval_items, report = _eval_items(suites, dataset, suite_dirs)
    count_tokens = _token_counter(model)
    examples: list[tuple[str, Example]] = []
    for name, path, fmt, hub in sources:
        loaded = load_source(path, name=name, format=fmt, on_bad_row="skip", hub=hub)
        label = _short_path(path)
        for row, message in loaded.bad_rows:
            report.problems.append(Problem("bad_row", f"{label}:{row}", _after_field(message)))
        tokens: Counter[str] = Counter()
        for ex in loaded.examples:
            for role, text in _turns(ex):
                tokens[role] += count_tokens(text)
            examples.append((label, ex))
        report.counts[name] = {
            "path": path,
            "format": loaded.format,
            "examples": len(loaded.examples),
            "bad_rows": loaded.skipped,
            "tokens": dict(tokens),
            "token_unit": model or "words",
        }
    report.problems += _duplicates(examples)
    report.problems += _conflicts(examples)
    report.problems += _truncated(examples)
    report.problems += _contamination(examples, eval_items)
    return report


# ---------------------------------------------------------------- checks


def _duplicates(examples: list[tuple[str, Example]]) -> list[Problem]:
    """Exact groups by content, then near-duplicate groups among one representative of each."""
    groups: dict[str, list[str]] = defaultdict(list)
    first: dict[str, int] = {}
    for i, (label, ex) in enumerate(examples):
        key = json.dumps(ex.messages if ex.messages is not None else ex.text, sort_keys=True)
        groups[key].append(f"{label}:{ex.row}")
        first.setdefault(key, i)
    problems = [
        Problem("duplicate", locs[0], f"{_copies(len(locs) - 1)} identical", tuple(locs[1:]))
        for locs in groups.values()
        if len(locs) > 1
    ]
    reps = sorted(first.values())
    shingles = [_shingles(_words(_text(examples[i][1]))) for i in reps]
    for members in _near_groups(shingles):
        locs = [f"{examples[reps[m]][0]}:{examples[reps[m]][1].row}" for m in members]
        problems.append(
            Problem(
                "near_duplicate",
                locs[0],
                f"{_copies(len(locs) - 1)} nearly identical (Jaccard >= {NEAR_DUP_JACCARD})",
                tuple(locs[1:]),
            )
        )
    return problems


def _near_groups(shingles: list[set[int]], perms: int = 128, bands: int = 16) -> list[list[int]]:
    """Connected groups of sets with Jaccard >= NEAR_DUP_JACCARD: MinHash signatures, LSH bands
    as candidates (a 0.9 pair is a candidate with probability > 0.999), then the exact Jaccard."""
    import numpy as np

    prime = (1 << 31) - 1
    rng = np.random.default_rng(0)
    a = rng.integers(1, prime, perms, dtype=np.uint64)
    b = rng.integers(0, prime, perms, dtype=np.uint64)
    rows = perms // bands
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, s in enumerate(shingles):
        if not s:
            continue
        x = np.fromiter(s, dtype=np.uint64, count=len(s)) % np.uint64(prime)
        sig = ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(prime)).min(axis=1)
        for band in range(bands):
            buckets[(band, sig[band * rows : (band + 1) * rows].tobytes())].append(i)
    parent = list(range(len(shingles)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    checked: set[tuple[int, int]] = set()
    for members in buckets.values():
        for j, p in enumerate(members):
            for q in members[j + 1 :]:
                if (p, q) in checked or find(p) == find(q):
                    continue
                checked.add((p, q))
                inter = len(shingles[p] & shingles[q])
                if inter >= NEAR_DUP_JACCARD * (len(shingles[p]) + len(shingles[q]) - inter):
                    parent[find(q)] = find(p)
    out: dict[int, list[int]] = defaultdict(list)
    for i in range(len(shingles)):
        out[find(i)].append(i)
    return [sorted(m) for m in out.values() if len(m) > 1]


def _conflicts(examples: list[tuple[str, Example]]) -> list[Problem]:
    """Same context, different final reply: the model is taught two answers to one question."""
    replies: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for label, ex in examples:
        if not ex.messages or ex.messages[-1]["role"] != "assistant":
            continue
        context = tuple((m["role"], " ".join(_words(m["content"]))) for m in ex.messages[:-1])
        reply = " ".join(_words(ex.messages[-1]["content"]))
        replies[context][reply].append(f"{label}:{ex.row}")
    problems = []
    for context, by_reply in replies.items():
        if len(by_reply) > 1:
            locs = [locs[0] for locs in by_reply.values()]
            prompt = next((c for r, c in reversed(context) if r == "user"), "")
            problems.append(
                Problem(
                    "conflict",
                    locs[0],
                    f"{len(by_reply)} different replies to {_clip(prompt)!r}",
                    tuple(locs[1:]),
                )
            )
    return problems


def _truncated(examples: list[tuple[str, Example]]) -> list[Problem]:
    problems = []
    for label, ex in examples:
        for i, m in enumerate(ex.messages or []):
            if m["role"] != "assistant" or not m["content"].strip():
                continue
            why = truncation(m["content"])
            if why:
                problems.append(Problem("truncated", f"{label}:{ex.row}", f"messages[{i}]: {why}"))
    return problems


def truncation(reply: str) -> str | None:
    """Why a reply looks cut off (None when it does not): the signs max-length truncation or a
    broken export leave behind."""
    text = reply.strip()
    if text.count("```") % 2:
        return "unclosed code fence"
    if text[:1] in "{[":
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            return f"JSON reply does not parse ({e.msg})"
    last_line = text.splitlines()[-1].lstrip()
    is_list = last_line[:1] in "-*#|" or bool(re.match(r"\d+[.)]\s", last_line))
    if len(_words(text)) >= LONG_REPLY_WORDS and not text.endswith(_CLOSING) and not is_list:
        return f"long reply ends mid-sentence ({_clip(text[-30:])!r})"
    return None


# ---------------------------------------------------------------- contamination


@dataclass(frozen=True)
class _Unit:
    suite: str
    item: str
    words: tuple[str, ...]


def _eval_items(
    suites: Sequence[str] | None, dataset: str, suite_dirs: Sequence[str | Path]
) -> tuple[list[_Unit], LintReport]:
    """Text units of every eval item, plus a report that says which suites they came from."""
    from harness.eval.suites import discover_suites, load_suites
    from harness.util.files import numbered_rows

    report = LintReport()
    names = list(discover_suites(suite_dirs)) if suites is None else list(suites)
    units: list[_Unit] = []
    for suite in load_suites(names, suite_dirs) if names else []:
        if dataset not in suite.data:
            report.notes.append(f"suite {suite.name} has no {dataset} data; not checked")
            continue
        if suite.trained_items:
            report.notes.append(f"suite {suite.name} asks training prompts on purpose; not checked")
            continue
        try:
            path = suite.data_path(dataset)
        except HarnessError as e:  # e.g. shared data absent: fatal only for a suite asked for
            if suites is not None:
                raise
            report.notes.append(f"{e}; not checked")
            continue
        report.suites.append(suite.name)
        for n, row in numbered_rows(path):
            item = str(row.get("id", row.get("key", f"line {n}")))
            for text in _unit_texts(row):
                words = tuple(_words(text))
                if len(words) >= MIN_UNIT_WORDS:
                    units.append(_Unit(suite.name, item, words))
    return units, report


def _unit_texts(row: dict) -> list[str]:
    texts = [v for k, v in row.items() if isinstance(v, str) and k not in _ID_KEYS]
    choices, gold = row.get("choices"), row.get("gold")
    stem = row.get("context") or row.get("question")
    if isinstance(choices, list) and isinstance(stem, str):
        if isinstance(gold, int) and 0 <= gold < len(choices):
            texts.append(f"{stem} {choices[gold]}")
        elif isinstance(gold, str):
            texts.append(f"{stem} {gold}")
    return list(dict.fromkeys(texts))


def _contamination(examples: list[tuple[str, Example]], units: list[_Unit]) -> list[Problem]:
    """See the module docstring for the rule. Only n-grams some eval unit has are indexed, so
    the scan over the SFT data is one set lookup per n-gram."""
    if not units:
        return []
    grams_of = [_ngrams(u.words, min(NGRAM, len(u.words))) for u in units]
    sizes = {min(NGRAM, len(u.words)) for u in units}
    wanted = set().union(*grams_of)
    rows_with: dict[tuple, set[int]] = defaultdict(set)
    for i, (_, ex) in enumerate(examples):
        words = _words(_text(ex))
        for n in sizes:
            for g in _ngrams(words, n):
                if g in wanted:
                    rows_with[g].add(i)
    items_with: dict[tuple[str, tuple], set[str]] = defaultdict(set)
    for u, grams in zip(units, grams_of, strict=True):
        for g in grams:
            items_with[(u.suite, g)].add(u.item)
    found: dict[tuple[int, str, str], str] = {}
    for u, grams in zip(units, grams_of, strict=True):
        hits: Counter[int] = Counter()
        for g in grams:
            hits.update(rows_with.get(g, ()))
        if not hits:
            continue
        whole = [r for r, k in hits.items() if k == len(grams)]
        distinctive = [
            g
            for g in grams
            if len(rows_with.get(g, ())) < TEMPLATE_ROWS
            and len(items_with[(u.suite, g)]) < TEMPLATE_ROWS
        ]
        if len(u.words) < NGRAM:  # short unit: the whole of it, or nothing
            distinctive = []
        share: Counter[int] = Counter()
        for g in distinctive:
            share.update(rows_with.get(g, ()))
        need = CONTAMINATION_SHARE * len(distinctive)
        for r in whole + [r for r, k in share.items() if distinctive and k >= need]:
            why = (
                "whole item" if r in whole else f"{share[r]}/{len(distinctive)} distinctive 8-grams"
            )
            found.setdefault((r, u.suite, u.item), why)
    problems = []
    for (r, suite, item), why in sorted(found.items()):
        label, ex = examples[r]
        problems.append(
            Problem(
                "contamination",
                f"{label}:{ex.row}",
                f"holds eval item text ({why})",
                (f"{suite}/{item}",),
            )
        )
    return problems


# ---------------------------------------------------------------- helpers


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _shingles(words: list[str]) -> set[int]:
    grams = [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]
    return {zlib.crc32(g.encode()) for g in grams if g}


def _turns(ex: Example) -> Iterable[tuple[str, str]]:
    if ex.messages is None:
        return [("text", ex.text or "")]
    return [(m["role"], m["content"]) for m in ex.messages]


def _text(ex: Example) -> str:
    return "\n".join(text for _, text in _turns(ex))


def _token_counter(model: str | None):
    if model is None:
        return lambda text: len(text.split())
    from harness.models.load import load_tokenizer

    tokenizer = load_tokenizer(model)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _unique_names(stems: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for stem in stems:
        seen[stem] += 1
        out.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return out


def _in_toy_cache(path: str) -> bool:
    from harness.models.toy.build import cache_root

    root = (cache_root() / "toy").resolve()
    return root in Path(path).resolve().parents


def _short_path(path: str) -> str:
    """Relative to the working directory where that is shorter, so lines stay readable."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _after_field(message: str) -> str:
    """`source 'x' (path) line 3: field 'y': problem` -> `field 'y': problem` (where is known)."""
    head, sep, rest = message.partition(": ")
    return rest if sep and re.search(r" (line|row) \d+$", head) else message


def _clip(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"
