"""A worker: takes trials of a shared study one at a time until the study's budget is met.

Any number of workers, in one process each and on any number of machines, can
share one study in one database.  Each worker:

- stops when the study holds ``budget.trials`` finished (complete + pruned)
  trials, counted across all workers; a trial that finds the budget already
  claimed by trials numbered before it is ended as FAIL without training, so
  the study never holds more finished trials than its budget;
- records a heartbeat for its running trial and, between trials and after every
  epoch, fails trials of dead workers (heartbeat older than the grace period);
  Optuna's ``RetryHeartbeatStaleTrialCallback`` queues them again;
- waits out a database that is briefly away (restart, failover) instead of dying;
- goes on when told that its trial was already failed by another worker.

The loop is Optuna's ask-and-tell interface (``study.ask``, ``study.tell``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from hpo.data import TuningData
from hpo.objective import Objective
from hpo.spec import StudySpec
from hpo.storage import TRANSIENT_ERRORS, with_retries
from hpo.study import FINISHED_STATES

ATTRIBUTE_NOT_RUN = "not_run"
# "host:pid" of the worker that ran a trial.
ATTRIBUTE_WORKER = "worker"
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# Seconds between looks at the study while other workers finish the last trials.
POLL_SECONDS = 1.0

_logger = logging.getLogger(__name__)
# Optuna warns that heartbeats are meant for Study.optimize; this loop runs them itself.
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C (see :func:`on_sigterm`) so the running trial is marked FAIL."""


def on_sigterm(signum: int, frame: object) -> None:
    """Signal handler: turn SIGTERM into :class:`Terminated`."""
    raise Terminated()


@dataclass
class WorkerResult:
    """What one worker did: trials it started, and why it stopped."""

    trials_started: int = 0
    reason: str = ""


class Heartbeat:
    """Records the heartbeat of one running trial every ``interval`` seconds, in a thread.

    Uses the storage's ``record_heartbeat`` (Optuna's heartbeat table), like Optuna's
    own heartbeat thread, but a failed write (the database restarting) is logged and
    tried again at the next beat instead of ending the thread.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                self._storage.record_heartbeat(self._trial_id)
            except TRANSIENT_ERRORS as error:
                _logger.warning(f"heartbeat of trial id {self._trial_id} not recorded ({type(error).__name__})")
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> "Heartbeat":
        if self._interval is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail trials whose heartbeat is older than the grace period (and queue their retries)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _claimed_before(study: optuna.Study, number: int) -> int:
    """Finished or running trials numbered before ``number``."""
    states = (*FINISHED_STATES, TrialState.RUNNING)
    return sum(1 for trial in study.get_trials(deepcopy=False, states=states) if trial.number < number)


def run_worker(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    spec: StudySpec,
    data: TuningData,
    *,
    timeout_seconds: float | None = None,
    on_trial_end: Callable[[optuna.Study], None] | None = None,
    artifact_store: FileSystemArtifactStore | None = None,
) -> WorkerResult:
    """Run trials of ``study`` until its budget of finished trials is met.

    Parameters
    ----------
    study : optuna.Study
        Opened with the study file's sampler and pruner.
    storage : optuna.storages.RDBStorage
        The study's storage (with heartbeats, see :func:`hpo.storage.open_storage`).
    spec : StudySpec
    data : TuningData
        Loaded once for this process.
    timeout_seconds : float, optional
        No new trial starts after this many seconds (the running one finishes).
    on_trial_end : callable, optional
        Called as ``on_trial_end(study)`` after each trial of this worker.
    artifact_store : optuna.artifacts.FileSystemArtifactStore, optional
        Completed trials upload their weights there (see :class:`hpo.objective.Objective`).

    Returns
    -------
    WorkerResult

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C or SIGTERM (see ``hpo.cli``): the running trial is marked FAIL first.
    """
    budget = spec.budget.trials
    objective = Objective(spec, data, after_epoch=lambda: fail_stale_trials(study), artifact_store=artifact_store)
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    result = WorkerResult()
    waiting_logged = False
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            result.reason = f"timeout of {timeout_seconds:g} s reached"
            return result
        with_retries(lambda: fail_stale_trials(study), what="checking for stale trials")
        counts = with_retries(lambda: _counts(study), what="reading the study")
        finished = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED]
        if finished >= budget:
            result.reason = f"budget of {budget} finished trials reached"
            return result
        if finished + counts[TrialState.RUNNING] >= budget and not counts[TrialState.WAITING]:
            if not waiting_logged:
                _logger.info(
                    f"waiting for {counts[TrialState.RUNNING]} running trial(s) of other workers to finish "
                    "the budget (`hpo stale` lists them)"
                )
                waiting_logged = True
            time.sleep(POLL_SECONDS)
            continue
        waiting_logged = False
        trial = with_retries(study.ask, what="starting a trial")
        result.trials_started += 1
        if with_retries(lambda: _claimed_before(study, trial.number), what="reading the study") >= budget:
            # Another worker claimed the last slot of the budget at the same moment.
            with_retries(lambda: trial.set_user_attr(ATTRIBUTE_NOT_RUN, "the budget was claimed by other "
                                                     "workers' trials"), what="storing a trial")
            with_retries(lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True),
                         what="storing a trial")
            continue
        with_retries(lambda: trial.set_user_attr(ATTRIBUTE_WORKER, WORKER_ID), what="starting a trial")
        _run_trial(study, storage, trial, objective)
        if on_trial_end is not None:
            try:
                on_trial_end(study)
            except TRANSIENT_ERRORS:
                pass  # progress display only; the next trial end shows it again


def _run_trial(study: optuna.Study, storage: optuna.storages.RDBStorage, trial: optuna.Trial, objective: Objective) -> None:
    # Optuna has no public accessor for a trial's storage id; its own heartbeat thread uses this one.
    with Heartbeat(storage, trial._trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned as pruned:
            with_retries(lambda: study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True), what="storing a pruned trial")
            _logger.info(f"Trial {trial.number} pruned. {pruned}")
            return
        except optuna.exceptions.UpdateFinishedTrialError:
            _logger.warning(
                f"Trial {trial.number} was already marked FAIL elsewhere (by another worker after a late "
                "heartbeat, or by hand with `hpo stale`); going on with the next trial"
            )
            return
        except TRANSIENT_ERRORS as error:
            # The database went away in a call without retries (a suggestion, say): this
            # trial is lost, the worker is not.
            _logger.warning(f"Trial {trial.number} failed: the database was unreachable ({type(error).__name__})")
            with_retries(lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True),
                         what="storing a failed trial")
            return
        except BaseException as error:
            # Ctrl-C, SIGTERM or a bug: the trial is FAIL at once, then the error goes on.
            with_retries(lambda: study.tell(trial, state=TrialState.FAIL, skip_if_finished=True),
                         what="storing a failed trial")
            _logger.warning(f"Trial {trial.number} failed: {error!r}")
            raise
    frozen = with_retries(
        lambda: study.tell(trial, value, skip_if_finished=True), what="storing a finished trial"
    )
    if frozen.state != TrialState.COMPLETE:
        _logger.warning(f"Trial {trial.number} was already marked {frozen.state.name} elsewhere")
        return
    best = with_retries(lambda: study.best_trial, what="reading the best trial")
    _logger.info(
        f"Trial {trial.number} finished with value: {value:.6g} and parameters: {trial.params}. "
        f"Best is trial {best.number} with value: {best.value:.6g}."
    )
