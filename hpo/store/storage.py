"""SQLAlchemy URL -> Optuna storage.

The URL comes from ``--storage``, else the environment variable ``HPO_STORAGE``,
else a SQLite file ``hpo.db`` in the current directory (printed as an absolute
path).  PostgreSQL (``postgresql+psycopg2://user@host/db``) serves many workers.
Every study is an ordinary Optuna RDB study: ``optuna trials --storage URL
--study-name NAME`` reads it.

Writers keep SQLite in write-ahead-log mode.  A reading command given a SQLite
file it cannot write (a read-only mount, a file or folder of another user) opens
it read-only instead (SQLite's ``mode=ro``, and ``immutable=1`` when the -wal and
-shm files are absent and cannot be created: https://www.sqlite.org/wal.html#readonly).
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import sqlite3
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.storages._rdb import models as optuna_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.trial import TrialState
from sqlalchemy.engine import URL, make_url

from hpo.errors import HpoError
from hpo.store.requeue import RetryStaleTrial

if TYPE_CHECKING:
    from hpo.config.spec import HeartbeatSettings

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

SERVER_HINT = "; check the URL's host, port, user and database, and that the server is running"
# Where a storage URL may have come from (see storage_url).
STORAGE_SOURCES = f"--storage or ${STORAGE_ENVIRONMENT_VARIABLE}"
URL_EXAMPLES = "sqlite:///hpo.db or postgresql+psycopg2://user@host:5432/database"
READING_COMMANDS = "hpo trials, studies, best, plot, evaluate and dashboard"
_logger = logging.getLogger(__name__)


class StorageError(HpoError):
    """A storage URL that cannot be used; the message is one line."""


def storage_url(option: str | None) -> str:
    """The storage URL: ``option``, else ``$HPO_STORAGE``, else ``sqlite:///<cwd>/hpo.db``.

    Raises
    ------
    StorageError
        ``option`` is given but empty (``--storage ''``, an unset shell variable).
    """
    if option is not None and not option.strip():
        raise StorageError(f"--storage is empty; give a SQLAlchemy URL such as {URL_EXAMPLES}, or leave the option out")
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
    """The parsed URL, or a one-line StorageError for a malformed URL or a dialect SQLAlchemy lacks."""
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 (a port that is not a number raises here)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        shown = re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
        raise StorageError(f"storage {shown!r} is not a SQLAlchemy URL; use e.g. {URL_EXAMPLES}") from None
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(f"storage {describe(url)}: SQLAlchemy has no database dialect {parsed.drivername!r}; "
                           f"use e.g. {URL_EXAMPLES}") from None
    except ImportError as error:  # a dialect of another package whose module needs its driver
        raise StorageError(_missing_driver(url, error)) from None
    return parsed


class _ReadOnlyConnection(sqlite3.Connection):
    """A SQLite connection of a reading command to a file it cannot write (opened with ``mode=ro``)."""


def _use_wal(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLite in write-ahead-log mode: readers do not block the one writer (local parallel runs).

    A read-only connection keeps the file's journal mode: it cannot change it.
    """
    if isinstance(dbapi_connection, sqlite3.Connection) and not isinstance(dbapi_connection, _ReadOnlyConnection):
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

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        """Optuna's write of a trial's state, with taking a WAITING trial made atomic.

        ``study.ask()`` takes a queued (WAITING) trial by setting it RUNNING; Optuna
        reads the trial's state and then writes, relying on ``SELECT ... FOR UPDATE``.
        SQLite has no row locks (SQLAlchemy drops ``FOR UPDATE`` there), so two workers
        could both read WAITING and both take the trial: seen as one trial finished by
        two workers.  Here that write is one conditional ``UPDATE ... WHERE state =
        WAITING``, which only one worker can win on any database.

        Returns
        -------
        bool
            For RUNNING, whether this call took the trial; otherwise as Optuna's.
        """
        if state != TrialState.RUNNING:
            return super().set_trial_state_values(trial_id, state, values)
        trials = optuna_models.TrialModel.__table__
        started = datetime.datetime.now().astimezone(datetime.timezone.utc).replace(tzinfo=None)  # as Optuna stores it
        with self.engine.begin() as connection:
            taken = connection.execute(
                trials.update()
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=started)
            ).rowcount
        return taken == 1

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


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    read_only_ok: bool = False,
    heartbeat: HeartbeatSettings | None = None,
) -> optuna.storages.RDBStorage:
    """Connect to the study database at ``url``: one SQLAlchemy engine for the process.

    Parameters
    ----------
    url : str
        SQLAlchemy URL.
    must_exist : bool
        Refuse a SQLite file that does not exist and a database without Optuna's
        tables, instead of creating them (commands that read, and workers that join).
    read_only_ok : bool
        The caller only reads: a SQLite file this process cannot write (a read-only
        mount, no write permission on the file or its folder) is opened read-only,
        and Optuna is told not to create tables; without it such a file is refused.
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
        :data:`SQLITE_BUSY_TIMEOUT_SECONDS` for a lock, unless opened read-only
        (:func:`is_read_only`).

    Raises
    ------
    StorageError
        Not a URL, a dialect SQLAlchemy lacks, a missing driver, a missing SQLite file (with
        ``must_exist``) or folder, a folder named as the file, a SQLite file that cannot be
        written (without ``read_only_ok``), a file that is not a SQLite database, or a database
        that cannot be reached; the message names the URL, password hidden, and says what to do.
    """
    parsed = _parse(url)
    engine_url = url
    read_only = False
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(url, parsed)
        if path.is_dir():
            raise StorageError(f"storage {describe(url)}: {path.resolve()} is a folder; name the study database "
                               f"file with {STORAGE_SOURCES}")
        if must_exist and not path.is_file():
            raise StorageError(f"storage {describe(url)}: no such database file; create a study first "
                               f"(`hpo run` or `hpo create`) or name the database with {STORAGE_SOURCES}")
        if not path.parent.is_dir():
            raise StorageError(f"storage {describe(url)}: folder {path.parent.resolve()} does not exist; "
                               f"create it or give another path with {STORAGE_SOURCES}")
        connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
        if not _writable(path):
            if not (read_only_ok and path.is_file()):
                raise StorageError(_not_writable(url, path))
            engine_url, read_only = _read_only_url(url, parsed, path), True
            connect_args["factory"] = _ReadOnlyConnection
        engine_kwargs["connect_args"] = connect_args
    else:
        engine_kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW, pool_recycle=3600)
        if parsed.get_backend_name() == "postgresql":
            # Lets an operator count each process's connections in pg_stat_activity.
            engine_kwargs["connect_args"] = {
                "application_name": f"{APPLICATION_NAME} {socket.gethostname()}:{os.getpid()}"[:63],
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            }
    if must_exist:
        _check_has_studies(url, parsed, engine_url, engine_kwargs.get("connect_args", {}))
    if parsed.get_backend_name() == "sqlite" and not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", _use_wal):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _use_wal)
    heartbeat_kwargs: dict[str, Any] = {}
    if heartbeat is not None:
        heartbeat_kwargs = {
            "heartbeat_interval": heartbeat.interval_seconds,
            "grace_period": heartbeat.grace_period_seconds,
            "heartbeat_stale_trial_callback": RetryStaleTrial(heartbeat.max_retry, heartbeat.grace_period_seconds),
        }
    last_error: Exception | None = None
    dropped_until = time.monotonic() + DROPPED_PATIENCE_SECONDS
    attempt = 0
    while attempt < CREATE_ATTEMPTS:
        attempt += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Read-only: Optuna then only reads its version records at open (they exist in any
                # database it made), so nothing writes.
                return HeartbeatStorage(engine_url, engine_kwargs=engine_kwargs,
                                        skip_table_creation=read_only, **heartbeat_kwargs)
        except ImportError as error:
            raise StorageError(_missing_driver(url, error)) from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            # Two processes creating Optuna's tables in a fresh database at once: one wins,
            # the other sees a duplicate; the second attempt finds the tables made.
            last_error = error
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                optuna.exceptions.StorageInternalError) as error:
            last_error = error
            if _dropped(error) and time.monotonic() < dropped_until:
                # The server was reached and dropped the connection (a restart, a failover, an
                # administrator): wait it out like any storage call (hpo.store.retrying).
                _logger.warning(f"opening the storage failed ({_reason(error)}); retrying in 1 s")
                time.sleep(1.0)
                attempt -= 1
                continue
            if "already exists" not in str(error):  # SQLite's way of saying the same
                break
            time.sleep(0.2 * (attempt + 1))
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError, optuna.exceptions.OptunaError) as error:
            last_error = error
            break
    assert last_error is not None
    raise StorageError(_cannot_open(url, parsed, last_error))


# How long opening a storage waits for a server that dropped its connections, in seconds.
DROPPED_PATIENCE_SECONDS = 60.0
# What a server says when it dropped a connection that was open (not: refused, unknown host, bad password).
_DROPPED = ("server closed the connection", "terminating connection", "connection already closed",
            "SSL SYSCALL", "Lost connection", "server has gone away", "the database system is shutting down",
            "the database system is starting up")


def _reason(error: BaseException) -> str:
    original = getattr(error, "orig", None) or error.__cause__ or error
    return str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__


def _dropped(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says that the server dropped an open connection."""
    texts = [str(error), str(getattr(error, "orig", "")), str(error.__cause__ or ""), str(error.__context__ or "")]
    return any(marker in text for text in texts for marker in _DROPPED)


def is_read_only(storage: optuna.storages.RDBStorage) -> bool:
    """True if :func:`open_storage` opened ``storage`` read-only (a SQLite file it cannot write)."""
    return storage.engine.url.query.get("mode") == "ro"


def _sqlite_file(url: str, parsed: URL) -> Path:
    if not parsed.database or parsed.database == ":memory:":
        raise StorageError(f"storage {url!r}: an in-memory SQLite database keeps nothing; give a file path")
    return Path(parsed.database)


def _writable(path: Path) -> bool:
    """Whether this process can write the SQLite database ``path`` in WAL mode: create or write the
    file, and create its -wal and -shm files beside it unless both exist and are writable."""
    folder_writable = os.access(path.parent, os.W_OK | os.X_OK)  # False on a read-only mount, even for root
    if not path.exists():
        return folder_writable
    if not os.access(path, os.W_OK):
        return False
    return folder_writable or all(os.access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm"))


def _read_only_url(url: str, parsed: URL, path: Path) -> str:
    """The SQLAlchemy URL that opens ``path`` read-only through a SQLite URI filename.

    ``mode=ro`` needs the -wal and -shm files of a WAL database to exist already or to
    be creatable in the folder; otherwise only ``immutable=1`` opens it (SQLite then
    takes no locks, ignores the -wal file and assumes that nothing changes the file
    while it is open).

    Raises
    ------
    StorageError
        A -wal file with content but no -shm file in a folder that cannot hold one:
        ``immutable=1`` would silently leave out the trials committed to the -wal.
    """
    query = {"mode": "ro", "uri": "true"}
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if not os.access(path.parent, os.W_OK | os.X_OK) and not (wal.exists() and shm.exists()):
        if wal.exists() and wal.stat().st_size > 0:
            raise StorageError(
                f"storage {describe(url)}: its write-ahead log {wal.name} holds changes that cannot be read "
                f"without {shm.name}, which is missing and cannot be created in this read-only folder; read a "
                "writable copy of the folder (cp -a), or copy the database while no process has it open")
        query["immutable"] = "1"
    filename = "file:" + urllib.parse.quote(str(path.resolve()))  # a URI filename: ?, # and % escaped
    return parsed.set(database=filename, query=query).render_as_string(hide_password=False)


def _not_writable(url: str, path: Path) -> str:
    if path.exists():
        return (f"storage {describe(url)} is read-only here (the file or its folder cannot be written); "
                f"{READING_COMMANDS} can read it, but hpo run, create and worker need a writable copy")
    return (f"storage {describe(url)}: cannot create the database file, folder {path.parent.resolve()} is not "
            f"writable; give another path with {STORAGE_SOURCES}")


def _cannot_open(url: str, parsed: URL, error: Exception) -> str:
    """One line for a database that would not open, with the hint that fits the failure."""
    original = getattr(error, "orig", None) or error
    reason = _reason(error)
    if parsed.get_backend_name() == "sqlite":
        if getattr(original, "sqlite_errorname", None) == "SQLITE_NOTADB":
            return (f"storage {describe(url)}: {Path(parsed.database).resolve()} is not a SQLite database file; "
                    f"name the study database with {STORAGE_SOURCES}")
        return f"cannot open storage {describe(url)}: {reason}"
    if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return f"cannot open storage {describe(url)}: {reason}{SERVER_HINT}"
    return f"cannot open storage {describe(url)}: {reason}"


def _missing_driver(url: str, error: ImportError) -> str:
    # Optuna wraps SQLAlchemy's ImportError; the module's name is on the cause.
    module = getattr(error, "name", None) or getattr(error.__cause__, "name", None) or "its module"
    return (
        f"storage {describe(url)}: the database driver ({module}) is not installed; for PostgreSQL "
        "pip install 'hpo-from-scratch[postgres]', for other databases the driver SQLAlchemy names"
    )


def _check_has_studies(url: str, parsed: URL, engine_url: str, connect_args: dict[str, Any]) -> None:
    """Refuse, without writing anything, a database that holds no Optuna tables."""
    try:
        engine = sqlalchemy.create_engine(engine_url, connect_args=connect_args)
    except ImportError as error:
        raise StorageError(_missing_driver(url, error)) from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(f"cannot open storage {describe(url)}: {error}") from None
    try:
        has_tables = sqlalchemy.inspect(engine).has_table("studies")
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise StorageError(_cannot_open(url, parsed, error)) from None
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
