"""SQLAlchemy URL -> Optuna storage.

The URL comes from ``--storage``, else the environment variable ``HPO_STORAGE``,
else a SQLite file ``hpo.db`` in the current directory (printed as an absolute
path).  PostgreSQL (``postgresql+psycopg2://user@host/db``) serves many workers.
Every study is an ordinary Optuna RDB study: ``optuna trials --storage URL
--study-name NAME`` reads it.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import sqlite3
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import URL, make_url

from hpo import interrupts

STORAGE_ENVIRONMENT_VARIABLE = "HPO_STORAGE"
DEFAULT_SQLITE_FILE = "hpo.db"
# Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_SECONDS = 60
# Connections one process may hold to a server database: the main thread's session
# and the heartbeat thread's, plus one spare. N workers hold at most 3 * N.
POOL_SIZE = 2
POOL_OVERFLOW = 1
CREATE_ATTEMPTS = 5
APPLICATION_NAME = "hpo"
# Seconds a PostgreSQL connection attempt may take (a host that drops packets).
CONNECT_TIMEOUT_SECONDS = 10
# Trial user attribute: "host:pid" of the worker that runs the trial.
ATTRIBUTE_WORKER = "worker"

T = TypeVar("T")
SERVER_HINT = "; check the URL's host, port, user and database, and that the server is running"
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeartbeatSettings:
    """Optuna trial heartbeats: ``interval_seconds`` between beats, stale after ``grace_period_seconds``."""

    interval_seconds: int
    grace_period_seconds: int
    max_retry: int


class StorageError(RuntimeError):
    """A storage URL that cannot be used; the message is one line."""


def storage_url(option: str | None) -> str:
    """The storage URL: ``option``, else ``$HPO_STORAGE``, else ``sqlite:///<cwd>/hpo.db``."""
    if option:
        return option
    if os.environ.get(STORAGE_ENVIRONMENT_VARIABLE):
        return os.environ[STORAGE_ENVIRONMENT_VARIABLE]
    return f"sqlite:///{Path.cwd() / DEFAULT_SQLITE_FILE}"


def describe(url: str) -> str:
    """The URL for messages: password hidden, SQLite as an absolute file path."""
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        return url
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        return f"sqlite:///{Path(parsed.database).resolve()}"
    return parsed.render_as_string(hide_password=True)


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 (a port that is not a number raises here)
        return parsed
    except (sqlalchemy.exc.ArgumentError, ValueError):
        shown = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
        raise StorageError(
            f"storage {shown!r} is not a SQLAlchemy URL; use e.g. sqlite:///hpo.db or "
            "postgresql+psycopg2://user@host:5432/database"
        ) from None


def _use_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite in write-ahead-log mode: readers do not block the one writer (local parallel runs)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()


class HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose stale check also catches trials that never beat.

    Optuna judges a RUNNING trial stale when its last heartbeat is older than the
    grace period, and skips trials that have no heartbeat at all.  A worker killed
    (SIGKILL, out of memory, power loss) after ``study.ask()`` created its trial but
    before the trial's first heartbeat leaves such a trial: nothing would ever fail
    it, and workers waiting for the budget's last running trials would wait forever.
    Here a RUNNING trial without a heartbeat whose ``datetime_start`` is older than
    the grace period is stale too.  ``datetime_start`` is written from the clock of
    the process that started the trial, so workers on several machines need clocks
    that agree to within a fraction of the grace period (NTP does that).
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace_period = datetime.timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        now = datetime.datetime.now()
        old = [trial._trial_id for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
               if trial.datetime_start is not None and now - trial.datetime_start > grace_period]
        if not old:
            return stale
        heartbeats = optuna_models.TrialHeartbeatModel.__table__
        with self.engine.connect() as connection:
            beating = set(connection.execute(
                sqlalchemy.select(heartbeats.c.trial_id).where(heartbeats.c.trial_id.in_(old))).scalars())
        return stale + [trial_id for trial_id in old if trial_id not in beating and trial_id not in stale]

    def set_trial_user_attrs(self, trial_id: int, attributes: dict[str, Any]) -> None:
        """Write several user attributes of a running trial in one transaction (one commit, not one each).

        The same writes as ``set_trial_user_attr`` once per key, through Optuna's own
        session and attribute code; on a server database each commit waits for the
        write-ahead log, so a trial's attributes cost one such wait instead of six.

        Raises
        ------
        optuna.exceptions.UpdateFinishedTrialError
            The trial is already finished (failed by another worker, say); nothing is written.
        """
        with _create_scoped_session(self.scoped_session, True) as session:
            for key, value in attributes.items():
                self._set_trial_attr_without_commit(session, optuna_models.TrialUserAttributeModel, trial_id, key, value)


class RetryStaleTrial:
    """Optuna's ``RetryHeartbeatStaleTrialCallback``, and one log line for each stale trial.

    Called by :func:`optuna.storages.fail_stale_trials` in the process that failed
    the trial (any worker, or `hpo stale --fail`): the line names the trial, the
    worker that ran it (user attribute ``worker``), its age, and whether it was
    queued again with the same parameters (at most ``max_retry`` times).
    """

    def __init__(self, max_retry: int, grace_period_seconds: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self._max_retry = max_retry
        self._grace_period_seconds = grace_period_seconds

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._retry(study, trial)
        failures = len(trial.system_attrs.get("retry_history", [])) + 1  # this one included
        worker = trial.user_attrs.get(ATTRIBUTE_WORKER, "a worker that never recorded itself")
        age = (datetime.datetime.now() - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
        queued = (f"queued again with the same parameters (retry {failures} of {self._max_retry})"
                  if failures <= self._max_retry else f"not queued again: retried {self._max_retry} times already")
        _logger.warning(f"Trial {trial.number} of worker {worker} failed: no heartbeat within the grace period "
                        f"of {self._grace_period_seconds} s (started {age:.0f} s ago); {queued}")


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    heartbeat: HeartbeatSettings | None = None,
) -> optuna.storages.RDBStorage:
    """Connect to the study database at ``url``: one SQLAlchemy engine for the process.

    Parameters
    ----------
    url : str
        SQLAlchemy URL.
    must_exist : bool
        For commands that only read: refuse a SQLite file that does not exist and a
        database without Optuna's tables, instead of creating them.
    heartbeat : HeartbeatSettings, optional
        Turns on Optuna's trial heartbeats: a trial whose heartbeat is older than
        the grace period (or that has none and started longer ago than that, see
        :class:`HeartbeatStorage`) is failed by any worker and retried up to
        ``max_retry`` times (:class:`RetryStaleTrial`).

    Returns
    -------
    HeartbeatStorage
        An ``optuna.storages.RDBStorage``.
        Its pool holds at most :data:`POOL_SIZE` + :data:`POOL_OVERFLOW` connections
        (``pool_pre_ping`` replaces dropped ones); SQLite runs in WAL mode and waits up to
        :data:`SQLITE_BUSY_TIMEOUT_SECONDS` for a lock.

    Raises
    ------
    StorageError
        Not a URL, a missing driver, a missing SQLite file (with ``must_exist``) or a
        database that cannot be reached; the message names the URL, password hidden.
    """
    parsed = _parse(url)
    if must_exist:
        _check_has_studies(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise StorageError(f"storage {url!r}: an in-memory SQLite database keeps nothing; give a file path")
        path = Path(database)
        if not path.parent.is_dir():
            raise StorageError(f"storage {describe(url)}: folder {path.parent.resolve()} does not exist; "
                               "create it or give another path with --storage")
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _use_wal):
            sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _use_wal)
    else:
        engine_kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_recycle=3600)
        if parsed.get_backend_name() == "postgresql":
            # Lets an operator count each process's connections in pg_stat_activity.
            engine_kwargs["connect_args"] = {
                "application_name": f"{APPLICATION_NAME} {socket.gethostname()}:{os.getpid()}"[:63],
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            }
    heartbeat_kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        heartbeat_kwargs = {
            "heartbeat_interval": heartbeat.interval_seconds,
            "grace_period": heartbeat.grace_period_seconds,
            "heartbeat_stale_trial_callback": RetryStaleTrial(heartbeat.max_retry, heartbeat.grace_period_seconds),
        }
    last_error: Exception | None = None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return HeartbeatStorage(url, engine_kwargs=engine_kwargs, **heartbeat_kwargs)
        except ImportError as error:
            raise StorageError(_missing_driver(url, error)) from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # Two processes creating Optuna's tables in a fresh database at once: one wins,
            # the other sees a duplicate; the second attempt finds the tables made.
            last_error = error
            time.sleep(0.2 * (attempt + 1))
        except sqlalchemy.exc.OperationalError as error:
            last_error = error
            if "already exists" not in str(error):  # SQLite's way of saying the same
                break
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
            last_error = error
            break
    reason = str(getattr(last_error, "orig", None) or last_error).strip().splitlines()[0]
    raise StorageError(f"cannot open storage {describe(url)}: {reason}{SERVER_HINT}")


def _missing_driver(url: str, error: ImportError) -> str:
    # Optuna wraps SQLAlchemy's ImportError; the module's name is on the cause.
    module = getattr(error, "name", None) or getattr(error.__cause__, "name", None) or "its module"
    return (
        f"storage {describe(url)}: the database driver ({module}) is not installed; for PostgreSQL "
        "pip install 'hpo-from-scratch[postgres]', for other databases the driver SQLAlchemy names"
    )


def _check_has_studies(url: str) -> None:
    """Refuse, without writing anything, a database that holds no Optuna tables."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise StorageError(f"storage {url!r}: an in-memory SQLite database keeps nothing; give a file path")
        path = Path(parsed.database)
        if not path.is_file():
            raise StorageError(f"storage {describe(url)}: no such database file; create a study first (`hpo run` or `hpo create`) or check --storage")
    try:
        engine = sqlalchemy.create_engine(url)
    except ImportError as error:
        raise StorageError(_missing_driver(url, error)) from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(f"cannot open storage {describe(url)}: {error}") from None
    try:
        has_tables = sqlalchemy.inspect(engine).has_table("studies")
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {describe(url)}: {reason}{SERVER_HINT}") from None
    finally:
        engine.dispose()
    if not has_tables:
        raise StorageError(f"storage {describe(url)} is not an Optuna study database (it has no studies table)")


# Errors of a database that is briefly away (restart, failover, network); worth waiting out.
TRANSIENT_ERRORS = (
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


def with_retries(call: Callable[[], T], *, patience_seconds: float = 120.0, what: str = "storage call",
                 interruptible: bool = True) -> T:
    """Run ``call()``, waiting out a database that is briefly unreachable.

    Retries on :data:`TRANSIENT_ERRORS` with a backoff of 0.5 s doubling to 8 s,
    for at most ``patience_seconds`` seconds; then the last error is raised.

    Raises
    ------
    hpo.interrupts.Interrupted
        With ``interruptible``, a signal that arrives while waiting to retry.
    """
    deadline = time.monotonic() + patience_seconds
    delay = 0.5
    while True:
        try:
            return call()
        except TRANSIENT_ERRORS as error:
            if time.monotonic() + delay > deadline:
                raise
            _logger.warning(f"{what} failed ({type(error).__name__}); retrying in {delay:.1f} s")
            if interruptible:
                interrupts.sleep(delay)
            else:
                time.sleep(delay)
            delay = min(delay * 2, 8.0)
