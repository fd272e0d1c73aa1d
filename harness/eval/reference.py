"""Measured vs published: the base model's scores against the reference scores an experiment
declares (`eval.reference_scores`), each with its 95% interval over the items.

Before trusting any delta a careful user checks that the eval setup reproduces the base model's
published numbers: a published figure outside the interval means the prompt, the template, the
metric, the shots or the weights differ from the publication's, and the row says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from harness.config.schema import ReferenceScore
from harness.eval.lm_tasks import usable_score


@dataclass(frozen=True)
class ReferenceCheck:
    metric: str  # <task>/<metric>
    reference: float
    source: str
    measured: float | None  # None: no item of that task carried that metric
    low: float | None
    high: float | None
    n: int

    @property
    def verdict(self) -> str:
        """`within` (the reference lies in the 95% interval), `outside`, or `not measured`."""
        if self.measured is None or self.low is None or self.high is None:
            return "not measured"
        return "within" if self.low <= self.reference <= self.high else "outside"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def check_references(
    records: dict[str, list[dict]], references: Sequence[ReferenceScore]
) -> list[ReferenceCheck]:
    """One row per reference: the mean of `<metric>` over the items of task `<task>` (in any
    suite; standard tasks are in forgetting), with a Wilson interval for 0/1 scores and a
    normal one (mean ± 1.96 standard errors) otherwise."""
    from harness.stats.comparison import wilson_interval

    rows = []
    for ref in references:
        task, metric = ref.metric.split("/", 1)
        scores = [
            float(r["scores"][metric])
            for recs in records.values()
            for r in recs
            if r.get("task") == task and usable_score(r.get("scores", {}).get(metric))
        ]
        n = len(scores)
        if not n:
            rows.append(ReferenceCheck(ref.metric, ref.value, ref.source, None, None, None, 0))
            continue
        mean = sum(scores) / n
        if all(s in (0.0, 1.0) for s in scores):
            low, high = wilson_interval(int(sum(scores)), n)
        else:
            sd = (sum((s - mean) ** 2 for s in scores) / max(n - 1, 1)) ** 0.5
            low, high = mean - 1.96 * sd / n**0.5, mean + 1.96 * sd / n**0.5
        rows.append(ReferenceCheck(ref.metric, ref.value, ref.source, mean, low, high, n))
    return rows


def format_references(rows: Sequence[ReferenceCheck]) -> str:
    """A plain-text table for the console: measured [95% interval] vs reference, flagged."""
    if not rows:
        return ""
    lines = ["reference scores (base model; published vs measured, 95% interval):"]
    for r in rows:
        measured = (
            f"{r.measured:.4f} [{r.low:.4f}, {r.high:.4f}] n={r.n}"
            if r.measured is not None
            else "not measured (task or metric absent from the records)"
        )
        flag = {"within": "ok", "outside": "MISMATCH", "not measured": "?"}[r.verdict]
        lines.append(
            f"  {r.metric:<28} reference {r.reference:.4f}  measured {measured}  {flag}"
            f"  ({r.source})"
        )
    return "\n".join(lines)
