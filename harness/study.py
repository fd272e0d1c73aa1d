"""`harness run`: an Optuna study whose every trial is trained, judged on behaviour and logged.

One trial, top to bottom: sample parameters → for each replicate (seed, seed+1, ...): resolve
the experiment with them → build the data mix → masked SFT (at each eval interval the objective,
measured on a few items, goes to the pruner) → full eval suites against the cached base model →
its own MLflow child run; Optuna gets the replicate mean. A trial that fails (NaN loss, out of
memory, a sample that breaks validation) is recorded as failed with its reason, and the
study goes on. The same study name resumes the same study and the same MLflow parent run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from harness import tracking
from harness.config import (
    Experiment,
    SearchSpace,
    StudySpec,
    default_storage,
    grid_points,
    resolve_tracking_uri,
    with_params,
)
from harness.errors import HarnessError
from harness.files import locked
from harness.redact import redact
from harness.retry import interrupted, retried, transient

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# We run trials with ask/tell under our own claim lock and heartbeat thread (`run_study`).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
# A trial whose process died is failed after 3 missed heartbeats (tests shorten the interval).
HEARTBEAT_SECONDS = int(os.environ.get("HARNESS_HEARTBEAT_SECONDS", "10"))


@dataclass
class StudyOutcome:
    study: optuna.Study
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    storage: str
    report_dir: Path | None = None
    base: dict[str, float] = field(default_factory=dict)  # the base model's eval summary


# ---------------------------------------------------------------- Optuna pieces


class _Storage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, plus one rule: a RUNNING trial with no heartbeat at all (its worker
    died between claiming it and its first heartbeat) is stale once it is older than the grace
    period. Optuna's own check skips such trials, which left them RUNNING forever."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        from datetime import datetime, timedelta

        import sqlalchemy.orm
        from optuna.storages._rdb import models

        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        with sqlalchemy.orm.Session(self.engine) as session:
            silent = [
                (t.trial_id, t.datetime_start)
                for t in session.query(models.TrialModel)
                .filter(models.TrialModel.study_id == study_id)
                .filter(models.TrialModel.state == optuna.trial.TrialState.RUNNING)
                .filter(~models.TrialModel.heartbeats.any())
            ]
        now = datetime.now()  # datetime_start reads back as naive local time
        return stale + [i for i, start in silent if start is None or now - start > grace]


def storage_for(exp: Experiment, override: str | None = None) -> tuple[_Storage, str]:
    """The study's RDB storage. A trial whose worker died (no heartbeat for 3 intervals) or that
    was given back (Ctrl-C, an infrastructure error) is failed and queued again with the same
    parameters, up to 3 times: that is not the configuration's fault."""
    url = resolve_tracking_uri(
        override or exp.storage or default_storage(exp.tracking_uri, exp.base_dir)
    )
    for attempt in range(3):  # workers starting together race to create the tables
        try:
            with _claim_lock(url):
                return _Storage(
                    url,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=3 * HEARTBEAT_SECONDS,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=3
                    ),
                ), url
        except Exception as e:  # unreachable server, bad URL, missing driver
            if attempt == 2 or "already exists" not in str(e) and "UNIQUE" not in str(e):
                reason = str(e).splitlines()[0][:200]
                raise HarnessError(f"storage {url}: cannot open ({reason})") from None
            time.sleep(1)
    raise AssertionError("unreachable")


@contextmanager
def _claim_lock(url: str, engine: Any = None) -> Iterator[None]:
    """Workers take turns to fail stale trials and claim the next one, so no trial is claimed
    or retried twice. sqlite ignores Optuna's row locks: a lock file beside the database (one
    machine). PostgreSQL: a session advisory lock. Other servers rely on Optuna's row locks."""
    if url.startswith("sqlite:///"):
        with locked(url[len("sqlite:///") :] + ".lock"):
            yield
        return
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    with engine.connect() as conn:
        conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
            conn.commit()


_LOCK_KEY = 0x5F7_4A2E  # any fixed number: one lock per PostgreSQL database


def _constraints(trial: optuna.trial.FrozenTrial) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0])


def make_sampler(exp: Experiment) -> optuna.samplers.BaseSampler:
    constraints = _constraints if exp.constraints else None
    if exp.sampler in ("grid", "random"):  # grid: its points are queued up front (_open_study)
        return optuna.samplers.RandomSampler(seed=exp.seed)
    if exp.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=exp.seed, constraints_func=constraints)
    return optuna.samplers.TPESampler(seed=exp.seed, constraints_func=constraints)


def make_pruner(exp: Experiment) -> optuna.pruners.BasePruner:
    if exp.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    if exp.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


GRID_POINT = "grid point"  # the Optuna parameter of a grid with conditional dimensions


def sample(trial: optuna.Trial, exp: Experiment) -> dict[str, Any]:
    """A trial's configuration by dotted path: where the search space becomes `trial.suggest_*`.

    Dimensions are sampled in file order; a conditional one only where its `when` holds (see
    `config.SearchSpace`). Each case of a dimension is its own Optuna parameter (named
    `<path> | <condition>`), so a sampler never mixes the LoRA range with the full fine-tuning
    one. A grid's points are queued once up front (`enqueue_grid`; a conditional grid's by
    their index in `config.grid_points`), so each trial takes one and none runs twice.
    """
    if exp.sampler == "grid" and _conditional(exp):
        points = grid_points(exp.search)
        return points[trial.suggest_categorical(GRID_POINT, list(range(len(points))))]
    params: dict[str, Any] = {}
    for path, dimension in exp.search.items():
        space = dimension.applying(params)
        if space is None:
            continue
        name = path
        if dimension.cases:
            name += " | " + ", ".join(f"{k}={v}" for k, v in (space.when or {}).items())
        params[path] = suggest(trial, name, space)
    return params


def _conditional(exp: Experiment) -> bool:
    return any(v.when for s in exp.search.values() for v in s.variants)


def suggest(trial: optuna.Trial, name: str, space: SearchSpace) -> Any:
    if space.type == "float":
        return trial.suggest_float(name, space.low, space.high, log=space.log, step=space.step)
    if space.type == "int":
        step = int(space.step or 1)
        return trial.suggest_int(name, int(space.low), int(space.high), step=step, log=space.log)
    return trial.suggest_categorical(name, space.choices)


def objectives_of(exp: Experiment) -> list[tuple[str, str]]:
    """(metric, direction) pairs; without objectives, keep forgetting low (`forgetting/delta`)."""
    if exp.objectives:
        return [(o.metric, o.direction) for o in exp.objectives]
    if "forgetting" not in exp.eval.suites:
        raise HarnessError(
            "objectives: none given, and the default (forgetting/delta) needs the forgetting "
            "suite in eval.suites; add it there or declare objectives"
        )
    return [("forgetting/delta", "maximize")]


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
    from harness import evaluate as ev
    from harness.lint import lint_experiment
    from harness.models import load_tokenizer
    from harness.suites import check_metric_names, load_suites
    from harness.train import prepare_data

    # Everything that would fail every trial fails here, once, before any training.
    objectives = objectives_of(exp)
    dataset = ev.resolve_dataset(exp.eval.dataset, exp.model)
    suites = load_suites(exp.eval.suites, exp.eval.suite_dirs)
    check_metric_names(
        [m for m, _ in objectives] + [c.metric for c in exp.constraints],
        suites,
        dataset,
        extra_tasks=exp.eval.tasks,
    )
    rdb, storage_url = storage_for(exp, storage)
    _check_resumable(rdb, exp.name, objectives)
    tokenizer = load_tokenizer(exp.model)
    prepare_data(exp, tokenizer)
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
        _log_spec(StudySpec.of(exp, objectives, suites))
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
                        _drill("claimed")
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


def _check_resumable(storage: _Storage, name: str, objectives: list[tuple[str, str]]) -> None:
    """An existing study keeps its objectives: resuming with others would mix incomparable
    trials (and Optuna refuses mid-way), so say so now, before any evaluation."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a new study
        return
    directions = [d.name.lower() for d in study.directions]
    names = study.metric_names or ["?"] * len(directions)  # studies made by other tools
    before = list(zip(names, directions, strict=True))
    if len(before) != len(objectives) or any(
        d != od or m not in ("?", om) for (m, d), (om, od) in zip(before, objectives, strict=True)
    ):
        was = ", ".join(f"{m} ({d})" for m, d in before)
        now = ", ".join(f"{m} ({d})" for m, d in objectives)
        raise HarnessError(
            f"study {name}: exists with objectives {was}, not {now}; "
            "keep them, or choose a new study name"
        )


def _open_study(
    exp: Experiment, storage: _Storage, url: str, objectives: list[tuple[str, str]]
) -> optuna.Study:
    """Create or load the study; under the claim lock, give it its identity (`_uid`) and queue
    every grid point once, so workers claim grid points instead of each sampling its own."""
    import uuid

    with _claim_lock(url, storage.engine):
        study = optuna.create_study(
            study_name=exp.name,
            storage=storage,
            load_if_exists=True,
            directions=[d for _, d in objectives],
            sampler=make_sampler(exp),
            pruner=make_pruner(exp),
        )
        if not study.metric_names:
            study.set_metric_names([m for m, _ in objectives])
        if _UID not in study.user_attrs:
            study.set_user_attr(_UID, uuid.uuid4().hex)
        if exp.sampler == "grid":
            enqueue_grid(study, exp)
    return study


def enqueue_grid(study: optuna.Study, exp: Experiment) -> None:
    """Queue every grid point once (a conditional grid's points by index, see `sample`); the
    grid sampler then only hands out queued points, so no configuration runs twice."""
    for i, point in enumerate(grid_points(exp.search)):
        study.enqueue_trial({GRID_POINT: i} if _conditional(exp) else point, skip_if_exists=True)


_UID = "harness.uid"


def _uid(study: optuna.Study) -> str:
    """The study's identity in MLflow tags: two studies may share a name, never a uid."""
    return study.user_attrs[_UID]


def _run_trial(study: optuna.Study, storage: _Storage, trial: optuna.Trial, objective: Any) -> None:
    """Run one claimed trial with heartbeats and record its outcome. Ctrl-C or an infrastructure
    error (`retry.transient`) gives the trial back: failed, queued again, not counted."""

    def tell(*args: Any, **kwargs: Any) -> None:
        if storage.get_trial(trial._trial_id).state.is_finished():  # failed as stale meanwhile
            print(f"trial {trial.number}: another worker took it over (heartbeats missed)")
            return
        retried(study.tell)(trial, *args, **kwargs)

    try:
        with _heartbeats(storage, trial._trial_id):
            values = objective(trial)
    except optuna.TrialPruned:
        tell(state=optuna.trial.TrialState.PRUNED)
    except KeyboardInterrupt:
        _give_back(study, storage, trial, "interrupted (Ctrl-C)")
        raise
    except Exception as e:
        if interrupted(e):
            _give_back(study, storage, trial, "interrupted (Ctrl-C)")
            raise KeyboardInterrupt from e
        if not transient(e):
            tell(state=optuna.trial.TrialState.FAIL)
            return
        _give_back(study, storage, trial, redact(f"infrastructure error: {e}".splitlines()[0]))
    else:
        _drill("recorded")
        tell(values)


def _give_back(study: optuna.Study, storage: _Storage, trial: optuna.Trial, reason: str) -> None:
    """Fail the trial and queue its parameters again, as for a trial whose worker died."""
    if storage.get_trial(trial._trial_id).state.is_finished():  # failed as stale and requeued
        return
    print(f"trial {trial.number}: given back to the study, to run again ({reason[:300]})")
    retried(trial.set_user_attr)("fail_reason", reason[:500])
    retried(study.tell)(trial, state=optuna.trial.TrialState.FAIL)
    requeue = storage.get_heartbeat_stale_trial_callback()
    retried(requeue)(study, storage.get_trial(trial._trial_id))


@contextmanager
def _heartbeats(storage: _Storage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat every interval while it runs. A failed write (a locked
    database) is only a missed beat; three in a row and other workers take the trial over."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a missed beat: the next one tries again
                storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _drill(phase: str) -> None:
    """Fault drills (tests/test_drills.py): `HARNESS_TEST_KILL_AT=<phase>` kills this worker
    with SIGKILL at that point of a trial, where no outside observer could time it."""
    if os.environ.get("HARNESS_TEST_KILL_AT") == phase:
        os.kill(os.getpid(), signal.SIGKILL)


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
    from harness import evaluate as ev
    from harness.train import load_base_model, prepare_data, save, train

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
            tracking.log_params({f"cfg.{k}": v for k, v in tracking.flatten(texp.raw).items()})
            _log_text("config/resolved.yaml", _yaml(texp.raw))

            data = prepare_data(texp, tokenizer)
            model = load_base_model(texp)
            prunes = len(objectives) == 1 and replicate == 0  # Optuna prunes single objectives

            def on_interval(step: int, model: Any) -> bool:
                metric = objectives[0][0]
                score = _interim_objective(
                    model, tokenizer, texp, setup.dataset, setup.base, metric
                )
                tracking.log_metrics({f"interim/{metric}": score}, step=step)
                if not prunes:
                    return False
                trial.report(score, step)
                return trial.should_prune()

            _drill("training")
            result = train(texp, model, tokenizer, data, on_interval=on_interval, verbose=False)
            _log_training(result, data.lineage, tokenizer, texp)
            if result.status == "pruned":
                tracking.end_run("PRUNED", result.reason)
                raise optuna.TrialPruned(result.reason)
            if result.status != "ok":
                raise HarnessError(result.reason or f"training ended with status {result.status}")

            _drill("evaluating")
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
    from harness import evaluate as ev

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


# ---------------------------------------------------------------- logging helpers


def _log_training(result: Any, lineage: dict, tokenizer: Any, exp: Experiment) -> None:
    import hashlib

    import mlflow

    tracking.log_curve("train/loss", result.loss_curve)
    summary = result.summary()
    tracking.log_metrics(
        {
            f"train/{k}": v
            for k, v in summary.items()
            if k not in ("loss_curve", "status", "reason", "batching")
        }
    )
    for source, info in lineage["mix"]["sources"].items():
        trained = lineage["trained"].get(source, {})
        tracking.log_metrics(
            {
                f"mix/{source}/share": info["realised_share"],
                f"mix/{source}/requested_share": info["requested_share"],
                f"mix/{source}/examples": info["examples"],
                f"mix/{source}/tokens": trained.get("tokens", 0),
                f"mix/{source}/trainable_tokens": trained.get("trainable_tokens", 0),
            }
        )

    template_hash = hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest()[:16]
    tracking.log_params(
        {
            "lineage.chat_template.train": template_hash,
            "lineage.chat_template.eval": template_hash,  # one tokenizer object serves both
            "lineage.git_commit": _git_commit(),
            "lineage.versions": _versions(),
            **{
                f"lineage.source.{name}.sha256": info.get("sha256", "")
                for name, info in lineage.get("sources", {}).items()
                if isinstance(info, dict)
            },
        }
    )
    mlflow.log_dict(lineage, "lineage.json")
    tracking.log_sources(lineage)


def _log_spec(spec: StudySpec) -> None:
    """The study's one typed record, which reports read back (`analysis.load_study`)."""
    import mlflow

    mlflow.log_dict(spec.model_dump(mode="json", exclude_none=True), "study/spec.json")


def _log_lint(lint: Any) -> None:
    """The data lint of the study's sources, on the parent run (it informs; it does not stop)."""
    import mlflow

    mlflow.log_dict(lint.to_dict(), "lint.json")
    tracking.log_metrics({f"lint/{kind}": n for kind, n in lint.by_kind().items()})


def _log_text(path: str, text: str) -> None:
    import mlflow

    mlflow.log_text(redact(text), path)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


@functools.cache
def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.cache
def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("sft-harness", "torch", "transformers", "peft", "lm_eval", "optuna", "mlflow"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


# ---------------------------------------------------------------- study state


def _states(study: optuna.Study) -> dict[int, str]:
    """Trial states by Optuna trial id (unique across the storage, unlike numbers)."""
    return {t._trial_id: t.state.name for t in study.get_trials(deepcopy=False)}


def _progress(study: optuna.Study) -> tuple[int, int]:
    """(finished trials toward `n_trials`, trials running now), from one read of the study (two
    reads would miss a trial finishing between them). A trial killed with its worker or given
    back and retried does not count (its retry does), so that costs time, not a grid point."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    done = sum(t.state.is_finished() and t.number not in retried for t in trials)
    return done, sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)


def _fail_stale_trials(study: optuna.Study) -> None:
    """Trials whose worker died (no heartbeat) become FAIL and are queued again, now."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(states=(optuna.trial.TrialState.FAIL,))}
    for t in running:
        if t.number in failed:
            print(f"trial {t.number}: its worker stopped sending heartbeats; queued again")


def _grid_size(exp: Experiment) -> int:
    return len(grid_points(exp.search))


def _log_study_summary(study: optuna.Study, objectives: list[tuple[str, str]]) -> None:
    import mlflow

    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "params": t.user_attrs.get("params", t.params),
            "values": t.values,
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "fail_reason": t.user_attrs.get("fail_reason"),
            "summary": t.user_attrs.get("summary", {}),
            "summary_sd": t.user_attrs.get("summary_sd", {}),
            "config_id": t.user_attrs.get("config_id"),
            "replicates": t.user_attrs.get("replicates", []),
            "constraints": t.user_attrs.get("constraints"),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    mlflow.log_dict(trials, "study/trials.json")
    best = best_trials(study)
    mlflow.set_tag("harness.best_trials", ",".join(str(t.number) for t in best))
    if len(best) == 1:
        tracking.log_metrics(
            {f"best/{m}": v for (m, _), v in zip(objectives, best[0].values, strict=True)}
        )


def best_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The best completed trial, or the Pareto front for several objectives, by the report's
    rule (`analysis.best_of`): among trials that satisfy every constraint, or among all
    completed ones when none does. Every sampler gets the same rule (Optuna's own applies
    constraints only for samplers that take them)."""
    from harness.analysis import best_of

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    feasible = [all(v <= 0 for v in t.user_attrs.get("constraints", [])) for t in complete]
    maximize = [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]
    return [complete[i] for i in best_of([t.values for t in complete], feasible, maximize)]


def _print_trial(
    number: int, params: dict, summary: dict, objectives: list, seconds: float, replicates: int
) -> None:
    shown = ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    values = ", ".join(f"{m}={summary.get(m, float('nan')):.3f}" for m, _ in objectives)
    pooled = f", mean of {replicates} replicates" if replicates > 1 else ""
    print(f"trial {number}: {values} ({shown}{pooled}) in {seconds:.0f}s")


def print_table(outcome: StudyOutcome, exp: Experiment) -> None:
    """A short table of trials and where to look next."""
    import sys

    from rich.console import Console
    from rich.table import Table

    from harness.suites import key_metrics, load_suites

    study = outcome.study
    columns = key_metrics(load_suites(exp.eval.suites, exp.eval.suite_dirs))
    table = Table(title=f"study {exp.name}")
    for header in (
        "trial",
        "state",
        *(_short(name) for name in exp.search),
        *(k.label for k in columns),
    ):
        table.add_column(header, no_wrap=True)
    best = {t.number for t in best_trials(study)}
    blank = [""] * (1 + len(exp.search))
    table.add_row("base", *blank, *(_cell(outcome.base, {}, k.name) for k in columns))
    for t in study.get_trials(deepcopy=False):
        summary, spread = t.user_attrs.get("summary", {}), t.user_attrs.get("summary_sd", {})
        cells = [f"{t.number}{' *' if t.number in best else ''}", t.state.name.lower()]
        params = t.user_attrs.get("params", t.params)
        cells += [str(params.get(name, "")) for name in exp.search]
        cells += [_cell(summary, spread, k.name) for k in columns]
        table.add_row(*cells)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print("* best trial (the Pareto front when there are several objectives)")
    if exp.replicates > 1:
        console.print(f"metrics: mean ± standard deviation over {exp.replicates} replicates")
    console.print(f"MLflow: mlflow ui --backend-store-uri {redact(outcome.tracking_uri)}")
    if outcome.report_dir:
        console.print(f"report: {outcome.report_dir}/report.html (and report.md)")
    console.print(f"Optuna storage: {redact(outcome.storage)}")


def _cell(summary: dict[str, float], spread: dict[str, float], metric: str) -> str:
    if metric not in summary:
        return ""
    sd = f"±{spread[metric]:.3f}" if metric in spread else ""
    return f"{summary[metric]:.3f}{sd}"


def _short(path: str) -> str:
    """`data.sources.replay.weight` → `replay`; `peft.enabled` → `lora`; else the last part."""
    parts = path.split(".")
    if path == "peft.enabled":
        return "lora"
    return parts[-2] if parts[-1] == "weight" and len(parts) > 1 else parts[-1]


def write_report(outcome: StudyOutcome, exp: Experiment) -> Path | None:
    """The study report under `reports/<name>/`, also attached to the parent run."""
    from harness.report import write_study_report

    out = Path("reports") / exp.name
    md, html = write_study_report(exp.name, outcome.tracking_uri, out)
    for path in (md, html, out / "effects.json"):
        tracking.client().log_artifact(outcome.parent_run_id, str(path), "report")
    return out
