"""An Optuna storage that waits out a database outage: the one place where storage calls are retried.

On the model of Optuna's own ``_CachedStorage`` (a ``BaseStorage`` and
``BaseHeartbeat`` that delegates every call to the storage it wraps),
:class:`RetryingStorage` wraps the storage a worker runs on and repeats a call that
failed with a transient database error (:data:`hpo.store.storage.TRANSIENT_ERRORS`: the
server restarting, a dropped connection, SQLite busy), with a backoff of 0.5 s
doubling to 8 s, for at most its patience (120 s by default).  The worker and the
objective then use Optuna's API as it is (``study.ask``, ``trial.report``,
``study.tell``) and every storage call underneath is retried.

A retried call must not do its work twice.  Reads, attribute writes, intermediate
values, parameters and heartbeats are written as "insert or update" by Optuna's RDB
storage, so doing one twice stores the same thing.  Three writes are not:

* **Creating a trial.**  If the database commits the new trial and the connection
  drops before the answer arrives, a plain retry creates a second trial.  Every trial
  is therefore created with a token of its own in its system attributes
  (``hpo:create_token``, written in the same transaction); before retrying, the
  wrapper looks for a trial with that token and returns it if the first attempt did
  commit.  (Optuna's RDB storage itself retries a creation whose commit failed, up
  to five times, without such a check; a duplicate made there stays RUNNING with no
  heartbeat, and the no-heartbeat rule fails it after the grace period.  It never
  trains and never counts against the budget.)
* **Finishing a trial** (``set_trial_state_values`` to COMPLETE, PRUNED or FAIL):
  a retry of a committed write finds the trial finished and Optuna raises
  ``UpdateFinishedTrialError``; if the stored state and values are those asked for,
  the retry has succeeded and returns True.
* **Taking a WAITING trial** (a queued retry) to RUNNING: a retry of a committed
  write returns False, as if another worker had taken it; the trial then runs
  nowhere until the no-heartbeat rule of :class:`hpo.store.storage.HeartbeatStorage`
  fails and re-queues it after the grace period.

Waits are interruptible (a signal recorded by :mod:`hpo.interrupts` raises
``Interrupted`` instead of waiting on) only in the main thread and only where the
caller allows it; :meth:`RetryingStorage.patience` narrows both for a block (a
trial that must be marked FAIL after an interruption tries for a few seconds,
and no signal cuts that short).  The heartbeat thread's calls never raise
``Interrupted``.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import logging
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterator, Sequence
from typing import Any, TypeVar

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from hpo import interrupts
from hpo.store.storage import TRANSIENT_ERRORS, HeartbeatStorage

__all__ = ["CREATE_TOKEN", "DEFAULT_PATIENCE_SECONDS", "RetryingStorage"]

T = TypeVar("T")

CREATE_TOKEN = "hpo:create_token"
"""System attribute of every trial a worker creates: makes a retried creation find the first."""

DEFAULT_PATIENCE_SECONDS = 120.0
"""How long a call waits for the database by default, in seconds."""

_logger = logging.getLogger("hpo.store.storage")


class RetryingStorage(BaseStorage, BaseHeartbeat):
    """Optuna's cached RDB storage with every call retried through a database outage.

    Parameters
    ----------
    backend : HeartbeatStorage
        The storage of :func:`hpo.store.storage.open_storage`; it is wrapped in Optuna's
        ``_CachedStorage`` (as ``optuna.create_study`` would do), so finished trials
        are read from the database once.
    patience_seconds : float, default 120
        Longest wait for the database, per call, in seconds.

    Raises
    ------
    The last transient error of a call, once the patience is spent;
    ``hpo.interrupts.Interrupted`` while waiting, in the main thread, when a signal came.
    """

    def __init__(self, backend: HeartbeatStorage, *, patience_seconds: float = DEFAULT_PATIENCE_SECONDS) -> None:
        self.backend = backend
        self._cached = _CachedStorage(backend)
        self._patience_seconds = patience_seconds
        self._local = threading.local()

    # --------------------------------------------------------------- the retry loop
    @contextlib.contextmanager
    def patience(self, seconds: float, *, interruptible: bool = False) -> Iterator[None]:
        """Within the block, this thread's calls wait at most ``seconds`` and (by default) ignore signals."""
        previous = getattr(self._local, "settings", None)
        self._local.settings = (seconds, interruptible)
        try:
            yield
        finally:
            self._local.settings = previous

    def _retry(self, what: str, call: Callable[[bool], T]) -> T:
        """``call(retrying)`` until it does not raise a transient error; ``retrying`` is False the first time."""
        patience, interruptible = getattr(self._local, "settings", None) or (self._patience_seconds, True)
        interruptible = interruptible and threading.current_thread() is threading.main_thread()
        deadline = time.monotonic() + patience
        delay = 0.5
        retrying = False
        while True:
            try:
                return call(retrying)
            except TRANSIENT_ERRORS as error:
                if time.monotonic() + delay > deadline:
                    raise
                _logger.warning(f"{what} failed ({type(error).__name__}); retrying in {delay:.1f} s")
                if interruptible:
                    interrupts.sleep(delay)
                else:
                    time.sleep(delay)
                delay = min(delay * 2, 8.0)
                retrying = True

    def _call(self, what: str, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._retry(what, lambda retrying: method(*args, **kwargs))

    # --------------------------------------------------------------- writes that are not idempotent
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """Create a trial once, however often the call is retried (see the module's notes)."""
        token = uuid.uuid4().hex
        if template_trial is None:  # what the RDB storage creates without a template: RUNNING, started now
            template_trial = FrozenTrial(
                number=-1, state=TrialState.RUNNING, value=None, datetime_start=datetime.datetime.now(),
                datetime_complete=None, params={}, distributions={}, user_attrs={}, system_attrs={},
                intermediate_values={}, trial_id=-1)
        else:
            template_trial = copy.deepcopy(template_trial)
        template_trial.system_attrs = {**template_trial.system_attrs, CREATE_TOKEN: token}

        def create(retrying: bool) -> int:
            if retrying:
                for trial in self._cached.get_all_trials(study_id, deepcopy=False):
                    if trial.system_attrs.get(CREATE_TOKEN) == token:
                        return trial._trial_id  # the first attempt was committed
            return self._cached.create_new_trial(study_id, template_trial)

        return self._retry("starting a trial", create)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        """Set a trial's state (and values); a retry that finds its own write committed returns True."""

        def write(retrying: bool) -> bool:
            try:
                return self._cached.set_trial_state_values(trial_id, state=state, values=values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if retrying:
                    stored = self.backend.get_trial(trial_id)
                    if stored.state == state and (values is None or stored.values == list(values)):
                        return True
                raise

        return self._retry("storing a trial's state", write)

    # --------------------------------------------------------------- everything else, retried as it is
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:  # noqa: D102
        return self._call("creating the study", self._cached.create_new_study, directions, study_name)

    def delete_study(self, study_id: int) -> None:  # noqa: D102
        self._call("deleting the study", self._cached.delete_study, study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:  # noqa: D102
        self._call("storing the study", self._cached.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:  # noqa: D102
        self._call("storing the study", self._cached.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:  # noqa: D102
        return self._call("reading the study", self._cached.get_study_id_from_name, study_name)

    def get_study_name_from_id(self, study_id: int) -> str:  # noqa: D102
        return self._call("reading the study", self._cached.get_study_name_from_id, study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:  # noqa: D102
        return self._call("reading the study", self._cached.get_study_directions, study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:  # noqa: D102
        return self._call("reading the study", self._cached.get_study_user_attrs, study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:  # noqa: D102
        return self._call("reading the study", self._cached.get_study_system_attrs, study_id)

    def get_all_studies(self) -> list[FrozenStudy]:  # noqa: D102
        return self._call("reading the studies", self._cached.get_all_studies)

    def set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,  # noqa: D102
                        distribution: BaseDistribution) -> None:
        self._call("sampling a parameter", self._cached.set_trial_param, trial_id, param_name,
                   param_value_internal, distribution)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:  # noqa: D102
        return self._call("reading a trial", self._cached.get_trial_id_from_study_id_trial_number, study_id,
                          trial_number)

    def get_best_trial(self, study_id: int) -> FrozenTrial:  # noqa: D102
        return self._call("reading the best trial", self._cached.get_best_trial, study_id)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:  # noqa: D102
        self._call("reporting an epoch", self._cached.set_trial_intermediate_value, trial_id, step,
                   intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:  # noqa: D102
        self._call("storing a trial", self._cached.set_trial_user_attr, trial_id, key, value)

    def set_trial_user_attrs(self, trial_id: int, attributes: dict[str, Any]) -> None:
        """Several user attributes of a running trial in one transaction (:meth:`HeartbeatStorage.set_trial_user_attrs`)."""
        self._call("storing a trial", self.backend.set_trial_user_attrs, trial_id, attributes)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:  # noqa: D102
        self._call("storing a trial", self._cached.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:  # noqa: D102
        return self._call("reading a trial", self._cached.get_trial, trial_id)

    def get_all_trials(self, study_id: int, deepcopy: bool = True,  # noqa: D102
                       states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._call("reading the study", self._cached.get_all_trials, study_id, deepcopy, states)

    def record_heartbeat(self, trial_id: int) -> None:  # noqa: D102
        self._call("recording a heartbeat", self._cached.record_heartbeat, trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._call("checking for stale trials", self._cached._get_stale_trial_ids, study_id)

    def get_heartbeat_interval(self) -> int | None:  # noqa: D102
        return self._cached.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:  # noqa: D102
        return self._cached.get_heartbeat_stale_trial_callback()

    def remove_session(self) -> None:
        """Return the database connections to the pool (as ``RDBStorage.remove_session``)."""
        self.backend.remove_session()

