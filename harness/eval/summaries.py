"""Per-sample records -> summary metrics: each suite's declared metrics, with intervals and paired
comparisons against the base model where the suite asks for them."""

from __future__ import annotations

import json

from harness.eval.lm_tasks import usable_score
from harness.eval.suites import Suite, field_values, matches
from harness.util.errors import HarnessError
from harness.util.names import metric_name


def summarize(
    suite: Suite, records: list[dict], base_records: list[dict] | None = None
) -> dict[str, float]:
    """The suite's summary metrics from per-sample records (see its `suite.yaml`).

    A metric with no matching records is left out. A `unit: part` metric is the share of all
    parts' verdicts (list scores) that pass, with a cluster interval (`part_interval`). Metrics
    with `compare_base` also get
    `base_<name>`, `delta` (candidate - base, paired over the same items), `delta_low`,
    `delta_high` (Tango's interval; a paired t for non-0/1 scores; by family where the suite
    declares `cluster_by`) and `mcnemar_p` (exact; `p_value` otherwise).
    """
    from harness.stats.comparison import paired_comparison, ratio_interval, wilson_interval

    base = {_key(r): r for r in base_records} if base_records is not None else None
    out: dict[str, float] = {}
    for m in suite.metrics:
        rows = [r for r in records if matches(r, m.where)]
        if m.unit == "part":
            out |= _part_metric(suite, m, rows, ratio_interval)
            continue
        if any(isinstance(r["scores"].get(m.score), list) for r in rows):
            raise HarnessError(
                f"suite {suite.name}: metric {m.name}: per-sample score '{m.score}' is a list "
                "(one value per part of an item); summarise a per-item score instead"
            )
        rows = [r for r in rows if usable_score(r["scores"].get(m.score))]
        groups: dict[str | None, list[dict]] = {}
        for r in rows:
            for value in [None] if m.by is None else field_values(r, m.by):
                groups.setdefault(value, []).append(r)
        for value, group in groups.items():
            prefix = (suite.name,) if value is None else (suite.name, str(value))
            scores = [r["scores"][m.score] for r in group]
            if m.agree_by:  # one 0/1 score per group: do all its records agree?
                agreeing: dict[str, set[float]] = {}
                for r, score in zip(group, scores, strict=True):
                    agreeing.setdefault(json.dumps(field_values(r, m.agree_by)), set()).add(score)
                scores = [float(len(v) == 1) for v in agreeing.values()]
            name = metric_name(*prefix, m.name)
            out[name] = sum(scores) / len(scores)
            if m.interval == "wilson" and all(s in (0.0, 1.0) for s in scores):
                out[name + "_low"], out[name + "_high"] = wilson_interval(
                    int(sum(scores)), len(scores)
                )
            if not (m.compare_base and base is not None):
                continue
            pairs = [(base[_key(r)], r) for r in group if _key(r) in base]
            for b, r in pairs:
                if b["doc_hash"] != r["doc_hash"]:
                    raise HarnessError(
                        f"suite {suite.name}: item {r['task']}/{r['id']} differs between base "
                        "and candidate records; were they run on different data?"
                    )
            if not pairs:
                continue
            cmp = paired_comparison(
                [b["scores"][m.score] for b, _ in pairs],
                [r["scores"][m.score] for _, r in pairs],
                clusters=[json.dumps(field_values(r, suite.cluster_by)) for _, r in pairs]
                if suite.cluster_by
                else None,
            )
            p_name = "mcnemar_p" if cmp.test == "mcnemar_exact" else "p_value"
            out[metric_name(*prefix, f"base_{m.name}")] = cmp.mean_a
            out[metric_name(*prefix, "delta")] = cmp.diff
            out[metric_name(*prefix, "delta_low")] = cmp.ci_low
            out[metric_name(*prefix, "delta_high")] = cmp.ci_high
            out[metric_name(*prefix, p_name)] = cmp.p_value
    return out


def _part_metric(suite: Suite, m, rows: list[dict], interval) -> dict[str, float]:
    """A `unit: part` metric: passed parts over all parts, per `by` group; each item is a
    cluster of parts (its instructions share one reply), so the interval is the ratio
    estimator's, not a binomial one over parts."""
    groups: dict[str | None, list[list[float]]] = {}
    for r in rows:
        parts = r["scores"].get(m.score)
        if not isinstance(parts, list):
            raise HarnessError(
                f"suite {suite.name}: metric {m.name}: unit part needs a list score, but "
                f"'{m.score}' of item {r['task']}/{r['id']} is {parts!r}"
            )
        for value in [None] if m.by is None else field_values(r, m.by):
            groups.setdefault(value, []).append([float(p) for p in parts])
    out: dict[str, float] = {}
    for value, items in groups.items():
        name = metric_name(suite.name, *([] if value is None else [str(value)]), m.name)
        passed, total = [sum(p) for p in items], [len(p) for p in items]
        if not sum(total):
            continue
        out[name] = sum(passed) / sum(total)
        if m.interval == "cluster":
            out[name + "_low"], out[name + "_high"] = interval(passed, total)
    return out


def _annotate(
    suites: list[Suite], records: dict[str, list[dict]], base: dict[str, list[dict]] | None
) -> None:
    """Give every record the fields reports and the gate pair on: `score` (the suite's primary
    per-item score, its first metric's), `label`/`specs`/`category` from the item, and for
    suites compared with the base, `base_score` on the same item."""
    for s in suites:
        primary = s.metrics[0].score if s.metrics else None
        base_scores = {}
        if base and s.compares_base:
            base_scores = {_key(r): _primary(r, primary) for r in base.get(s.name, [])}
        for r in records.get(s.name, []):
            r["score"] = _primary(r, primary)
            for field_ in ("label", "specs", "category"):
                if field_ in r.get("doc", {}):
                    r[field_] = r["doc"][field_]
            if base_scores:
                r["base_score"] = base_scores.get(_key(r))


def _primary(record: dict, score: str | None) -> float | None:
    """The record's score under the suite's primary metric; a standard task without it (gsm8k's
    exact_match in the forgetting suite) pairs on its own first metric."""
    scores = record["scores"]
    return scores[score] if score in scores else next(iter(scores.values()), None)


def _summaries(
    suites: list[Suite], records: dict[str, list[dict]], base: dict[str, list[dict]] | None
) -> dict[str, float]:
    from harness.eval.judges import judge_metrics
    from harness.eval.lm_tasks import task_metrics

    summary: dict[str, float] = {}
    for s in suites:
        base_rows = base.get(s.name) if base is not None and s.compares_base else None
        summary |= summarize(s, records.get(s.name, []), base_rows)
        if s.judge is not None:  # how far the suite's rates can be trusted
            summary |= judge_metrics(s.name, s.judge, s.path)
        if s.hosts_tasks:  # where eval.tasks land: their own metrics, per task
            declared = {m.score for m in s.metrics}
            summary |= task_metrics(s.name, records.get(s.name, []), base_rows, declared)
    return summary


def format_summary(summary: dict[str, float]) -> str:
    """A plain table: one row per metric, its interval (`_low`/`_high`) in the same row."""
    names = [
        k for k in summary if not (k.endswith(("_low", "_high")) and k.rsplit("_", 1)[0] in summary)
    ]
    width = max([len(n) for n in names] + [6])
    lines = [f"{'metric':<{width}}  {'value':>7}  {'95% interval':>17}"]
    for n in names:
        low, high = summary.get(n + "_low"), summary.get(n + "_high")
        interval = f"[{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
        lines.append(f"{n:<{width}}  {summary[n]:>7.3f}  {interval:>17}")
    return "\n".join(lines)


def _key(record: dict) -> tuple[str, str]:
    return record["task"], record["id"]
