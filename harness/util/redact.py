"""Credentials never leave the process: storage and tracking URLs may carry a password
(`postgresql://user:secret@host/db`, `?password=...`), and every place that logs, writes or
prints text that could hold one (MLflow params and tags, `config/resolved.yaml`, the trial table,
error lines) passes it through `redact` first."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@")
_QUERY = re.compile(
    r"(?P<head>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key|apikey)=)[^&;\s]+",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`scheme://user:secret@host` → `scheme://user:***@host`; secret query values → `***`."""
    text = _USERINFO.sub(r"\g<head>:***@", text)
    return _QUERY.sub(r"\g<head>***", text)
