"""Reading and writing the harness's own files: JSONL with line-numbered errors, and atomic
writes so a reader (a browser, CI, another worker) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from harness.errors import HarnessError


def read_jsonl(path: str | Path, what: str | None = None) -> list[dict]:
    """One JSON object per non-blank line; a bad line is a one-line error naming `what` (default:
    the path) and the line number."""
    where = what or str(path)
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise HarnessError(f"{where}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise HarnessError(f"{where}:{n}: expected a JSON object per line")
        rows.append(row)
    return rows


def write_atomic(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder and rename: readers see the old file or the new
    one, and a crash leaves the previous one intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
