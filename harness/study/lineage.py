"""What a trial and a study record in MLflow besides metrics: the data that trained it, the
resolved spec, lint findings, code commit and library versions."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import optuna

from harness.config.schema import (
    Experiment,
    StudySpec,
)
from harness.models.gguf import gguf_params
from harness.study import tracking
from harness.study.table import best_trials
from harness.util.redact import redact
from harness.util.versions import package_versions


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
            "lineage.versions": package_versions(),
            **gguf_params(lineage.get("base_model", {}).get("gguf"), "lineage.base"),
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


def _log_base(exp: Experiment, base: Any) -> None:
    """What the base model is and whether it reproduces its published scores: GGUF provenance
    as parameters, `eval.reference_scores` checked on its records as `study/reference.json`
    (the report's "Base model vs reference scores") and `reference/<task>/<metric>` metrics."""
    import mlflow

    from harness.eval.reference import check_references
    from harness.models.load import model_origin

    tracking.log_params(gguf_params(model_origin(exp.model).get("gguf"), "study.model"))
    if not exp.eval.reference_scores:
        return
    checks = check_references(base.records, exp.eval.reference_scores)
    mlflow.log_dict({"checks": [c.to_dict() for c in checks]}, "study/reference.json")
    tracking.log_metrics(
        {f"reference/{c.metric}": c.measured for c in checks if c.measured is not None}
    )


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
    """HEAD of the harness's checkout, marked `-dirty` when tracked files differ from it (the
    numbers then come from code no commit holds)."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )  # fmt: skip
        return out.stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        if not head:
            return "unknown"
        return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


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
