"""The release gate: is a candidate worse than a baseline, on the same eval items?

Both sides' per-sample records (`records/<suite>.jsonl` in MLflow, or `harness eval` folders)
are paired by item: the same (suite, task, id) with the same content (`item_hash`: prompt,
target, choices, generation settings). A suite whose items differ between runs is refused,
naming the first differing item, because an unpaired comparison would silently mix a model
change with an item change; `common_items=True` (`--common-items`) compares the items every
run shares instead and reports how many were dropped.

Which question is answered depends on the runs per side (`harness.stats.comparison`):
- one run per side: two *checkpoints* (is this candidate worse than that baseline?), item noise
  only: Tango's score interval for 0/1 scores, a paired t otherwise;
- several runs (seeds) per side: two *recipes* (does this configuration do worse than that
  one?): seed-to-seed noise is in the interval (a two-level t).
A suite that declares item families (`cluster_by` in suite.yaml) is compared family by family.

Each gated metric has an allowed change `m` in its bad direction (a drop for accuracy, harmful
refusal and format pass; a rise for benign refusal). The rule (`harness.stats.decision`):
- pass: a one-sided 5% test shows the change is within `m` (the 90% interval lies within it);
- regression: a one-sided test shows the change is beyond `m`, at 5% Holm-adjusted over the
  release's gated metrics;
- inconclusive: neither; the report says how many paired items would settle it, or that none
  can (the estimate sits on the allowed change, or seed noise alone is too large).
So, whatever the true changes: a metric whose change is at or beyond `m` passes at most 5% of
the time, and a release whose every change is within its `m` fails anywhere (a regression on
any gated metric) at most 5% of the time. `benchmarks/gate_calibration.py` measures both.
Overall: regression if any gated metric regressed, else inconclusive if any was, else pass.
Exit codes (`GateResult.exit_code`): 0 pass, 1 regression, 0 inconclusive (stated loudly) —
or 1 with `strict=True`, for pipelines that must not ship on too little evidence. Too few items
is a property of the eval set, not of the candidate, so by default it does not block.

Per-task breakdowns are reported but gate nothing unless a threshold names them: a dozen small
per-task tests would turn almost every release inconclusive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from harness.config.load import load_experiment, resolve_tracking_uri
from harness.config.schema import DEFAULT_TRACKING_URI
from harness.config.suite import MetricSpec
from harness.eval.runner import load_result
from harness.eval.suites import Suite, discover_suites, load_suite
from harness.eval.suites import suite_dirs as suite_dirs_of
from harness.stats.comparison import RECIPES, PairedComparison, pooled_comparison
from harness.stats.decision import (
    items_needed,
    judge_release,
    margin_tests,
    min_detectable_effect,
    verdict,
)
from harness.study.tracking import client_for
from harness.util.errors import HarnessError
from harness.util.files import write_atomic
from harness.verdicts.records import (
    Indexed,
    Key,
    index_records,
    item_clusters,
    item_scores,
    load_records,
    metric_items,
    paired_keys,
)
from harness.verdicts.render import (
    Block,
    Heading,
    Para,
    Plot,
    Table,
    figure_png,
    fmt_num,
    new_figure,
    write_report,
)

WORST_ITEMS = 10
PASS, REGRESSION, INCONCLUSIVE = "pass", "regression", "inconclusive"
ALPHA = 0.05  # one-sided level of each test: pass and (Holm-adjusted) regression
CONFIDENCE = 1 - 2 * ALPHA  # the interval whose bounds the rule reads
__all__ = ["gate", "load_thresholds", "verdict", "GateResult", "MetricResult"]

_COMPARED_SETTINGS = ("dataset", "max_new_tokens", "limit", "tasks")


@dataclass(frozen=True)
class MetricResult:
    metric: str
    suite: str
    gated: bool
    higher_is_better: bool
    threshold: float  # allowed change in the bad direction
    comparison: PairedComparison
    verdict: str
    items_needed: int | None
    reason: str
    p_pass: float = 1.0  # one-sided: the change is within the allowed one
    p_regression: float = 1.0  # one-sided: the change is beyond it
    p_regression_adjusted: float = 1.0  # Holm over the gated metrics (gated rows only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "suite": self.suite,
            "gated": self.gated,
            "higher_is_better": self.higher_is_better,
            "threshold": self.threshold,
            "verdict": self.verdict,
            "items_needed": self.items_needed,
            "reason": self.reason,
            "p_pass": self.p_pass,
            "p_regression": self.p_regression,
            "p_regression_adjusted": self.p_regression_adjusted,
            **self.comparison.to_dict(),
        }


@dataclass
class GateResult:
    baseline: str
    candidate: str
    verdict: str  # pass | regression | inconclusive
    metrics: list[MetricResult]
    worst_items: dict[str, list[dict]]
    unused_thresholds: list[str]
    out_dir: Path
    paths: dict[str, Path] = field(default_factory=dict)
    question: str = "checkpoints"  # or "recipes": several runs per side (seed noise included)
    dropped: dict[str, int] = field(default_factory=dict)  # suite -> items left out (common_items)

    def exit_code(self, strict: bool = False) -> int:
        """0 pass, 1 regression; inconclusive is 0, or 1 when `strict`."""
        if self.verdict == REGRESSION or (strict and self.verdict == INCONCLUSIVE):
            return 1
        return 0

    def summary(self) -> str:
        """A few lines for the terminal: the verdict and every gated metric."""
        lines = [
            f"gate: {self.verdict.upper()}  (baseline {self.baseline}, candidate {self.candidate})",
            f"  question: {QUESTIONS[self.question]}",
        ]
        lines += [
            f"  {suite}: {k} item(s) not held alike by every run left out (--common-items)"
            for suite, k in self.dropped.items()
            if k
        ]
        for m in self.metrics:
            if not m.gated:
                continue
            c = m.comparison
            extra = f"; ~{m.items_needed} items needed" if m.items_needed else ""
            if m.verdict == INCONCLUSIVE and m.items_needed is None:
                extra = "; no number of items settles it (the change sits on the allowed one)"
            lines.append(
                f"  {m.verdict:<12} {m.metric}: {fmt_num(c.mean_a)} -> {fmt_num(c.mean_b)} "
                f"(diff {fmt_num(c.diff)} [{fmt_num(c.ci_low)}, {fmt_num(c.ci_high)}], n={c.n}{extra})"
            )
        if self.verdict == INCONCLUSIVE:
            lines.append("  inconclusive: not enough evidence either way (exit 0; --strict fails)")
        gated = sum(m.gated for m in self.metrics)
        lines.append(f"  false-failure rate: {_fwer_sentence(gated)}")
        lines.append(f"report: {self.paths.get('html', self.out_dir)}")
        return "\n".join(lines)


# ---------------------------------------------------------------- thresholds


def load_thresholds(path: str | Path | None) -> dict[str, float]:
    """Thresholds from a YAML file: a plain mapping (`refusal/harmful_refusal_rate: 0.02`), a
    mapping under `thresholds:`, or an experiment file (its validated `thresholds`)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: thresholds file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise HarnessError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    if isinstance(raw, dict) and "data" in raw and "name" in raw:
        return dict(load_experiment(path).thresholds)
    if isinstance(raw, dict) and isinstance(raw.get("thresholds"), dict):
        raw = raw["thresholds"]
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping of metric name to allowed change")
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise HarnessError(
                f"{path}: {key}: allowed change must be a number >= 0, got {value!r}"
            )
        out[str(key)] = float(value)
    return out


def _threshold(spec: MetricSpec, name: str, suite: str, user: dict[str, float]) -> float:
    """A user threshold for the metric, else one for its whole suite, else the declared one."""
    if name in user:
        return user[name]
    if suite in user:
        return user[suite]
    return spec.threshold


# ---------------------------------------------------------------- loading and pairing


@dataclass
class Side:
    """One side of the comparison: one or more runs (MLflow run ids or `harness eval` output
    folders) evaluated on the same items; `records[i]` maps suite -> (task, id) -> record."""

    role: str
    sources: list[str]
    names: list[str] = field(default_factory=list)
    records: list[Indexed] = field(default_factory=list)
    settings: list[dict[str, Any]] = field(default_factory=list)


def _load_side(role: str, sources: list[str], uri: str) -> Side:
    side = Side(role, list(sources))
    client = None
    for src in sources:
        if Path(src).is_dir():
            result = load_result(src)
            name, recs, settings = src, result.records, dict(result.info.get("eval", {}))
        else:
            client = client or client_for(uri)
            name, settings = _check_run(client, src, role, uri)
            recs = load_records(client, src)
        if not recs:
            raise HarnessError(f"{role} {src} has no per-sample records (<suite>.jsonl) to compare")
        side.names.append(name)
        side.records.append({s: index_records(r, src, s) for s, r in recs.items()})
        side.settings.append(settings)
    return side


def _check_settings(a: Side, b: Side) -> None:
    """Runs evaluated with different settings (data set, generation length, item limit,
    extra tasks) answer different questions: refuse, naming the first difference."""
    ref, ref_src = a.settings[0], a.sources[0]
    for side in (a, b):
        for src, settings in zip(side.sources, side.settings, strict=True):
            for k in _COMPARED_SETTINGS:
                if k in ref and k in settings and str(ref[k]) != str(settings[k]):
                    raise HarnessError(
                        f"eval settings differ: {k} is {ref[k]} for baseline {ref_src} but "
                        f"{settings[k]} for {side.role} {src}; evaluate both the same way"
                    )


def _check_same_items(a: Side, b: Side, common: bool) -> dict[str, int]:
    """Every run of both sides must hold the same suites, and each suite the same items with
    the same content (`records.paired_keys`); with `common`, each suite keeps the items every
    run holds alike (the others are dropped from every run's records, and counted)."""
    ref, ref_src = a.records[0], a.sources[0]
    runs = [
        (f"{side.role} {src}", recs)
        for side in (a, b)
        for src, recs in zip(side.sources, side.records, strict=True)
    ]
    for label, recs in runs:
        if set(recs) != set(ref):
            raise HarnessError(
                f"runs evaluated on different suites: baseline {ref_src} has "
                f"{sorted(ref) or 'none'}, {label} has {sorted(recs) or 'none'}; "
                "compare runs scored on the same suites"
            )
    dropped = {}
    for suite in sorted(ref):
        keys, dropped[suite] = paired_keys(
            [(label, recs[suite]) for label, recs in runs], suite, common=common
        )
        if not keys:
            raise HarnessError(f"suite '{suite}': no item is held alike by every run")
        if dropped[suite]:
            for _, recs in runs:
                recs[suite] = {k: recs[suite][k] for k in keys}
    return dropped


def _suites(names: list[str], suite_dirs: list[str | Path] | tuple) -> dict[str, Suite]:
    known = discover_suites(suite_dirs)
    missing = [n for n in names if n not in known]
    if missing:
        raise HarnessError(
            f"records of suite(s) {', '.join(missing)} but no suite.yaml declares them in "
            f"{', '.join(str(d) for d in suite_dirs_of(suite_dirs))}; pass --suite-dir"
        )
    return {n: load_suite(n, suite_dirs) for n in names}


# ---------------------------------------------------------------- verdicts


QUESTIONS = {
    "checkpoints": "one run per side: are these two checkpoints different? (item noise only; "
    "a retrained candidate would vary more)",
    "recipes": "several runs per side: do these two recipes differ? (seed-to-seed noise included)",
}


def _fwer_sentence(gated: int) -> str:
    return (
        f"a release whose every gated change is within its allowed change is called a "
        f"regression on any of its {gated} gated metric(s) at most {ALPHA:.0%} of the time "
        "(Holm over the gated metrics); a metric changed by its allowed change or more passes "
        f"at most {ALPHA:.0%} of the time"
    )


def _pilot(c: PairedComparison) -> dict[str, float]:
    """What the sample-size formulas take from this comparison: its disagreement for 0/1
    scores, as (k + 1) / (n + 2) so that none observed still counts, else the sd of the
    per-item differences; its design effect (families of items) and seed noise."""
    out: dict[str, float] = {"design_effect": c.design_effect}
    if c.discordance is not None:
        out["discordance"] = ((c.a_only or 0) + (c.b_only or 0) + 1) / (c.n + 2)
    else:
        out["sd"] = c.sd_diff if c.sd_diff > 0 else 1.0 / c.n
    return out


def detectable_change(c: PairedComparison) -> float:
    """The smallest true change these items detect with 80% power (`min_detectable_effect`)
    at the comparison's disagreement and design effect (`_pilot`)."""
    return min_detectable_effect(c.n, alpha=ALPHA, **_pilot(c))


def _items_needed(c: PairedComparison, threshold: float, up: bool, gated: int) -> int | None:
    """Paired items that would settle this comparison at its observed difference and
    disagreement (see `items_needed`), the regression side at Holm's first level; None when no
    number of items can."""
    pilot = _pilot(c) | {"seed_var": c.seed_var}
    level = ALPHA / max(gated, 1)
    return items_needed(
        c.diff if up else -c.diff, threshold, alpha=ALPHA, alpha_regression=level, **pilot
    )


def _reason(r: MetricResult) -> str:
    c, t, up, needed, v = r.comparison, r.threshold, r.higher_is_better, r.items_needed, r.verdict
    bad = "drop" if up else "rise"
    ci = f"[{fmt_num(c.ci_low)}, {fmt_num(c.ci_high)}]"
    if v == REGRESSION:
        return (
            f"the 90% interval {ci} lies beyond the allowed {bad} of {fmt_num(t)} (one-sided "
            f"p = {fmt_num(r.p_regression)}, {fmt_num(r.p_regression_adjusted)} Holm-adjusted)"
        )
    if v == PASS:
        return (
            f"the 90% interval {ci} lies within the allowed {bad} of {fmt_num(t)} (one-sided "
            f"p = {fmt_num(r.p_pass)})"
        )
    worse = -c.diff if up else c.diff
    if needed is None:
        why = (
            "the estimate sits on it"
            if abs(worse - t) < 1e-12
            else "seed noise alone is too large: more runs per side, not more items, would help"
        )
        return f"the interval {ci} straddles the allowed {bad} of {fmt_num(t)} and {why}"
    goal = "show a regression" if worse > t else "pass it"
    return (
        f"the interval {ci} straddles the allowed {bad} of {fmt_num(t)}; about {needed} paired "
        f"items would {goal} if the observed change holds (have {c.n})"
    )


def _worst(
    keys: list[Key], sa: np.ndarray, sb: np.ndarray, a: dict, b: dict, up: bool, suite: str
) -> list[dict]:
    """Items that moved most in the bad direction (scores averaged over a side's runs), the
    first runs' answers side by side."""
    change = sb - sa
    bad = -change if up else change
    order = sorted((i for i in range(len(keys)) if bad[i] > 0), key=lambda i: (-bad[i], keys[i]))
    return [
        {
            "suite": suite,
            "task": keys[i][0],
            "id": keys[i][1],
            "prompt": a[keys[i]].get("prompt"),
            "target": a[keys[i]].get("target"),
            "baseline_response": a[keys[i]].get("response"),
            "candidate_response": b[keys[i]].get("response"),
            "baseline_score": float(sa[i]),
            "candidate_score": float(sb[i]),
        }
        for i in order[:WORST_ITEMS]
    ]


# ---------------------------------------------------------------- the gate


def _check_run(client: Any, run_id: str, role: str, uri: str) -> tuple[str, dict[str, Any]]:
    """(display name, logged eval settings) of an MLflow run."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise HarnessError(f"{role} run '{run_id}' not found at {uri}") from None
    params = run.data.params
    settings = {k: params[f"cfg.eval.{k}"] for k in _COMPARED_SETTINGS if f"cfg.eval.{k}" in params}
    return run.info.run_name or run_id, settings


def _as_list(value: str | list[str]) -> list[str]:
    items = [value] if isinstance(value, (str, Path)) else list(value)
    out = [str(x).strip() for x in items if str(x).strip()]
    if not out:
        raise HarnessError("give at least one baseline and one candidate run")
    return out


def gate(
    baseline_run_id: str | list[str],
    candidate_run_id: str | list[str],
    *,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    thresholds: dict[str, float] | None = None,
    out_dir: str | Path | None = None,
    suite_dirs: list[str | Path] | tuple = (),
    common_items: bool = False,
) -> GateResult:
    """Compare a candidate with a baseline item by item and write report.md, report.html and
    gate.json.

    Each side is one or more MLflow run ids or `harness eval` output folders (replicates:
    same items, different seeds); with several runs per side the question is about recipes and
    seed noise is in every interval (`stats.pooled_comparison`). Items pair on (suite, task,
    id) and must agree in content (`item_hash`; records written before hashes existed are not
    checked) unless `common_items`, and the logged eval settings must agree. Metrics,
    directions, default allowed changes and item families (`cluster_by`) come from each
    suite's suite.yaml (`suite_dirs`: extra folders holding suites); `thresholds` maps a
    metric (or a whole suite) to its allowed change in the bad direction; naming a per-group
    metric gates it too.
    """
    uri = resolve_tracking_uri(tracking_uri)
    a = _load_side("baseline", _as_list(baseline_run_id), uri)
    b = _load_side("candidate", _as_list(candidate_run_id), uri)
    _check_settings(a, b)
    dropped = _check_same_items(a, b, common_items)
    user = dict(thresholds or {})
    suites = _suites(sorted(a.records[0]), suite_dirs)

    rows: list[tuple] = []  # (name, suite, gated, up, threshold, comparison, keys, ma, mb)
    known: set[str] = set()
    for suite in suites.values():
        items = a.records[0][suite.name]
        for name, spec, keys in metric_items(suite, items):
            gated = (spec.gate and spec.by is None) or name in user  # per-group: when named
            known.add(name)
            up, t = spec.higher_is_better, _threshold(spec, name, suite.name, user)
            ma = np.asarray(item_scores(a.records, suite.name, spec.score, keys), dtype=float)
            mb = np.asarray(item_scores(b.records, suite.name, spec.score, keys), dtype=float)
            clusters = item_clusters(items, keys, suite.cluster_by)
            c = pooled_comparison(ma, mb, clusters=clusters, confidence=CONFIDENCE)
            rows.append((name, suite.name, gated, up, t, c, keys, ma, mb))
    _check_threshold_names(user, set(suites), known)
    unused = sorted(k for k in user if k not in known and k not in suites)

    gated_rows = [r for r in rows if r[2]]
    judged = judge_release(
        [r[5] for r in gated_rows], [r[4] for r in gated_rows], [r[3] for r in gated_rows],
        alpha=ALPHA,
    )  # fmt: skip
    joint = dict(zip([r[0] for r in gated_rows], judged, strict=True))
    results: list[MetricResult] = []
    worst: dict[str, list[dict]] = {}
    for name, suite_name, gated, up, t, c, keys, ma, mb in rows:
        p_pass, p_regression = margin_tests(c, t, up)
        j = joint.get(name)
        v = j.verdict if j is not None else verdict(c, t, up, alpha=ALPHA)
        adjusted = j.p_regression_adjusted if j is not None else p_regression
        needed = _items_needed(c, t, up, len(gated_rows)) if v == INCONCLUSIVE else None
        r = MetricResult(name, suite_name, gated, up, t, c, v, needed, "", p_pass, p_regression,
                         adjusted)  # fmt: skip
        results.append(replace(r, reason=_reason(r)))
        if gated and v != PASS:
            items = a.records[0][suite_name]
            moved = _worst(
                keys, ma.mean(0), mb.mean(0), items, b.records[0][suite_name], up, suite_name
            )
            if moved:
                worst[name] = moved

    gated = [r for r in results if r.gated]
    if any(r.verdict == REGRESSION for r in gated):
        overall = REGRESSION
    elif any(r.verdict == INCONCLUSIVE for r in gated):
        overall = INCONCLUSIVE
    else:
        overall = PASS
    question = RECIPES if len(a.sources) > 1 or len(b.sources) > 1 else "checkpoints"
    base_label, cand_label = ",".join(a.sources), ",".join(b.sources)
    out = Path(out_dir) if out_dir else Path("reports") / f"gate-{_short_id(a)}-{_short_id(b)}"
    result = GateResult(base_label, cand_label, overall, results, worst, unused, out,
                        question=question, dropped=dropped)  # fmt: skip
    title = f"Release gate: {', '.join(b.names)} vs {', '.join(a.names)}"
    md, html = write_report(out, title, _blocks(result, uri, a, b))
    payload = {
        "baseline": a.sources,
        "candidate": b.sources,
        "tracking_uri": uri,
        "verdict": overall,
        "question": question,
        "false_failure_rate": _fwer_sentence(len(gated)),
        "alpha": ALPHA,
        "exit_code": result.exit_code(),
        "exit_code_strict": result.exit_code(strict=True),
        "thresholds": {r.metric: r.threshold for r in results if r.gated},
        "unused_thresholds": unused,
        "dropped_items": dropped,
        "metrics": [r.to_dict() for r in results],
        "worst_items": worst,
    }
    json_path = out / "gate.json"
    write_atomic(json_path, json.dumps(payload, indent=2, default=str) + "\n")
    result.paths = {"md": md, "html": html, "json": json_path}
    return result


def evaluate_models(
    baseline_model: str,
    candidate_model: str,
    *,
    suites: list[str],
    suite_dirs: list[str | Path] | tuple = (),
    dataset: str = "auto",
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> tuple[list[str], list[str]]:
    """Evaluate two models (folders, or any name `harness eval --model` takes) on the same
    suites and return their record folders, ready for `gate`. Each is evaluated as its own base, so the content-keyed base cache serves a
    model evaluated before (a released baseline costs nothing the second time)."""
    from harness.config.schema import EvalConfig
    from harness.eval.runner import evaluate_model

    out = Path(out_dir) if out_dir else Path("reports") / "gate-models"
    cfg = EvalConfig(suites=suites, suite_dirs=[str(d) for d in suite_dirs])
    folders = []
    for role, model in (("baseline", baseline_model), ("candidate", candidate_model)):
        folder = out / f"{role}-records"
        evaluate_model(model, suites=suites, eval_config=cfg, dataset=dataset, limit=limit,
                       out_dir=folder, suite_dirs=suite_dirs)  # fmt: skip
        folders.append([str(folder)])
    return folders[0], folders[1]


def _short_id(side: Side) -> str:
    first = Path(side.sources[0]).name if Path(side.sources[0]).is_dir() else side.sources[0][:8]
    return first + (f"+{len(side.sources) - 1}" if len(side.sources) > 1 else "")


def _check_threshold_names(user: dict[str, float], suites: set[str], known: set[str]) -> None:
    """A typo in a release threshold must not silently fall back to the default."""
    for key in user:
        suite = key.split("/", 1)[0]
        if suite in suites and key != suite and key not in known:
            options = ", ".join(sorted(m for m in known if m.startswith(suite + "/")))
            raise HarnessError(
                f"threshold '{key}' names no metric of suite '{suite}' (known: {options})"
            )


def _describe(side: Side) -> str:
    runs = [
        src if name == src else f"{src} ({name})"
        for src, name in zip(side.sources, side.names, strict=True)
    ]
    return ", ".join(runs) + (f" ({len(runs)} runs, pooled)" if len(runs) > 1 else "")


def _plot_diffs(results: list[MetricResult]) -> bytes | None:
    rows = [r for r in results if r.gated]
    if not rows:
        return None
    fig, ax = new_figure(figsize=(7, 0.6 * len(rows) + 1.2))
    colours = {PASS: "tab:green", REGRESSION: "tab:red", INCONCLUSIVE: "tab:orange"}
    for i, r in enumerate(rows):
        c = r.comparison
        ax.errorbar(
            c.diff, i, xerr=[[c.diff - c.ci_low], [c.ci_high - c.diff]], fmt="o", capsize=4,
            color=colours[r.verdict],
        )  # fmt: skip
        limit = -r.threshold if r.higher_is_better else r.threshold
        ax.plot([limit, limit], [i - 0.3, i + 0.3], "k:", lw=1.5)
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(rows)), [r.metric for r in rows], fontsize=8)
    ax.set_xlabel("candidate - baseline (90% interval the rule reads); dotted: allowed change")
    ax.grid(alpha=0.3, axis="x")
    return figure_png(fig)


def _clip(text: Any, n: int = 300) -> str:
    s = "" if text is None else str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def _blocks(result: GateResult, uri: str, a: Side, b: Side) -> list[Block]:
    blocks: list[Block] = []
    meaning = {
        PASS: "PASS: no gated metric got worse beyond its allowed change.",
        REGRESSION: "REGRESSION: at least one gated metric is worse beyond its allowed change (exit 1).",
        INCONCLUSIVE: "INCONCLUSIVE: too little evidence to pass or fail at least one gated metric. "
        "Exit code 0 by default; `--strict` makes it 1. Evaluate on more items to settle it.",
    }
    blocks.append(Para(meaning[result.verdict], warn=result.verdict != PASS))
    blocks.append(Para(f"Question: {QUESTIONS[result.question]}."))
    blocks.append(
        Para(
            f"Baseline {_describe(a)}, candidate {_describe(b)}, tracking {uri}. Every metric "
            "is compared on identical items paired on (suite, task, id) and checked to have the "
            "same prompt, target and generation settings: diff = candidate - baseline with a 90% "
            "interval (one run per side: Tango's score interval for 0/1 scores, a paired t "
            "otherwise; several runs per side: a two-level t, seed noise plus item noise; suites "
            "with item families (`cluster_by`) count families, the design effect says by how "
            "much that widens the interval). A metric passes when the interval lies within the "
            "allowed change (a one-sided 5% test), regresses when it lies beyond it (one-sided, "
            "Holm-adjusted over the gated metrics), and is inconclusive otherwise; p (pass) and "
            "p (regr.) are those one-sided p-values, the latter Holm-adjusted. False-failure "
            f"rate: {_fwer_sentence(sum(r.gated for r in result.metrics))}. 'detectable' is the "
            "smallest change this many items detect with 80% power at the observed "
            "disagreement. Rows not gated (per-group breakdowns) are for diagnosis only."
        )
    )
    for suite, k in result.dropped.items():
        if k:
            blocks.append(
                Para(
                    f"{suite}: {k} item(s) not held alike by every run (missing or with other "
                    "content) were left out (common items only, as asked).",
                    warn=True,
                )
            )
    headers = ["metric", "gated", "n", "families", "baseline", "candidate", "diff", "90% CI", "p (pass)", "p (regr.)", "allowed", "detectable", "verdict", "items needed"]  # fmt: skip
    rows = []
    for r in result.metrics:
        c = r.comparison
        bad = "drop" if r.higher_is_better else "rise"
        families = f"{c.clusters} (x{fmt_num(c.design_effect, 2)})" if c.clusters < c.n else ""
        rows.append(
            [r.metric, "yes" if r.gated else "no", c.n, families, fmt_num(c.mean_a),
             fmt_num(c.mean_b), fmt_num(c.diff), f"[{fmt_num(c.ci_low)}, {fmt_num(c.ci_high)}]",
             fmt_num(r.p_pass), fmt_num(r.p_regression_adjusted if r.gated else r.p_regression),
             f"{bad} <= {fmt_num(r.threshold)}", fmt_num(detectable_change(c)), r.verdict,
             r.items_needed or ""]
        )  # fmt: skip
    blocks += [Heading("Metrics"), Table(headers, rows)]
    reasons = [f"{r.metric}: {r.verdict}, {r.reason}." for r in result.metrics if r.gated]
    blocks += [Para(line) for line in reasons]
    if result.unused_thresholds:
        blocks.append(
            Para(
                "Thresholds for suites these runs lack (unused): "
                + ", ".join(result.unused_thresholds)
            )
        )
    png = _plot_diffs(result.metrics)
    if png:
        blocks.append(Plot("gate-diffs", "paired differences against allowed changes", png))
    if result.worst_items:
        blocks.append(Heading("Worst items"))
        for metric, items in result.worst_items.items():
            blocks.append(Heading(f"{metric}: items that got worse", level=3))
            blocks.append(
                Table(
                    ["task/id", "prompt", "target", "baseline answer", "candidate answer", "score"],
                    [
                        [
                            f"{i['task']}/{i['id']}",
                            _clip(i["prompt"]),
                            _clip(i["target"], 80),
                            _clip(i["baseline_response"]),
                            _clip(i["candidate_response"]),
                            f"{fmt_num(i['baseline_score'])} -> {fmt_num(i['candidate_score'])}",
                        ]
                        for i in items
                    ],  # fmt: skip
                )
            )
    return blocks
