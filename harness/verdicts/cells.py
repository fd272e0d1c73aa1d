"""Table cells of the study report: metrics with their intervals, trial labels, short headers, and
the trials table."""

from __future__ import annotations

from harness.verdicts.analysis import (
    Study,
    Trial,
)
from harness.verdicts.render import (
    Table,
    fmt_num,
)


def with_interval(metrics: dict[str, float], name: str) -> str:
    if name not in metrics:
        return ""
    low, high = metrics.get(f"{name}_low"), metrics.get(f"{name}_high")
    text = fmt_num(metrics[name])
    return (
        f"{text} [{fmt_num(low)}, {fmt_num(high)}]"
        if low is not None and high is not None
        else text
    )


def metric_cell(t: Trial, name: str) -> str:
    """A trial's metric: mean ± sd over replicates, or one run's value with its interval."""
    if name in t.spread:
        return f"{fmt_num(t.metrics[name])} ± {fmt_num(t.spread[name])}"
    return with_interval(t.metrics, name)


def key_metrics(study: Study) -> list[str]:
    seen = {m for t in study.trials for m in t.metrics}
    wanted = [m for m, _ in study.objectives] + [c.metric for c in study.constraints]
    wanted += [k.name for k in study.key_metrics]
    return [m for m in dict.fromkeys(wanted) if m in seen]


def as_float(v: str) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def short(value: str) -> str:
    f = as_float(value)
    return fmt_num(f, 4) if f is not None and "." in value else value


def trial_label(t: Trial) -> str:
    return f"#{t.number}" if t.number is not None else (t.run_id or "?")[:8]


def short_param(path: str) -> str:
    """A column header for a searched setting: `data.sources.replay.weight` -> `replay weight`,
    `train.learning_rate` -> `learning_rate`."""
    parts = path.split(".")
    return " ".join(parts[-2:]) if parts[-1] == "weight" and len(parts) > 2 else parts[-1]


def trials_table(study: Study, keys: list[str], *, full: bool) -> Table:
    """One row per trial (and the base model). Compact: the searched settings that vary, with
    short names, and the headline metrics by their labels; `full`: every column."""
    params = sorted({p for t in study.trials for p in t.params})
    mixes = sorted(
        {
            m
            for t in study.trials
            for m in t.metrics
            if m.startswith("mix/") and m.endswith("/share")
        }
    )
    if not full:
        params = [p for p in params if len({t.params.get(p) for t in study.trials}) > 1]
        mixes = []
    labels = {k.name: k.label for k in study.key_metrics}
    runs = ["runs"] if study.replicated else []
    head = ["trial", "state", "run", *runs] if full else ["trial"]
    headers = head + [p if full else short_param(p) for p in params]
    headers += [m[len("mix/") : -len("/share")] + " share" for m in mixes]
    headers += [k if full else labels.get(k, k) for k in keys] + (["note"] if full else [])
    rows = []
    if study.base:
        blank = [""] * (len(head) - 1 + len(params) + len(mixes))
        base_row = ["base", *blank, *(with_interval(study.base, m) for m in keys)]
        rows.append(base_row + ([""] if full else []))
    for t in study.trials:
        if not full and t.state != "COMPLETE":
            continue
        row = [trial_label(t)]
        if full:
            row += [t.state, (t.run_id or "")[:8]] + ([str(len(t.run_ids))] if runs else [])
        row += [short(t.params[p]) if p in t.params else "" for p in params]
        row += [fmt_num(t.metrics[m]) if m in t.metrics else "" for m in mixes]
        row += [metric_cell(t, m) for m in keys] + ([t.fail_reason or ""] if full else [])
        rows.append(row)
    return Table(headers, rows)
