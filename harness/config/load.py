"""Reading an experiment file: YAML, `--set` overrides, validation with one clear line per problem."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from harness.config.base import REASONS
from harness.config.paths import parse_override, set_path
from harness.config.schema import Experiment, StandardTask
from harness.util.errors import HarnessError


def _field_path(loc: tuple, raw: dict) -> str:
    parts: list[str] = []
    node: Any = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list):
            item = node[key] if key < len(node) else None
            name = item.get("name") if isinstance(item, dict) else None
            parts.append(f"{name}" if name else f"{key}")
            node = item
        else:
            parts.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return ".".join(p for p in parts if p)


def format_validation_error(err: ValidationError, raw: dict, source: str) -> str:
    """Every problem, one line each: `<file>: <field.path>: <reason>`."""
    lines = []
    for problem in err.errors():
        loc = tuple(
            x for x in problem["loc"] if not (isinstance(x, str) and x.startswith("function-"))
        )
        field = _field_path(loc, raw)
        template = REASONS.get(problem["type"])
        reason = template.format(**problem.get("ctx", {})) if template else problem["msg"]
        for line in reason.removeprefix("Value error, ").splitlines():
            lines.append(f"{source}: {field}: {line}" if field else f"{source}: {line}")
    return "\n".join(dict.fromkeys(lines))


def validate(raw: dict, source: str, base_dir: Path) -> Experiment:
    try:
        exp = Experiment.model_validate(raw)
    except ValidationError as e:
        raise HarnessError(format_validation_error(e, raw, source)) from None
    except ValueError as e:  # from get_path inside validators
        raise HarnessError(f"{source}: {e}") from None
    try:
        exp.eval.tasks = [
            t.resolved(base_dir) if isinstance(t, StandardTask) else t for t in exp.eval.tasks
        ]
    except ValueError as e:
        raise HarnessError(f"{source}: {e}") from None
    exp._base_dir = base_dir
    exp._raw = copy.deepcopy(raw)
    return exp


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> Experiment:
    """Read, override and validate an experiment file; every problem is one HarnessError line."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"{path}: experiment file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise HarnessError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise HarnessError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise HarnessError(f"{path}: expected a mapping of experiment fields at the top level")
    for text in overrides or []:
        key, value = parse_override(text)
        try:
            set_path(raw, key, value)
        except ValueError as e:
            raise HarnessError(f"--set {text}: {e}") from None
    return validate(raw, str(path), path.resolve().parent)


def with_params(exp: Experiment, params: dict[str, Any]) -> Experiment:
    """A copy of `exp` with dotted-path values set (a trial's sampled parameters), re-validated."""
    raw = exp.raw
    for key, value in params.items():
        set_path(raw, key, value)
    return validate(raw, f"{exp.name} (trial parameters {params})", exp.base_dir)


def resolve_tracking_uri(uri: str) -> str:
    """`sqlite:///relative.db` → absolute against the working directory (where `harness report`
    and `harness gate` look by default), so later commands from elsewhere find the same file."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def default_storage(tracking_uri: str, base_dir: Path) -> str:
    """Optuna storage next to a sqlite tracking database (`mlflow.db` → `optuna.db`); with a
    tracking server, `optuna.db` beside the experiment file (`base_dir`), not wherever the
    command happens to run."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///") :]).with_name("optuna.db"))
    return "sqlite:///" + str((base_dir / "optuna.db").resolve())
