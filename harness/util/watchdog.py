"""A deadline for a block of work that may stall: past it, every thread's stack is written out and
the block fails with a one-line HarnessError, instead of the process hanging in silence.

Public API
    deadline(seconds, what, *, stacks=None, grace=60.0): context manager; None or 0 = no deadline

How: in the main thread a SIGALRM timer raises inside the block (it also breaks sleeps and
blocking system calls); in another thread a watchdog thread raises there asynchronously (at
the next Python instruction). Either way the raise comes from outside the block's own
`except Exception` clauses (it is a BaseException until the block ends). Work stuck in native
code that never returns to Python (a hung kernel, a deadlock holding the GIL) cannot be
interrupted: `grace` seconds later faulthandler writes every thread's stack and ends the
process, so a study marks the trial failed as stale instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from harness.util.errors import HarnessError


class _Expired(BaseException):
    """Raised inside the block at its deadline; turned into a HarnessError when it leaves."""


@contextlib.contextmanager
def deadline(
    seconds: float | None, what: str, *, stacks: Path | None = None, grace: float = 60.0
) -> Iterator[None]:
    """Run the block under a deadline; `what` names it in the error (e.g. "trial 2: evaluation
    (eval.timeout 600 s)"). Every thread's stack goes to `stacks` (default: stderr)."""
    if not seconds:
        yield
        return
    if stacks:
        Path(stacks).parent.mkdir(parents=True, exist_ok=True)
    out = open(stacks, "w") if stacks else sys.__stderr__  # noqa: SIM115 (closed below)
    where = f"; every thread's stack is in {stacks}" if stacks else ""
    fired = threading.Event()
    done = threading.Lock()

    def fire() -> None:
        with done:
            if fired.is_set():
                return
            fired.set()
            print(f"{what}: past its deadline of {seconds:g} s; stacks follow", file=out)
            faulthandler.dump_traceback(file=out, all_threads=True)
            out.flush()

    # SIGALRM only in the main thread, and only when no one else's timer (pytest-timeout) runs
    main = threading.current_thread() is threading.main_thread()
    main = main and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    faulthandler.dump_traceback_later(seconds + grace, exit=True, file=out)
    if main:

        def on_alarm(signum, frame):
            fire()
            raise _Expired

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    else:
        target = threading.get_ident()

        def on_timer() -> None:
            fire()
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(target), ctypes.py_object(_Expired)
            )

        timer = threading.Timer(seconds, on_timer)
        timer.daemon = True
        timer.start()
    try:
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            if main:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            else:
                timer.cancel()
                with done:
                    if fired.is_set():  # raised too late to land inside the block: drop it
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(target), ctypes.py_object()
                        )
                    fired.set()
    except _Expired:
        raise HarnessError(f"{what}: still running after {seconds:g} s{where}") from None
    finally:
        if stacks:
            out.close()
            if not Path(stacks).stat().st_size:  # opened for faulthandler, never written
                Path(stacks).unlink()
