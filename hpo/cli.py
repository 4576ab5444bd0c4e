"""The ``hpo`` command line: run and join studies, list and export trials, evaluate, plot, narrow, dashboard.

Flags follow Optuna's own CLI (``--storage``, ``--study-name``, ``-f``).  User
errors (bad study file, unreachable storage, missing data) print one line,
``Error: ...``, and exit with status 1, without a traceback; Ctrl-C exits
with 130 and SIGTERM with 143, leaving the interrupted trial marked FAIL so
the study can be resumed with the same command.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import shlex
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import click
import numpy as np
import optuna
import threadpoolctl
from sqlalchemy.engine import make_url
from optuna.trial import TrialState

from hpo import interrupts
from hpo.artifacts import (
    ARTIFACT_DIR_ENVIRONMENT_VARIABLE,
    ArtifactError,
    artifact_directory,
    download_weights,
    open_artifact_store,
)
from hpo.book import SECTIONS
from hpo.data import TuningData, prepare_data
from hpo.evaluate import (
    Evaluation,
    EvaluationError,
    evaluate_trial,
    load_model,
    predict,
    prepare_model_directory,
    save_model,
    select_trial,
)
from hpo.local_workers import WorkersFailed, run_local_workers
from hpo.names import check_study_name, file_name, path_inside
from hpo.narrow import DEFAULT_MARGIN, NarrowError, log_ranges, narrow_study_file
from hpo.progress import Progress as _Progress
from hpo.resources import TooLargeError, check_study_fits
from hpo.report import FORMATS, trial_row, write_record, write_rows
from hpo.spec import SpecError, StudySpec, Workers, load_spec
from hpo.storage import HeartbeatSettings, StorageError, describe, is_read_only, open_storage, storage_url
from hpo.study import WORKERS_ATTRIBUTE, StudyMismatchError, count_finished, open_study
from hpo.summary import state_counts, study_rows, study_savings
from hpo.storage import ATTRIBUTE_WORKER
from hpo.worker import fail_stale_trials, run_worker
from models.datasets import DatasetError

STORAGE_HELP = "SQLAlchemy URL of the study database [default: $HPO_STORAGE, else sqlite:///./hpo.db]"


def _configure_logging() -> None:
    """Trial results of this package on stderr, in Optuna's format."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname).1s %(asctime)s] %(message)s"))
    logger = logging.getLogger("hpo")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _load_spec(path: str) -> StudySpec:
    try:
        return load_spec(path)
    except SpecError as error:
        raise _fail(str(error)) from None


def _open(storage: str | None, *, must_exist: bool,
          read_only_ok: bool = False) -> tuple[str, optuna.storages.RDBStorage]:
    url = storage_url(storage)
    try:
        return url, open_storage(url, must_exist=must_exist, read_only_ok=read_only_ok)
    except StorageError as error:
        raise _fail(str(error)) from None


def _load_study(storage: str | None, study_name: str | None) -> optuna.Study:
    """The study, for commands that only read it (a SQLite file they cannot write is opened read-only)."""
    url, opened = _open(storage, must_exist=True, read_only_ok=True)
    return _load_study_from(opened, url, study_name)


def _load_study_from(opened: optuna.storages.RDBStorage, url: str, study_name: str | None) -> optuna.Study:
    names = optuna.get_all_study_names(opened)
    if not names:
        raise _fail(f"storage {describe(url)} holds no study yet; start one with `hpo run STUDY_FILE`")
    if study_name is None:
        if len(names) != 1:
            raise _fail(f"storage {describe(url)} holds {len(names)} studies ({', '.join(names)}); "
                        "choose one with --study-name")
        study_name = names[0]
    if study_name not in names:
        raise _fail(f"no study {study_name!r} in {describe(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpo-from-scratch")
def main() -> None:
    """Tune a from-scratch NumPy network with Optuna; every trial is kept in a SQL study database."""
    _configure_logging()
    # Trial results are logged by hpo.worker; Optuna's own notes ("Using an existing study") are noise.
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _prepare(
    study_file: str, storage: str | None, study_name: str | None, *, create: bool, load_data: bool = True,
) -> tuple[StudySpec, TuningData | None, str, optuna.storages.RDBStorage, optuna.Study]:
    """Validate the file, load the data (once per process), open the storage and the study.

    Bad input fails here, as one line, before the database is touched.
    """
    spec = _load_spec(study_file)
    data = None
    if load_data:
        try:
            data = prepare_data(spec.dataset)
        except DatasetError as error:
            raise _fail(f"{study_file}: dataset: {error}") from None
        except ValueError as error:  # the split's fields (train_images, validation_fraction)
            raise _fail(f"{study_file}: {error}") from None
        try:
            check_study_fits(spec, data)  # the smallest network the file allows must fit in memory
        except TooLargeError as error:
            raise _fail(f"{study_file}: parameters: {error}") from None
    url = storage_url(storage)
    name = study_name or spec.name
    try:
        # A worker joins an existing study: it creates no database and no tables.
        opened = open_storage(url, must_exist=not create, heartbeat=spec.heartbeat())
        if not create and name not in optuna.get_all_study_names(opened):
            raise StudyMismatchError(f"no study {name!r} in {describe(url)}; create it first with `hpo create`")
        study = open_study(spec, opened, name, create=create)
    except (StorageError, StudyMismatchError) as error:
        raise _fail(str(error)) from None
    return spec, data, url, opened, study


def _storage_arguments(storage: str | None, url: str) -> list[str]:
    """How to name the storage again in a printed command, without a password in it."""
    if storage is None:
        return []  # the default file or $HPO_STORAGE: the same command finds it again
    if make_url(url).password:  # the URL was parsed once already by open_storage
        return ["--storage", "<your storage URL>"]
    return ["--storage", describe(url)]


def _program() -> list[str]:
    """This program as it was invoked: ``hpo`` when that is on PATH, else the path typed (``.venv/bin/hpo``)."""
    invoked = sys.argv[0]
    if Path(invoked).suffix == ".py" or invoked in ("", "-c", "-m"):  # python -m hpo.cli
        return [sys.executable, "-m", "hpo.cli"]
    on_path = shutil.which(Path(invoked).name)
    if on_path is not None and Path(on_path).resolve() == Path(invoked).resolve():
        return [Path(invoked).name]
    return [invoked]


def _command(*arguments: str) -> str:
    """A command line to paste into a shell: this program, then ``arguments``, each quoted as needed."""
    return shlex.join([*_program(), *arguments])


def _available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _default_blas_threads() -> int:
    """Threads the BLAS library of NumPy uses when not limited (threadpoolctl)."""
    return max((pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"),
               default=1)


def _warn_oversubscription(jobs: int, threads: int) -> None:
    """One line when ``jobs`` x BLAS ``threads`` exceeds the cores: such runs are many times slower."""
    cores = _available_cores()
    if jobs * threads > cores:
        click.echo(f"warning: {jobs} job(s) x {threads} BLAS thread(s) = {jobs * threads} threads on {cores} "
                   f"core(s): they slow each other down; use --jobs {max(1, cores // threads)} or fewer "
                   "(with --blas-threads 1)", err=True)


def _limit_blas_threads(threads: int | None) -> None:
    """BLAS threads of this process (threadpoolctl); None leaves the library's default."""
    if threads is not None:
        _BLAS_LIMITS.append(threadpoolctl.threadpool_limits(limits=threads, user_api="blas"))


_BLAS_LIMITS: list[threadpoolctl.threadpool_limits] = []


def _exit_interrupted(interrupted: interrupts.Interrupted, resume: str | None) -> None:
    """Exit with 130 (SIGINT), 143 (SIGTERM) or 129 (SIGHUP); the worker has marked its trial FAIL (or logged
    why not)."""
    if resume is not None:
        try:
            click.echo(f"\nInterrupted by {interrupted}: finished trials are stored; resume with: {resume}", err=True)
        except OSError:  # SIGHUP: the terminal or the parent that read our output is gone
            pass
    sys.exit(interrupted.exit_code)


STUDY_NAME_HELP = "Study name [default: the file's name field]."


def _new_study_name(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """Option callback: a name hpo will create or run a study under must obey hpo.names' rule."""
    if value is None:
        return None
    try:
        return check_study_name(value)
    except ValueError as error:
        raise click.BadParameter(str(error), context, parameter) from None


BLAS_HELP = "BLAS threads per worker process (threadpoolctl)."
ARTIFACT_DIR_HELP = ("Folder of the trials' weight artifacts [default: $HPO_ARTIFACT_DIR, else NAME-artifacts "
                     "beside a SQLite file NAME.db, else ./hpo-artifacts].")


def _artifact_store(url: str, explicit: str | None, *,
                    create: bool = True) -> tuple[Path, optuna.artifacts.FileSystemArtifactStore]:
    """The study's artifact folder and store (see hpo.artifacts); a folder that cannot be used is one line."""
    directory = artifact_directory(url, explicit)
    try:
        return directory, open_artifact_store(directory, create=create)
    except ArtifactError as error:
        raise _fail(str(error)) from None


@main.command()
@click.argument("study_file")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help=STUDY_NAME_HELP, callback=_new_study_name)
@click.option("--jobs", "-j", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Local worker processes sharing the study.")
@click.option("--blas-threads", type=click.IntRange(min=1), envvar="HPO_BLAS_THREADS",
              help=BLAS_HELP + " [default: the library's own with --jobs 1, else 1]")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--artifact-dir", envvar=ARTIFACT_DIR_ENVIRONMENT_VARIABLE, type=click.Path(file_okay=False),
              help=ARTIFACT_DIR_HELP)
def run(study_file: str, storage: str | None, study_name: str | None, jobs: int,
        blas_threads: int | None, no_progress: bool, artifact_dir: str | None) -> None:
    """Create or resume the study in STUDY_FILE and run it until its trial budget."""
    interrupts.install()  # from here on a signal stops the run at a safe point (hpo.interrupts)
    # The data are loaded here with --jobs K too, so that a missing data set or a network too
    # large for this machine is one error before the study is created, not one per worker.
    spec, data, url, opened, study = _prepare(study_file, storage, study_name, create=True)
    name = study.study_name
    directory, artifact_store = _artifact_store(url, artifact_dir)
    click.echo(f"storage: {describe(url)}")
    click.echo(f"artifacts: {directory} (weights of completed trials)")
    images = f"; {len(data.x_train)} training and {len(data.x_validation)} validation images"
    click.echo(f"study: {name} ({count_finished(study)} of {spec.budget.trials} trials finished{images})")
    if jobs > 1:  # each worker loads its own copy; this process only watches
        data = None
        prepare_data.cache_clear()
    where = [*_storage_arguments(storage, url), "--study-name", name]
    _warn_oversubscription(jobs, blas_threads or (1 if jobs > 1 else _default_blas_threads()))
    started = time.perf_counter()
    try:
        if jobs == 1:
            _limit_blas_threads(blas_threads)
            with _Progress(study, spec.budget.trials, enabled=not no_progress) as progress:
                result = run_worker(study, opened, spec, data, timeout_seconds=spec.budget.timeout_seconds,
                                    on_trial_end=progress.update, artifact_store=artifact_store)
            click.echo(f"stopped: {result.reason}")
        else:
            run_local_workers(study_file, url, name, jobs, blas_threads or 1, study, spec.budget.trials,
                              progress=not no_progress, artifact_dir=directory)
    except interrupts.Interrupted as interrupted:
        _exit_interrupted(interrupted, _command("run", study_file, *where))
    except WorkersFailed as error:
        raise _fail(str(error)) from None
    _print_summary(study, time.perf_counter() - started)
    remaining = spec.budget.trials - count_finished(study)
    if remaining > 0:
        click.echo(f"{remaining} trials of the budget remain; run the same command again to continue")
    click.echo(f"list trials: {_command('trials', *where)}")


@main.command()
@click.argument("study_file")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help=STUDY_NAME_HELP, callback=_new_study_name)
def create(study_file: str, storage: str | None, study_name: str | None) -> None:
    """Create the study in STUDY_FILE (once; safe to repeat and to race with workers)."""
    spec, _, url, _, study = _prepare(study_file, storage, study_name, create=True, load_data=False)
    click.echo(f"study {study.study_name} in {describe(url)}: {count_finished(study)} of "
               f"{spec.budget.trials} trials finished")


@main.command()
@click.argument("study_file")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help=STUDY_NAME_HELP, callback=_new_study_name)
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="HPO_BLAS_THREADS", help=BLAS_HELP)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--no-resume-hint", is_flag=True, hidden=True, help="Used by `hpo run --jobs`, which prints its own.")
@click.option("--artifact-dir", envvar=ARTIFACT_DIR_ENVIRONMENT_VARIABLE, type=click.Path(file_okay=False),
              help=ARTIFACT_DIR_HELP)
def worker(study_file: str, storage: str | None, study_name: str | None, blas_threads: int,
           no_progress: bool, no_resume_hint: bool, artifact_dir: str | None) -> None:
    """Join the existing study of STUDY_FILE and run trials until the shared budget is met."""
    interrupts.install()  # from here on a signal stops the worker at a safe point (hpo.interrupts)
    spec, data, url, opened, study = _prepare(study_file, storage, study_name, create=False)
    directory, artifact_store = _artifact_store(url, artifact_dir)
    if not no_resume_hint:  # `hpo run --jobs` prints the folder once for all its workers
        click.echo(f"artifacts: {directory} (weights of completed trials)")
    _limit_blas_threads(blas_threads)
    try:
        with _Progress(study, spec.budget.trials, enabled=not no_progress) as progress:
            result = run_worker(study, opened, spec, data, timeout_seconds=spec.budget.timeout_seconds,
                                on_trial_end=progress.update, artifact_store=artifact_store)
    except interrupts.Interrupted as interrupted:
        hint = _command("worker", study_file, *_storage_arguments(storage, url), "--study-name", study.study_name)
        _exit_interrupted(interrupted, None if no_resume_hint else hint)
    click.echo(f"worker done: {result.trials_started} trials started; {result.reason}")


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to check [default: the only study in the storage].")
@click.option("--fail", "fail_stale", is_flag=True,
              help="Fail the running trials whose heartbeat is older than the grace period; they are retried "
                   "(up to the study file's workers.max_retry times).")
@click.option("--trial", "trial_numbers", type=click.IntRange(min=0), multiple=True,
              help="Fail this running trial by hand, heartbeat or not (repeatable); it is retried like a stale one.")
@click.option("--grace-period", type=click.IntRange(min=2, max=86_400),
              help="Seconds without a heartbeat after which a running trial is stale "
                   "[default: the study file's workers.grace_period_seconds].")
def stale(storage: str | None, study_name: str | None, fail_stale: bool, trial_numbers: tuple[int, ...],
          grace_period: int | None) -> None:
    """List RUNNING trials with their age; fail stale ones (--fail) or named ones (--trial N), and queue them again."""
    url = storage_url(storage)
    study = _load_study(storage, study_name)
    workers = Workers.model_validate(study.user_attrs.get(WORKERS_ATTRIBUTE, {}))
    grace_period = grace_period or workers.grace_period_seconds
    heartbeat = HeartbeatSettings(min(workers.heartbeat_interval_seconds, grace_period // 2), grace_period,
                                  workers.max_retry)
    try:
        opened = open_storage(url, must_exist=True, heartbeat=heartbeat,
                              read_only_ok=not (fail_stale or trial_numbers))
    except StorageError as error:
        raise _fail(str(error)) from None
    study = optuna.load_study(study_name=study.study_name, storage=opened)
    if fail_stale:
        before = {trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        fail_stale_trials(study)
        after = {trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        failed = sorted(before - after)
        click.echo(f"failed {len(failed)} trial(s) with no heartbeat for {grace_period} s"
                   + (f": {', '.join(map(str, failed))} (queued again)" if failed else ""))
    running = {trial.number: trial for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    made = len(study.get_trials(deepcopy=False))
    for number in trial_numbers:
        if not 0 <= number < made:
            raise _fail(f"no trial {number} in study {study.study_name!r} (trials 0 to {made - 1}); nothing failed")
        if number not in running:
            raise _fail(f"trial {number} of study {study.study_name!r} is not RUNNING; nothing failed")
        trial_id = running[number]._trial_id
        try:
            opened.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # its worker finished it since the look above
            raise _fail(f"trial {number} of study {study.study_name!r} finished meanwhile; nothing failed") from None
        # Queued again like a stale trial (`--fail`): the retry runs its parameters once more.
        opened.get_heartbeat_stale_trial_callback()(study, opened.get_trial(trial_id), reason="marked FAIL by hand "
                                           "(`hpo stale --trial`)")
        click.echo(f"trial {number}: marked FAIL by hand")
    now = datetime.datetime.now()
    rows = [
        {"number": trial.number, "state": "RUNNING", "started": trial.datetime_start.isoformat(timespec="seconds"),
         "age_seconds": round((now - trial.datetime_start).total_seconds()),
         "worker": trial.user_attrs.get(ATTRIBUTE_WORKER, "")}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ]
    if rows:
        write_rows(rows, "table", sys.stdout, title=f"running trials of {study.study_name}", complete_with=None)
    else:
        click.echo(f"study {study.study_name!r} has no running trial")


def _print_summary(study: optuna.Study, elapsed_seconds: float) -> None:
    counts = state_counts(study.get_trials(deepcopy=False))
    not_run = f", {counts['not_run']} not run (budget already met)" if counts["not_run"] else ""
    click.echo(
        f"trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed{not_run}; this run took {elapsed_seconds:.1f} s"
    )
    savings = study_savings(study)
    if savings is not None:
        click.echo(f"epochs: {savings.trained} trained of {savings.planned} a run without pruning would train "
                   f"(pruning saved {100 * savings.saved_fraction:.1f} %)")
    if counts["complete"] == 0:
        click.echo("no trial completed, so there is no best trial")
        return
    best = study.best_trial
    click.echo(f"best trial: {best.number}, value {best.value:.4f}")
    for name, value in best.params.items():
        click.echo(f"  {name} = {value!r}")


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to list [default: the only study in the storage].")
@click.option("-f", "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
def trials(storage: str | None, study_name: str | None, output_format: str) -> None:
    """List every trial of a study (of every study, with a `study` column, when several and no --study-name)."""
    url, opened = _open(storage, must_exist=True, read_only_ok=True)
    names = optuna.get_all_study_names(opened)
    if study_name is None and len(names) > 1:
        rows = [{"study": name, **trial_row(trial)} for name in names
                for trial in optuna.load_study(study_name=name, storage=opened).get_trials(deepcopy=False)]
        if not rows and output_format == "table":
            click.echo(f"the {len(names)} studies in {describe(url)} have no trials yet")
            return
        write_rows(rows, output_format, sys.stdout, title=f"trials of {len(names)} studies")
        return
    study = _load_study_from(opened, url, study_name)
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    if not rows and output_format == "table":
        click.echo(f"study {study.study_name!r} has no trials yet")
        return
    write_rows(rows, output_format, sys.stdout, title=study.study_name)


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to read [default: the only study in the storage].")
@click.option("-f", "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
def best(storage: str | None, study_name: str | None, output_format: str) -> None:
    """Print the best completed trial of a study."""
    study = _load_study(storage, study_name)
    if len(study.directions) > 1:
        raise _fail(f"study {study.study_name!r} has {len(study.directions)} objectives; "
                    "hpo best reads single-objective studies (see `hpo trials`)")
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise _fail(f"study {study.study_name!r} has no completed trial yet")
    write_record(trial_row(study.best_trial), output_format, sys.stdout, title=f"best trial of {study.study_name}")


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to read [default: the only study in the storage].")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Trial to evaluate [default: the best].")
@click.option("--out", "out_directory",
              help="Folder for weights.npz and model_card.json [default: ./hpo-models/STUDY-trial-N].")
@click.option("--stored-weights", is_flag=True,
              help="Test the weights the trial stored (its best epoch) instead of retraining.")
@click.option("--artifact-dir", envvar=ARTIFACT_DIR_ENVIRONMENT_VARIABLE,
              help="Folder of the stored weights [default: beside a SQLite database, else ./hpo-artifacts].")
@click.option("--force", is_flag=True, help="Replace a model already saved in the --out folder.")
@click.option("-f", "--format", "output_format", type=click.Choice(("table", "json")), default="table",
              show_default=True, help="table: report for people; json: the model card.")
def evaluate(storage: str | None, study_name: str | None, trial_number: int | None, out_directory: str | None,
             stored_weights: bool, artifact_dir: str | None, force: bool, output_format: str) -> None:
    """Retrain the best (or --trial N) completed trial on training + validation data and test it.

    The network is rebuilt with the trial's parameters and seed and trained for the
    epochs at which the trial did best (or, with --stored-weights, the trial's own
    weights are loaded); it prints the test accuracy, a per-class table and the
    confusion matrix, and saves the weights with a JSON model card.
    """
    study = _load_study(storage, study_name)
    try:
        trial = select_trial(study, trial_number)
        directory = prepare_model_directory(out_directory or _default_model_directory(study, trial), overwrite=force)
        weights = None
        if stored_weights:
            weights = download_weights(trial, artifact_directory(storage_url(storage), artifact_dir))
        if output_format == "table":
            how = "its stored weights" if stored_weights else "retraining on training + validation data"
            click.echo(f"evaluating trial {trial.number} of study {study.study_name} "
                       f"(validation accuracy {trial.value:.4f}): {how}")
        network, evaluation = evaluate_trial(study, trial, stored_weights=weights)
    except (EvaluationError, ArtifactError, DatasetError) as error:
        raise _fail(str(error)) from None
    try:
        weights_path, card_path = save_model(directory, network, evaluation)
        reloaded, _ = load_model(directory)
    except OSError as error:
        raise _fail(f"cannot save the model in {directory}: {error.strerror or error}") from None
    except EvaluationError as error:
        raise _fail(str(error)) from None
    # The saved model must predict exactly what the tested one did.
    if not np.array_equal(predict(reloaded, evaluation.inputs), evaluation.predictions):
        raise _fail(f"the model saved in {directory} does not reproduce the tested predictions")
    if output_format == "json":
        click.echo(card_path.read_text(encoding="utf-8"), nl=False)
        return
    _print_evaluation(evaluation)
    click.echo(f"saved: {weights_path} and {card_path}; reloaded, they give the same "
               f"{len(evaluation.predictions)} test predictions")


MODELS_DIRECTORY = Path("hpo-models")
"""Parent of the default --out folder of `hpo evaluate`, in the current folder."""


def _default_model_directory(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> Path:
    """``hpo-models/STUDY-trial-N``, inside hpo-models/ whatever the stored study's name holds."""
    try:
        return path_inside(MODELS_DIRECTORY, f"{file_name(study.study_name)}-trial-{trial.number}")
    except ValueError as error:  # a symbolic link in hpo-models/ that leads elsewhere
        raise _fail(f"{error}; give the model's folder with --out") from None


def _print_evaluation(evaluation: Evaluation) -> None:
    card = evaluation.card
    training = card["training"]
    images = f" on {training['train_images']} images" if training["train_images"] else ""
    click.echo(f"{training['mode']}: {training['epochs']} epochs{images}")
    click.echo(f"test accuracy: {evaluation.test_accuracy:.4f} on {card['test_images']} test images")
    write_rows(evaluation.per_class, "table", sys.stdout, title="per class (test set)", complete_with="-f json")
    names = [str(k) for k in range(len(evaluation.class_names))]
    rows = [{"true \\ predicted": name if name == str(k) else f"{k} {name}", **dict(zip(names, map(int, row)))}
            for k, (name, row) in enumerate(zip(evaluation.class_names, evaluation.confusion))]
    write_rows(rows, "table", sys.stdout, title="confusion matrix (rows: true class, columns: predicted)",
               complete_with="-f json")


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--artifact-dir", envvar=ARTIFACT_DIR_ENVIRONMENT_VARIABLE, type=click.Path(file_okay=False),
              help=ARTIFACT_DIR_HELP)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the dashboard to the network (it has no login).")
@click.option("--port", type=click.IntRange(min=1, max=65_535), default=8080, show_default=True)
def dashboard(storage: str | None, artifact_dir: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study database, with the trials' weight artifacts; Ctrl-C stops it."""
    try:
        import optuna_dashboard
    except ImportError:
        raise _fail("optuna-dashboard is not installed; pip install 'hpo-from-scratch[dashboard]'") from None
    url, opened = _open(storage, must_exist=True, read_only_ok=True)
    directory, artifact_store = _artifact_store(url, artifact_dir, create=False)
    _check_address(host, port)
    click.echo(f"storage: {describe(url)}" + (" (read-only: notes and other changes made in the dashboard "
                                              "cannot be saved)" if is_read_only(opened) else ""))
    click.echo(f"artifacts: {directory}" + ("" if directory.is_dir() else " (no such folder yet: no weights to show)"))
    click.echo(f"dashboard: http://{host}:{port}/dashboard (Ctrl-C stops it)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops the server like Ctrl-C (docker stop)
    try:
        # Returns when interrupted: the server catches KeyboardInterrupt itself.
        optuna_dashboard.run_server(opened, host=host, port=port, artifact_store=artifact_store)
    except KeyboardInterrupt:
        pass
    except OSError as error:  # address in use, or not an address of this machine
        raise _fail(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    click.echo("dashboard stopped")


def _check_address(host: str, port: int) -> None:
    """Fail in one line, before the server prints its banner, if ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as the server (bottle's wsgiref) chooses
    try:
        # Like the server, with SO_REUSEADDR: a port left in TIME_WAIT is free.
        socket.create_server((host, port), family=family).close()
    except OSError as error:  # address in use, or not an address of this machine
        raise _fail(f"cannot serve on {host}:{port}: {error.strerror or error}") from None


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("-f", "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
def studies(storage: str | None, output_format: str) -> None:
    """List every study in the storage: direction, trials per state, best value and trial, start time."""
    url, opened = _open(storage, must_exist=True, read_only_ok=True)
    rows = study_rows(opened)
    if not rows and output_format == "table":
        click.echo(f"storage {describe(url)} holds no study yet; start one with `hpo run STUDY_FILE`")
        return
    write_rows(rows, output_format, sys.stdout, title=f"studies in {describe(url)}")


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to draw [default: the only study in the storage].")
@click.option("--out", "out_directory", required=True, help="Folder for the PNG files (created if missing).")
def plot(storage: str | None, study_name: str | None, out_directory: str) -> None:
    """Write PNGs of a study: history, learning curves, importances, learning rate x weight decay, top 20."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    from hpo.plots import write_plots  # matplotlib: only this command pays for its import

    study = _load_study(storage, study_name)
    if Path(out_directory).exists() and not Path(out_directory).is_dir():
        raise _fail(f"--out {out_directory} is a file; give a folder for the PNG files")
    try:
        result = write_plots(study, out_directory)
    except OSError as error:
        raise _fail(f"cannot write the plots to {out_directory}: {error.strerror or error}") from None
    for path in result.written:
        click.echo(f"wrote {path}")
    for filename, reason in result.skipped.items():
        click.echo(f"skipped {filename}: {reason}")


class FiniteFloatRange(click.FloatRange):
    """:class:`click.FloatRange` that also refuses ``nan`` and ``inf`` as usage errors (click lets ``nan``
    through every range, and ``inf`` through one without a maximum)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """The number, or click's usage error (exit status 2) if it is out of range or not finite."""
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


@main.command()
@click.argument("study_file")
@click.option("--top", type=click.IntRange(min=1), required=True,
              help="How many of the best completed trials set the new ranges.")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help=STUDY_NAME_HELP)
@click.option("--margin", type=FiniteFloatRange(min=1), default=DEFAULT_MARGIN, show_default=True,
              help="Widen the top trials' span by this factor at each end, in log space (low / F, high * F).")
@click.option("--out", help="New study file [default: next to STUDY_FILE, "
              "named like digits-narrow-1.toml].")
@click.option("--name", "new_name", callback=_new_study_name,
              help="The new study's name [default: NAME-narrow-1, or N+1 after -narrow-N].")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def narrow(study_file: str, top: int, storage: str | None, study_name: str | None, margin: float,
           out: str | None, new_name: str | None, force: bool) -> None:
    """Shrink STUDY_FILE's log-scale ranges to the span of the top trials: coarse-to-fine search (book 6.5.2)."""
    spec = _load_spec(study_file)
    if not log_ranges(spec):
        raise _fail(f"{study_file}: no searched range has log = true; nothing to narrow")
    study = _load_study(storage, study_name or spec.name)
    try:
        result = narrow_study_file(study_file, study, top, margin=margin, name=new_name, out=out, force=force)
    except (NarrowError, SpecError) as error:
        raise _fail(str(error)) from None
    except OSError as error:
        raise _fail(f"cannot write {out or 'the new study file'}: {error.strerror or error}") from None
    click.echo(f"top {result.top} of {result.completed} completed trials of study {study.study_name}:")
    for item in result.ranges:
        change = "" if item.narrower else " (unchanged: the top trials span the whole range)"
        click.echo(f"  {item.parameter}: {item.old[0]:g} .. {item.old[1]:g} -> {item.new[0]:g} .. {item.new[1]:g}"
                   f"{change}")
    click.echo(f"wrote {result.path} (study {result.name})")
    click.echo(f"next: {_command('run', str(result.path), *_storage_arguments(storage, storage_url(storage)))}")


@main.command()
@click.option("--out", "out_directory", required=True, type=click.Path(file_okay=False),
              help="Folder for the figures and findings.json (created if missing).")
@click.option("--full", is_flag=True, help="The book's sizes (the study files as they are) instead of quick ones.")
@click.option("--storage", help="SQLAlchemy URL of the study database [default: sqlite:///OUT/book.db].")
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="HPO_BLAS_THREADS", help=BLAS_HELP)
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--section", "sections", multiple=True, type=click.Choice(SECTIONS),
              help="Run only this section's item (repeatable) [default: all]; findings.json then holds only those.")
def book(out_directory: str, full: bool, storage: str | None, blas_threads: int, no_progress: bool,
         sections: tuple[str, ...]) -> None:
    """Reproduce the book's chapter 6: run its studies (studies/book/) and write its figures to --out."""
    try:
        from hpo.book.reproduce import reproduce  # matplotlib: only this command pays for its import
    except ImportError as error:
        raise _fail(f"hpo book needs {error.name}: pip install matplotlib") from None
    from hpo.book.experiments import STUDIES_DIRECTORY

    interrupts.install()  # from here on a signal stops the studies at a safe point (hpo.interrupts)
    out = Path(out_directory).resolve()
    url = storage or f"sqlite:///{out / 'book.db'}"
    logging.getLogger("hpo").setLevel(logging.WARNING)  # one line per study, not per trial
    _limit_blas_threads(blas_threads)  # the book's small matrices run fastest on one thread
    sizes = "the book's sizes" if full else "quick sizes"
    click.echo(f"storage: {describe(url)} ({sizes})")
    started = time.perf_counter()
    try:
        if storage is None:
            out.mkdir(parents=True, exist_ok=True)
        rows = reproduce(out, storage_url=url, full=full, studies=STUDIES_DIRECTORY, echo=click.echo,
                         progress=not no_progress, sections=sections or None)
    except (SpecError, StorageError, StudyMismatchError, DatasetError, ValueError) as error:
        raise _fail(str(error)) from None
    except OSError as error:
        raise _fail(f"cannot write to {out}: {error.strerror or error}") from None
    except interrupts.Interrupted as interrupted:
        _exit_interrupted(interrupted, _command("book", "--out", out_directory, *(["--full"] if full else []),
                                                *_storage_arguments(storage, url),
                                                *(argument for section in sections for argument in ("--section", section))))
    write_rows(rows, "table", sys.stdout, title="The book's chapter 6: findings", fit="wrap")
    click.echo(f"figures in {out}; took {time.perf_counter() - started:.0f} s")
    click.echo(f"dashboard: {_command('dashboard', *(_storage_arguments(storage, url) or ['--storage', url]))}")


def entry() -> None:
    """The ``hpo`` console script: :func:`main` with click's usage errors as one line.

    A bad option or argument (``-f xml``, ``--trial abc``, a missing ``--out``) prints
    ``Error: <click's message> (see hpo COMMAND --help)`` and exits with status 2,
    click's status for usage errors, instead of click's four-line usage block.
    """
    try:
        code = main.main(standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx is not None else "hpo"
        click.echo(f"Error: {error.format_message()} (see {command} --help)", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.exceptions.Abort:  # Ctrl-C outside a trial loop (while loading data, say)
        click.echo("Aborted!", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    entry()
