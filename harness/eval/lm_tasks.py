"""Standard lm-eval tasks (`eval.tasks`) run with lm-eval's own definitions, from the hub or on
local rows, and scored inside the forgetting suite.

An entry is a task name (lm-eval loads the task and its hub data as usual) or a `StandardTask`:
`{task: arc_easy, data_files: {validation: rows.jsonl}, ...}`. For the latter the task's own YAML
is loaded from lm-eval's index (includes merged, `!function` hooks resolved), so the prompt,
few-shot split and metrics stay lm-eval's; only where the rows come from changes:
- `dataset_path: json` (or `parquet`, `csv` by the files' suffix) with `data_files` as given
  (absolute paths, see `StandardTask.resolved`);
- every split key of the task (`training_split`, `validation_split`, `test_split`,
  `fewshot_split`) that names a split the files do not provide is cleared, so lm-eval scores the
  test split when given, else validation (ARC with only validation rows is scored on
  validation), and takes few-shot examples only from a split the user gave;
- any other field of the entry overrides the YAML's field of that name (it must be a field of
  lm-eval's `TaskConfig`: a typo is an error, not a silently ignored key).
A task asking for few-shot examples with no split left to take them from is refused: lm-eval
would quietly draw them from the rows it scores.

lm-eval logs one sample per document per filter (gsm8k has `strict-match` and
`flexible-extract`); `merge_filters` folds them into one sample per document with metric
names `<metric>_<filter>`, so each item pairs once with the base.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from harness.config.schema import StandardTask, task_name
from harness.util.errors import HarnessError

SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@functools.cache
def task_manager(include_defaults: bool):
    """lm-eval's TaskManager, built once per process: indexing the built-in tasks takes ~8 s."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_defaults=include_defaults)


def lm_eval_tasks(entries: list[str | StandardTask]) -> list[str | dict[str, Any]]:
    """What `simple_evaluate(tasks=...)` takes for `eval.tasks`: names as they are, local-row
    entries as full task dicts."""
    out: list[str | dict[str, Any]] = []
    seen: set[str] = set()
    for entry in entries:
        name = task_name(entry)
        if name in seen:
            raise HarnessError(f"eval.tasks: task '{name}' is listed twice")
        seen.add(name)
        out.append(entry if isinstance(entry, str) else task_config(entry))
    return out


def task_config(entry: StandardTask) -> dict[str, Any]:
    """lm-eval's own config of `entry.task` with its rows and splits replaced (module doc)."""
    from lm_eval.api.task import TaskConfig
    from lm_eval.tasks._yaml_loader import load_yaml

    where = f"eval.tasks.{entry.task}"
    found = task_manager(True).task_index.get(entry.task)
    if found is None:
        raise HarnessError(f"{where}: lm-eval has no task named '{entry.task}'")
    if found.yaml_path is None or getattr(found.kind, "name", "TASK") != "TASK":
        raise HarnessError(f"{where}: '{entry.task}' is a group or tag; list its tasks one by one")
    cfg = load_yaml(found.yaml_path, resolve_func=True)
    if cfg.get("task") != entry.task or "class" in cfg:
        raise HarnessError(f"{where}: '{entry.task}' is not defined by a plain task YAML")
    files = dict(entry.data_files)
    reads = [f"{k} {cfg[k]}" for k in ("test_split", "validation_split") if cfg.get(k)]
    builder = _builder(files, where)
    cfg |= {"dataset_path": builder, "dataset_name": None, "dataset_kwargs": {"data_files": files}}
    for key in SPLIT_KEYS:
        if cfg.get(key) is not None and cfg[key] not in files:
            cfg[key] = None
    overrides = entry.model_dump(exclude={"task", "data_files"})
    known = {f.name for f in dataclasses.fields(TaskConfig)}
    for key in overrides:
        if key not in known:
            raise HarnessError(
                f"{where}.{key}: not a field of an lm-eval task (known: {', '.join(sorted(known))})"
            )
    cfg |= overrides
    scored = [cfg[k] for k in ("test_split", "validation_split") if cfg.get(k) in files]
    if not scored:
        raise HarnessError(
            f"{where}: data_files names {', '.join(files)} but the task is scored on "
            f"{' or '.join(reads) or 'no split'}; name that split (or set test_split: <yours>)"
        )
    shots = cfg.get("num_fewshot") or 0
    source = cfg.get("fewshot_split") or cfg.get("training_split")
    samples = (cfg.get("fewshot_config") or {}).get("samples")
    if shots > 0 and source not in files and samples is None:
        raise HarnessError(
            f"{where}: the task takes {shots} few-shot examples but data_files names no split "
            "for them; add one (e.g. train: FILE with fewshot_split: train) or set num_fewshot: 0"
        )
    return cfg


_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _builder(files: dict[str, str], where: str) -> str:
    """The `datasets` builder for the files: JSON Lines/JSON, Parquet or CSV, one kind for all."""
    kinds = {_BUILDERS.get(Path(p).suffix.lower()) for p in files.values()}
    if None in kinds or len(kinds) != 1:
        raise HarnessError(
            f"{where}.data_files: use .jsonl/.json, .parquet or .csv files, one kind for all splits"
        )
    return kinds.pop()


def merge_filters(samples: list[dict]) -> list[dict]:
    """One sample per document: metrics of filter F (other than lm-eval's default `none`)
    renamed `<metric>_<F>`; the response and arguments are the first filter's."""
    merged: dict[int, dict] = {}
    for s in samples:
        suffix = "" if s.get("filter", "none") == "none" else f"_{s['filter']}"
        renamed = {f"{m}{suffix}": s[m] for m in s["metrics"]}
        if s["doc_id"] not in merged:
            merged[s["doc_id"]] = {**s, **renamed, "metrics": list(renamed)}
        else:
            into = merged[s["doc_id"]]
            into.update(renamed)
            into["metrics"] = [*into["metrics"], *renamed]
    return list(merged.values())


def usable_score(value: Any) -> bool:
    """A per-sample score summaries can use: absent (a standard task without that metric) and
    NaN (lm-eval's truthfulqa_mc2 when every choice's probability underflows) are left out."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def task_metrics(
    suite: str,
    records: list[dict],
    base_records: list[dict] | None,
    declared: set[str],
) -> dict[str, float]:
    """Per-task summaries of every per-sample metric the suite does not declare itself (a
    standard task's `acc_norm`, gsm8k's `exact_match_strict-match`): `<suite>/<task>/<metric>`,
    and against the base on the same items `base_<metric>`, `<metric>_delta` with its paired
    interval `<metric>_delta_low` / `_high`."""
    from harness.stats.comparison import paired_comparison
    from harness.util.names import metric_name

    base = {(r["task"], r["id"]): r for r in base_records or []}
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        for m, value in r["scores"].items():
            if m not in declared and usable_score(value):
                groups.setdefault((r["task"], m), []).append(r)
    out: dict[str, float] = {}
    for (task, m), group in sorted(groups.items()):
        out[metric_name(suite, task, m)] = sum(r["scores"][m] for r in group) / len(group)
        pairs = [(base[r["task"], r["id"]], r) for r in group if (r["task"], r["id"]) in base]
        pairs = [(b, r) for b, r in pairs if usable_score(b["scores"].get(m))]
        if base_records is None or not pairs:
            continue
        cmp = paired_comparison(
            [b["scores"][m] for b, _ in pairs], [r["scores"][m] for _, r in pairs]
        )
        out[metric_name(suite, task, f"base_{m}")] = cmp.mean_a
        out[metric_name(suite, task, f"{m}_delta")] = cmp.diff
        out[metric_name(suite, task, f"{m}_delta_low")] = cmp.ci_low
        out[metric_name(suite, task, f"{m}_delta_high")] = cmp.ci_high
    return out


def tasks_fingerprint(entries: list[str | StandardTask]) -> str:
    """What the base cache keys `eval.tasks` on: each entry and the bytes of its data files
    (a hub task's data is pinned by the lm-eval version in the key)."""
    h = hashlib.sha256()
    for entry in entries:
        if isinstance(entry, str):
            h.update(entry.encode() + b"\0")
            continue
        h.update(json.dumps(entry.model_dump(), sort_keys=True, default=str).encode())
        for split in sorted(entry.data_files):
            h.update(split.encode() + b"\0" + Path(entry.data_files[split]).read_bytes())
    return h.hexdigest()


def stop_strings(tokenizer, model=None) -> list[str]:
    """End-of-sequence and end-of-turn markers (tokenizer eos + generation_config eos ids)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids += [eos] if isinstance(eos, int) else list(eos or [])
    strings = [tokenizer.decode([i], skip_special_tokens=False) for i in dict.fromkeys(ids)]
    return [s for s in strings if s.strip()]
