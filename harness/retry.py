"""Transient infrastructure errors are retried, not blamed on the trial.

A sqlite database locked by another worker, a tracking server's 5xx or a dropped connection say
nothing about the configuration being tried: the call is retried with backoff, and a trial that
still hits one is given back to the study (queued again, not counted) instead of failing it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

_TRANSIENT = re.compile(
    r"database is locked|database table is locked|error code 5\d\d|too many 5\d\d error"
    r"|Max retries exceeded|Connection refused|Connection reset|RemoteDisconnected"
    r"|server closed the connection|could not connect to server|TEMPORARILY_UNAVAILABLE",
    re.IGNORECASE,
)
# Waits between attempts: about two minutes in all, longer than a server restart.
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8, 15, 30, 60)

F = TypeVar("F", bound=Callable[..., Any])


def transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is an infrastructure hiccup worth retrying."""
    for _ in range(10):  # the exception and what it was raised from
        if error is None:
            return False
        if _TRANSIENT.search(f"{type(error).__name__}: {error}"):
            return True
        error = error.__cause__ or error.__context__
    return False


def retried(fn: F) -> F:
    """`fn`, retried with backoff while it fails with a transient error."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for wait in BACKOFF_SECONDS:
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not transient(e):
                    raise
                time.sleep(wait)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
