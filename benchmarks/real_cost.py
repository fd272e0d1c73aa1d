"""Cost of a real study: training tokens/s, eval items/s per suite, peak memory vs the preflight.

Two parts, both on the study's own machine and model:
- **from the study's MLflow runs** (nothing is rerun): per run its method, training tokens/s,
  training / evaluation / other seconds, and the peak memory against the memory preflight's
  estimate (`train/peak_memory_mb`, `train/memory_estimate_gib`); then the study's wall time
  (the parent run, start to end) split into training, evaluation and overhead (loading,
  tokenizing, logging, the base model's evaluation and the report).
- **`--suites`**: each suite of the experiment timed on its own on the base model, at the
  experiment's `eval.limit`, `batch_size` and `max_new_tokens` (a study evaluates the
  likelihood suites in one lm-eval call and the chat suites in another, so its runs carry one
  evaluation time, not one per suite).

    python benchmarks/real_cost.py [--experiment experiments/real-smollm2.yaml] [--suites]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments/real-smollm2.yaml"))
    parser.add_argument("--suites", action="store_true", help="also time each suite on the base")
    args = parser.parse_args()

    from harness.config.load import load_experiment

    exp = load_experiment(args.experiment)
    print(f"torch threads {_threads()}, experiment {exp.name}")
    _study_cost(exp)
    if args.suites:
        _suite_cost(exp)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _study_cost(exp) -> None:
    from harness.config.load import resolve_tracking_uri
    from harness.study.tracking import client_for

    client = client_for(exp.tracking_uri)
    found = client.get_experiment_by_name(exp.name)
    if found is None:
        print(f"no MLflow experiment '{exp.name}' at {resolve_tracking_uri(exp.tracking_uri)}")
        return
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(
        (r for r in runs if "mlflow.parentRunId" in r.data.tags and r.info.status == "FINISHED"),
        key=lambda r: r.info.start_time,
    )
    if not children:
        print("no finished trial runs")
        return
    print(
        f"\n{'run':<12} {'method':<6} {'tokens/s':>8} {'train s':>8} {'eval s':>7} "
        f"{'other s':>7} {'peak MB':>8} {'estimate MB':>11}"
    )
    by_method: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    train = evaluate = trials = 0.0
    for r in children:
        m, p = r.data.metrics, r.data.params
        method = "LoRA" if p.get("cfg.peft.enabled") == "true" else "full"
        tps, tr, ev, tot = (
            m.get(k, 0.0)
            for k in (
                "train/tokens_per_second",
                "train/seconds",
                "trial/eval_seconds",
                "trial/seconds",
            )
        )
        peak, est = m.get("train/peak_memory_mb"), m.get("train/memory_estimate_gib")
        est_mb = est * 1024 if est else None
        by_method.setdefault(method, []).append(tps)
        if peak and est_mb:
            ratios.setdefault(method, []).append(peak / est_mb)
        train, evaluate, trials = train + tr, evaluate + ev, trials + tot
        print(
            f"{r.info.run_name:<12} {method:<6} {tps:>8.1f} {tr:>8.1f} {ev:>7.1f} "
            f"{tot - tr - ev:>7.1f} {peak or 0:>8.0f} {est_mb or 0:>11.0f}"
        )
    print()
    for method, values in sorted(by_method.items()):
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        ratio = statistics.mean(ratios[method]) if ratios.get(method) else float("nan")
        print(
            f"{method}: {statistics.mean(values):.1f} +- {spread:.1f} training tokens/s over "
            f"{len(values)} runs; peak memory / preflight estimate {ratio:.2f}"
        )
    if parents and parents[0].info.end_time:
        wall = (parents[0].info.end_time - parents[0].info.start_time) / 1000
        other = wall - train - evaluate
        print(
            f"study wall {wall / 60:.1f} min: training {train / 60:.1f} min "
            f"({100 * train / wall:.0f}%), evaluation {evaluate / 60:.1f} min "
            f"({100 * evaluate / wall:.0f}%), overhead {other / 60:.1f} min "
            f"({100 * other / wall:.0f}%: loading, tokenizing, logging, the base model's "
            f"evaluation, the report)"
        )


def _suite_cost(exp) -> None:
    from harness.eval import runner as ev
    from harness.models.load import load_model, load_tokenizer

    model, tokenizer = load_model(exp.model), load_tokenizer(exp.model)
    cfg = exp.eval
    print(
        f"\nsuites on the base model {exp.model}: limit {cfg.limit}, batch size "
        f"{cfg.batch_size}, max_new_tokens {cfg.max_new_tokens}"
    )
    print(f"{'suite':<12} {'items':>6} {'seconds':>8} {'items/s':>8}")
    for suite in cfg.suites:
        start = time.perf_counter()
        result = ev.evaluate(model, tokenizer, [suite], eval_config=cfg, dataset=cfg.dataset)
        took = time.perf_counter() - start
        n = sum(len(rows) for rows in result.records.values())
        print(f"{suite:<12} {n:>6} {took:>8.1f} {n / took:>8.2f}")


if __name__ == "__main__":
    main()
