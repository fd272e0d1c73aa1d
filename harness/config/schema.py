"""Experiment definitions: the YAML file a user writes, validated completely before any work.

One mechanism sets values by dotted path (`train.learning_rate`, `data.sources.replay.weight`):
`--set` overrides on the command line and the values an Optuna trial samples for its `search`
space both go through `set_path`, and the result is validated again, so a trial's resolved
configuration obeys exactly the same rules as a hand-written one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.config.base import REASONS, Strict
from harness.config.paths import get_path
from harness.config.search import NOT_SEARCHABLE, SearchSpace, check_conditions
from harness.config.suite import HasMetrics, SuiteMetrics

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # beside where commands run; see resolve_tracking_uri


class Source(Strict):
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
    licence: str | None = Field(None, description="the data's licence, listed in study reports")
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


class MixOps(Strict):
    """Failure modes of SFT data applied on purpose (see `harness.sft.mix_ops`): keep a share of
    each chat source's prompts at the same budget, contradict or corrupt a share of answers."""

    narrow: float = Field(1.0, gt=0, le=1, description="share of distinct prompts kept")
    conflict: float = Field(0.0, ge=0, le=0.5, description="share of examples contradicted")
    corrupt: float = Field(0.0, ge=0, le=1, description="share of answers degraded")
    sources: list[str] = Field(
        default_factory=list, description="chat sources affected; empty = every one"
    )


class DataConfig(Strict):
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


class TrainConfig(Strict):
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
        "auto",
        description="packed: no padding, exact per-example attention; auto packs on CUDA",
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


class ModelOptions(Strict):
    """How the base model is loaded: `attn_implementation` goes to `from_pretrained` (`auto`:
    transformers' default, SDPA). `flash_attention_2`/`_3` (or a hub kernel such as
    `kernels-community/flash-attn3`) also runs packed rows; without one, packed training uses
    torch's own varlen kernel on CUDA (`harness.sft.attention`)."""

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


class PeftConfig(Strict):
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


def task_name(entry: str | StandardTask) -> str:
    """The lm-eval task name of an `eval.tasks` entry (a name, or a StandardTask's `task`)."""
    return entry if isinstance(entry, str) else entry.task


class ReferenceScore(Strict):
    """A published score of the base model, to check the eval setup against before trusting
    any delta: `metric` is `<task>/<metric>` of per-item scores (e.g. `arc_easy/acc`), `value` a
    fraction, `source` where it was published and how (harness, shots, metric)."""

    metric: str = Field(pattern=r"^[A-Za-z0-9_\-.]+/[A-Za-z0-9_\-.]+$")
    value: float = Field(ge=0, le=1, description="a fraction: 0.5412, not 54.12")
    source: str = Field(min_length=1)


class EvalConfig(Strict):
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
    reference_scores: list[ReferenceScore] = Field(
        default_factory=list,
        description="published base-model scores: {metric: task/metric, value, source}",
    )
    limit: int | None = Field(None, gt=0)
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int | None = Field(
        None, ge=1, description="generation budget of every task; None = each task's max_gen_toks"
    )
    interval: int | None = Field(None, gt=0, description="steps between pruning evaluations")
    proxy_limit: int = Field(40, gt=0, description="items per suite in a pruning evaluation")
    timeout: float | None = Field(
        None,
        gt=0,
        description="seconds a trial's evaluation may run before the trial fails (with every "
        "thread's stack written next to its results); None = no limit",
    )

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
                    reason = REASONS.get(err["type"], err["msg"]).format(**err.get("ctx", {}))
                    raise ValueError(f"{item.get('task', 'entry')}.{where}: {reason}") from None
            out.append(item)
        return out


class ReportConfig(Strict):
    """How the study report decides its effects table (`harness report`)."""

    multiplicity: Literal["holm", "bh"] = Field(
        "holm",
        description="error control over the effects table's cells: holm (family-wise: the "
        "chance of any falsely decided cell) or bh (Benjamini-Hochberg: the false discovery rate)",
    )
    common_items: bool = Field(
        False,
        description="pair runs on the items they share when a suite's items differ between "
        "runs (the report says how many were dropped) instead of refusing to compare",
    )


class Objective(Strict):
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"


_CONSTRAINT = re.compile(r"^\s*(?P<metric>[\w/.\-]+)\s*(?P<op><=|>=)\s*(?P<value>[-+0-9.eE]+)\s*$")


class Constraint(Strict):
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


class Experiment(Strict):
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
        DEFAULT_TRACKING_URI, description="a relative sqlite path: against the working directory"
    )
    save_models: bool = False
    output_dir: str = Field("runs", description="where trial models/records go (relative: to cwd)")
    thresholds: dict[str, float] = Field(default_factory=dict, description="gate thresholds")
    report: ReportConfig = Field(default_factory=ReportConfig)
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
        return is_toy(self.model)

    @property
    def toy_size(self) -> str:
        return toy_size(self.model)


class StudySpec(Strict):
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
    report: ReportConfig = Field(default_factory=ReportConfig)
    base_origin: str | None = None  # "base dequantized from 4-bit Q4_1 weights (...)"

    @field_validator("suites", mode="before")
    @classmethod
    def _names_only(cls, v: Any) -> Any:
        return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @classmethod
    def of(
        cls,
        exp: Experiment,
        objectives: list[tuple[str, str]],
        suites: Sequence[HasMetrics],
        base_origin: str | None = None,
    ) -> StudySpec:
        """`suites`: the loaded suites of `exp.eval.suites`; `base_origin`: a sentence on where
        the base weights came from (a dequantized GGUF), or None."""
        return cls(
            name=exp.name,
            model=exp.model,
            sampler=exp.sampler,
            pruner=exp.pruner,
            replicates=exp.replicates,
            objectives=[Objective(metric=m, direction=d) for m, d in objectives],
            constraints=exp.constraints,
            search=exp.search,
            suites=[SuiteMetrics.of(s) for s in suites],
            report=exp.report,
            base_origin=base_origin,
        )


# ---------------------------------------------------------------- dotted paths


# ---------------------------------------------------------------- loading and errors


def is_toy(name: str) -> bool:
    """`toy` (the demo size) or `toy:<size>`: a model of the offline toy world."""
    return name == "toy" or name.startswith("toy:")


def toy_size(name: str) -> str:
    return name.split(":", 1)[1] if ":" in name else "demo"
