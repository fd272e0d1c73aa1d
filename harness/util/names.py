"""Names MLflow accepts: letters, digits, `_ - . /` and space in metric and param names."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def safe_name(name: str) -> str:
    """`name` with every character MLflow rejects replaced by `_`."""
    return _UNSAFE.sub("_", name)


def metric_name(*parts: str) -> str:
    """Join name parts with '/' (a '/' inside a part becomes '_'), each part made safe."""
    return "/".join(safe_name(str(p)).replace("/", "_") for p in parts if p != "")
