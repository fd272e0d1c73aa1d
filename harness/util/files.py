"""Reading and writing the harness's own files: JSONL with line-numbered errors, atomic writes
so a reader (a browser, CI, another worker) never sees half a file, and a lock file that lets
workers on one machine take turns."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.util.errors import HarnessError


def read_jsonl(path: str | Path, what: str | None = None) -> list[dict]:
    """One JSON object per non-blank line; a bad line is a one-line error naming `what` (default:
    the path) and the line number."""
    return [row for _, row in _jsonl_rows(path, what)]


def _jsonl_rows(path: str | Path, what: str | None = None) -> list[tuple[int, dict]]:
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
        rows.append((n, row))
    return rows


def numbered_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) of a suite's data file: JSON Lines, or CSV with a header row, the form
    some public suites ship in (XSTest's prompts.csv); a CSV row's number is its first line."""
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return _jsonl_rows(path)
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows, start = [], 2
        for row in reader:
            if None in row:  # more cells than the header names
                raise HarnessError(f"{path}:{start}: more fields than the header has")
            rows.append((start, dict(row)))
            start = reader.line_num + 1
    return rows


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a suite's data file (see `numbered_rows`)."""
    return [row for _, row in numbered_rows(path)]


def write_atomic(path: str | Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync and rename: readers see the old file or
    the new one, a crash (even of the machine) leaves the previous one intact, and the file gets
    the permissions any new file would (the umask applies; mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path` to write into; on success it replaces `path` whole (an
    earlier folder there is removed only then), on failure it is removed."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as handle:
                    os.fsync(handle.fileno())
        os.chmod(tmp, 0o777 & ~_umask())
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def locked(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block. The kernel releases
    it when the process dies, so a killed holder never blocks the others."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
