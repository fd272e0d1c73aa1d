"""The base model's eval records, cached across trials and studies: keyed by everything that can
change a base score (model files, suite files and data, generation settings, library versions)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
import time
from pathlib import Path
from typing import Any

from harness.config.schema import EvalConfig
from harness.eval.lm_tasks import stop_strings, tasks_fingerprint
from harness.eval.suites import (
    Suite,
    suite_hash,
)
from harness.util.files import write_atomic
from harness.util.versions import package_versions

CACHE_FORMAT = 1


def _library_versions() -> dict[str, str]:
    """Versions of everything that computes or scores a result, and a hash of the harness code
    (all of it: scoring hooks, judges and prompt handling move between modules)."""
    out = dict(package_versions())
    code = hashlib.sha256()
    here = Path(__file__).resolve().parents[1]  # the whole harness package
    for path in sorted(here.rglob("*.py")):
        code.update(str(path.relative_to(here)).encode() + b"\0" + path.read_bytes())
    out["harness_code"] = code.hexdigest()[:16]
    return out


_HOOK = re.compile(r"!function\s+([A-Za-z_][\w.]*)")


def _suite_files(suite: Suite) -> list[Path]:
    """Files a suite's scores depend on beyond its data set: everything in its folder (task
    YAMLs, `utils.py` hooks, a judge's labelled data) but READMEs, and the module file of
    each `!function` hook that lives elsewhere (lm-eval imports `pkg.mod.fn` when the YAML's
    folder has no `pkg.py`)."""
    files = [
        p
        for p in sorted(suite.path.rglob("*"))
        if p.is_file() and p.suffix != ".md" and "__pycache__" not in p.parts
    ]
    for task_file in suite.task_files:
        for target in _HOOK.findall(task_file.read_text()):
            module = target.rsplit(".", 1)[0]
            if (suite.path / f"{module.split('.')[0]}.py").is_file():
                continue  # already hashed with the folder
            try:
                spec = importlib.util.find_spec(module)
            except (ImportError, ValueError):  # lm-eval itself reports an unloadable hook
                continue
            if spec is not None and spec.origin and Path(spec.origin).is_file():
                files.append(Path(spec.origin))
    return files


def cache_key(
    fingerprint: str,
    suite: Suite,
    cfg: EvalConfig,
    dataset: str,
    limit: int | None,
    context: dict[str, Any],
) -> dict[str, Any]:
    """Everything that changes a base score: the model (content hash), the suite (its folder,
    hook modules and data set), the run settings (limit, batch size, generation length,
    `eval.tasks` and their rows), `context` (dtype, stop strings, chat template: see
    `_base_context`), library versions and the harness code."""
    settings = {
        "dataset": dataset,
        "limit": limit,
        "batch_size": cfg.batch_size,
        "max_new_tokens": cfg.max_new_tokens,
        "tasks": tasks_fingerprint(cfg.tasks) if suite.hosts_tasks else "",
    }
    files = hashlib.sha256()
    for path in _suite_files(suite):
        files.update(str(path).encode() + b"\0" + path.read_bytes())
    return {
        "format": CACHE_FORMAT,
        "model": fingerprint,
        "suite": suite_hash(suite, suite.data_path(dataset), settings),
        "suite_files": files.hexdigest(),
        "context": context,
        **_library_versions(),
    }


def _base_context(model_name: str, tokenizer) -> dict[str, Any]:
    """The parts of a base score set outside the suite: the dtype and device the base model
    loads with, its stop strings (tokenizer + generation_config.json) and chat template."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    from harness.models.load import device, resolve_model_path, train_dtype

    try:
        gen = GenerationConfig.from_pretrained(resolve_model_path(model_name))
    except (OSError, ValueError):
        gen = None
    template = tokenizer.chat_template
    return {
        "dtype": str(train_dtype("auto")),
        "device": device(),
        "stop": stop_strings(tokenizer, SimpleNamespace(generation_config=gen)),
        "chat_template": hashlib.sha256(json.dumps(template).encode()).hexdigest(),
    }


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".tiktoken")


_NOT_MODEL = ("training_args", "trainer_state", "optimizer", "scheduler", "rng_state", "README")


def model_fingerprint(name: str) -> str | None:
    """Content hash of a model directory (weights, config, tokenizer files), or the hub commit
    of a hub model found in the local hub cache; None when neither can be determined."""
    from harness.models.load import resolve_model_path

    path = Path(resolve_model_path(name))
    if not path.is_dir():
        try:
            from huggingface_hub import snapshot_download

            snapshot = snapshot_download(repo_id=name, local_files_only=True)
        except Exception:  # not in the local hub cache: fingerprint after loading it
            return None
        return f"hub:{name}@{Path(snapshot).name}"
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not p.name.startswith(_NOT_MODEL)
    )
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(stats)


@functools.lru_cache(maxsize=32)
def _hash_files(stats: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _, _ in stats:
        h.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _cache_path(
    fingerprint: str,
    suite: Suite,
    cfg: EvalConfig,
    dataset: str,
    limit: int | None,
    context: dict[str, Any],
) -> Path:
    from harness.models.toy.build import cache_root

    key = cache_key(fingerprint, suite, cfg, dataset, limit, context)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_root() / "baselines" / f"{suite.name}-{digest}.json"


def _read_cache(path: Path) -> list[dict] | None:
    try:
        return json.loads(path.read_text())["records"]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(path: Path, model_name: str, records: list[dict]) -> None:
    body = {"model": model_name, "created": time.time(), "records": records}
    write_atomic(path, json.dumps(body))
