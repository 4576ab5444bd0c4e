"""SQLAlchemy URL -> Optuna storage.

The URL comes from ``--storage``, else the environment variable ``HPO_STORAGE``,
else a SQLite file ``hpo.db`` in the current directory (printed as an absolute
path).  PostgreSQL (``postgresql+psycopg2://user@host/db``) serves many workers.
Every study is an ordinary Optuna RDB study: ``optuna trials --storage URL
--study-name NAME`` reads it.
"""

from __future__ import annotations

import os
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

STORAGE_ENVIRONMENT_VARIABLE = "HPO_STORAGE"
DEFAULT_SQLITE_FILE = "hpo.db"
# Seconds a SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_SECONDS = 60


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
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"storage {url!r} is not a SQLAlchemy URL; use e.g. sqlite:///hpo.db or "
            "postgresql+psycopg2://user@host:5432/database"
        ) from None


def open_storage(url: str, *, must_exist: bool = False) -> optuna.storages.RDBStorage:
    """Connect to the study database at ``url``.

    Parameters
    ----------
    url : str
        SQLAlchemy URL.
    must_exist : bool
        For SQLite: refuse a file that does not exist instead of creating an
        empty database (for commands that only read).

    Returns
    -------
    optuna.storages.RDBStorage
        With ``pool_pre_ping`` so a dropped connection is replaced; SQLite waits up
        to :data:`SQLITE_BUSY_TIMEOUT_SECONDS` for a lock.

    Raises
    ------
    StorageError
        Not a URL, a missing driver, a missing SQLite file (with ``must_exist``) or a
        database that cannot be reached; the message names the URL, password hidden.
    """
    parsed = _parse(url)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise StorageError(f"storage {url!r}: an in-memory SQLite database keeps nothing; give a file path")
        path = Path(database)
        if must_exist and not path.is_file():
            raise StorageError(f"storage {describe(url)}: no such database file; run `hpo run` first or check --storage")
        if not path.parent.is_dir():
            raise StorageError(f"storage {describe(url)}: folder {path.parent.resolve()} does not exist")
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    else:
        engine_kwargs.update(pool_size=2, max_overflow=2, pool_recycle=3600)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ModuleNotFoundError as error:
        raise StorageError(
            f"storage {describe(url)}: the database driver {error.name!r} is not installed; "
            "for PostgreSQL: pip install 'hpo-from-scratch[postgres]'"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(f"cannot open storage {describe(url)}: {reason}") from None
