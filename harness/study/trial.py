"""One trial: sample its parameters, train and evaluate each replicate, log it, and return its
objective values."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from harness.config.load import with_params
from harness.config.schema import Experiment
from harness.study import tracking
from harness.study.drills import drill
from harness.study.lineage import _log_text, _log_training, _yaml
from harness.study.sampling import sample
from harness.study.storage import _uid
from harness.study.table import _print_trial
from harness.util.errors import HarnessError
from harness.util.redact import redact
from harness.util.retry import interrupted, transient
from harness.util.watchdog import deadline


@dataclass(frozen=True)
class _Setup:
    """What every trial of a study shares (made once, before the study starts)."""

    exp: Experiment
    tokenizer: Any
    base: Any  # the base model's EvalResult
    dataset: str
    experiment_id: str
    objectives: list[tuple[str, str]]

    @property
    def needed(self) -> set[str]:
        """The metrics Optuna sees: objectives and constraints."""
        return {m for m, _ in self.objectives} | {c.metric for c in self.exp.constraints}


def _objective(trial: optuna.Trial, setup: _Setup) -> float | list[float]:
    """One trial: sample a configuration, run it `replicates` times (seeds seed, seed+1, ...),
    and give Optuna the replicate mean of each objective and constraint."""
    exp, objectives = setup.exp, setup.objectives
    params = sample(trial, exp)
    config = tracking.config_id(params)
    trial.set_user_attr("params", params)
    trial.set_user_attr("config_id", config)
    started = time.time()
    replicates: list[dict] = []
    for replicate in range(exp.replicates):
        replicates.append({"replicate": replicate, "seed": exp.seed + replicate})
        summary = _run_replicate(trial, setup, params, config, replicates)
        kept = {k: v for k, v in summary.items() if _headline(k) or k in setup.needed}
        replicates[-1]["summary"] = kept
        trial.set_user_attr("replicates", replicates)
    summary, spread = mean_summary([r["summary"] for r in replicates])
    trial.set_user_attr("summary", summary)
    if spread:
        trial.set_user_attr("summary_sd", spread)
    if exp.constraints:
        trial.set_user_attr(
            "constraints", [c.violation(_metric(summary, c.metric)) for c in exp.constraints]
        )
    _print_trial(trial.number, params, summary, objectives, time.time() - started, len(replicates))
    values = [summary[m] for m, _ in objectives]
    return values[0] if len(values) == 1 else values


def mean_summary(summaries: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Replicate mean of each metric, and (for two or more replicates) its sample standard
    deviation: the seed noise an effect between configurations is judged against."""
    import statistics

    names = [k for k in summaries[0] if all(k in s for s in summaries)]
    mean = {k: statistics.fmean(s[k] for s in summaries) for k in names}
    if len(summaries) < 2:
        return mean, {}
    return mean, {k: statistics.stdev(s[k] for s in summaries) for k in names}


def _run_replicate(
    trial: optuna.Trial, setup: _Setup, params: dict[str, Any], config: str, replicates: list
) -> dict[str, float]:
    """Train and evaluate the last of `replicates` in its own MLflow child run; returns its
    eval summary. Only the first replicate reports to the pruner (Optuna keeps one value per
    step), so a pruned trial has one run."""
    from harness.eval import runner as ev
    from harness.sft.train import load_base_model, prepare_data, save, train

    exp, tokenizer, objectives = setup.exp, setup.tokenizer, setup.objectives
    replicate, seed = replicates[-1]["replicate"], replicates[-1]["seed"]
    name = f"trial-{trial.number}" + (f".{replicate}" if exp.replicates > 1 else "")
    trial_dir = Path(exp.output_dir).resolve() / exp.name / name
    started = time.time()
    with tracking.start_trial(
        exp,
        setup.experiment_id,
        trial.number,
        trial._trial_id,
        _uid(trial.study),
        config=config,
        replicate=replicate,
    ) as run:
        if replicate == 0:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
        replicates[-1]["mlflow_run_id"] = run.info.run_id
        trial.set_user_attr("replicates", replicates)
        tracking.log_params({f"trial.{k}": v for k, v in params.items()})
        try:
            texp = with_params(exp, {**params, "seed": seed} if exp.replicates > 1 else params)
            # every setting, defaults included, as the trial ran it (not only what the YAML said)
            resolved = texp.model_dump(mode="json")
            tracking.log_params({f"cfg.{k}": v for k, v in tracking.flatten(resolved).items()})
            _log_text("config/resolved.yaml", _yaml(resolved))

            data = prepare_data(texp, tokenizer)
            model = load_base_model(texp)
            prunes = len(objectives) == 1 and replicate == 0  # Optuna prunes single objectives

            def on_interval(step: int, model: Any) -> bool:
                metric = objectives[0][0]
                with deadline(
                    texp.eval.timeout,
                    f"trial {trial.number}: pruning evaluation at step {step} (eval.timeout)",
                    stacks=trial_dir / "eval" / "stalled-stacks.txt",
                ):
                    score = _interim_objective(
                        model, tokenizer, texp, setup.dataset, setup.base, metric
                    )
                tracking.log_metrics({f"interim/{metric}": score}, step=step)
                if not prunes:
                    return False
                trial.report(score, step)
                return trial.should_prune()

            drill("training")
            result = train(texp, model, tokenizer, data, on_interval=on_interval, verbose=False)
            _log_training(result, data.lineage, tokenizer, texp)
            if result.status == "pruned":
                tracking.end_run("PRUNED", result.reason)
                raise optuna.TrialPruned(result.reason)
            if result.status != "ok":
                raise HarnessError(result.reason or f"training ended with status {result.status}")

            with deadline(
                texp.eval.timeout,
                f"trial {trial.number}: evaluation (eval.timeout)",
                stacks=trial_dir / "eval" / "stalled-stacks.txt",
            ):
                drill("evaluating")
                evaluation = ev.evaluate(
                    result.model,
                    tokenizer,
                    texp.eval.suites,
                    eval_config=texp.eval,
                    dataset=setup.dataset,
                    base=setup.base,
                    out_dir=trial_dir / "eval",
                )
            tracking.log_metrics(evaluation.summary)
            tracking.log_metrics({"trial/eval_seconds": evaluation.seconds})
            tracking.log_params({f"judge/{k}": v for k, v in evaluation.info["judges"].items()})
            tracking.log_records(evaluation.records)
            if texp.save_models:
                weights = save(result, tokenizer, texp, trial_dir)
                tracking.log_params({"saved_model": str(weights)})
            for metric in setup.needed:
                _metric(evaluation.summary, metric)  # a metric the study needs is missing: fail
            tracking.log_metrics({"trial/seconds": time.time() - started})
            tracking.end_run("COMPLETE")
            return evaluation.summary
        except optuna.TrialPruned:
            print(f"trial {trial.number}: pruned ({time.time() - started:.0f}s)")
            raise
        except Exception as e:
            reason = redact(f"{type(e).__name__}: {e}".splitlines()[0])[:500]
            trial.set_user_attr("fail_reason", reason)
            tracking.end_run("FAIL", reason, given_back=transient(e) or interrupted(e))
            print(f"trial {trial.number}: FAILED — {reason}")
            raise


def _interim_objective(
    model: Any, tokenizer: Any, exp: Experiment, dataset: str, base: Any, metric: str
) -> float:
    """What the pruner sees mid-training: the objective metric itself, on the first
    `eval.proxy_limit` items of its suite — a noisier estimate of the same quantity."""
    from harness.eval import runner as ev

    suite = metric.split("/", 1)[0]
    result = ev.evaluate(
        model,
        tokenizer,
        [suite],
        eval_config=exp.eval,
        dataset=dataset,
        base=base,
        limit=exp.eval.proxy_limit,
    )
    return _metric(result.summary, metric)


def _metric(summary: dict[str, float], name: str) -> float:
    if name not in summary:
        known = ", ".join(sorted(k for k in summary if _headline(k)))
        raise HarnessError(f"objective/constraint metric {name!r} was not produced; known: {known}")
    return float(summary[name])


def _headline(name: str) -> bool:
    return name.count("/") == 1 and not name.endswith(("_low", "_high"))
