"""Reproduce the base model's published scores, through the harness and through lm-eval alone.

For each standard task of the experiment's `eval.tasks` (default
experiments/smollm2-reference.yaml: SmolLM2-135M-Instruct from its 4-bit GGUF on the full local
splits), two runs on the same rows, 0-shot, no chat template:
- **harness**: the forgetting suite with the task in `eval.tasks`
  (`harness.eval.runner.evaluate_model`, the path a study takes for its base model);
- **lm-eval direct**: `lm_eval.simple_evaluate` with lm-eval's own `HFLM(pretrained=<folder>)`,
  the task's own YAML with only its rows replaced (`dataset_path: json`, the files' splits),
  built here without harness code.
It prints, per task and metric: the published figure (`eval.reference_scores`, with its
source), the harness's score with its 95% Wilson interval, lm-eval's own score, their
difference in points (must be within 0.1: the same engine) and how many items agree.

    python benchmarks/reproduce_base.py [--experiment FILE] [--tasks arc_easy,piqa] [--limit N]
        [--out DIR] [--only harness|direct]  # per-task JSON of each run, per-item scores
    python benchmarks/reproduce_base.py --table-only --out DIR   # the table from saved runs

Each task runs on its own (so a long run leaves every finished task saved); the harness run of a
task also scores the forgetting suite's own 210 items. Run it under `nice` on a shared machine:
on 2 busy CPU cores one thread does 2-3 loglikelihood requests a second (8 alone), so the five
tasks (21,600 requests per run) take hours; MMLU (56,000) is not in the default experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("acc", "acc_norm")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default=str(ROOT / "experiments/smollm2-reference.yaml"))
    parser.add_argument("--tasks", help="comma-separated subset of the experiment's eval.tasks")
    parser.add_argument("--limit", type=int, help="first N documents per task (a quick check)")
    parser.add_argument("--out", default="runs/reproduce-base", help="folder for per-task JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--table-only", action="store_true", help="print the table, run nothing")
    parser.add_argument("--only", choices=["harness", "direct"], help="run one side only")
    args = parser.parse_args()

    from harness.config.load import load_experiment
    from harness.config.schema import task_name

    exp = load_experiment(args.experiment)
    wanted = args.tasks.split(",") if args.tasks else None
    entries = [t for t in exp.eval.tasks if wanted is None or task_name(t) in wanted]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        import torch

        torch.set_num_threads(args.threads)
        for entry in entries:
            if args.only != "direct":
                _run_harness(exp, entry, args.limit, out)
            if args.only != "harness":
                _run_direct(exp, entry, args.limit, out)
    print(_table(exp, [task_name(t) for t in entries], out))


def _run_harness(exp, entry, limit: int | None, out: Path) -> None:
    from harness.eval.runner import evaluate_model

    name = entry.task
    cfg = exp.eval.model_copy(update={"tasks": [entry], "limit": None})
    start = time.time()
    result = evaluate_model(exp.model, suites=["forgetting"], eval_config=cfg, limit=limit)
    items = [
        {"id": str(r["doc_id"]), **{m: r["scores"][m] for m in METRICS if m in r["scores"]}}
        for r in result.records["forgetting"]
        if r["task"] == name
    ]
    _save(out / f"{name}.harness.json", name, items, time.time() - start, limit)


def _run_direct(exp, entry, limit: int | None, out: Path) -> None:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._yaml_loader import load_yaml

    from harness.models.load import device, resolve_model_path

    manager = TaskManager()
    config = load_yaml(manager.task_index[entry.task].yaml_path, resolve_func=True)
    files = dict(entry.data_files)
    config |= {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": files},
        "training_split": files.get("train") and "train",
        "validation_split": "validation" if "validation" in files else None,
        "test_split": "test" if "test" in files else None,
    }
    lm = HFLM(
        pretrained=resolve_model_path(exp.model), device=device(), dtype="float32", batch_size=32
    )
    start = time.time()
    res = lm_eval.simple_evaluate(model=lm, tasks=[config], task_manager=manager, limit=limit)
    items = [
        {"id": str(s["doc_id"]), **{m: s[m] for m in METRICS if m in s}}
        for s in res["samples"][entry.task]
    ]
    _save(out / f"{entry.task}.direct.json", entry.task, items, time.time() - start, limit)


def _save(path: Path, task: str, items: list[dict], seconds: float, limit: int | None) -> None:
    body = {"task": task, "n": len(items), "seconds": round(seconds, 1), "limit": limit}
    path.write_text(json.dumps(body | {"items": items}) + "\n")
    print(f"{path.name}: {len(items)} items, {seconds:.0f} s", flush=True)


def _table(exp, tasks: list[str], out: Path) -> str:
    from harness.config.schema import ReferenceScore
    from harness.eval.reference import check_references

    refs = {r.metric: r for r in exp.eval.reference_scores}
    lines = [
        "| task/metric | published (source) | harness [95% interval] | n | lm-eval direct "
        "| diff (points) | items agreeing |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tasks:
        runs = {}
        for side in ("harness", "direct"):
            path = out / f"{task}.{side}.json"
            if path.is_file():
                runs[side] = json.loads(path.read_text())
        if "harness" not in runs and "direct" not in runs:
            lines.append(f"| {task} | | not run | | | | |")
            continue
        for metric in METRICS:
            ref = refs.get(f"{task}/{metric}")
            published = f"{ref.value:.4f} ({ref.source})" if ref else "—"
            cells = []
            for side in ("harness", "direct"):
                items = (runs.get(side) or {}).get("items", [])
                records = {"x": [{"task": task, "id": i["id"], "scores": i} for i in items]}
                probe = ReferenceScore(metric=f"{task}/{metric}", value=0.0, source="-")
                cells.append(check_references(records, [probe])[0])
            har, direct = cells
            if har.measured is None and direct.measured is None:
                continue
            interval = (
                f"{har.measured:.4f} [{har.low:.4f}, {har.high:.4f}]"
                if har.measured is not None
                else "not run"
            )
            diff, agree = "", ""
            if har.measured is not None and direct.measured is not None:
                diff = f"{100 * (har.measured - direct.measured):+.2f}"
                a = {i["id"]: i.get(metric) for i in runs["harness"]["items"]}
                b = {i["id"]: i.get(metric) for i in runs["direct"]["items"]}
                agree = f"{sum(a[k] == b.get(k) for k in a)}/{len(a)}"
            flag = ""
            if ref and har.measured is not None:
                flag = "" if har.low <= ref.value <= har.high else " **outside**"
            direct_cell = f"{direct.measured:.4f}" if direct.measured is not None else "not run"
            lines.append(
                f"| {task}/{metric} | {published} | {interval}{flag} | {har.n or direct.n} "
                f"| {direct_cell} | {diff} | {agree} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
