"""`hpo run --jobs K`: K local worker processes sharing one study (``python -m hpo.tuning.local_workers``).

Each worker is a process of its own (NumPy training holds the GIL between BLAS
calls, so threads would not run in parallel), with one BLAS thread by default
so K workers use K cores.  The storage URL reaches the workers through the
environment, never the command line, so a password does not show in `ps`.

The workers run in a session of their own, so Ctrl-C in the terminal reaches
this process only; it passes a stop on to each worker exactly once, as SIGTERM (a
worker ends at once on a second signal, see :mod:`hpo.interrupts`), and starts no
more workers.  On Linux each
worker also gets SIGHUP when this process dies, even by SIGKILL
(``prctl(PR_SET_PDEATHSIG)``), and stops as on Ctrl-C, so no worker runs on
alone.  (SIGHUP, because the kernel sends the parent-death signal once per
thread of the dying parent, and a repeated SIGHUP never means "exit at once".)  Their output comes
through this process, line by line, so it never mixes with the progress bar.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

import optuna
import threadpoolctl
from tqdm import tqdm

from hpo import interrupts
from hpo.config.spec import load_spec
from hpo.errors import HpoError
from hpo.store.artifacts import (
    ARTIFACT_DIR_ENVIRONMENT_VARIABLE,
    artifact_directory,
    open_artifact_store,
)
from hpo.store.storage import STORAGE_ENVIRONMENT_VARIABLE, TRANSIENT_ERRORS
from hpo.tuning.progress import Progress, configure_logging
from hpo.tuning.study import prepare_study
from hpo.tuning.worker import run_study, worker_id

# prctl option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1


class WorkersFailed(HpoError):
    """A worker process exited with an error; the message lists the exit codes."""


def _parent_death_signal() -> Callable[[], None] | None:
    """A function for ``Popen(preexec_fn=...)`` that makes the child get SIGHUP when this process dies.

    None where the kernel has no ``prctl(PR_SET_PDEATHSIG)`` (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    parent = os.getpid()

    def set_in_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGHUP)
        if os.getppid() != parent:  # the parent died before prctl: nobody would signal this child
            os._exit(129)

    return set_in_child


def _relay(stream: IO[str], target: IO[str]) -> None:
    """Copy a worker's output to ``target`` line by line, above the progress bar (``tqdm.write``)."""
    for line in stream:
        tqdm.write(line.rstrip("\n"), file=target)
    stream.close()


def worker_process(study_file: str, study_name: str, blas_threads: int) -> int:
    """One worker of :func:`run_local_workers`, in its own process; returns its exit status.

    What ``hpo worker STUDY_FILE --study-name NAME --no-progress`` does, without its
    hints (the parent prints one for all): the storage URL comes from ``$HPO_STORAGE``
    and the artifact folder from ``$HPO_ARTIFACT_DIR``, both set by the parent.
    Exit status 0 when the budget is met or the time is up, 1 with one ``Error:``
    line for a user error, 128 + N after signal N.
    """
    interrupts.install()
    configure_logging()
    threadpoolctl.threadpool_limits(limits=blas_threads, user_api="blas")
    try:
        url = os.environ[STORAGE_ENVIRONMENT_VARIABLE]
        prepared = prepare_study(load_spec(study_file), url, study_name, create=False, source=study_file)
        store = open_artifact_store(artifact_directory(url, os.environ.get(ARTIFACT_DIR_ENVIRONMENT_VARIABLE)))
        result = run_study(prepared, progress=False, artifact_store=store)
    except interrupts.Interrupted as interrupted:
        return interrupted.exit_code
    except HpoError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"worker done: {result.trials_started} trials started; {result.epochs_trained} epochs trained; "
          f"{result.reason}", flush=True)
    return 0


def _stop(workers: list[subprocess.Popen[str]]) -> None:
    """Pass a stop on to each worker still running, once: SIGTERM, whatever this process received.

    A worker that has its handlers (:mod:`hpo.interrupts`) marks its trial FAIL (queued
    again) and exits with 143; one still importing ends at once and silently (SIGINT would print a
    ``KeyboardInterrupt`` traceback there).
    """
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)


def run_local_workers(
    study_file: str,
    storage_url: str,
    study_name: str,
    jobs: int,
    blas_threads: int,
    study: optuna.Study,
    budget: int,
    *,
    progress: bool = True,
    artifact_dir: str | os.PathLike[str] | None = None,
) -> list[str]:
    """Start ``jobs`` worker processes (:func:`worker_process`) and wait for them, showing study progress.

    ``artifact_dir`` reaches the workers as ``$HPO_ARTIFACT_DIR``.  A signal recorded
    by :func:`hpo.interrupts.install` (Ctrl-C, SIGTERM) is passed on to every worker
    once, as SIGTERM, and no further worker is started; they mark their trials FAIL (queued again) and
    exit, then :class:`hpo.interrupts.Interrupted` is raised here.

    Returns
    -------
    list of str
        The workers' ids (HOST:PID, the ``worker`` user attribute of the trials they ran).

    Raises
    ------
    hpo.interrupts.Interrupted
        After the workers have stopped, if this process was asked to stop.
    WorkersFailed
        A worker exited with a status other than 0.
    """
    environment = {**os.environ, STORAGE_ENVIRONMENT_VARIABLE: storage_url}
    if artifact_dir is not None:
        environment[ARTIFACT_DIR_ENVIRONMENT_VARIABLE] = str(artifact_dir)
    command = [sys.executable, "-m", "hpo.tuning.local_workers", study_file, study_name, str(blas_threads)]
    preexec = _parent_death_signal()
    workers: list[subprocess.Popen[str]] = []
    try:
        for _ in range(jobs):
            interrupts.check()  # a signal while they start: start no more
            workers.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
                                            preexec_fn=preexec))
    except interrupts.Interrupted:
        _stop(workers)
        raise
    relays = [threading.Thread(target=_relay, args=(stream, target), daemon=True)
              for worker in workers for stream, target in ((worker.stdout, sys.stdout), (worker.stderr, sys.stderr))]
    for relay in relays:
        relay.start()
    interrupted: interrupts.Interrupted | None = None
    with Progress(study, budget, enabled=progress) as bar:
        while any(worker.poll() is None for worker in workers):
            if interrupted is not None:  # passed on; the workers are failing their trials
                time.sleep(0.1)
                continue
            try:
                interrupts.sleep(1.0)
            except interrupts.Interrupted as signal_received:
                interrupted = signal_received
                _stop(workers)
                continue
            try:
                bar.update(study)
            except TRANSIENT_ERRORS:
                pass  # the database is away; the workers wait it out, the bar shows it later
        for relay in relays:
            relay.join()
    if interrupted is not None:
        raise interrupted
    codes = [worker.returncode for worker in workers]
    if any(codes):
        raise WorkersFailed(f"{sum(1 for code in codes if code)} of {jobs} workers failed (exit codes {codes})")
    return [worker_id(worker.pid) for worker in workers]


if __name__ == "__main__":
    sys.exit(worker_process(sys.argv[1], sys.argv[2], int(sys.argv[3])))
