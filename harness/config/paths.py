"""Dotted paths (`train.learning_rate`, `data.sources.replay.weight`): one mechanism for `--set`
overrides and a trial's sampled values, so both are validated by the same rules."""

from __future__ import annotations

import re
from typing import Any

import yaml

from harness.util.errors import HarnessError


def _step(node: Any, key: str, path: str) -> tuple[Any, Any]:
    """Resolve one path segment; list items are addressed by their `name` or by index."""
    if isinstance(node, dict):
        if key not in node:
            raise ValueError(f"'{path}' names nothing: no field '{key}'")
        return node, key
    if isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict) and item.get("name") == key:
                return node, i
        if key.isdigit() and int(key) < len(node):
            return node, int(key)
        raise ValueError(f"'{path}' names nothing: no list item named '{key}'")
    raise ValueError(f"'{path}' names nothing: '{key}' is inside a plain value")


def get_path(raw: dict, path: str) -> Any:
    node: Any = raw
    for key in path.split("."):
        parent, k = _step(node, key, path)
        node = parent[k]
    return node


def set_path(raw: dict, path: str, value: Any, create: bool = True) -> None:
    """Set `path` in the raw (unvalidated) experiment dict; a missing final dict key is created."""
    keys = path.split(".")
    node: Any = raw
    for key in keys[:-1]:
        if isinstance(node, dict) and key not in node and create:
            node[key] = {}
        parent, k = _step(node, key, path)
        node = parent[k]
    last = keys[-1]
    if isinstance(node, dict):
        node[last] = value
    else:
        parent, k = _step(node, last, path)
        parent[k] = value


_SCIENTIFIC = re.compile(r"^[-+]?\d+(\.\d*)?[eE][-+]?\d+$")


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with the value parsed as YAML (so 1e-4, true, [a, b] work)."""
    if "=" not in text:
        raise HarnessError(f"--set {text!r}: expected KEY.PATH=VALUE")
    key, value = text.split("=", 1)
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and _SCIENTIFIC.match(parsed):  # YAML 1.1 reads 1e-4 as a string
        parsed = float(parsed)
    return key.strip(), parsed
