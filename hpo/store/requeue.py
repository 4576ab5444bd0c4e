"""A failed trial queued again: Optuna's retry of stale trials, where an interruption costs no retry.

Optuna's ``RetryHeartbeatStaleTrialCallback`` queues a FAIL trial again as a new WAITING trial
with the same parameters, and records the series in the new trial's system attributes:
``failed_trial``, the first trial of the series (``RetryHeartbeatStaleTrialCallback.retried_trial_number``),
and ``retry_history``, every trial of the series before it (``RetryHeartbeatStaleTrialCallback.retry_history``).
It stops queueing a series once ``retry_history`` is longer than ``max_retry``.

hpo queues a trial again for two reasons, and counts only one of them:

* **a crash**: the trial's heartbeat went stale (its worker was killed by SIGKILL or out of
  memory, its machine vanished; ``hpo stale --fail``), or it was failed by hand (``hpo stale
  --trial``).  Counted against ``workers.max_retry``, as Optuna counts: a trial that kills
  its worker every time is given up.
* **an interruption**: its worker was stopped by a signal (Ctrl-C, ``docker stop``, a pod
  evicted or preempted; :mod:`hpo.interrupts`) and failed the trial itself at a safe point.
  That says nothing about the trial, so it is queued again every time, with its checkpoint.
  Its number is added to the retry's system attribute ``hpo:interrupted``
  (:data:`hpo.store.record.INTERRUPTIONS`).

The crashes of a series are therefore the trials of ``retry_history`` that are not in
``hpo:interrupted`` (:func:`crashes`).  Both kinds go through Optuna's callback, so
``retried_trial_number`` and ``retry_history`` of every retry are what Optuna would have
written.

Optuna's callback copies all the failed trial's user attributes to the retry; here the retry
gets only :data:`hpo.store.record.CARRIED_TO_RETRY`, its seed and its checkpoint's id, so that a
WAITING retry, or one killed before it trained, shows no epochs, best epoch or worker that are
not its own.
"""

from __future__ import annotations

import copy
import datetime
import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from hpo.store import record
from hpo.store.checkpoints import remove_checkpoint

if TYPE_CHECKING:
    from optuna.artifacts import FileSystemArtifactStore

__all__ = ["RetryStaleTrial", "crashes", "interruptions", "queued_again"]

_logger = logging.getLogger(__name__)


def interruptions(trial: FrozenTrial) -> list[int]:
    """The trials of ``trial``'s retry series that were interrupted by a signal (their numbers)."""
    return list(trial.system_attrs.get(record.INTERRUPTIONS, []))


def queued_again(trials: Iterable[FrozenTrial]) -> set[int]:
    """The numbers of the trials that a trial of ``trials`` retries directly (the last of its ``retry_history``)."""
    return {trial.system_attrs["retry_history"][-1] for trial in trials if trial.system_attrs.get("retry_history")}


def crashes(trial: FrozenTrial) -> int:
    """How many trials of ``trial``'s retry series before it crashed (went stale or were failed by hand)."""
    return len(trial.system_attrs.get("retry_history", [])) - len(interruptions(trial))


class RetryStaleTrial:
    """Optuna's ``RetryHeartbeatStaleTrialCallback`` with interruptions apart, and one log line for each trial.

    Called by :func:`optuna.storages.fail_stale_trials` in the process that failed the
    trial (any worker, or `hpo stale --fail`), by `hpo stale --trial` for a trial failed by
    hand, and by a worker stopped by a signal for its own trial (``interrupted=True``).  The
    line names the trial, the worker that ran it (user attribute ``worker``), its age or
    ``reason``, and whether it was queued again with the same parameters.

    Parameters
    ----------
    max_retry : int
        How many crashes of one series are queued again (``workers.max_retry``); interruptions
        do not count.
    grace_period_seconds : int
        For the log line of a stale trial.
    """

    def __init__(self, max_retry: int, grace_period_seconds: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # No limit of its own: __call__ decides, counting crashes only.
            self._queue = optuna.storages.RetryHeartbeatStaleTrialCallback()
        self._max_retry = max_retry
        self._grace_period_seconds = grace_period_seconds
        # The study's artifact folder, where the checkpoints of running trials are (set by the workers).
        self.artifact_store: FileSystemArtifactStore | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial, *, reason: str | None = None,
                 interrupted: bool = False) -> bool:
        """Queue the FAIL trial ``trial`` again unless its series crashed ``max_retry`` times; whether it was queued.

        ``interrupted``: the trial's worker was stopped by a signal; it is queued again
        whatever the count.  A trial not queued again loses its checkpoint (nothing would
        resume from it) when :attr:`artifact_store` is set (the workers set it to the
        study's artifact folder).
        """
        crashed = crashes(trial) + (0 if interrupted else 1)  # this one included
        queued = interrupted or crashed <= self._max_retry
        if queued:
            template = copy.deepcopy(trial)  # Optuna's callback appends to the retry_history it is given
            # Only what continuing needs: the failed trial's epochs, curves and worker are not the retry's.
            template.user_attrs = {key: trial.user_attrs[key] for key in record.CARRIED_TO_RETRY
                                   if key in trial.user_attrs}
            template.system_attrs = {**template.system_attrs,
                                     record.INTERRUPTIONS: interruptions(trial) + ([trial.number] if interrupted else [])}
            self._queue(study, template)  # Optuna's records: failed_trial, retry_history
        worker = trial.user_attrs.get(record.WORKER)
        if reason is None:
            age = (datetime.datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            reason = f"no heartbeat within the grace period of {self._grace_period_seconds} s (started {age:.0f} s ago)"
        times = f"{self._max_retry} time{'s' if self._max_retry != 1 else ''}"
        outcome = ("queued again with the same parameters (an interruption: not counted against workers.max_retry)"
                   if interrupted
                   else f"queued again with the same parameters (retry {crashed} of {self._max_retry})" if queued
                   else f"not queued again: retried {times} already" if self._max_retry
                   else "not queued again (workers.max_retry = 0)")
        who = f"of worker {worker}" if worker else "(its worker never recorded itself)"
        _logger.warning(f"Trial {trial.number} {who} failed: {reason}; {outcome}")
        if not queued:
            remove_checkpoint(trial.user_attrs.get(record.CHECKPOINT_ARTIFACT), self.artifact_store)
        return queued
