"""What the commands of ``hpo`` share: options declared once, opening storages and studies, hints to paste.

Commands only parse and print; the work is done by the library (hpo.tuning.study,
hpo.tuning.worker, hpo.results.evaluate, ...).  Errors a user can fix are :class:`hpo.errors.HpoError`
and reach :func:`hpo.cli.app.entry`, which prints them as one line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import optuna
import threadpoolctl
from sqlalchemy.engine import make_url

from hpo import interrupts
from hpo.config.names import check_study_name
from hpo.errors import HpoError
from hpo.results.report import FORMATS
from hpo.store.artifacts import (
    ARTIFACT_DIR_ENVIRONMENT_VARIABLE,
    artifact_directory,
    open_artifact_store,
)
from hpo.store.storage import describe, open_storage, storage_url

Command = TypeVar("Command", bound=Callable[..., Any])

STORAGE_HELP = "SQLAlchemy URL of the study database [default: $HPO_STORAGE, else sqlite:///./hpo.db]"
STUDY_NAME_HELP = "Study name [default: the file's name field]."
READ_STUDY_NAME_HELP = "Study to read [default: the only study in the storage]."
BLAS_HELP = "BLAS threads per worker process (threadpoolctl)."
# Where every command with --artifact-dir looks by default (hpo.store.artifacts.artifact_directory).
ARTIFACT_DIR_DEFAULT = ("[default: $HPO_ARTIFACT_DIR, else NAME-artifacts beside a SQLite file NAME.db, "
                        "else ./hpo-artifacts]")


# ------------------------------------------------------------------ options declared once
def storage_option(command: Command) -> Command:
    """``--storage URL`` (the study database; the library falls back to $HPO_STORAGE, then ./hpo.db)."""
    return click.option("--storage", help=STORAGE_HELP)(command)


def check_new_study_name(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """Option callback: a name hpo will create or run a study under must obey hpo.config.names' rule."""
    if value is None:
        return None
    try:
        return check_study_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error), context, parameter) from None


def study_name_option(help: str = READ_STUDY_NAME_HELP, *, new: bool = False) -> Callable[[Command], Command]:
    """``--study-name NAME``; ``new``: a name a study is created or run under (checked by hpo.config.names)."""
    return click.option("--study-name", help=help, callback=check_new_study_name if new else None)


def format_option(choices: tuple[str, ...] = FORMATS, help: str | None = None) -> Callable[[Command], Command]:
    """``-f/--format`` among ``choices`` (table first, the default)."""
    return click.option("-f", "--format", "output_format", type=click.Choice(choices), default="table",
                        show_default=True, help=help)


def artifact_dir_option(what: str = "Folder of the trials' weight artifacts.") -> Callable[[Command], Command]:
    """``--artifact-dir`` (also $HPO_ARTIFACT_DIR): the folder of the trials' weights; its help is ``what`` and
    the default every command shares (:data:`ARTIFACT_DIR_DEFAULT`)."""
    return click.option("--artifact-dir", envvar=ARTIFACT_DIR_ENVIRONMENT_VARIABLE, type=click.Path(file_okay=False),
                        help=f"{what} {ARTIFACT_DIR_DEFAULT}.")


def no_progress_option(command: Command) -> Command:
    """``--no-progress``: hide the progress bar."""
    return click.option("--no-progress", is_flag=True, help="Hide the progress bar.")(command)


# ------------------------------------------------------------------ storages and studies
def open_study_storage(storage: str | None, *, must_exist: bool,
                       read_only_ok: bool = False) -> tuple[str, optuna.storages.RDBStorage]:
    """(URL, storage) of ``--storage`` (or its defaults)."""
    url = storage_url(storage)
    return url, open_storage(url, must_exist=must_exist, read_only_ok=read_only_ok)


def load_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """The study, for commands that only read it (a SQLite file they cannot write is opened read-only)."""
    url, opened = open_study_storage(storage, must_exist=True, read_only_ok=True)
    return load_study_from(opened, url, study_name)


def load_study_from(opened: optuna.storages.RDBStorage, url: str, study_name: str | None) -> optuna.Study:
    """The study named ``study_name`` in ``opened``, or its only study when no name is given."""
    names = optuna.get_all_study_names(opened)
    if not names:
        raise HpoError(f"storage {describe(url)} holds no study yet; start one with `hpo run STUDY_FILE`")
    if study_name is None:
        if len(names) != 1:
            raise HpoError(f"storage {describe(url)} holds {len(names)} studies ({', '.join(names)}); "
                           "choose one with --study-name")
        study_name = names[0]
    if study_name not in names:
        raise HpoError(f"no study {study_name!r} in {describe(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened)


def artifact_store(url: str, explicit: str | None, *,
                   create: bool = True) -> tuple[Path, optuna.artifacts.FileSystemArtifactStore]:
    """The study's artifact folder and store (see hpo.store.artifacts)."""
    directory = artifact_directory(url, explicit)
    return directory, open_artifact_store(directory, create=create)


# ------------------------------------------------------------------ hints to paste into a shell
def storage_arguments(option: str | None, url: str) -> list[str]:
    """How to name the storage again in a printed command, without a password in it."""
    if option is None:
        return []  # the default file or $HPO_STORAGE: the same command finds it again
    if make_url(url).password:  # the URL was parsed once already by open_storage
        return ["--storage", "<your storage URL>"]
    return ["--storage", describe(url)]


def program() -> list[str]:
    """This program as it was invoked: ``hpo`` when that is on PATH, else the path typed (``.venv/bin/hpo``)."""
    invoked = sys.argv[0]
    if Path(invoked).suffix == ".py" or invoked in ("", "-c", "-m"):  # python -m hpo.cli
        return [sys.executable, "-m", "hpo.cli"]
    on_path = shutil.which(Path(invoked).name)
    if on_path is not None and Path(on_path).resolve() == Path(invoked).resolve():
        return [Path(invoked).name]
    return [invoked]


def command_line(*arguments: str) -> str:
    """A command line to paste into a shell: this program, then ``arguments``, each quoted as needed."""
    return shlex.join([*program(), *arguments])


def exit_interrupted(interrupted: interrupts.Interrupted, resume: str | None) -> None:
    """Exit with 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP).

    The worker has marked its trial FAIL and queued it again (or logged why not).
    """
    if resume is not None:
        try:
            click.echo(f"\nInterrupted by {interrupted}: finished trials are stored; resume with: {resume}", err=True)
        except OSError:  # SIGHUP: the terminal or the parent that read our output is gone
            pass
    sys.exit(interrupted.exit_code)


# ------------------------------------------------------------------ threads
def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_blas_threads() -> int:
    """Threads the BLAS library of NumPy uses when not limited (threadpoolctl)."""
    return max((pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"),
               default=1)


def warn_oversubscription(jobs: int, threads: int) -> None:
    """One line when ``jobs`` x BLAS ``threads`` exceeds the cores: such runs are many times slower."""
    cores = available_cores()
    if jobs * threads > cores:
        advice = f"--jobs {cores} or fewer" if threads == 1 else (
            f"--jobs {max(1, cores // threads)} or fewer, or --blas-threads 1 with --jobs {cores} or fewer")
        click.echo(f"warning: {jobs} job(s) x {threads} BLAS thread(s) = {jobs * threads} threads on {cores} "
                   f"core(s): they slow each other down; use {advice}", err=True)


_BLAS_LIMITS: list[threadpoolctl.threadpool_limits] = []


def limit_blas_threads(threads: int | None) -> None:
    """BLAS threads of this process (threadpoolctl); None leaves the library's default."""
    if threads is not None:
        _BLAS_LIMITS.append(threadpoolctl.threadpool_limits(limits=threads, user_api="blas"))
