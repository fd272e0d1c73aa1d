"""The multi-worker protocol over Optuna's RDB storage: claiming trials under a lock, heartbeats,
giving back a trial on Ctrl-C, failing stale ones. The one module that touches Optuna's private
surface."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna

from harness.config.load import default_storage, resolve_tracking_uri
from harness.config.schema import Experiment
from harness.study.drills import drill
from harness.study.sampling import enqueue_grid, make_pruner, make_sampler
from harness.util.errors import HarnessError
from harness.util.files import locked
from harness.util.redact import redact
from harness.util.retry import interrupted, retried, transient

# A trial whose process died is failed after 3 missed heartbeats (tests shorten the interval).
HEARTBEAT_SECONDS = int(os.environ.get("HARNESS_HEARTBEAT_SECONDS", "10"))


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
        drill("recorded")
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
