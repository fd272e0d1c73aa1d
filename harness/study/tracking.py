"""MLflow bookkeeping: one parent run per study, one nested child run per trial.

Layout (what reports and the gate read back). The MLflow experiment is tagged
`mlflow.experimentKind=custom_model_development`, so the UI opens on its training runs.
- parent run: tags `harness.role=study`, `harness.study=<name>`, `harness.command` and
  `harness.machine` (what started the study, and where); metrics `best/<metric>` and
  `base/<metric>` (the base model's own); artifacts `study/spec.json` (`config.StudySpec`:
  objectives, constraints, search space, replicates, suites with their metric declarations)
  and `study/trials.json`.
- child run (one per replicate of a trial): tags `harness.role=trial`, `harness.study`,
  `harness.trial`, `harness.state`, `optuna.trial_id`, `config_id` (a hash of the sampled
  parameters, equal across replicates and across studies) and `replicate` (0, 1, ...); params `trial.<path>` (sampled) and `cfg.<path>` (all resolved settings);
  metrics `train/loss` by step, every eval summary metric, `mix/<source>/...`; dataset inputs
  (each source in the mix, context `training`, its share as a tag); artifacts
  `config/resolved.yaml`, `lineage.json`, `records/<suite>.jsonl`, `samples/<suite>.json` (tables).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.config.load import resolve_tracking_uri
from harness.config.schema import Experiment
from harness.util.files import locked
from harness.util.names import safe_name
from harness.util.redact import redact
from harness.util.retry import retried
from harness.util.versions import machine

ROLE, STUDY, TRIAL, STATE = "harness.role", "harness.study", "harness.trial", "harness.state"
COMMAND, MACHINE = "harness.command", "harness.machine"  # what started the study, and where
STUDY_UID = "harness.study_uid"  # one Optuna study, wherever it lives (names can repeat)
CONFIG_ID, REPLICATE = "config_id", "replicate"
EXPERIMENT_KIND = "mlflow.experimentKind"


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def client_for(tracking_uri: str) -> Any:
    """An MlflowClient bound to `tracking_uri`; never the process-wide default URI."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))


def setup(exp: Experiment) -> str:
    """Point MLflow at the experiment's tracking URI and return the MLflow experiment id.

    For a sqlite store, artifacts go to `mlartifacts/` beside the database (an absolute path),
    so runs started from any folder land in one place.
    """
    import mlflow

    uri = resolve_tracking_uri(exp.tracking_uri)
    mlflow.set_tracking_uri(uri)
    with _first_open_lock(uri):
        found = mlflow.get_experiment_by_name(exp.name)
    if found:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts" / exp.name).as_uri()
    try:
        # The experiment kind makes the MLflow UI open on training runs, not the GenAI overview.
        return mlflow.create_experiment(
            exp.name, artifact_location=location, tags={EXPERIMENT_KIND: "custom_model_development"}
        )
    except Exception:  # another worker created it first
        found = mlflow.get_experiment_by_name(exp.name)
        if not found:
            raise
        return found.experiment_id


PARENT_SETTLE_SECONDS = 1.0  # longer than a store's commit latency plus workers' clock skew


@contextmanager
def _first_open_lock(uri: str) -> Iterator[None]:
    """MLflow creates and migrates a new sqlite store on first use; two workers doing that at
    once collide ("duplicate column"), so they take turns through a lock file beside it."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with locked(uri[len("sqlite:///") :] + ".lock"):
        yield


def command_line() -> str:
    """The command that started this process, as a shell would take it back."""
    import shlex
    import sys

    return shlex.join(
        ["harness" if sys.argv[0].endswith("harness") else sys.argv[0], *sys.argv[1:]]
    )


@retried
def find_parent(experiment_id: str, study_name: str) -> str | None:
    """The study's earliest parent run; run id breaks ties, so every worker agrees."""
    runs = client().search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{study_name}'",
        order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def start_parent(exp: Experiment, experiment_id: str, params: dict[str, Any]):
    """Resume the study's parent run (same study → same parent), or create it.

    Workers started together may each find no parent and create one. Each creator waits until
    every rival's creation is visible, then all keep the earliest (start time, run id) and the
    others delete theirs. A rival created after that wait has a later start time, so it loses.
    """
    import mlflow

    run_id = find_parent(experiment_id, exp.name)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    mine = client().create_run(
        experiment_id,
        run_name=f"study-{exp.name}",
        tags={ROLE: "study", STUDY: exp.name, COMMAND: command_line(), MACHINE: machine()},
    )
    time.sleep(PARENT_SETTLE_SECONDS)
    winner = find_parent(experiment_id, exp.name)
    if winner != mine.info.run_id:
        client().delete_run(mine.info.run_id)
        return mlflow.start_run(run_id=winner)
    run = mlflow.start_run(run_id=mine.info.run_id)
    log_params(params)
    return run


def config_id(params: dict[str, Any]) -> str:
    """A stable name for a sampled configuration: the same parameters give the same id in any
    trial, replicate or study, so runs of one configuration can be found and pooled."""
    import hashlib

    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@retried
def start_trial(
    exp: Experiment,
    experiment_id: str,
    number: int,
    trial_id: int,
    study_uid: str,
    *,
    config: str,
    replicate: int = 0,
):
    """The child run of one replicate of a trial (named `trial-N`, or `trial-N.r` when the
    study runs several replicates)."""
    import mlflow

    name = f"trial-{number}" + (f".{replicate}" if exp.replicates > 1 else "")
    return mlflow.start_run(
        experiment_id=experiment_id,
        run_name=name,
        nested=True,
        tags={
            ROLE: "trial",
            STUDY: exp.name,
            TRIAL: str(number),
            "optuna.trial_id": str(trial_id),
            STUDY_UID: study_uid,
            CONFIG_ID: config,
            REPLICATE: str(replicate),
        },
    )


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1}} → {'train.lr': 1}; lists of named items are keyed by name."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(data, list) and data and all(isinstance(x, dict) and "name" in x for x in data):
        for item in data:
            out.update(
                flatten({k: v for k, v in item.items() if k != "name"}, f"{prefix}{item['name']}.")
            )
    else:
        out[prefix.rstrip(".")] = data
    return out


@retried
def log_sources(lineage: dict) -> None:
    """Each source in the mix as an MLflow dataset input (the run table's Dataset column):
    name, file (or hub dataset), content hash, and its share of the mix as a tag."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    for name, info in lineage["mix"]["sources"].items():
        if not info["examples"]:
            continue
        path = lineage["sources"][name]["path"]
        if path.startswith("hf:"):
            source = HuggingFaceDatasetSource(path[3:].split(":", 1)[0])
        else:
            with warnings.catch_warnings():  # a file URI matches two equivalent source kinds
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(Path(path).resolve().as_uri())
        digest = lineage["sources"][name]["sha256"][:16]
        share = f"{info['realised_share']:.3f}"
        dataset = MetaDataset(source, name=name, digest=digest)
        for attempt in range(2):
            try:
                mlflow.log_input(dataset, "training", {"share": share})
                break
            except Exception as e:  # another worker created the same dataset row meanwhile
                if attempt or not _DUPLICATE.search(str(e)):
                    raise


# Two workers logging one dataset race to insert its row; the loser's second try links to it.
_DUPLICATE = re.compile(r"UNIQUE constraint failed|duplicate key value", re.IGNORECASE)


@retried
def log_params(params: dict[str, Any]) -> None:
    """Values as text, credentials redacted (a storage URL may carry a password)."""
    import mlflow

    clean = {}
    for k, v in params.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        clean[safe_name(k)[:250]] = redact(text)[:5000]
    mlflow.log_params(clean)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Finite numbers only (NaN/inf would poison comparisons), in one batch."""
    _log_batch(
        (k, v, step or 0)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    )


def log_curve(name: str, curve: list[tuple[int, float]]) -> None:
    """A metric's history, e.g. the training loss by step."""
    _log_batch((name, v, s) for s, v in curve)


@retried
def _log_batch(points: Any) -> None:
    """(name, value, step) points to the active run: finite values only, in batches MLflow takes."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(safe_name(name), float(v), now, int(step))
        for name, v, step in points
        if math.isfinite(v)
    ]
    run_id = mlflow.active_run().info.run_id
    for i in range(0, len(batch), 900):
        client().log_batch(run_id, metrics=batch[i : i + 900])


@retried
def log_records(records: dict[str, list[dict]]) -> None:
    """Per-sample eval records: JSONL (for pairing in reports and the gate) and MLflow tables
    (for browsing in the UI)."""
    import mlflow
    import pandas as pd

    for suite, rows in records.items():
        if not rows:
            continue
        mlflow.log_text(
            "".join(json.dumps(r, default=str) + "\n" for r in rows), f"records/{suite}.jsonl"
        )
        table = pd.DataFrame([{k: _cell(v) for k, v in r.items()} for r in rows])
        mlflow.log_table(data=table, artifact_file=f"samples/{suite}.json")


def _cell(value: Any) -> Any:
    return (
        value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)
    )


@retried
def end_run(state: str, reason: str | None = None, *, given_back: bool = False) -> None:
    """Tag the Optuna outcome and close the active run (FAIL → FAILED, PRUNED → KILLED). A
    trial given back to the study (an infrastructure error: `study._run_trial` queues it again)
    ends KILLED like one whose worker died: it failed through no fault of its configuration."""
    import mlflow

    mlflow.set_tag(STATE, state)
    if reason:
        mlflow.set_tag("harness.fail_reason", redact(reason)[:5000])
    status = (
        "KILLED"
        if given_back
        else {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
    )
    mlflow.end_run(status=status)


@retried
def reconcile(experiment_id: str, study_uid: str, trial_states: dict[int, str]) -> int:
    """Make MLflow agree with Optuna on every finished trial of this study (`study_uid`; a study
    of the same name elsewhere is left alone): a run left RUNNING by a killed process, a run
    ended COMPLETE whose process died before Optuna recorded it, a run cut short by Ctrl-C. Such
    runs take Optuna's state and become KILLED. `trial_states` maps Optuna trial ids to states;
    returns how many runs changed."""
    c = client()
    changed = 0
    runs = c.search_runs(
        [experiment_id],
        filter_string=f"tags.`{ROLE}` = 'trial' and tags.`{STUDY_UID}` = '{study_uid}'",
        max_results=50000,
    )
    for run in runs:
        state = trial_states.get(int(run.data.tags.get("optuna.trial_id", -1)))
        if state in (None, "RUNNING", "WAITING"):
            continue
        if run.info.status != "RUNNING" and run.data.tags.get(STATE) == state:
            continue
        c.set_tag(run.info.run_id, STATE, state)
        c.set_terminated(run.info.run_id, status="FINISHED" if state == "COMPLETE" else "KILLED")
        changed += 1
    return changed
