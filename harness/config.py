"""Experiment definitions: the YAML file a user writes, validated completely before any work.

One mechanism sets values by dotted path (`train.learning_rate`, `data.sources.replay.weight`):
`--set` overrides on the command line and the values an Optuna trial samples for its `search`
space both go through `set_path`, and the result is validated again, so a trial's resolved
configuration obeys exactly the same rules as a hand-written one.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import models
from harness.errors import HarnessError
from harness.suites import MetricSpec, Suite


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    """One SFT data source. `path` is a .jsonl/.json/.parquet file (relative to the experiment
    file), `toy:<file>` inside the toy world's data, or `hf:<dataset>` read with `datasets`: a
    hub name (`hf:Salesforce/wikitext`), or a local folder (`hf:./data/chats`, relative to the
    experiment file) written by `save_to_disk` or holding data files a builder reads. For `hf:`
    only: `hf_config` (the dataset's config name, e.g. wikitext-103-raw-v1), `data_dir` (a
    folder inside the dataset) and `split` (default train; `hf:NAME:SPLIT` also works)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    path: str
    format: Literal["auto", "messages", "prompt_completion", "alpaca", "text"] = "auto"
    weight: float = Field(1.0, ge=0)
    hf_config: str | None = None
    data_dir: str | None = None
    split: str | None = None

    @model_validator(mode="after")
    def _hub_fields(self) -> Source:
        given = [f for f in ("hf_config", "data_dir", "split") if getattr(self, f) is not None]
        if given and not self.path.startswith("hf:"):
            raise ValueError(f"{', '.join(given)}: only for hf: sources (path is {self.path!r})")
        if self.split is not None and self.path.count(":") > 1:
            raise ValueError("split is given twice: in path (hf:NAME:SPLIT) and in split")
        return self

    def hub_options(self) -> dict[str, str | None]:
        """`datasets` arguments of an `hf:` source."""
        return {"config": self.hf_config, "data_dir": self.data_dir, "split": self.split}


class MixOps(_Strict):
    """Failure modes of SFT data applied on purpose (see `harness.mix_ops`): keep a share of
    each chat source's prompts at the same budget, contradict or corrupt a share of answers."""

    narrow: float = Field(1.0, gt=0, le=1, description="share of distinct prompts kept")
    conflict: float = Field(0.0, ge=0, le=0.5, description="share of examples contradicted")
    corrupt: float = Field(0.0, ge=0, le=1, description="share of answers degraded")
    sources: list[str] = Field(
        default_factory=list, description="chat sources affected; empty = every one"
    )


class DataConfig(_Strict):
    sources: list[Source] = Field(min_length=1)
    budget: int = Field(1000, gt=0, description="total examples (or tokens) in the mix")
    unit: Literal["examples", "tokens"] = "examples"
    max_length: int = Field(512, gt=8)
    overlong: Literal["truncate", "drop"] = "truncate"
    train_on: Literal["all", "last"] = "all"
    on_bad_row: Literal["error", "skip"] = "error"
    ops: MixOps = Field(default_factory=MixOps)

    @model_validator(mode="after")
    def _check_sources(self) -> DataConfig:
        names = [s.name for s in self.sources]
        unknown = [n for n in self.ops.sources if n not in names]
        if unknown:
            raise ValueError(f"ops.sources names unknown source(s): {', '.join(unknown)}")
        if self.unit == "tokens" and (self.ops.conflict or self.ops.corrupt):
            raise ValueError("ops.conflict and ops.corrupt need unit: examples")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("at least one source needs a weight > 0")
        return self


class TrainConfig(_Strict):
    learning_rate: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="overrides epochs when set")
    batch_tokens: int = Field(4096, gt=0, description="token budget of one micro-batch")
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    logging_steps: int = Field(5, ge=1)
    batching: Literal["auto", "grouped", "packed"] = Field(
        "auto", description="packed needs a varlen attention kernel (flash-attention on CUDA)"
    )
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer in backward: less activation memory, ~30% slower"
    )
    loss_chunk_tokens: int = Field(
        1024,
        ge=0,
        description="lm_head + cross-entropy over trained positions in chunks of this many "
        "tokens, so full-vocabulary logits never exist for the whole batch; 0 = the model's loss",
    )


_ATTN = re.compile(r"^(auto|eager|sdpa|flex_attention|flash_attention_[23]|[\w.\-]+/[\w.\-]+)$")


class ModelOptions(_Strict):
    """How the base model is loaded: `attn_implementation` goes to `from_pretrained` (`auto`:
    transformers' default, SDPA). `flash_attention_2`/`_3` (or a hub kernel such as
    `kernels-community/flash-attn3`) is what makes `train.batching: packed` worthwhile."""

    attn_implementation: str = "auto"

    @field_validator("attn_implementation")
    @classmethod
    def _known(cls, v: str) -> str:
        if not _ATTN.match(v):
            raise ValueError(
                "must be auto, eager, sdpa, flex_attention, flash_attention_2, "
                f"flash_attention_3 or a hub kernel like kernels-community/flash-attn3; got {v!r}"
            )
        return v


class PeftConfig(_Strict):
    """LoRA via peft; `enabled: false` (or `peft: none` in YAML) means full fine-tuning."""

    enabled: bool = True
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class StandardTask(BaseModel):
    """A standard lm-eval task run with lm-eval's own definition on local rows: `data_files` maps
    split names to files (relative to the experiment file); any other field overrides the same
    field of the task's YAML (e.g. `num_fewshot: 0`). See harness/lm_tasks.py."""

    model_config = ConfigDict(extra="allow")
    task: str = Field(pattern=r"^[A-Za-z0-9_\-.]+$")
    data_files: dict[str, str] = Field(min_length=1)

    def resolved(self, base_dir: Path) -> StandardTask:
        """A copy with absolute data paths (lm-eval resolves relative ones against the cwd)."""
        files = {
            k: str((base_dir / Path(v).expanduser()).resolve()) for k, v in self.data_files.items()
        }
        for split, path in files.items():
            if not Path(path).is_file():
                raise ValueError(f"eval.tasks.{self.task}.data_files.{split}: {path} not found")
        return self.model_copy(update={"data_files": files})


class EvalConfig(_Strict):
    suites: list[str] = Field(default_factory=lambda: ["forgetting", "refusal", "format"])
    dataset: Literal["auto", "toy", "english"] = Field(
        "auto", description="which data set of each suite; auto = toy for the toy model"
    )
    tasks: list[str | StandardTask] = Field(
        default_factory=list,
        description="extra lm-eval tasks (forgetting): a name, or {task, data_files, ...}",
    )
    suite_dirs: list[str] = Field(
        default_factory=list,
        description="extra folders holding suite folders (see evals/README.md)",
    )
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int | None = Field(
        None, ge=1, description="generation budget of every task; None = each task's max_gen_toks"
    )
    interval: int | None = Field(None, gt=0, description="steps between pruning evaluations")
    proxy_limit: int = Field(40, gt=0, description="items per suite in a pruning evaluation")

    @field_validator("tasks", mode="before")
    @classmethod
    def _standard_tasks(cls, v: Any) -> Any:
        """Validate mapping entries as StandardTask here, so a bad one reports its own field
        instead of pydantic's "not a valid string" from the other side of the union."""
        if not isinstance(v, list):
            return v
        out = []
        for item in v:
            if isinstance(item, dict):
                try:
                    item = StandardTask.model_validate(item)
                except ValidationError as e:
                    err = e.errors()[0]
                    where = ".".join(str(x) for x in err["loc"])
                    reason = _REASONS.get(err["type"], err["msg"]).format(**err.get("ctx", {}))
                    raise ValueError(f"{item.get('task', 'entry')}.{where}: {reason}") from None
            out.append(item)
        return out


class Objective(_Strict):
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"


_CONSTRAINT = re.compile(r"^\s*(?P<metric>[\w/.\-]+)\s*(?P<op><=|>=)\s*(?P<value>[-+0-9.eE]+)\s*$")


class Constraint(_Strict):
    metric: str
    op: Literal["<=", ">="]
    value: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        m = _CONSTRAINT.match(text)
        if not m:
            raise ValueError(
                f"constraint {text!r} must look like 'metric >= number' or 'metric <= number'"
            )
        return cls(metric=m["metric"], op=m["op"], value=float(m["value"]))

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when satisfied, positive by how much it is violated."""
        return self.value - value if self.op == ">=" else value - self.value


class SearchSpace(_Strict):
    """A search dimension: float/int ranges (optionally log scale), categorical choices, or a
    grid (every value is tried; use with `sampler: grid` for ablations).

    A dimension may depend on dimensions declared before it: `when: {peft.enabled: true}`
    samples it only in trials where `peft.enabled` took that value (elsewhere the file's own
    value holds), and `cases:` gives one space per condition, e.g. a learning-rate range for
    LoRA and another for full fine-tuning:

        train.learning_rate:
          cases:
            - {when: {peft.enabled: true},  type: float, low: 1.0e-3, high: 1.0e-2, log: true}
            - {when: {peft.enabled: false}, type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    """

    type: Literal["float", "int", "categorical", "grid"] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    when: dict[str, Any] | None = None
    cases: list[SearchSpace] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        if self.cases is not None:
            if self.type is not None or self.when is not None:
                raise ValueError("a dimension with 'cases' takes its type and 'when' per case")
            if not self.cases:
                raise ValueError("'cases' needs at least one case")
            for case in self.cases:
                if case.cases is not None or case.when is None:
                    raise ValueError("each case needs a 'when' and no nested 'cases'")
            return self
        if self.type is None:
            raise ValueError("a search dimension needs a 'type' (or 'cases')")
        if self.type in ("float", "int"):
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(f"{self.type} search needs low < high")
            if self.log and self.low <= 0:
                raise ValueError("log-scale search needs low > 0")
            if self.log and self.step is not None:
                raise ValueError(
                    "log-scale search cannot have a step (Optuna takes one or the other)"
                )
        elif not self.choices:
            raise ValueError(f"{self.type} search needs a non-empty 'choices' list")
        return self

    @property
    def variants(self) -> list[SearchSpace]:
        """The spaces this dimension can take: its cases, or itself."""
        return self.cases or [self]

    def applying(self, sampled: dict[str, Any]) -> SearchSpace | None:
        """The space to sample given the values sampled so far, or None where no `when` holds."""
        for space in self.variants:
            if all(k in sampled and sampled[k] == v for k, v in (space.when or {}).items()):
                return space
        return None

    def values(self) -> list[Any]:
        """Every value a grid or categorical dimension can take (over all its cases)."""
        return list(dict.fromkeys(v for space in self.variants for v in space.choices or []))


def check_conditions(search: dict[str, SearchSpace]) -> None:
    """A `when` names a grid or categorical dimension declared before it, with one of its
    values; the cases of a dimension cover each combination of the values they test once."""
    import itertools

    seen: list[str] = []
    for path, space in search.items():
        parents = list(dict.fromkeys(k for v in space.variants for k in (v.when or {})))
        for parent in parents:
            if parent not in seen:
                raise ValueError(
                    f"search.{path}: 'when' names {parent!r}, which is not a search dimension "
                    f"declared before it"
                )
            if any(v.type in ("float", "int") for v in search[parent].variants):
                raise ValueError(f"search.{path}: 'when' needs {parent!r} to have choices")
        for variant in space.variants:
            for parent, value in (variant.when or {}).items():
                if value not in search[parent].values():
                    raise ValueError(
                        f"search.{path}: when {parent} = {value!r}, but {parent} takes "
                        f"{search[parent].values()}"
                    )
        if space.cases:
            for combo in itertools.product(*(search[p].values() for p in parents)):
                point = dict(zip(parents, combo, strict=True))
                hits = [v for v in space.cases if all(point[k] == x for k, x in v.when.items())]
                if len(hits) != 1:
                    where = ", ".join(f"{k} = {v!r}" for k, v in point.items())
                    problem = "no case covers" if not hits else f"{len(hits)} cases match"
                    raise ValueError(f"search.{path}: {problem} {where}")
        seen.append(path)


def grid_points(search: dict[str, SearchSpace]) -> list[dict[str, Any]]:
    """Every configuration of a grid, in file order; a conditional dimension contributes
    its values only where its condition holds (so no configuration is run twice)."""
    points: list[dict[str, Any]] = [{}]
    for path, space in search.items():
        grown = []
        for point in points:
            applying = space.applying(point)
            choices = applying.choices if applying is not None else None
            grown += [{**point, path: c} for c in choices] if choices else [point]
        points = grown
    return points


# Fields that define the study itself (where it lives, how it searches, what it judges by): a
# trial cannot vary them. `model` is here because the base model is evaluated once per study.
NOT_SEARCHABLE = (
    "name",
    "model",
    "search",
    "objectives",
    "constraints",
    "sampler",
    "pruner",
    "n_trials",
    "timeout",
    "storage",
    "tracking_uri",
    "output_dir",
    "thresholds",
    "replicates",
)


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
    seed: int = 0
    model: str = Field("toy", description="HF path or local dir, 'toy' (demo size) or 'toy:tiny'")
    model_options: ModelOptions = Field(default_factory=ModelOptions)
    data: DataConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    peft: PeftConfig = Field(default_factory=PeftConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: dict[str, SearchSpace] = Field(default_factory=dict)
    objectives: list[Objective] = Field(default_factory=list)
    constraints: list[Constraint] = Field(default_factory=list)
    sampler: Literal["tpe", "grid", "random", "nsga2"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    n_trials: int = Field(4, ge=1)
    replicates: int = Field(
        1, ge=1, description="runs of each sampled configuration, with seeds seed, seed+1, ..."
    )
    timeout: float | None = Field(None, gt=0, description="seconds for the whole study")
    storage: str | None = Field(
        None,
        description="Optuna storage URL; default sqlite next to a sqlite tracking db, else "
        "beside the experiment file (a relative sqlite path: against the working directory)",
    )
    tracking_uri: str = Field(
        "sqlite:///mlflow.db", description="a relative sqlite path: against the working directory"
    )
    save_models: bool = False
    output_dir: str = Field("runs", description="where trial models/records go (relative: to cwd)")
    thresholds: dict[str, float] = Field(default_factory=dict, description="gate thresholds")
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _raw: dict = PrivateAttr(default_factory=dict)

    @field_validator("peft", mode="before")
    @classmethod
    def _peft_none(cls, v: Any) -> Any:
        return {"enabled": False} if v is None or v in ("none", "None", False) else v

    @field_validator("constraints", mode="before")
    @classmethod
    def _parse_constraints(cls, v: Any) -> Any:
        return [Constraint.parse(c) if isinstance(c, str) else c for c in (v or [])]

    @model_validator(mode="after")
    def _check_search(self) -> Experiment:
        """Every search problem at once, one line each (pydantic lists field problems itself)."""
        raw = self.model_dump()
        problems = []
        for path in self.search:
            try:
                if path.split(".")[0] in NOT_SEARCHABLE:
                    raise ValueError(f"'{path}' is a setting of the study, not of a trial")
                get_path(raw, path)  # raises for a path that names nothing
            except ValueError as e:
                problems.append(f"search: {e}")
        if self.replicates > 1 and "seed" in self.search:
            problems.append("search: 'seed' cannot be searched when replicates > 1 sets it")
        try:
            check_conditions(self.search)
        except ValueError as e:
            problems.append(str(e))
        variants = [v for s in self.search.values() for v in s.variants]
        if self.sampler == "grid" and any(v.type != "grid" for v in variants):
            problems.append("sampler 'grid' needs every search dimension to be type: grid")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def base_dir(self) -> Path:
        """The experiment file's folder: relative data paths resolve against it."""
        return self._base_dir

    @property
    def raw(self) -> dict:
        """The validated input as written (after overrides): what `with_params` starts from."""
        return copy.deepcopy(self._raw)

    @property
    def is_toy(self) -> bool:
        return models.is_toy(self.model)

    @property
    def toy_size(self) -> str:
        return models.toy_size(self.model)


class SuiteMetrics(_Strict):
    """A suite's metric declarations as the study ran them (its suite.yaml's `metrics`), so a
    report reads names, directions, gates and thresholds without the suite folders."""

    name: str
    metrics: list[MetricSpec] = Field(default_factory=list)


class StudySpec(_Strict):
    """What a study is, logged once on its parent run as `study/spec.json` and read back by
    reports with this same model (nothing is re-parsed from parameter strings). Spec files
    written before suites carried their metrics list suite names only; those read back as
    suites without metrics."""

    name: str
    model: str
    sampler: str
    pruner: str
    replicates: int = 1
    objectives: list[Objective]
    constraints: list[Constraint] = Field(default_factory=list)
    search: dict[str, SearchSpace] = Field(default_factory=dict)
    suites: list[SuiteMetrics] = Field(default_factory=list)

    @field_validator("suites", mode="before")
    @classmethod
    def _names_only(cls, v: Any) -> Any:
        return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @classmethod
    def of(
        cls, exp: Experiment, objectives: list[tuple[str, str]], suites: list[Suite]
    ) -> StudySpec:
        """`suites`: the loaded suites of `exp.eval.suites`."""
        return cls(
            name=exp.name,
            model=exp.model,
            sampler=exp.sampler,
            pruner=exp.pruner,
            replicates=exp.replicates,
            objectives=[Objective(metric=m, direction=d) for m, d in objectives],
            constraints=exp.constraints,
            search=exp.search,
            suites=[SuiteMetrics(name=s.name, metrics=list(s.metrics)) for s in suites],
        )


# ---------------------------------------------------------------- dotted paths


def _step(node: Any, key: str, path: str) -> tuple[Any, Any]:
    """Resolve one path segment; list items are addressed by their `name` or by index."""
    if isinstance(node, dict):
        if key not in node:
            raise ValueError(f"'{path}' names nothing: no field '{key}'")
        return node, key
    if isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict) and item.get("name") == key:
                return node, i
        if key.isdigit() and int(key) < len(node):
            return node, int(key)
        raise ValueError(f"'{path}' names nothing: no list item named '{key}'")
    raise ValueError(f"'{path}' names nothing: '{key}' is inside a plain value")


def get_path(raw: dict, path: str) -> Any:
    node: Any = raw
    for key in path.split("."):
        parent, k = _step(node, key, path)
        node = parent[k]
    return node


def set_path(raw: dict, path: str, value: Any, create: bool = True) -> None:
    """Set `path` in the raw (unvalidated) experiment dict; a missing final dict key is created."""
    keys = path.split(".")
    node: Any = raw
    for key in keys[:-1]:
        if isinstance(node, dict) and key not in node and create:
            node[key] = {}
        parent, k = _step(node, key, path)
        node = parent[k]
    last = keys[-1]
    if isinstance(node, dict):
        node[last] = value
    else:
        parent, k = _step(node, last, path)
        parent[k] = value


_SCIENTIFIC = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with the value parsed as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in text:
        raise HarnessError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and _SCIENTIFIC.match(parsed):  # YAML 1.1 reads 1e-4 as a string
        parsed = float(parsed)
    return key.strip(), parsed


# ---------------------------------------------------------------- loading and errors


_REASONS = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "literal_error": "must be one of {expected}",
    "too_short": "must have at least {min_length} item(s)",
    "string_pattern_mismatch": "must match {pattern}",
}


def _field_path(loc: tuple, raw: dict) -> str:
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list):
            item = node[key] if key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"{name}" if name else f"{key}")
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(p for p in parts if p)


def format_validation_error(err: ValidationError, raw: dict, source: str) -> str:
    """Every problem, one line each: `<file>: <field.path>: <reason>`."""
    lines = []
    for problem in err.errors():
        loc = tuple(
            x for x in problem["loc"] if not (isinstance(x, str) and x.startswith("function-"))
        )
        field = _field_path(loc, raw)
        template = _REASONS.get(problem["type"])
        reason = template.format(**problem.get("ctx", {})) if template else problem["msg"]
        for line in reason.removeprefix("Value error, ").splitlines():
            lines.append(f"{source}: {field}: {line}" if field else f"{source}: {line}")
    return "\n".join(dict.fromkeys(lines))


def validate(raw: dict, source: str, base_dir: Path) -> Experiment:
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise HarnessError(format_validation_error(e, raw, source)) from None
    except ValueError as e:  # from get_path inside validators
        raise HarnessError(f"{source}: {e}") from None
    try:
        exp.eval.tasks = [
            t.resolved(base_dir) if isinstance(t, StandardTask) else t for t in exp.eval.tasks
        ]
    except ValueError as e:
        raise HarnessError(f"{source}: {e}") from None
    exp._base_dir = base_dir
    exp._raw = copy.deepcopy(raw)
    return exp


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read, override and validate an experiment file; every problem is one HarnessError line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: experiment file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise HarnessError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping of experiment fields at the top level")
    for text in overrides or []:
        key, value = parse_override(text)
        try:
            set_path(raw, key, value)
        except ValueError as e:
            raise HarnessError(f"--set {text}: {e}") from None
    return validate(raw, str(path), path.resolve().parent)


def with_params(exp: Experiment, params: dict[str, Any]) -> Experiment:
    """A copy of `exp` with dotted-path values set (a trial's sampled parameters), re-validated."""
    raw = exp.raw
    for key, value in params.items():
        set_path(raw, key, value)
    return validate(raw, f"{exp.name} (trial parameters {params})", exp.base_dir)


def resolve_data_path(exp: Experiment, path: str) -> str:
    """Source paths: `toy:` → the toy world's data dir; `hf:` hub names unchanged and `hf:./dir`
    made absolute; else relative to the experiment file."""
    if path.startswith("toy:"):
        from harness.toy.build import build_toy_world

        return str(build_toy_world(exp.toy_size if exp.is_toy else "demo").data_dir / path[4:])
    if path.startswith("hf:"):
        local = path[3:]
        if local.startswith((".", "~")):  # a local folder, relative to the experiment file
            return "hf:" + str((exp.base_dir / Path(local).expanduser()).resolve())
        return path
    if Path(path).is_absolute():
        return path
    return str((exp.base_dir / path).resolve())


def resolve_tracking_uri(uri: str) -> str:
    """`sqlite:///relative.db` → absolute against the working directory (where `harness report`
    and `harness gate` look by default), so later commands from elsewhere find the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def default_storage(tracking_uri: str, base_dir: Path) -> str:
    """Optuna storage next to a sqlite tracking database (`mlflow.db` → `optuna.db`); with a
    tracking server, `optuna.db` beside the experiment file (`base_dir`), not wherever the
    command happens to run."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).with_name("optuna.db"))
    return "sqlite:///" + str((base_dir / "optuna.db").resolve())
