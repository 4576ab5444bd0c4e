"""`hpo run --jobs K`: K local worker processes (`hpo worker`) sharing one study.

Each worker is a process of its own (NumPy training holds the GIL between BLAS
calls, so threads would not run in parallel), with one BLAS thread by default
so K workers use K cores.  The storage URL reaches the workers through the
environment, never the command line, so a password does not show in `ps`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna

from hpo.artifacts import ARTIFACT_DIR_ENVIRONMENT_VARIABLE
from hpo.progress import Progress
from hpo.storage import STORAGE_ENVIRONMENT_VARIABLE
from hpo.worker import Terminated


class WorkersFailed(RuntimeError):
    """A worker process exited with an error; the message lists the exit codes."""


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
) -> None:
    """Start ``jobs`` processes of ``hpo worker`` and wait for them, showing study progress.

    Worker ``i`` gets ``--seed-offset i``; ``artifact_dir`` reaches the workers as
    ``$HPO_ARTIFACT_DIR``.  Ctrl-C reaches the workers through the terminal's process
    group; SIGTERM to this process is passed on to them.

    Raises
    ------
    KeyboardInterrupt
        After the workers have stopped, if this process was interrupted.
    WorkersFailed
        A worker exited with a status other than 0.
    """
    environment = {**os.environ, STORAGE_ENVIRONMENT_VARIABLE: storage_url}
    if artifact_dir is not None:
        environment[ARTIFACT_DIR_ENVIRONMENT_VARIABLE] = str(artifact_dir)
    command = [sys.executable, "-m", "hpo.cli", "worker", study_file, "--study-name", study_name,
               "--blas-threads", str(blas_threads), "--no-progress", "--no-resume-hint"]
    workers = [
        subprocess.Popen([*command, "--seed-offset", str(index)], env=environment)
        for index in range(jobs)
    ]
    try:
        with Progress(study, budget, enabled=progress) as bar:
            while any(worker.poll() is None for worker in workers):
                time.sleep(1.0)
                bar.update(study)
    except KeyboardInterrupt as interrupt:
        forwarded = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(forwarded)
        for worker in workers:
            worker.wait()
        raise
    codes = [worker.returncode for worker in workers]
    if any(codes):
        raise WorkersFailed(f"{sum(1 for code in codes if code)} of {jobs} workers failed (exit codes {codes})")
