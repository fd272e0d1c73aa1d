"""Behavioural suites: folders of data + lm-eval task YAML + a `suite.yaml`, found and turned into
runnable lm-eval task configs.

A suite is data, not code: `evals/<name>/suite.yaml` names its task YAML(s), where its data sets
live (`toy`: a path inside the toy world's data dir; `english`: a path relative to the folder,
or `shared:<path>` inside the shared data folder beside the repository, for public suites whose
data the project references but does not copy),
whether prompts go through the chat template, and how per-sample scores become summary metrics.
Adding a folder adds a suite; nothing here changes. See `evals/README.md` for the format.

lm-eval resolves `data_files` against the working directory, so task configs are built at run
time as dicts with absolute data paths (and the generation settings of the run) instead of being
indexed from the YAML folder.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from harness.config.load import format_validation_error
from harness.config.schema import StandardTask, task_name
from harness.config.suite import JudgeSpec, MetricSpec, SuiteFile
from harness.util.errors import HarnessError
from harness.util.files import numbered_rows, read_rows
from harness.util.names import metric_name

if TYPE_CHECKING:
    from harness.config.suite import SuiteMetrics

EVALS_DIR = Path(__file__).resolve().parents[2] / "evals"
SHARED = "shared:"  # a data path inside the shared data folder (`shared_dir`)


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
    max_gen_toks: dict[str, int] = field(default_factory=dict)
    judge: JudgeSpec | None = None  # who decides refusals (suites that judge replies)
    trained_items: bool = False  # asks training prompts on purpose: not contamination
    hosts_tasks: bool = False  # the experiment's eval.tasks run and report with this suite
    cluster_by: str | None = None  # doc field naming each item's family (config.suite.SuiteFile)
    over_budget: str = "error"  # an item that cannot fit the generation budget: error | skip

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
        ref = self.data[dataset]
        if dataset == "toy":
            path = toy_data_dir() / ref
        elif ref.startswith(SHARED):
            root = shared_dir()
            if not root.is_dir():
                raise HarnessError(
                    f"suite {self.name}: data {ref} is in the shared data folder {root}, which is "
                    "absent; check out shared/ beside the repository or set HARNESS_SHARED"
                )
            path = root / ref.removeprefix(SHARED)
        else:
            path = (self.path / ref).resolve()
        if not path.is_file():
            raise HarnessError(f"suite {self.name}: data file {path} not found")
        return path


def shared_dir() -> Path:
    """The shared data folder (public eval sets the project references but does not copy):
    `$HARNESS_SHARED`, else `shared/` beside the repository, where CI checks it out."""
    env = os.environ.get("HARNESS_SHARED")
    return (Path(env).expanduser() if env else EVALS_DIR.parent.parent / "shared").resolve()


def toy_data_dir() -> Path:
    """The toy world's data dir. Eval files are identical across toy sizes, so any cached world
    serves; the tiny one is built if none is."""
    from harness.models.toy.build import build_toy_world, find_toy_world

    world = find_toy_world("tiny") or find_toy_world("demo") or build_toy_world("tiny")
    return world.data_dir


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


def _parse_suite(folder: Path) -> Suite:
    """Validate a suite.yaml completely; every problem is one line naming the file and field."""
    src = folder / "suite.yaml"
    raw = _read_yaml(src)
    try:
        spec = SuiteFile.model_validate(raw)
    except ValidationError as e:
        raise HarnessError(format_validation_error(e, raw, str(src))) from None
    task_files = tuple(_task_file(folder, t) for t in spec.tasks)
    for t in task_files:
        if not t.is_file():
            raise HarnessError(f"{src}: tasks: {t} not found")
    chat = (
        spec.output_type == "generate_until" if spec.chat_template is None else spec.chat_template
    )
    suite = Suite(
        name=spec.name or folder.name,
        path=folder.resolve(),
        task_files=task_files,
        data=dict(spec.data),
        output_type=spec.output_type,
        chat_template=chat,
        metrics=tuple(spec.metrics),
        split_by=spec.split_by,
        interleave_by=spec.interleave_by,
        max_gen_toks=dict(spec.max_gen_toks),
        judge=spec.judge,
        trained_items=spec.trained_items,
        hosts_tasks=spec.hosts_tasks,
        cluster_by=spec.cluster_by,
        over_budget=spec.over_budget,
    )
    for cfg in _task_yamls(suite):
        if cfg.get("output_type") != spec.output_type:
            raise HarnessError(
                f"{src}: output_type: {spec.output_type} but task {cfg.get('task')} says "
                f"{cfg.get('output_type')}"
            )
    return suite


def _task_file(folder: Path, name: str) -> Path:
    """A task YAML in the suite folder, or one shipped inside lm-eval: `lm_eval:ifeval/ifeval.yaml`
    is lm-eval's own ifeval task, used unchanged (the harness supplies the local data)."""
    if not name.startswith("lm_eval:"):
        return (folder / name).resolve()
    import lm_eval.tasks

    from harness.eval.ifeval import prepare_offline

    prepare_offline()  # lm-eval's ifeval module downloads NLTK data at import otherwise
    return Path(lm_eval.tasks.__file__).parent / name.split(":", 1)[1]


def _load_task_yaml(path: Path) -> dict[str, Any]:
    """An lm-eval task YAML with `include:` merged and `!function` hooks resolved (lm-eval looks
    next to the YAML first, then imports, so `!function harness.eval.runner.fn` works)."""
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


_LM_EVAL_MAX_GEN_TOKS = 256
_LOCAL_BUILDERS = ("json", "csv", "parquet", "text")  # `datasets` builders for local files


def generation_budget(
    suite: Suite, dataset: str, task: dict[str, Any], max_new_tokens: int | None
) -> int:
    """New tokens a generating task may produce: the run's override (`eval.max_new_tokens`,
    `harness eval --max-new-tokens`), else the suite's budget for this data set
    (`max_gen_toks: {toy: 48}` in suite.yaml), else the task YAML's
    `generation_kwargs.max_gen_toks`, else lm-eval's default (256)."""
    if max_new_tokens is not None:
        return max_new_tokens
    if dataset in suite.max_gen_toks:
        return suite.max_gen_toks[dataset]
    return int((task.get("generation_kwargs") or {}).get("max_gen_toks") or _LM_EVAL_MAX_GEN_TOKS)


def tokens_needed(row: dict[str, Any]) -> int | None:
    """New tokens a reply meeting the row's format constraints needs at least
    (`harness.eval.scorers.required_tokens`: words x 1.4, the rule is there); rows in our `specs`
    schema or IFEval's `instruction_id_list` + `kwargs`; None for a row without constraints."""
    from harness.eval.ifeval import row_specs
    from harness.eval.scorers import required_tokens

    specs = row_specs(row) if "instruction_id_list" in row else row.get("specs")
    if not isinstance(specs, list) or not specs:
        return None
    # datasets pads the struct fields of all specs in a file with None: drop the padding
    return required_tokens([{k: v for k, v in s.items() if v is not None} for s in specs])


def check_budget(data_path: Path, budget: int, *, skip: bool = False) -> list[str]:
    """Items whose constraints need a longer reply than `budget` new tokens allow: a reply cut
    off by the budget would be scored as a failure of the model. By default the first is an
    error, one line naming file and line; with `skip` (a suite's `over_budget: skip`, for a
    public data set the project cannot edit) their ids are returned, to be left out."""
    over = []
    for lineno, row in numbered_rows(data_path):
        need = tokens_needed(row)
        if need is None or need <= budget:
            continue
        item = row.get("id", row.get("key"))
        if skip:
            over.append(str(item))
            continue
        raise HarnessError(
            f"{data_path}:{lineno}: item {item} needs about {need} new tokens but the "
            f"generation budget is {budget}; raise --max-new-tokens / eval.max_new_tokens or "
            "the task's max_gen_toks, or shorten the item"
        )
    return over


def over_budget(
    suites: Sequence[Suite], dataset: str, max_new_tokens: int | None
) -> dict[str, int]:
    """Suite -> how many items it leaves out at this generation budget (`over_budget: skip`;
    each task's count, summed), for a run's info: a summary says what it did not ask."""
    counts = {}
    for suite in suites:
        if suite.over_budget != "skip":
            continue
        path = suite.data_path(dataset)
        counts[suite.name] = sum(
            len(check_budget(path, generation_budget(suite, dataset, c, max_new_tokens), skip=True))
            for c in _task_yamls(suite)
            if c["output_type"] == "generate_until"
        )
    return {name: n for name, n in counts.items() if n}


def task_configs(
    suite: Suite,
    dataset: str,
    *,
    max_new_tokens: int | None,
    stop: list[str],
) -> dict[str, tuple[dict[str, Any], TaskRef]]:
    """lm-eval task dicts for one suite: absolute path of the `dataset` data, the generation
    budget (`generation_budget`; items that cannot fit it are rejected, or left out when the
    suite says `over_budget: skip`) and stop strings, and one task per value of `split_by` (so
    `limit` applies per task)."""
    data_path = suite.data_path(dataset)
    out: dict[str, tuple[dict[str, Any], TaskRef]] = {}
    values: list[Any] = [None]
    if suite.split_by:
        rows = read_rows(data_path)
        values = list(dict.fromkeys(r.get(suite.split_by) for r in rows))
        if None in values:
            raise HarnessError(f"{data_path}: some rows lack the '{suite.split_by}' field")
    for cfg in _task_yamls(suite):
        base_name = str(cfg["task"])
        budget = generation_budget(suite, dataset, cfg, max_new_tokens)
        skip = suite.over_budget == "skip"
        if cfg["output_type"] == "generate_until":
            check_budget(data_path, budget, skip=skip)
        for value in values:
            c = dict(cfg)
            kwargs = dict(c.get("dataset_kwargs") or {})
            kwargs["data_files"] = {c.get("test_split", "test"): str(data_path)}
            c["dataset_kwargs"] = kwargs
            if c.get("dataset_path") not in _LOCAL_BUILDERS:  # e.g. lm-eval's google/IFEval
                c["dataset_path"], c["dataset_name"] = "json", None
            c["process_docs"] = functools.partial(
                select_docs,
                then=cfg.get("process_docs"),
                field=suite.split_by,
                value=value,
                interleave=suite.interleave_by,
                budget=budget if skip and cfg["output_type"] == "generate_until" else None,
            )
            if c["output_type"] == "generate_until":
                gen = dict(c.get("generation_kwargs") or {})
                gen["max_gen_toks"] = budget
                gen["until"] = list(dict.fromkeys([*(gen.get("until") or []), *stop]))
                gen.setdefault("do_sample", False)
                c["generation_kwargs"] = gen
            label = base_name if value is None else str(value)
            lm_name = f"harness__{suite.name}__{label}"
            c["task"] = lm_name
            out[lm_name] = (c, TaskRef(suite.name, label))
    return out


def item_id(row: dict[str, Any], default: Any) -> Any:
    """An item's own id: `id`, or `key` (IFEval's rows), else `default` (its position)."""
    return row.get("id", row.get("key", default))


def select_docs(
    dataset, *, then=None, field=None, value=None, interleave=None, budget=None, seed=0
):
    """process_docs wrapper: the suite's own hook, then keep rows with `field == value` (and,
    with a `budget`, rows whose constraints fit it: `tokens_needed`), then put the rows in a
    seeded stratified order, so lm-eval's `limit` (the first N docs) is a stratified sample
    instead of the first N lines of a file sorted by category.

    Strata are the values of the suite's `interleave_by` field path (e.g. `label`,
    `specs.type`), and within each, a `category` field when rows have one. Each stratum's
    rows are shuffled by a seeded hash of their id and spread evenly over the order (row k of
    a stratum of m sits at (k + 0.5) / m), so every prefix holds each stratum in proportion.
    The seed is fixed: every run, base or candidate, sees the same items."""
    if then is not None:
        dataset = then(dataset)
    rows = dataset.to_list()
    idx = [
        i
        for i, r in enumerate(rows)
        if (not field or r.get(field) == value)
        and (budget is None or (tokens_needed(r) or 0) <= budget)
    ]

    def shuffled(i: int) -> str:
        return hashlib.sha256(f"{seed}:{item_id(rows[i], i)}".encode()).hexdigest()

    def spread(members: list[int], path: str | None, inner=None) -> list[int]:
        """Group by `path`, order each group (by `inner`, else shuffled), spread evenly."""
        groups: dict[tuple, list[int]] = {}
        for i in members:
            key = tuple(map(str, field_values({"doc": rows[i]}, path))) if path else ()
            groups.setdefault(key, []).append(i)
        placed = []
        for group in groups.values():
            ordered = inner(group) if inner else sorted(group, key=shuffled)
            placed += [((k + 0.5) / len(ordered), shuffled(i), i) for k, i in enumerate(ordered)]
        return [i for _, _, i in sorted(placed)]

    by_category = functools.partial(spread, path="category")
    order = spread(idx, interleave, by_category) if interleave else by_category(idx)
    return dataset.select(order)


def suite_hash(suite: Suite, data_path: Path, settings: dict[str, Any]) -> str:
    """Content hash of what a suite's results depend on besides the model: suite.yaml, task
    YAMLs, the data file bytes and the run settings that change outputs (limit, lengths)."""
    h = hashlib.sha256()
    for p in (suite.path / "suite.yaml", *suite.task_files, data_path):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


# ---------------------------------------------------------------- metric declarations


def field_values(record: dict, path: str) -> list[Any]:
    """Values of a doc field path (`label`, `specs.type`: lists are mapped over) in a per-sample
    record's `doc` (or the record itself when it has none); `task` is the record's task label."""
    if path == "task":
        return [record["task"]]
    nodes: list[Any] = [record.get("doc", record)]
    for part in path.split("."):
        nxt: list[Any] = []
        for node in nodes:
            for item in node if isinstance(node, list) else [node]:
                if isinstance(item, dict) and item.get(part) is not None:
                    nxt.append(item[part])
        nodes = nxt
    flat = [v for n in nodes for v in (n if isinstance(n, list) else [n])]
    return list(dict.fromkeys(flat))


def matches(record: dict, where: dict[str, Any]) -> bool:
    """Whether a record falls under a metric's `where` filter."""
    return all(v in field_values(record, k) for k, v in (where or {}).items())


@dataclass(frozen=True)
class KeyMetric:
    """A metric the study table and reports show by default: each gated overall metric, or
    its paired change against the base (`<suite>/delta`) when it is compared with the base.
    `suite` and `spec` say where its per-item scores come from (for a delta, the compared
    metric's: between two fine-tuned runs the base cancels out)."""

    name: str
    label: str
    higher_is_better: bool
    suite: str
    spec: MetricSpec


def key_metrics(suites: Sequence[Suite] | Sequence[SuiteMetrics]) -> list[KeyMetric]:
    """The headline metrics of these suites, in declaration order (see `KeyMetric`): from the
    loaded suite folders or from a study spec's record of them."""
    out = []
    for s in suites:
        for m in s.metrics:
            if m.by is None and m.gate:
                label = m.label or metric_name(s.name, m.name)
                if m.compare_base:
                    out.append(
                        KeyMetric(metric_name(s.name, "delta"), f"{label} Δ", True, s.name, m)
                    )
                else:
                    name = metric_name(s.name, m.name)
                    out.append(KeyMetric(name, label, m.higher_is_better, s.name, m))
    return list({k.name: k for k in out}.values())


def group_values(
    suite: Suite, spec: MetricSpec, dataset: str, extra_tasks: Sequence[str | StandardTask] = ()
) -> list[str]:
    """The values a per-group (`by`) metric takes on this suite's data: task labels (the
    `split_by` values, or the task names) for `by: task`, else the doc field's values.
    `extra_tasks` are `eval.tasks` entries: names, or `{task, data_files}` entries."""
    if spec.by == "task":
        if suite.split_by:
            rows = read_rows(suite.data_path(dataset))
            values = [r.get(suite.split_by) for r in rows]
        else:
            values = [cfg.get("task") for cfg in _task_yamls(suite)]
        values += [task_name(t) for t in extra_tasks]
    else:
        rows = read_rows(suite.data_path(dataset))
        values = [
            v
            for r in rows
            if matches({"doc": r}, spec.where)
            for v in field_values({"doc": r}, spec.by)
        ]
    return [str(v) for v in dict.fromkeys(values) if v is not None]


_ANY_GROUP = "ANYGROUP"  # a group value that survives metric_name, then becomes a wildcard


def summary_names(
    suite: Suite, dataset: str | None, extra_tasks: Sequence[str | StandardTask] = ()
) -> list[str]:
    """Every metric name `summaries.summarize` can produce for this suite (Wilson `_low`/`_high`
    and paired `delta_*` bounds included), so objectives and constraints are checked up front.
    Without a `dataset` a per-group metric's group is `*` (any value): a check that reads no
    data, so it can run before anything is built."""
    names: list[str] = []
    for m in suite.metrics:
        if m.by is None:
            groups: list[tuple[str, ...]] = [()]
        elif dataset is None:
            groups = [(_ANY_GROUP,)]
        else:
            groups = [(v,) for v in group_values(suite, m, dataset, extra_tasks)]
        for g in groups:
            prefix = (suite.name, *g)
            names.append(metric_name(*prefix, m.name))
            if m.interval is not None:
                names += [
                    metric_name(*prefix, m.name + "_low"),
                    metric_name(*prefix, m.name + "_high"),
                ]
            if m.compare_base:
                names += [
                    metric_name(*prefix, x)
                    for x in (
                        f"base_{m.name}",
                        "delta",
                        "delta_low",
                        "delta_high",
                        "mcnemar_p",
                        "p_value",
                    )
                ]
    return list(dict.fromkeys(n.replace(_ANY_GROUP, "*") for n in names))


def check_metric_names(
    names: list[str],
    suites: list[Suite],
    dataset: str | None,
    extra_tasks: Sequence[str | StandardTask] = (),
) -> None:
    """Refuse objective or constraint metrics the chosen suites never produce: one line,
    listing the names they do produce (interval bounds left out for brevity). With `dataset`
    None, per-group names are checked by shape only (see `summary_names`)."""
    known = [n for s in suites for n in summary_names(s, dataset, extra_tasks)]
    missing = [n for n in dict.fromkeys(names) if not any(fnmatch.fnmatchcase(n, k) for k in known)]
    if missing:
        shown = ", ".join(n for n in known if not n.endswith(("_low", "_high")))
        suite_list = ", ".join(s.name for s in suites)
        raise HarnessError(
            f"objective/constraint metric {', '.join(map(repr, missing))} is not produced by "
            f"eval.suites ({suite_list}); known: {shown}"
        )
