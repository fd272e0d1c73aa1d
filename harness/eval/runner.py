"""Run behavioural suites on an in-memory model with lm-eval; keep per-sample records; summarise
them with honest intervals; compare forgetting with the base model on the same items.

Public API
----------
evaluate(model, tokenizer, suites, *, eval_config, dataset, base, out_dir, limit) -> EvalResult
    Any loaded causal LM (a peft model works unmerged); nothing is reloaded from disk.
evaluate_base(model_name, suites, eval_config, dataset, *, limit) -> EvalResult
    The base model's results, cached on disk by model content + suite content + versions.
evaluate_model(name, *, adapter, suites, eval_config, dataset, base, limit, out_dir) -> EvalResult
    What `harness eval` does: load by name, evaluate, compare with the base.
resolve_dataset(dataset, model_name) -> "toy" | "english"
summarize(suite, records, base_records) -> dict[str, float]
format_summary(summary) -> str
load_result(out_dir) -> EvalResult

The lm-eval hooks named in `evals/*/*.yaml` (`score_refusal`, `score_format`, `score_target`,
`forgetting_docs`) live here too. lm-eval's own request cache is never used: it keys on the
request, not the model, and would serve one checkpoint's answers to another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config.schema import EvalConfig, StandardTask
from harness.config.suite import JudgeSpec
from harness.eval.base_cache import (
    _base_context,
    _cache_path,
    _read_cache,
    _write_cache,
    model_fingerprint,
)
from harness.eval.lm_tasks import stop_strings
from harness.eval.suites import (
    Suite,
    TaskRef,
    item_id,
    load_suites,
    over_budget,
    task_configs,
)
from harness.eval.summaries import _annotate, _summaries
from harness.models.load import load_tokenizer
from harness.sft.masking import CHAT_ADDS_SPECIAL_TOKENS
from harness.util.errors import HarnessError
from harness.util.files import read_jsonl, write_atomic


@dataclass
class EvalResult:
    """`summary`: MLflow-safe metric name -> value. `records`: suite -> per-sample records
    (suite, task, id, prompt, response, target, scores, doc_hash, doc), the unit of pairing."""

    summary: dict[str, float]
    records: dict[str, list[dict[str, Any]]]
    dataset: str = "toy"
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> Path:
        """Write `<suite>.jsonl` per suite and `summary.json` into `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for suite, rows in self.records.items():
            write_atomic(out / f"{suite}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        meta = {"dataset": self.dataset, "seconds": self.seconds, **self.info}
        body = {"summary": self.summary, "suites": sorted(self.records), "info": meta}
        write_atomic(out / "summary.json", json.dumps(body, indent=1, sort_keys=True))
        return out


def load_result(out_dir: str | Path) -> EvalResult:
    """Read back what `EvalResult.save` wrote (for reports and paired gates)."""
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise HarnessError(f"{out}: no summary.json there; is it an eval output folder?")
    body = json.loads((out / "summary.json").read_text())
    records = {s: read_jsonl(out / f"{s}.jsonl") for s in body["suites"]}
    info = body.get("info", {})
    return EvalResult(
        body["summary"], records, info.get("dataset", "toy"), info.get("seconds", 0), info
    )


# ---------------------------------------------------------------- lm-eval hooks (see evals/*/)


# ---------------------------------------------------------------- running lm-eval


def resolve_dataset(dataset: str, model_name: str | None) -> str:
    """`auto` means the toy data sets for the toy model (by name or path), English otherwise."""
    if dataset != "auto":
        return dataset
    from harness.config.schema import is_toy

    if model_name and is_toy(model_name):
        return "toy"
    if model_name:
        from harness.models.toy.build import cache_root

        root = (cache_root() / "toy").resolve()
        if root in Path(model_name).expanduser().resolve().parents:
            return "toy"
    return "english"


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm-eval logs every step at INFO; keep its warnings, drop the "not a str" note that
    passing a model object always triggers, and the "fatal: not a git repository" its git
    probe prints outside a checkout (we record the commit ourselves)."""
    if os.environ.get("HARNESS_DEBUG"):
        yield
        return
    import lm_eval.evaluator

    loggers = {"lm_eval": logging.WARNING, "lm_eval.models.huggingface": logging.ERROR}
    before = {name: logging.getLogger(name).level for name in loggers}
    for name, level in loggers.items():
        logging.getLogger(name).setLevel(level)
    probe = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = probe
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def _run_lm_eval(
    lm, tasks: list[Any], *, chat: bool, limit: int | None, standard: bool
) -> dict[str, list[dict]]:
    """One `simple_evaluate` call; returns lm-eval's per-sample logs by task name."""
    import lm_eval

    from harness.eval.lm_tasks import task_manager

    with _quiet_lm_eval():
        # Built-in tasks are indexed (~8 s, once per process) only when eval.tasks names some.
        manager = task_manager(standard)
        try:
            out = lm_eval.simple_evaluate(
                model=lm,
                tasks=tasks,
                task_manager=manager,
                apply_chat_template=chat,
                limit=limit,
                log_samples=True,
                bootstrap_iters=0,  # our own paired statistics replace lm-eval's stderr
                random_seed=None,  # leave global RNGs alone: this may run mid-training
                numpy_random_seed=None,
                torch_random_seed=None,
            )
        except KeyError as e:
            raise HarnessError(f"eval.tasks: {e.args[0]}") from None
        except OSError as e:  # ConnectionError included: a built-in task's data is not local
            if not standard:
                raise
            raise HarnessError(
                f"eval.tasks: cannot load a task's data ({str(e).splitlines()[0]}); "
                "run once with network access so the datasets cache has it, or drop eval.tasks"
            ) from None
    return out["samples"]


def _evaluate_records(
    model,
    tokenizer,
    suites: list[Suite],
    cfg: EvalConfig,
    dataset: str,
    limit: int | None,
    standard_tasks: Sequence[str | StandardTask] = (),
) -> dict[str, list[dict]]:
    """Per-sample records per suite; likelihood suites and chat suites in separate calls."""
    from lm_eval.models.huggingface import HFLM

    from harness.eval.lm_tasks import lm_eval_tasks, merge_filters

    stop = stop_strings(tokenizer, model)
    was_training = model.training
    with _quiet_lm_eval():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    records: dict[str, list[dict]] = {s.name: [] for s in suites}
    try:
        for chat in (False, True):
            group = [s for s in suites if s.chat_template == chat]
            if not group:
                continue
            # eval.tasks (standard lm-eval tasks) join the call of the suite that hosts them
            host = next((s.name for s in group if s.hosts_tasks), None)
            std = lm_eval_tasks(list(standard_tasks)) if host else []
            refs: dict[str, TaskRef] = {}
            configs: dict[str, dict[str, Any]] = {}
            for s in group:
                built = task_configs(s, dataset, max_new_tokens=cfg.max_new_tokens, stop=stop)
                for lm_name, (config, ref) in built.items():
                    budget = (config.get("generation_kwargs") or {}).get("max_gen_toks", 0)
                    if budget >= lm.max_length:
                        raise HarnessError(
                            f"suite {s.name}: generation budget {budget} new tokens does not fit "
                            f"the model's context of {lm.max_length}; pass a smaller "
                            "--max-new-tokens / eval.max_new_tokens"
                        )
                    configs[lm_name] = config
                    refs[lm_name] = ref
            # chat prompts: BOS only where the template writes it, as in training (masking.py)
            lm.add_bos_token = CHAT_ADDS_SPECIAL_TOKENS if chat else None
            tasks = [*configs.values(), *std]
            samples = _run_lm_eval(lm, tasks, chat=chat, limit=limit, standard=bool(std))
            judges = {s.name: s.judge for s in group if s.judge and s.judge.kind != "rules"}
            for lm_name, rows in samples.items():
                ref = refs.get(lm_name) or TaskRef(host or "", lm_name)
                gen = (configs.get(lm_name) or {}).get("generation_kwargs") or {}
                recs = [_record(ref, x, gen) for x in merge_filters(rows)]
                if ref.suite in judges:
                    _rejudge(judges[ref.suite], recs, configs[lm_name]["process_results"])
                if gen:
                    _mark_truncated(recs, tokenizer, gen["max_gen_toks"])
                records.setdefault(ref.suite, []).extend(recs)
    finally:
        model.train(was_training)
    return records


def _mark_truncated(records: list[dict], tokenizer, budget: int) -> None:
    """Per-sample score `truncated`: the reply used its whole generation budget, so it was cut
    off, not finished (a suite's `truncated_rate` says whether its budget fits real replies).
    lm-eval keeps only the decoded text; re-encoding it gives the generated count to within a
    token (a reply that stopped by itself never reaches the budget)."""
    for r in records:
        n = len(tokenizer(r["response"], add_special_tokens=False)["input_ids"])
        r["scores"]["truncated"] = float(n >= budget - 1)


def _rejudge(judge: JudgeSpec, records: list[dict], hook: Any) -> None:
    """A suite's model judge: lm-eval scored each reply with the built-in rules as it came; the
    declared judge labels them all in batches afterwards and the task's hook rescores each."""
    from harness.eval.judges import load_judge

    labels = load_judge(judge).classify(
        [r["response"] for r in records], [r["doc"].get("prompt") for r in records]
    )
    for r, label in zip(records, labels, strict=True):
        r["scores"] = {k: float(v) for k, v in hook(r["doc"], [r["response"]], label=label).items()}


def _record(ref: TaskRef, sample: dict, generation: dict | None = None) -> dict[str, Any]:
    doc = _clean(sample["doc"])
    args = sample["arguments"]
    resps = sample["filtered_resps"]
    rec: dict[str, Any] = {
        "suite": ref.suite,
        "task": ref.task,
        "id": str(item_id(doc, sample["doc_id"])),
        "doc_id": sample["doc_id"],
        "prompt": args[0][0],
    }
    if resps and isinstance(resps[0], (tuple, list)):  # likelihood: one request per choice
        choices = [a[1] for a in args]
        logliks = [float(r[0]) for r in resps]
        pred = max(range(len(logliks)), key=logliks.__getitem__)
        target = sample["target"]
        rec |= {
            "response": choices[pred],
            "target": choices[target] if isinstance(target, int) else target,
            "choices": choices,
            "logliks": logliks,
        }
    else:
        rec |= {"response": resps[0], "target": sample["target"]}
    # a list is one score per part of the item (lm-eval ifeval's per-instruction verdicts)
    rec["scores"] = {
        m: [float(v) for v in sample[m]] if isinstance(sample[m], list) else float(sample[m])
        for m in sample["metrics"]
    }
    rec["doc_hash"] = sample["doc_hash"]
    rec["doc"] = doc
    if generation:
        rec["generation"] = {k: generation[k] for k in sorted(generation)}
    rec["item_hash"] = item_hash(rec)
    return rec


def item_hash(record: dict[str, Any]) -> str:
    """Hash of what an item asks and expects and how the reply is generated (prompt, target,
    choices, generation settings): the gate pairs items only when these agree."""
    content = {k: record.get(k) for k in ("prompt", "target", "choices", "generation")}
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# ---------------------------------------------------------------- summaries


def _judges(suites: list[Suite]) -> dict[str, str]:
    """Suite -> the judge that scored its replies, for the run's info and params."""
    return {s.name: s.judge.name for s in suites if s.judge is not None}


# ---------------------------------------------------------------- public entry points


def evaluate(
    model,
    tokenizer,
    suites: list[str],
    *,
    eval_config: EvalConfig | None = None,
    dataset: str = "auto",
    base: str | EvalResult | None = None,
    out_dir: str | Path | None = None,
    limit: int | None = None,
    suite_dirs: list[str | Path] | tuple = (),
) -> EvalResult:
    """Evaluate a loaded model on the named suites (`limit`: first N items per task, defaults
    to eval_config.limit). Suites that compare with the base (e.g. forgetting) pair each item with
    `base`: its results (an EvalResult) or a model name whose results come from the base cache.
    The model's train/eval mode is restored afterwards, so this can run mid-training."""
    cfg = eval_config or EvalConfig()
    limit = limit if limit is not None else cfg.limit
    dataset = resolve_dataset(_dataset(dataset, cfg), getattr(model, "name_or_path", None))
    loaded = load_suites(suites, [*suite_dirs, *_config_suite_dirs(cfg)])
    start = time.time()
    records = _evaluate_records(
        model,
        tokenizer,
        loaded,
        cfg,
        dataset,
        limit,
        cfg.tasks if any(s.hosts_tasks for s in loaded) else [],
    )
    seconds = time.time() - start
    compared = [s.name for s in loaded if s.compares_base]
    base_records = None
    if isinstance(base, EvalResult):
        base_records = base.records
    elif base is not None and compared:
        base_records = evaluate_base(
            base, compared, cfg, dataset, limit=limit, suite_dirs=suite_dirs
        ).records
    _annotate(loaded, records, base_records)
    result = EvalResult(
        _summaries(loaded, records, base_records),
        records,
        dataset,
        seconds,
        {
            "judges": _judges(loaded),
            "over_budget": over_budget(loaded, dataset, cfg.max_new_tokens),
        },
    )
    if out_dir is not None:
        result.save(out_dir)
    return result


def evaluate_base(
    model_name: str,
    suites: list[str],
    eval_config: EvalConfig | None = None,
    dataset: str = "auto",
    *,
    limit: int | None = None,
    suite_dirs: list[str | Path] | tuple = (),
) -> EvalResult:
    """The base model's results, computed once per `cache_key` (model content, suite files,
    settings, generation context, versions) and cached under `$HARNESS_CACHE/baselines/`; a hit
    loads no model, only the tokenizer (the key holds its stop strings and template). Its summary
    compares the base with itself, so `forgetting/delta` is 0 and the metric set matches a
    candidate's."""
    cfg = eval_config or EvalConfig()
    limit = limit if limit is not None else cfg.limit
    dataset = resolve_dataset(_dataset(dataset, cfg), model_name)
    loaded = load_suites(suites, [*suite_dirs, *_config_suite_dirs(cfg)])
    fingerprint = model_fingerprint(model_name)
    tokenizer = load_tokenizer(model_name)
    context = _base_context(model_name, tokenizer) if fingerprint else {}
    records: dict[str, list[dict]] = {}
    for s in loaded:
        path = _cache_path(fingerprint, s, cfg, dataset, limit, context) if fingerprint else None
        hit = _read_cache(path) if path else None
        if hit is not None:
            records[s.name] = hit
    missing = [s for s in loaded if s.name not in records]
    seconds = 0.0
    if missing:
        from harness.models.load import load_model

        model = load_model(model_name)
        start = time.time()
        std = cfg.tasks if any(s.hosts_tasks for s in missing) else []
        fresh = _evaluate_records(model, tokenizer, missing, cfg, dataset, limit, std)
        seconds = time.time() - start
        if not fingerprint:  # a hub model is local now
            fingerprint = model_fingerprint(model_name)
            context = _base_context(model_name, tokenizer)
        for s in missing:
            records[s.name] = fresh.get(s.name, [])
            if fingerprint:
                path = _cache_path(fingerprint, s, cfg, dataset, limit, context)
                _write_cache(path, model_name, records[s.name])
    info = {
        "model": model_name,
        "cached": [s.name for s in loaded if s not in missing],
        "judges": _judges(loaded),
        "over_budget": over_budget(loaded, dataset, cfg.max_new_tokens),
    }
    _annotate(loaded, records, records)
    return EvalResult(_summaries(loaded, records, records), records, dataset, seconds, info)


def evaluate_model(
    name: str,
    *,
    adapter: str | None = None,
    suites: list[str],
    eval_config: EvalConfig | None = None,
    dataset: str = "auto",
    base: str | None = None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
    suite_dirs: list[str | Path] | tuple = (),
) -> EvalResult:
    """Load `name` (+ `adapter`) and evaluate it against `base` (default: `name` itself, so
    the base model alone is served from the cache with delta 0)."""
    cfg = eval_config or EvalConfig()
    dataset = resolve_dataset(_dataset(dataset, cfg), name)
    load_suites(suites, [*suite_dirs, *_config_suite_dirs(cfg)])  # fail before loading a model
    base = base or name
    if adapter is None and base == name:
        result = evaluate_base(name, suites, cfg, dataset, limit=limit, suite_dirs=suite_dirs)
    else:
        from harness.models.load import load_model

        model = load_model(name, adapter=adapter)
        has_tok = adapter and (Path(adapter) / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(adapter if has_tok else name)
        result = evaluate(
            model,
            tokenizer,
            suites,
            eval_config=cfg,
            dataset=dataset,
            base=base,
            limit=limit,
            suite_dirs=suite_dirs,
        )
    result.info |= {
        "model": name,
        "adapter": adapter,
        "base": base,
        "limit": limit,
        "eval": {
            "dataset": dataset,
            "max_new_tokens": cfg.max_new_tokens,
            "limit": limit if limit is not None else cfg.limit,
            "tasks": [t if isinstance(t, str) else t.model_dump() for t in cfg.tasks],
        },
    }
    if out_dir is not None:
        result.save(out_dir)
    return result


def _dataset(dataset: str, cfg: EvalConfig) -> str:
    """An explicit argument wins; `auto` defers to eval.dataset (itself possibly `auto`)."""
    return cfg.dataset if dataset == "auto" else dataset


def _config_suite_dirs(cfg: EvalConfig) -> list[str]:
    return list(getattr(cfg, "suite_dirs", None) or [])


# ---------------------------------------------------------------- the base-model cache


# ---------------------------------------------------------------- printing
