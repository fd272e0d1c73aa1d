"""`harness run`: an Optuna study whose every trial is trained, judged on behaviour and logged.

One trial, top to bottom: sample parameters → for each replicate (seed, seed+1, ...): resolve
the experiment with them → build the data mix → masked SFT (at each eval interval the objective,
measured on a few items, goes to the pruner) → full eval suites against the cached base model →
its own MLflow child run; Optuna gets the replicate mean. A trial that fails (NaN loss, out of
memory, a sample that breaks validation) is recorded as failed with its reason, and the
study goes on. The same study name resumes the same study and the same MLflow parent run.
"""

from __future__ import annotations

import functools
import time
import warnings

import optuna

from harness.config.load import resolve_tracking_uri
from harness.config.schema import Experiment, StudySpec
from harness.study import tracking
from harness.study.drills import drill
from harness.study.lineage import _log_base, _log_lint, _log_spec, _log_study_summary
from harness.study.sampling import _grid_size, objectives_of
from harness.study.storage import (
    HEARTBEAT_SECONDS,
    _check_resumable,
    _claim_lock,
    _fail_stale_trials,
    _open_study,
    _progress,
    _run_trial,
    _states,
    _uid,
    storage_for,
)
from harness.study.table import StudyOutcome
from harness.study.trial import _objective, _Setup
from harness.util.retry import retried

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# We run trials with ask/tell under our own claim lock and heartbeat thread (`run_study`).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


# ---------------------------------------------------------------- Optuna pieces


# ---------------------------------------------------------------- the study


def run_study(
    exp: Experiment, n_trials: int | None = None, storage: str | None = None
) -> StudyOutcome:
    """Create or resume the study and run trials until `n_trials` have finished (any state).

    Any number of workers may run this on one study (shared RDB storage). Under the claim lock
    (`_claim_lock`) a worker fails stale trials, counts, and claims the next trial only while the
    finished ones plus those running elsewhere are short of the target; then it waits for those
    (taking over any whose worker dies) before it returns. A trial failed because its worker died,
    or given back (Ctrl-C, an infrastructure error), is queued again and does not count; see
    `_progress`.
    """
    from harness.eval import runner as ev
    from harness.eval.suites import check_metric_names, load_suites
    from harness.models.load import base_origin, load_tokenizer
    from harness.preflight.lint import lint_experiment
    from harness.sft.train import prepare_data

    # Everything that would fail every trial fails here, once, before any training; checks
    # that read no data first, so a typo is refused before the toy world is built.
    suites = load_suites(exp.eval.suites, exp.eval.suite_dirs)
    objectives = objectives_of(exp, suites)
    metrics = [m for m, _ in objectives] + [c.metric for c in exp.constraints]
    check_metric_names(metrics, suites, None, extra_tasks=exp.eval.tasks)
    dataset = ev.resolve_dataset(exp.eval.dataset, exp.model)
    check_metric_names(
        metrics,
        suites,
        dataset,
        extra_tasks=exp.eval.tasks,
    )
    rdb, storage_url = storage_for(exp, storage)
    _check_resumable(rdb, exp.name, objectives)
    tokenizer = load_tokenizer(exp.model)
    prepared = prepare_data(exp, tokenizer)  # bad data fails here, before the base eval
    lint = lint_experiment(exp)
    print(lint.summary(max_per_kind=3))
    print(f"study {exp.name}: base model {exp.model}; computing or loading its cached eval results")
    base = ev.evaluate_base(exp.model, exp.eval.suites, exp.eval, dataset)

    study = _open_study(exp, rdb, storage_url, objectives)
    tracking_uri = resolve_tracking_uri(exp.tracking_uri)
    experiment_id = tracking.setup(exp)
    target = n_trials if n_trials is not None else exp.n_trials
    if exp.sampler == "grid" and n_trials is None:
        target = min(target, _grid_size(exp))
    parent_params = {
        "study.sampler": exp.sampler,
        "study.pruner": exp.pruner,
        "study.replicates": exp.replicates,
        "study.storage": storage_url,
        "study.model": exp.model,
    }
    setup = _Setup(exp, tokenizer, base, dataset, experiment_id, objectives)
    with tracking.start_parent(exp, experiment_id, parent_params) as parent:
        _log_lint(lint)
        _log_spec(StudySpec.of(exp, objectives, suites, base_origin=base_origin(exp.model)))
        tracking.log_sources(prepared.lineage)  # the parent run's Dataset column: the mix
        _log_base(exp, base)
        tracking.log_metrics({f"base/{k}": v for k, v in base.summary.items() if k.count("/") == 1})
        print(f"study {exp.name}: {_progress(study)[0]} of {target} trial(s) done")
        deadline = time.monotonic() + exp.timeout if exp.timeout else None
        try:
            while True:
                with _claim_lock(storage_url, rdb.engine):
                    _fail_stale_trials(study)
                    done, running = _progress(study)
                    if done >= target or (deadline is not None and time.monotonic() > deadline):
                        break
                    trial = study.ask() if done + running < target else None
                    if trial is not None:
                        drill("claimed")
                        rdb.record_heartbeat(trial._trial_id)
                if trial is None:
                    time.sleep(HEARTBEAT_SECONDS)  # other workers run the last trials
                    continue
                _run_trial(study, rdb, trial, functools.partial(_objective, setup=setup))
        finally:  # also on Ctrl-C: MLflow agrees with Optuna on every finished trial
            tracking.reconcile(experiment_id, _uid(study), _states(study))
        retried(_log_study_summary)(study, objectives)
        outcome = StudyOutcome(
            study, experiment_id, parent.info.run_id, tracking_uri, storage_url, base=base.summary
        )
    return outcome
