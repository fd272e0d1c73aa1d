"""The schema of a suite's metric declarations (its suite.yaml `metrics`), shared by the suites
that produce the metrics and the reports and gate that read them back from a study's spec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field

from harness.config.base import Strict

DEFAULT_THRESHOLD = 0.02  # allowed change of a gated metric that declares none


@dataclass(frozen=True)
class MetricSpec:
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

    name: str
    score: str
    where: dict[str, Any] = field(default_factory=dict)
    by: str | None = None
    interval: str | None = None
    compare_base: bool = False
    higher_is_better: bool = True
    gate: bool = False
    threshold: float = DEFAULT_THRESHOLD
    label: str | None = None
    agree_by: str | None = None
    unit: str = "item"


class SuiteMetrics(Strict):
    """A suite's metric declarations as the study ran them (its suite.yaml's `metrics`), so a
    report reads names, directions, gates and thresholds without the suite folders."""

    name: str
    metrics: list[MetricSpec] = Field(default_factory=list)


class HasMetrics(Protocol):
    """A loaded suite as far as a study spec needs it (its name and metric declarations)."""

    name: str
    metrics: Sequence[MetricSpec]
