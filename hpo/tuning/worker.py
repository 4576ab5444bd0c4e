"""A worker: takes trials of a shared study one at a time until the study's budget is met.

Any number of workers, in one process each and on any number of machines, can
share one study in one database.  Each worker:

- stops when the study holds ``budget.trials`` finished (complete + pruned)
  trials, counted across all workers; a trial that finds the budget already
  claimed by trials numbered before it is ended as FAIL without training (user
  attribute ``not_run``), so the study never holds more finished trials than its
  budget;
- records a heartbeat for its running trial and, at most once per heartbeat
  interval (between trials, and after an epoch), fails trials of dead workers
  (see :class:`hpo.store.storage.HeartbeatStorage`); they are queued again with the
  same parameters (:class:`hpo.store.requeue.RetryStaleTrial`, up to ``workers.max_retry`` times);
- waits out a database that is briefly away (restart, failover) instead of dying:
  every storage call is retried by the storage (:class:`hpo.store.retrying.RetryingStorage`);
- goes on when told that its trial was already failed by another worker or by hand
  (`hpo stale --trial`), also when that comes while it stores the trial's result;
- stops at a safe point when a signal asks it to (:mod:`hpo.interrupts`): the
  trial it owns is marked FAIL first, at whatever moment of the loop the signal
  came, and queued again with the same parameters, keeping its checkpoint (a pod evicted
  or preempted, ``docker stop``, Ctrl-C: the next worker continues the trial).  An
  interruption is queued again every time: it does not spend the ``workers.max_retry``
  retries, which are for crashes (see :mod:`hpo.store.requeue`).

The loop is Optuna's ask-and-tell interface (``study.ask``, ``study.tell``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from hpo import interrupts
from hpo.config.spec import StudySpec
from hpo.errors import HpoError
from hpo.store import record
from hpo.store.checkpoints import remove_checkpoint
from hpo.store.requeue import RetryStaleTrial
from hpo.store.retrying import DEFAULT_PATIENCE_SECONDS, RetryingStorage
from hpo.store.storage import TRANSIENT_ERRORS, HeartbeatStorage
from hpo.tuning.data import TuningData
from hpo.tuning.objective import Objective
from hpo.tuning.progress import Progress
from hpo.tuning.study import PreparedStudy


def worker_id(pid: int) -> str:
    """The ``worker`` user attribute (HOST:PID) of the trials run by the process ``pid`` of this machine."""
    return f"{socket.gethostname()}:{pid}"


WORKER_ID = worker_id(os.getpid())
# Seconds between looks at the study while other workers finish the last trials.
POLL_SECONDS = 1.0
# Seconds spent trying to mark an interrupted trial FAIL before giving up on a
# database that is away (the stale check of other workers fails it later).
FAIL_PATIENCE_SECONDS = 10.0

_logger = logging.getLogger(__name__)


@dataclass
class WorkerResult:
    """What one worker did: trials it started, epochs it trained (not those resumed from checkpoints), why it stopped."""

    trials_started: int = 0
    reason: str = ""
    epochs_trained: int = 0


class Heartbeat:
    """Records the heartbeat of one running trial every ``interval`` seconds, in a thread.

    Uses the storage's ``record_heartbeat`` (Optuna's heartbeat table), like Optuna's
    own heartbeat thread, but a failed write (the database restarting) is logged and
    tried again at the next beat instead of ending the thread.
    """

    def __init__(self, storage: RetryingStorage, trial_id: int) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{trial_id}", daemon=True)

    def _beat(self) -> None:
        while True:
            try:
                with self._storage.patience(0):  # no waiting here: the next beat is the retry
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


def _running(study: optuna.Study) -> dict[int, optuna.trial.FrozenTrial]:
    return {trial.number: trial for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the study's stale trials now and queue their retries (see :class:`hpo.store.storage.HeartbeatStorage`).

    Returns
    -------
    list of int
        The numbers of the trials that were RUNNING before and are not any more
        (failed here, or finished by their workers meanwhile), ascending.
    """
    before = set(_running(study))
    _fail_stale(study)
    return sorted(before - set(_running(study)))


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_trials(study: optuna.Study, storage: HeartbeatStorage, numbers: Iterable[int]) -> list[int]:
    """Mark the RUNNING trials ``numbers`` of ``study`` FAIL by hand, heartbeat or not (``hpo stale --trial``).

    Each is then queued again like a stale trial (the storage's stale-trial callback,
    :class:`hpo.store.requeue.RetryStaleTrial`: up to ``workers.max_retry`` times, with the
    same parameters).  The worker that ran such a trial finds it finished when it
    reports or tells, logs that, and goes on with the next trial.

    Returns
    -------
    list of int
        The numbers failed, in the order given.

    Raises
    ------
    hpo.errors.HpoError
        A number that is not a trial of the study, or a trial that is not RUNNING or
        finished while it was being failed (the trials before it in ``numbers`` are
        failed already).
    """
    failed = []
    made = len(study.get_trials(deepcopy=False))
    for number in numbers:
        running = _running(study)
        if not 0 <= number < made:
            raise HpoError(f"no trial {number} in study {study.study_name!r} (trials 0 to {made - 1}); nothing failed")
        if number not in running:
            raise HpoError(f"trial {number} of study {study.study_name!r} is not RUNNING; nothing failed")
        trial_id = running[number]._trial_id  # Optuna has no public accessor for a trial's storage id
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # its worker finished it since the look above
            raise HpoError(f"trial {number} of study {study.study_name!r} finished meanwhile; nothing failed") from None
        # Queued again like a stale trial (`hpo stale --fail`): the retry runs its parameters once more.
        storage.get_heartbeat_stale_trial_callback()(study, storage.get_trial(trial_id),
                                                     reason="marked FAIL by hand (`hpo stale --trial`)")
        failed.append(number)
    return failed


class StaleCheck:
    """``check()`` fails stale trials at most once per ``interval_seconds``.

    A heartbeat changes only once per heartbeat interval, so looking more often
    finds nothing new and costs a database round trip per look.
    """

    def __init__(self, study: optuna.Study, interval_seconds: float) -> None:
        self._study = study
        self._interval = interval_seconds
        self._last = -float("inf")

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            _fail_stale(self._study)  # the storage waits out an outage (hpo.store.retrying)
            self._last = now


def _counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = {state: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def _claimed_before(study: optuna.Study, number: int) -> int:
    """Finished or running trials numbered before ``number``."""
    states = (*record.FINISHED_STATES, TrialState.RUNNING)
    return sum(1 for trial in study.get_trials(deepcopy=False, states=states) if trial.number < number)


def run_worker(
    study: optuna.Study,
    storage: RetryingStorage | HeartbeatStorage,
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
    storage : RetryingStorage or HeartbeatStorage
        The study's storage (with heartbeats and retries, see :func:`hpo.tuning.study.prepare_study`);
        a storage without retries is wrapped in a :class:`hpo.store.retrying.RetryingStorage`
        and the study opened again on it.
    spec : StudySpec
    data : TuningData
        Loaded once for this process.
    timeout_seconds : float, optional
        No new trial starts after this many seconds (the running one finishes).
    on_trial_end : callable, optional
        Called as ``on_trial_end(study)`` after each trial of this worker.
    artifact_store : optuna.artifacts.FileSystemArtifactStore, optional
        Completed trials upload their weights there (see :class:`hpo.tuning.objective.Objective`).

    Returns
    -------
    WorkerResult

    Raises
    ------
    hpo.interrupts.Interrupted
        A signal recorded by :func:`hpo.interrupts.install` (SIGINT, SIGTERM): the
        trial this worker owned, if any, is marked FAIL and queued again first.
    """
    if not isinstance(storage, RetryingStorage):
        # Every storage call of the loop must wait out an outage: run on the study through the wrapper.
        storage = RetryingStorage(storage)
        study = optuna.load_study(study_name=study.study_name, storage=storage, sampler=study.sampler,
                                  pruner=study.pruner)
    retry = storage.get_heartbeat_stale_trial_callback()
    if isinstance(retry, RetryStaleTrial):
        retry.artifact_store = artifact_store  # a trial failed and not retried again loses its checkpoint
    budget = spec.budget.trials
    stale_check = StaleCheck(study, storage.get_heartbeat_interval() or POLL_SECONDS)
    objective = Objective(spec, data, after_epoch=stale_check, artifact_store=artifact_store,
                          before_batch=interrupts.check, storage=storage, user_attrs={record.WORKER: WORKER_ID})
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    result = WorkerResult()
    waiting_logged = False
    while True:
        interrupts.check()
        result.epochs_trained = objective.epochs_trained
        if deadline is not None and time.monotonic() >= deadline:
            result.reason = f"timeout of {timeout_seconds:g} s reached"
            return result
        stale_check()
        counts = _counts(study)
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
            interrupts.sleep(POLL_SECONDS)
            continue
        waiting_logged = False
        # From here to the end of _run_trial this worker owns a RUNNING trial. A signal
        # cannot strike in between: it is only recorded, and acted on inside _run_trial.
        trial = _ask(study)
        result.trials_started += 1
        _run_trial(study, storage, trial, objective, budget)
        if on_trial_end is not None:
            try:
                on_trial_end(study)
            except TRANSIENT_ERRORS:
                pass  # progress display only; the next trial end shows it again


def _ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, without Optuna's warning that heartbeats are meant for ``Study.optimize``.

    This loop records heartbeats itself (:class:`Heartbeat`); the warning is expected.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask()


def _fail(study: optuna.Study, storage: RetryingStorage, trial: optuna.Trial, why: str,
          objective: Objective | None = None, *, queue_again: bool = False) -> None:
    """Mark ``trial`` FAIL after an interruption or a bug, trying for a few seconds only (no signal cuts them short).

    With ``queue_again`` (a signal: Ctrl-C, ``docker stop``, a pod evicted or preempted),
    the trial is then queued again through the storage's stale-trial callback
    (:class:`hpo.store.requeue.RetryStaleTrial`) as an interruption: with the same parameters,
    every time (interruptions do not count against ``workers.max_retry``), and it keeps its
    checkpoint, so the next worker continues it from its latest checkpointed epoch.  A trial this call failed and did not queue again loses its
    checkpoint; one failed elsewhere already keeps it for its retry.
    """
    try:
        with storage.patience(FAIL_PATIENCE_SECONDS):
            # Optuna has no public accessor for a trial's storage id; its own heartbeat thread uses this one.
            running = storage.get_trial(trial._trial_id).state == TrialState.RUNNING
            frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            retry = storage.get_heartbeat_stale_trial_callback() if running and queue_again else None
            if retry is not None:
                retry(study, frozen, reason=why, interrupted=True)
    except TRANSIENT_ERRORS as error:
        _logger.warning(f"Trial {trial.number} ({why}) could not be marked FAIL or queued again: the database is "
                        f"unreachable ({type(error).__name__}); other workers fail it once its heartbeat is stale")
        return
    if retry is not None:
        return  # the callback logged the trial's end, queued it again or removed its checkpoint
    if running and objective is not None:
        remove_checkpoint(frozen.user_attrs.get(record.CHECKPOINT_ARTIFACT), objective.artifact_store)
    _logger.warning(f"Trial {trial.number} failed: {why}")


def _tell(study: optuna.Study, storage: RetryingStorage, trial: optuna.Trial, value: float | None = None, *,
          state: TrialState | None = None) -> optuna.trial.FrozenTrial:
    """``study.tell`` with retries that a signal does not cut short: the trial must not stay RUNNING.

    A trial already finished elsewhere (failed by another worker's stale check, or by hand
    with `hpo stale --trial`) keeps the state it has; the stored trial is returned.
    """
    with storage.patience(DEFAULT_PATIENCE_SECONDS):
        try:
            return study.tell(trial, value, state=state, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Finished elsewhere between Optuna's look at the trial and its write: telling again
            # only reads the stored trial.
            return study.tell(trial, value, state=state, skip_if_finished=True)


def _finished_elsewhere(trial: optuna.Trial, state: TrialState = TrialState.FAIL) -> None:
    _logger.warning(
        f"Trial {trial.number} was already marked {state.name} elsewhere (by another worker after a late "
        "heartbeat, or by hand with `hpo stale --trial`); going on with the next trial"
    )


def _run_trial(study: optuna.Study, storage: RetryingStorage, trial: optuna.Trial, objective: Objective,
               budget: int) -> None:
    try:
        if _claimed_before(study, trial.number) >= budget:
            # Other workers claimed the last slots of the budget at the same moment.
            trial.set_user_attr(record.NOT_RUN, "the budget was claimed by other workers' trials")
            _tell(study, storage, trial, state=TrialState.FAIL)
            return
        # Optuna has no public accessor for a trial's storage id; its own heartbeat thread uses this one.
        with Heartbeat(storage, trial._trial_id):
            value = objective(trial)  # stores this worker's id on the trial first
    except optuna.TrialPruned as pruned:
        frozen = _tell(study, storage, trial, state=TrialState.PRUNED)
        if frozen.state != TrialState.PRUNED:
            _finished_elsewhere(trial, frozen.state)
            return
        remove_checkpoint(frozen.user_attrs.get(record.CHECKPOINT_ARTIFACT), objective.artifact_store)
        _logger.info(f"Trial {trial.number} pruned. {pruned}")
        return
    except optuna.exceptions.UpdateFinishedTrialError:
        _finished_elsewhere(trial)
        return
    except TRANSIENT_ERRORS as error:
        # The database went away in a call without retries (a suggestion, say): this
        # trial is lost, the worker is not.
        _fail(study, storage, trial, f"the database was unreachable ({type(error).__name__})", objective)
        return
    except interrupts.Interrupted as interrupted:
        _fail(study, storage, trial, f"interrupted by {interrupted}", objective, queue_again=True)
        raise
    except BaseException as error:
        # A bug: the trial is FAIL at once, then the error goes on.
        _fail(study, storage, trial, repr(error), objective)
        raise
    frozen = _tell(study, storage, trial, value)
    if frozen.state != TrialState.COMPLETE:
        _finished_elsewhere(trial, frozen.state)
        return
    remove_checkpoint(frozen.user_attrs.get(record.CHECKPOINT_ARTIFACT), objective.artifact_store)
    best = study.best_trial
    _logger.info(
        f"Trial {trial.number} finished with value: {value:.6g} and parameters: {trial.params}. "
        f"Best is trial {best.number} with value: {best.value:.6g}."
    )


def run_study(prepared: PreparedStudy, *, progress: bool = False,
              artifact_store: FileSystemArtifactStore | None = None) -> WorkerResult:
    """:func:`run_worker` on a study of :func:`hpo.tuning.study.prepare_study`, with a progress bar.

    The budget and ``timeout_seconds`` are the study file's.  ``progress`` shows
    the study's finished trials (all workers') as a bar on a terminal.

    Raises
    ------
    hpo.interrupts.Interrupted
        As :func:`run_worker`.
    """
    spec = prepared.spec
    with Progress(prepared.study, spec.budget.trials, enabled=progress) as bar:
        return run_worker(prepared.study, prepared.storage, spec, prepared.data,
                          timeout_seconds=spec.budget.timeout_seconds, on_trial_end=bar.update,
                          artifact_store=artifact_store)
