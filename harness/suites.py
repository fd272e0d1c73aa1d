"""Behavioural suites: folders of data + lm-eval task YAML + a `suite.yaml`, found and turned into
runnable lm-eval task configs.

A suite is data, not code: `evals/<name>/suite.yaml` names its task YAML(s), where its data sets
live (`toy`: a path inside the toy world's data dir; `english`: a path relative to the folder),
whether prompts go through the chat template, and how per-sample scores become summary metrics.
Adding a folder adds a suite; nothing here changes. See `evals/README.md` for the format.

lm-eval resolves `data_files` against the working directory, so task configs are built at run
time as dicts with absolute data paths (and the generation settings of the run) instead of being
indexed from the YAML folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.files import read_jsonl

EVALS_DIR = Path(__file__).resolve().parent.parent / "evals"
DATASETS = ("toy", "english")
OUTPUT_TYPES = ("generate_until", "multiple_choice", "loglikelihood")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. ]")


@dataclass(frozen=True)
class MetricSpec:
    """One summary metric: the mean of per-sample score `score` over the records that match
    `where` (doc field -> value), optionally once per value of doc field `by`, with a Wilson
    interval and/or a paired comparison against the base model. With `agree_by` the unit is a
    group of records sharing that doc field: the metric is the share of groups whose records
    all have the same score (e.g. paraphrases of one fact answered alike)."""

    name: str
    score: str
    where: dict[str, Any] = field(default_factory=dict)
    by: str | None = None
    interval: str | None = None
    compare_base: bool = False
    higher_is_better: bool = True
    agree_by: str | None = None


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    task_files: tuple[Path, ...]
    data: dict[str, str]
    output_type: str
    chat_template: bool
    metrics: tuple[MetricSpec, ...]
    split_by: str | None = None
    interleave_by: str | None = None
    proxy: str | None = None
    trained_items: bool = False  # asks training prompts on purpose: not contamination

    @property
    def compares_base(self) -> bool:
        return any(m.compare_base for m in self.metrics)

    def data_path(self, dataset: str) -> Path:
        """Absolute path of this suite's `toy` or `english` data set."""
        if dataset not in self.data:
            have = ", ".join(self.data) or "none"
            raise HarnessError(
                f"suite {self.name}: no '{dataset}' data set (it has: {have}); "
                f"add data.{dataset} to {self.path / 'suite.yaml'}"
            )
        if dataset == "toy":
            path = toy_data_dir() / self.data["toy"]
        else:
            path = (self.path / self.data[dataset]).resolve()
        if not path.is_file():
            raise HarnessError(f"suite {self.name}: data file {path} not found")
        return path


def toy_data_dir() -> Path:
    """The toy world's data dir. Eval files are identical across toy sizes, so any cached world
    serves; the tiny one is built if none is."""
    from harness.toy.build import build_toy_world, find_toy_world

    world = find_toy_world("tiny") or find_toy_world("demo") or build_toy_world("tiny")
    return world.data_dir


def metric_name(*parts: str) -> str:
    """Join name parts with '/', replacing characters MLflow rejects in metric names."""
    return "/".join(_UNSAFE.sub("_", str(p)) for p in parts if p != "")


# ---------------------------------------------------------------- discovery and loading


def suite_dirs(extra: list[str | Path] | tuple = ()) -> list[Path]:
    """Folders searched for suites: the repo's `evals/`, then any extra ones (later wins)."""
    return [EVALS_DIR, *(Path(p).expanduser().resolve() for p in extra)]


def discover_suites(extra: list[str | Path] | tuple = ()) -> dict[str, Path]:
    """Suite name -> folder, for every folder holding a `suite.yaml`."""
    found: dict[str, Path] = {}
    for root in suite_dirs(extra):
        if (root / "suite.yaml").is_file():  # an extra dir may be one suite folder itself
            found[_read_yaml(root / "suite.yaml").get("name", root.name)] = root
            continue
        if root.is_dir():
            for sub in sorted(root.iterdir()):
                if (sub / "suite.yaml").is_file():
                    found[_read_yaml(sub / "suite.yaml").get("name", sub.name)] = sub
    return found


def load_suite(name: str, extra: list[str | Path] | tuple = ()) -> Suite:
    known = discover_suites(extra)
    if name not in known:
        raise HarnessError(
            f"unknown eval suite '{name}'; known suites: {', '.join(sorted(known)) or 'none'}"
        )
    return _parse_suite(known[name])


def load_suites(names: list[str], extra: list[str | Path] | tuple = ()) -> list[Suite]:
    """Load and validate all named suites before any model work starts."""
    if not names:
        raise HarnessError(
            "no eval suites named; choose from: " + ", ".join(discover_suites(extra))
        )
    return [load_suite(n, extra) for n in dict.fromkeys(names)]


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise HarnessError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping at the top level")
    return raw


_SUITE_KEYS = {
    "name",
    "tasks",
    "data",
    "output_type",
    "chat_template",
    "metrics",
    "split_by",
    "interleave_by",
    "proxy",
    "trained_items",
}
_METRIC_KEYS = {
    "name",
    "score",
    "where",
    "by",
    "interval",
    "compare_base",
    "higher_is_better",
    "agree_by",
}


def _parse_suite(folder: Path) -> Suite:
    """Validate a suite.yaml completely; every problem is one line naming the file and field."""
    src = folder / "suite.yaml"
    raw = _read_yaml(src)

    def bad(field_: str, reason: str) -> HarnessError:
        return HarnessError(f"{src}: {field_}: {reason}")

    for key in raw:
        if key not in _SUITE_KEYS:
            raise bad(key, f"is not a known field (known: {', '.join(sorted(_SUITE_KEYS))})")
    name = raw.get("name", folder.name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise bad("name", "must be letters, digits, _ or -")
    tasks = raw.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise bad("tasks", "must be a non-empty list of task YAML files in the folder")
    task_files = tuple((folder / t).resolve() for t in tasks)
    for t in task_files:
        if not t.is_file():
            raise bad("tasks", f"{t} not found")
    data = raw.get("data") or {}
    if not isinstance(data, dict) or not data or any(k not in DATASETS for k in data):
        raise bad("data", f"must map some of {', '.join(DATASETS)} to a file path")
    output_type = raw.get("output_type")
    if output_type not in OUTPUT_TYPES:
        raise bad("output_type", f"must be one of {', '.join(OUTPUT_TYPES)}")
    chat = raw.get("chat_template", output_type == "generate_until")
    if not isinstance(chat, bool):
        raise bad("chat_template", "must be true or false")
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise bad("metrics", "must be a non-empty list")
    metrics = []
    for i, m in enumerate(metrics_raw):
        where = f"metrics.{i}"
        if not isinstance(m, dict) or "name" not in m or "score" not in m:
            raise bad(where, "needs 'name' and 'score'")
        unknown = set(m) - _METRIC_KEYS
        if unknown:
            raise bad(f"{where}.{sorted(unknown)[0]}", "is not a known field")
        if m.get("interval") not in (None, "wilson"):
            raise bad(f"{where}.interval", "must be 'wilson' or absent")
        if not isinstance(m.get("where", {}), dict):
            raise bad(f"{where}.where", "must map doc fields to values")
        if m.get("agree_by") is not None and m.get("compare_base"):
            raise bad(f"{where}.agree_by", "cannot be combined with compare_base")
        metrics.append(MetricSpec(**m))
    compared = [m.by for m in metrics if m.compare_base]
    if len(compared) != len(set(compared)):
        raise bad("metrics", "at most one compare_base metric per 'by' grouping")
    proxy = raw.get("proxy")
    if proxy is not None and proxy not in {m.name for m in metrics if m.by is None}:
        raise bad("proxy", "must name one of the suite's overall metrics")
    suite = Suite(
        name=name,
        path=folder.resolve(),
        task_files=task_files,
        data={k: str(v) for k, v in data.items()},
        output_type=output_type,
        chat_template=chat,
        metrics=tuple(metrics),
        split_by=raw.get("split_by"),
        interleave_by=raw.get("interleave_by"),
        proxy=proxy,
        trained_items=raw.get("trained_items") is True,
    )
    for cfg in _task_yamls(suite):
        if cfg.get("output_type") != output_type:
            raise bad(
                "output_type",
                f"{output_type} but task {cfg.get('task')} says {cfg.get('output_type')}",
            )
    return suite


def _load_task_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task YAML with `include:` merged and `!function` hooks resolved (lm-eval looks
    next to the YAML first, then imports, so `!function harness.evaluate.fn` works)."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:  # lm-eval < 0.4.11
        from lm_eval.utils import load_yaml_config

        return load_yaml_config(yaml_path=str(path), mode="full")
    try:
        return load_yaml(path, resolve_func=True)
    except (ImportError, AttributeError, ValueError, yaml.YAMLError) as e:
        raise HarnessError(f"{path}: cannot load task ({str(e).splitlines()[0]})") from None


def _task_yamls(suite: Suite) -> list[dict[str, Any]]:
    return [_load_task_yaml(p) for p in suite.task_files]


# ---------------------------------------------------------------- run-time task configs


@dataclass(frozen=True)
class TaskRef:
    """Where an lm-eval task's samples belong: suite name and the task label used in metrics."""

    suite: str
    task: str


def task_configs(
    suite: Suite,
    data_path: Path,
    *,
    max_new_tokens: int,
    stop: list[str],
) -> dict[str, tuple[dict[str, Any], TaskRef]]:
    """lm-eval task dicts for one suite: absolute data path, the run's generation length and
    stop strings, and one task per value of `split_by` (so `limit` applies per task)."""
    out: dict[str, tuple[dict[str, Any], TaskRef]] = {}
    values: list[Any] = [None]
    if suite.split_by:
        rows = read_jsonl(data_path)
        values = list(dict.fromkeys(r.get(suite.split_by) for r in rows))
        if None in values:
            raise HarnessError(f"{data_path}: some rows lack the '{suite.split_by}' field")
    for cfg in _task_yamls(suite):
        base_name = str(cfg["task"])
        for value in values:
            c = dict(cfg)
            kwargs = dict(c.get("dataset_kwargs") or {})
            kwargs["data_files"] = {c.get("test_split", "test"): str(data_path)}
            c["dataset_kwargs"] = kwargs
            c["dataset_path"] = c.get("dataset_path", "json")
            if value is not None or suite.interleave_by:
                c["process_docs"] = functools.partial(
                    select_docs,
                    then=cfg.get("process_docs"),
                    field=suite.split_by,
                    value=value,
                    interleave=suite.interleave_by,
                )
            if c["output_type"] == "generate_until":
                gen = dict(c.get("generation_kwargs") or {})
                gen["max_gen_toks"] = max_new_tokens
                gen["until"] = list(dict.fromkeys([*(gen.get("until") or []), *stop]))
                gen.setdefault("do_sample", False)
                c["generation_kwargs"] = gen
            label = base_name if value is None else str(value)
            lm_name = f"harness__{suite.name}__{label}"
            c["task"] = lm_name
            out[lm_name] = (c, TaskRef(suite.name, label))
    return out


def select_docs(dataset, *, then=None, field=None, value=None, interleave=None):
    """process_docs wrapper: the suite's own hook, then keep rows with `field == value`, then
    order rows round-robin by `interleave` so lm-eval's `limit` (the first N docs) sees every
    label (e.g. harmful and benign refusal prompts) instead of only the first one in the file."""
    if then is not None:
        dataset = then(dataset)
    idx = list(range(len(dataset)))
    if field:
        column = list(dataset[field])
        idx = [i for i in idx if column[i] == value]
    if interleave:
        labels = list(dataset[interleave])
        buckets: dict[Any, list[int]] = {}
        for i in idx:
            buckets.setdefault(labels[i], []).append(i)
        queues = list(buckets.values())
        idx = [q[k] for k in range(max(map(len, queues), default=0)) for q in queues if k < len(q)]
    return dataset.select(idx)


def suite_hash(suite: Suite, data_path: Path, settings: dict[str, Any]) -> str:
    """Content hash of what a suite's results depend on besides the model: suite.yaml, task
    YAMLs, the data file bytes and the run settings that change outputs (limit, lengths)."""
    h = hashlib.sha256()
    for p in (suite.path / "suite.yaml", *suite.task_files, data_path):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()
