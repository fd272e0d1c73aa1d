"""The schema of a suite folder's `suite.yaml`: what a suite declares (its tasks, data sets,
metrics, judge), validated like an experiment file. The suites that produce the metrics and the
reports and gate that read them back from a study's spec share these models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from harness.config.base import Strict

DEFAULT_THRESHOLD = 0.02  # allowed change of a gated metric that declares none
DATASETS = ("toy", "english")
Dataset = Literal["toy", "english"]
OutputType = Literal["generate_until", "multiple_choice", "loglikelihood"]


class MetricSpec(BaseModel):
    """One summary metric: the mean of per-sample score `score` over the records that match
    `where` (doc field -> value), optionally once per value of doc field `by`, with a Wilson
    interval and/or a paired comparison against the base model. With `agree_by` the unit is a
    group of records sharing that doc field: the metric is the share of groups whose records
    all have the same score (e.g. paraphrases of one fact answered alike).

    `gate`: the release gate judges it by default, allowing a change of `threshold` in the bad
    direction (`higher_is_better` says which that is); per-group (`by`) metrics gate only
    when a user threshold names them. `label`: a short column header for tables.

    `unit: part`: the score is a list, one verdict per part of an item (lm-eval ifeval's
    per-instruction verdicts); the metric is the share of all parts that pass, and its interval
    (`cluster`) treats each item as a cluster of parts, which are not independent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    score: str
    where: dict[str, Any] = Field(default_factory=dict)
    by: str | None = None
    interval: Literal["wilson", "cluster"] | None = None
    compare_base: StrictBool = False
    higher_is_better: StrictBool = True
    gate: StrictBool = False
    threshold: float = Field(DEFAULT_THRESHOLD, ge=0, lt=1)
    label: str | None = None
    agree_by: str | None = None
    unit: Literal["item", "part"] = "item"

    @model_validator(mode="after")
    def _consistent(self) -> MetricSpec:
        if self.gate and self.by:
            raise ValueError("gate: per-group ('by') metrics gate only when a threshold names them")
        if self.agree_by is not None and self.compare_base:
            raise ValueError("agree_by cannot be combined with compare_base")
        fits = {"item": "wilson", "part": "cluster"}[self.unit]
        if self.interval not in (None, fits):
            raise ValueError(f"interval: must be '{fits}' or absent for unit {self.unit}")
        if self.unit == "part" and (self.compare_base or self.agree_by):
            raise ValueError("unit: a 'part' metric cannot compare_base or agree_by")
        return self


class JudgeSpec(BaseModel):
    """A suite's `judge:` field, validated once when the suite is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rules", "hf_classifier", "chat"] = "rules"
    model: str | None = None
    refusal_labels: tuple[str, ...] = ()
    partial_labels: tuple[str, ...] = ()
    prompt: str | None = None
    batch_size: int = 8
    max_new_tokens: int = 8

    @model_validator(mode="after")
    def _complete(self) -> JudgeSpec:
        if self.kind == "rules":
            return self
        if not self.model:
            raise ValueError(f"kind {self.kind} needs 'model' (a local directory or hub id)")
        if not self.refusal_labels:
            raise ValueError(f"kind {self.kind} needs 'refusal_labels'")
        if self.kind == "chat" and (not self.prompt or "{reply}" not in self.prompt):
            raise ValueError(
                "kind chat needs 'prompt' containing {reply} (and optionally {prompt})"
            )
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("batch_size and max_new_tokens must be at least 1")
        return self

    @property
    def name(self) -> str:
        """How runs and `judge_accuracy.json` name this judge."""
        return self.kind if self.kind == "rules" else f"{self.kind}:{self.model}"


class SuiteFile(Strict):
    """A suite folder's `suite.yaml`. `hosts_tasks`: the experiment's `eval.tasks` (standard
    lm-eval tasks) run in this suite's call and report as its metrics, per task."""

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$")
    tasks: list[str] = Field(min_length=1)
    data: dict[Dataset, str] = Field(min_length=1)
    output_type: OutputType
    chat_template: StrictBool | None = None  # default: true for generation suites
    metrics: list[MetricSpec] = Field(min_length=1)
    split_by: str | None = None
    interleave_by: str | None = None
    max_gen_toks: dict[Dataset, StrictInt] = Field(default_factory=dict)
    judge: JudgeSpec | None = None
    trained_items: StrictBool = False
    hosts_tasks: StrictBool = False
    # doc field naming each item's family (paraphrases of one fact): intervals, tests and
    # sample sizes over this suite count families, since a family's items fail together
    cluster_by: str | None = Field(None, min_length=1)
    over_budget: Literal["error", "skip"] = "error"  # items that cannot fit the budget

    @model_validator(mode="after")
    def _consistent(self) -> SuiteFile:
        compared = [m.by for m in self.metrics if m.compare_base]
        if len(compared) != len(set(compared)):
            raise ValueError("metrics: at most one compare_base metric per 'by' grouping")
        if any(v < 1 for v in self.max_gen_toks.values()):
            raise ValueError("max_gen_toks: budgets must be positive integers")
        return self


class SuiteMetrics(Strict):
    """A suite's metric declarations as the study ran them (its suite.yaml's `metrics`), so a
    report reads names, directions, gates and thresholds without the suite folders."""

    name: str
    metrics: list[MetricSpec] = Field(default_factory=list)
    hosts_tasks: bool = False
    cluster_by: str | None = None  # doc field naming each item's family (see SuiteFile)


class HasMetrics(Protocol):
    """A loaded suite as far as a study spec needs it (its name and metric declarations)."""

    name: str
    metrics: Sequence[MetricSpec]
    hosts_tasks: bool
