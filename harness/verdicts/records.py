"""Per-sample records (`records/<suite>.jsonl` of a run): read back from MLflow, indexed by
item, and cut into the items and scores of each declared metric.

The release gate and the study report's effects both pair runs item by item; they read a
metric's items and scores here, so both pair the same items the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config.suite import MetricSpec
from harness.eval.suites import field_values, matches
from harness.util.errors import HarnessError
from harness.util.files import read_jsonl
from harness.util.names import metric_name

if TYPE_CHECKING:
    from harness.config.suite import SuiteMetrics
    from harness.eval.suites import Suite

Key = tuple[str, str]  # (task, id) within a suite
Indexed = dict[str, dict[Key, dict]]  # one run's records: suite -> item -> record
PRIMARY = "score"  # older records hold only their suite's primary score, as `score`


def load_records(client: Any, run_id: str, suites: Sequence[str] | None = None) -> dict:
    """Per-sample records of a run, `{suite: [record, ...]}` from `records/<suite>.jsonl`."""
    from mlflow.exceptions import MlflowException

    try:
        listed = client.list_artifacts(run_id, "records")
    except (MlflowException, OSError) as exc:
        raise HarnessError(f"run {run_id}: cannot list records/ artifacts: {exc}") from None
    names = [Path(f.path).name for f in listed if not f.is_dir and f.path.endswith(".jsonl")]
    wanted = [n for n in names if suites is None or n[: -len(".jsonl")] in suites]
    out: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(wanted):
            try:
                local = client.download_artifacts(run_id, f"records/{name}", tmp)
            except (MlflowException, OSError) as exc:
                raise HarnessError(f"run {run_id}: cannot read records/{name}: {exc}") from None
            out[name[: -len(".jsonl")]] = read_jsonl(local, f"run {run_id} records/{name}")
    return out


def index_records(records: list[dict], source: str, suite: str) -> dict[Key, dict]:
    """Records by (task, id), each with a `scores` dict (older records carry only `score`)."""
    out: dict[Key, dict] = {}
    for i, r in enumerate(records, 1):
        if r.get("id") is None:
            raise HarnessError(f"{source} records/{suite}.jsonl line {i}: no 'id' field")
        scores = dict(r.get("scores") or {})
        if "score" in r:
            scores.setdefault(PRIMARY, r["score"])
        for k, v in list(scores.items()):
            if _parts(v):  # a `unit: part` score, one verdict per part: the item's mean
                scores[k] = v = sum(v) / len(v)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise HarnessError(
                    f"{source} records/{suite}.jsonl id {r['id']}: score {k} must be a number, "
                    f"got {v!r}"
                )
        key = (str(r.get("task", "")), str(r["id"]))
        if key in out:
            raise HarnessError(
                f"{source} records/{suite}.jsonl: item {key[0]}/{key[1]} appears twice"
            )
        out[key] = {**r, "scores": {k: float(v) for k, v in scores.items()}}
    return out


def metric_items(
    suite: Suite | SuiteMetrics, items: dict[Key, dict]
) -> list[tuple[str, MetricSpec, list[Key]]]:
    """(metric name, declaration, its items in a fixed order) for every metric of one suite,
    per-group (`by`) metrics once per group. A metric whose score the records lack (older
    runs) is left out."""
    primary = suite.metrics[0].score
    out = []
    for m in suite.metrics:
        rows = {k: r for k, r in items.items() if matches(r, m.where)}
        groups: dict[str | None, list[Key]] = {}
        for k in sorted(rows):
            for value in [None] if m.by is None else field_values(rows[k], m.by):
                groups.setdefault(value, []).append(k)
        for value, keys in groups.items():
            if not all(m.score in items[k]["scores"] or m.score == primary for k in keys):
                continue
            parts = (suite.name, m.name) if value is None else (suite.name, str(value), m.name)
            out.append((metric_name(*parts), m, keys))
    return list({name: (name, m, keys) for name, m, keys in out}.values())


def item_scores(
    runs: Sequence[Indexed], suite: str, score: str, keys: list[Key]
) -> list[list[float]]:
    """One row of per-item scores per run (a record without `score` gives its primary one)."""

    def value(scores: dict[str, float]) -> float:
        return scores[score] if score in scores else scores[PRIMARY]

    return [[value(run[suite][k]["scores"]) for k in keys] for run in runs]


def item_clusters(
    items: dict[Key, dict], keys: list[Key], cluster_by: str | None
) -> list[str] | None:
    """One family label per item, from the suite's `cluster_by` doc field (an item without
    the field is a family of its own); None when the suite declares no families."""
    if cluster_by is None:
        return None
    labels = []
    for k in keys:
        values = field_values(items[k], cluster_by)
        labels.append(json.dumps(values if values else ["item", *k], default=str))
    return labels


def content_mismatch(key: Key, a: dict, b: dict, src_a: str, src_b: str) -> str | None:
    """Why two records of one item differ in content (their `item_hash`: prompt, target,
    choices, generation settings), naming the item; None when they agree (or a record
    predates hashes)."""
    if a.get("item_hash") is None or b.get("item_hash") is None or a["item_hash"] == b["item_hash"]:
        return None
    what = next(
        (f for f in ("prompt", "target", "choices", "generation") if a.get(f) != b.get(f)),
        "item content",
    )
    detail = f" ({a.get(what)} vs {b.get(what)})" if what == "generation" else ""
    return f"item {key[0]}/{key[1]}: {what} differs between {src_a} and {src_b}{detail}"


def paired_keys(
    runs: Sequence[tuple[str, dict[Key, dict]]], suite: str, *, common: bool = False
) -> tuple[list[Key], int]:
    """The items of one suite that every run holds with the same content, sorted, and how
    many items some run holds that are left out. Pairing by (task, id) alone would silently
    pair different items when a suite file was edited between runs, so an item missing from
    a run or differing in content (`content_mismatch`) is an error naming the suite and the
    first such item, unless `common`: then the comparison uses the common items and the
    count says how many were dropped."""
    (ref_src, ref), rest = runs[0], runs[1:]
    every = set(ref).union(*(set(r) for _, r in rest))
    kept, problems = [], []
    for key in sorted(every):
        lacking = next((src for src, recs in runs if key not in recs), None)
        if lacking is not None:
            problems.append(f"item {key[0]}/{key[1]} is missing from {lacking}")
            continue
        why = next(
            (
                why
                for src, recs in rest
                if (why := content_mismatch(key, ref[key], recs[key], ref_src, src))
            ),
            None,
        )
        if why is None:
            kept.append(key)
        else:
            problems.append(why)
    if problems and not common:
        raise HarnessError(
            f"suite '{suite}' has {len(problems)} item(s) not held alike by every run, the "
            f"first: {problems[0]}; re-evaluate on the same items, or compare the common items "
            "only (gate: --common-items; study report: report.common_items: true)"
        )
    return kept, len(every) - len(kept)


def _parts(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
    )
