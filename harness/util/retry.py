"""Transient infrastructure errors are retried, not blamed on the trial.

A sqlite database locked by another worker, a tracking server's 5xx or a dropped connection say
nothing about the configuration being tried: the call is retried with backoff, and a trial that
still hits one is given back to the study (queued again, not counted) instead of failing it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
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


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """The exception and what it was raised from (or during), nearest first."""
    for _ in range(10):
        if error is None:
            return
        yield error
        error = error.__cause__ or error.__context__


def transient(error: BaseException) -> bool:
    """Whether `error` (or what caused it) is an infrastructure hiccup worth retrying."""
    return any(_TRANSIENT.search(f"{type(e).__name__}: {e}") for e in _chain(error))


def interrupted(error: BaseException) -> bool:
    """Whether `error` is a Ctrl-C that a library turned into an error of its own (SIGINT inside
    a database commit comes out as "database is locked"): it is the user's stop, not a fault."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(error))


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
