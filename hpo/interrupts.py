"""Signals as requests to stop at a safe point.

Ctrl-C (SIGINT) and SIGTERM (``docker stop``, ``kubectl delete``, a parent
`hpo run --jobs K`) must neither leave a trial RUNNING nor be lost.  Raising an
exception from the signal handler does neither reliably: the exception lands
wherever the main thread happens to be, possibly between ``study.ask()`` and the
handler that marks the trial FAIL, or inside a garbage-collection callback where
Python ignores it ("Exception ignored in ...") and the process runs on.

So the handler installed by :func:`install` only records the signal.  The
worker loop and the trainer (between mini-batches) call :func:`check` at safe
points; it raises :class:`Interrupted`, which the worker turns into a FAIL
trial before the process exits with 128 + the signal number (130 for SIGINT,
143 for SIGTERM, 129 for SIGHUP).  A second SIGINT or SIGTERM ends the process
at once, with the same status: a trial it leaves RUNNING is failed by any other
worker once its heartbeat is older than the grace period.

Outside the trial loop nothing needs a safe point: :func:`exit_at_once` ends the
process at once on any of the three signals, with one line (the ``hpo`` command
sets it before its imports, and again after the loop).

SIGHUP (the terminal closed, or the parent `hpo run --jobs K` died: its workers
get SIGHUP then, see :mod:`hpo.tuning.local_workers`) asks for the same orderly stop but
never for an immediate one: the kernel may send a dying parent's signal several
times, once for each of its threads.
"""

from __future__ import annotations

import os
import signal
import time
from types import FrameType

# Signals that ask this process to stop; each exits with 128 + its number.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Longest sleep between two looks at the flag in :func:`sleep`, in seconds.
_SLICE_SECONDS = 0.05

_received: int | None = None


class Interrupted(KeyboardInterrupt):
    """A signal asked this process to stop; raised by :func:`check` at a safe point.

    A ``KeyboardInterrupt`` so that ``except Exception`` never swallows it.

    Attributes
    ----------
    signal_number : int
        ``signal.SIGINT``, ``signal.SIGTERM`` or ``signal.SIGHUP``.
    exit_code : int
        128 + ``signal_number``: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP (the shell's convention).
    """

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number


def _record(signal_number: int, frame: FrameType | None) -> None:
    global _received
    if signal_number == signal.SIGHUP:  # never the "second signal": see the module's notes
        if _received is None:
            _received = signal_number
        return
    if _received is not None:
        # The second signal: the user does not want to wait for the safe point.
        os.write(2, f"\n{signal.Signals(signal_number).name} again: exiting now\n".encode())
        os._exit(128 + signal_number)
    _received = signal_number


def _exit_now(signal_number: int, frame: FrameType | None) -> None:
    try:
        os.write(2, f"\nInterrupted by {signal.Signals(signal_number).name}\n".encode())
    except OSError:  # SIGHUP: the terminal is gone
        pass
    os._exit(128 + signal_number)


def exit_at_once() -> None:
    """Until :func:`install`: SIGINT, SIGTERM and SIGHUP end the process at once, with one line and 128 + N.

    For the moments when the process owns nothing that must be cleaned up: while it
    starts (importing NumPy, Optuna and SQLAlchemy takes a second or more), while a
    command only reads, while a study is prepared, and once the trial loop is over
    (the summary).  Python's default would print a ``KeyboardInterrupt`` traceback
    for Ctrl-C there.  Call from the main thread.
    """
    global _received
    for signal_number in SIGNALS:
        signal.signal(signal_number, _exit_now)
    _received = None


def install() -> None:
    """Record SIGINT, SIGTERM and SIGHUP instead of raising or dying (call from the main thread).

    Raises
    ------
    ValueError
        Called from a thread other than the main thread (Python's rule for signal handlers).
    """
    for signal_number in SIGNALS:
        signal.signal(signal_number, _record)


def uninstall() -> None:
    """Restore Python's default handlers and forget a recorded signal (for tests)."""
    global _received
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    _received = None


def requested() -> int | None:
    """The signal received first (``signal.SIGINT``, ``signal.SIGTERM`` or ``signal.SIGHUP``), or None."""
    return _received


def check() -> None:
    """Raise :class:`Interrupted` if a signal has been received; else return at once.

    Raises
    ------
    Interrupted
    """
    if _received is not None:
        raise Interrupted(_received)


def sleep(seconds: float) -> None:
    """``time.sleep(seconds)`` that ends early, raising :class:`Interrupted`, when a signal comes.

    Raises
    ------
    Interrupted
    """
    deadline = time.monotonic() + seconds
    while True:
        check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, _SLICE_SECONDS))
