"""Eval cost: wall time of each toy suite, in full, on the toy base model.

Uses the demo-size toy model when it is cached, else the tiny one (built if needed). Each suite
runs in its own `harness.eval.runner.evaluate` call (generation suites batched by
`eval.batch_size`), so the per-suite figures include lm-eval's setup for that suite; the model
is loaded once, before timing. The pruning evaluation is timed too: what the pruner sees
mid-training (`study.trial._interim_objective`), the default objective `forgetting/delta` on the first
`eval.proxy_limit` items, against the base model's cached results.

    python benchmarks/eval_cost.py [--size demo|tiny] [--batch-size 32] [--max-new-tokens 48]

Target: the default suites (forgetting, refusal, format, target) in under 60 s on 2 CPU cores;
the failure-mode suites (consistency, imitation, overfitting) are timed after them.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SUITES = ("forgetting", "refusal", "format", "target", "consistency", "imitation", "overfitting")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["demo", "tiny"], help="default: demo if cached")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    from harness.config.schema import EvalConfig
    from harness.eval import runner as ev
    from harness.models.load import load_model, load_tokenizer
    from harness.models.toy.build import find_toy_world

    size = args.size or ("demo" if find_toy_world("demo") else "tiny")
    name = f"toy:{size}"
    start = time.perf_counter()
    model, tokenizer = load_model(name), load_tokenizer(name)
    load_s = time.perf_counter() - start
    cfg = EvalConfig(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    ev.evaluate(model, tokenizer, ["target"], eval_config=cfg, dataset="toy", limit=2)  # warm-up

    print(f"model {name} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters)")
    print(f"threads {os.environ.get('OMP_NUM_THREADS', 'default')}, batch size {cfg.batch_size}")
    print(f"{'suite':<12} {'items':>6} {'seconds':>8} {'ms/item':>8}")
    total = 0.0
    for suite in SUITES:
        start = time.perf_counter()
        result = ev.evaluate(model, tokenizer, [suite], eval_config=cfg, dataset="toy")
        took = time.perf_counter() - start
        total += took
        n = len(result.records[suite])
        print(f"{suite:<12} {n:>6} {took:>8.2f} {1000 * took / n:>8.1f}")
    print(f"{'total':<12} {'':>6} {total:>8.2f}   (model load {load_s:.2f} s, not included)")
    base = ev.evaluate_base(name, ["forgetting"], cfg, "toy")  # cached on disk after the first
    start = time.perf_counter()
    interim = ev.evaluate(model, tokenizer, ["forgetting"], eval_config=cfg, dataset="toy",
                          base=base, limit=cfg.proxy_limit)  # fmt: skip
    took = time.perf_counter() - start
    score = interim.summary["forgetting/delta"]
    print(f"pruning evaluation: forgetting/delta {score:.3f} on {cfg.proxy_limit} items per task "
          f"in {took:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
