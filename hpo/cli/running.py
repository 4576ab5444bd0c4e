"""Commands that run studies: ``run``, ``create``, ``worker``, ``stale``."""

from __future__ import annotations

import datetime
import sys
import time

import click
import optuna
from optuna.trial import TrialState

from hpo import interrupts
from hpo.cli.app import main
from hpo.cli.common import (
    BLAS_HELP,
    STUDY_NAME_HELP,
    artifact_dir_option,
    artifact_store,
    command_line,
    default_blas_threads,
    exit_interrupted,
    limit_blas_threads,
    load_study,
    no_progress_option,
    storage_arguments,
    storage_option,
    study_name_option,
    warn_oversubscription,
)
from hpo.config.spec import HeartbeatSettings, Workers, load_spec
from hpo.errors import HpoError
from hpo.results.report import write_rows
from hpo.results.summary import epochs_trained, state_counts, study_savings, taken_trials
from hpo.store import record
from hpo.store.requeue import queued_again
from hpo.store.storage import describe, open_storage, storage_url
from hpo.tuning.data import prepare_data
from hpo.tuning.local_workers import run_local_workers
from hpo.tuning.study import count_finished, prepare_study
from hpo.tuning.worker import WORKER_ID, fail_stale_trials, fail_trials, run_study


@main.command()
@click.argument("study_file")
@storage_option
@study_name_option(STUDY_NAME_HELP, new=True)
@click.option("--jobs", "-j", type=click.IntRange(min=1, max=256), default=1, show_default=True,
              help="Local worker processes sharing the study.")
@click.option("--blas-threads", type=click.IntRange(min=1), envvar="HPO_BLAS_THREADS",
              help=BLAS_HELP + " [default: the library's own with --jobs 1, else 1]")
@no_progress_option
@artifact_dir_option()
def run(study_file: str, storage: str | None, study_name: str | None, jobs: int,
        blas_threads: int | None, no_progress: bool, artifact_dir: str | None) -> None:
    """Create or resume the study in STUDY_FILE and run it until its trial budget."""
    # The data are loaded here with --jobs K too, so that a missing data set or a network too
    # large for this machine is one error before the study is created, not one per worker.
    url = storage_url(storage)
    prepared = prepare_study(load_spec(study_file), url, study_name, create=True, source=study_file)
    spec, data, study = prepared.spec, prepared.data, prepared.study
    name = study.study_name
    directory, store = artifact_store(url, artifact_dir)
    click.echo(f"storage: {describe(url)}")
    click.echo(f"artifacts: {directory} (weights of completed trials)")
    images = f"; {len(data.x_train)} training and {len(data.x_validation)} validation images"
    click.echo(f"study: {name} ({count_finished(study)} of {spec.budget.trials} trials finished{images})")
    if jobs > 1:  # each worker loads its own copy; this process only watches
        prepared.data = data = None
        prepare_data.cache_clear()
    where = [*storage_arguments(storage, url), "--study-name", name]
    warn_oversubscription(jobs, blas_threads or (1 if jobs > 1 else default_blas_threads()))
    started = time.perf_counter()
    taken_before = taken_trials(study.get_trials(deepcopy=False))  # the trials of earlier runs
    interrupts.install()  # from here on a signal stops the run at a safe point (hpo.interrupts)
    try:
        if jobs == 1:
            limit_blas_threads(blas_threads)
            result = run_study(prepared, progress=not no_progress, artifact_store=store)
            workers = [WORKER_ID]
        else:
            workers = run_local_workers(study_file, url, name, jobs, blas_threads or 1, study, spec.budget.trials,
                                        progress=not no_progress, artifact_dir=directory)
        interrupts.check()  # a signal that came after the loop's last safe point
    except interrupts.Interrupted as interrupted:
        # The same options again: above all the artifact folder, where the interrupted trials' checkpoints are.
        again = [*where, *(["--jobs", str(jobs)] if jobs > 1 else []),
                 *(["--blas-threads", str(blas_threads)] if blas_threads is not None else []),
                 *(["--artifact-dir", str(directory)] if artifact_dir else []),
                 *(["--no-progress"] if no_progress else [])]
        exit_interrupted(interrupted, command_line("run", study_file, *again))
    interrupts.exit_at_once()  # the summary owns nothing: a signal now ends the process at once
    if jobs == 1:
        click.echo(f"stopped: {result.reason}")
    _print_summary(study, time.perf_counter() - started,
                   epochs_trained(study.get_trials(deepcopy=False), workers, taken_before))
    remaining = spec.budget.trials - count_finished(study)
    if remaining > 0:
        click.echo(f"{remaining} trials of the budget remain; run the same command again to continue")
    click.echo(f"list trials: {command_line('trials', *where)}")


@main.command()
@click.argument("study_file")
@storage_option
@study_name_option(STUDY_NAME_HELP, new=True)
def create(study_file: str, storage: str | None, study_name: str | None) -> None:
    """Create the study in STUDY_FILE (once; safe to repeat and to race with workers)."""
    url = storage_url(storage)
    prepared = prepare_study(load_spec(study_file), url, study_name, create=True, load_data=False, source=study_file)
    click.echo(f"study {prepared.study.study_name} in {describe(url)}: {count_finished(prepared.study)} of "
               f"{prepared.spec.budget.trials} trials finished")


@main.command()
@click.argument("study_file")
@storage_option
@study_name_option(STUDY_NAME_HELP, new=True)
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="HPO_BLAS_THREADS", help=BLAS_HELP)
@no_progress_option
@artifact_dir_option()
def worker(study_file: str, storage: str | None, study_name: str | None, blas_threads: int,
           no_progress: bool, artifact_dir: str | None) -> None:
    """Join the existing study of STUDY_FILE and run trials until the shared budget is met."""
    url = storage_url(storage)
    prepared = prepare_study(load_spec(study_file), url, study_name, create=False, source=study_file)
    directory, store = artifact_store(url, artifact_dir)
    click.echo(f"artifacts: {directory} (weights of completed trials)")
    limit_blas_threads(blas_threads)
    interrupts.install()  # from here on a signal stops the worker at a safe point (hpo.interrupts)
    try:
        result = run_study(prepared, progress=not no_progress, artifact_store=store)
        interrupts.check()  # a signal that came after the loop's last safe point
    except interrupts.Interrupted as interrupted:
        again = [*storage_arguments(storage, url), "--study-name", prepared.study.study_name,
                 *(["--blas-threads", str(blas_threads)] if blas_threads != 1 else []),
                 *(["--artifact-dir", str(directory)] if artifact_dir else []),
                 *(["--no-progress"] if no_progress else [])]
        exit_interrupted(interrupted, command_line("worker", study_file, *again))
    interrupts.exit_at_once()
    click.echo(f"worker done: {result.trials_started} trials started; {result.epochs_trained} epochs trained; "
               f"{result.reason}")


@main.command()
@storage_option
@study_name_option("Study to check [default: the only study in the storage].")
@click.option("--fail", "fail_stale", is_flag=True,
              help="Fail the running trials whose heartbeat is older than the grace period; they are retried "
                   "(up to the study file's workers.max_retry times).")
@click.option("--trial", "trial_numbers", type=click.IntRange(min=0), multiple=True,
              help="Fail this running trial by hand, heartbeat or not (repeatable); it is retried like a stale one.")
@click.option("--grace-period", type=click.IntRange(min=2, max=86_400),
              help="Seconds without a heartbeat after which a running trial is stale; with --fail at least "
                   "twice the study's heartbeat interval [default: the study file's workers.grace_period_seconds].")
@artifact_dir_option("Folder of the running trials' checkpoints (the workers'): a trial failed here and not queued "
                     "again loses its checkpoint, as when a worker fails it.")
def stale(storage: str | None, study_name: str | None, fail_stale: bool, trial_numbers: tuple[int, ...],
          grace_period: int | None, artifact_dir: str | None) -> None:
    """List RUNNING trials with their age; fail stale ones (--fail) or named ones (--trial N), and queue them again."""
    url = storage_url(storage)
    study = load_study(storage, study_name)
    workers = Workers.model_validate(record.stored_worker_settings(study))
    grace_period = grace_period or workers.grace_period_seconds
    if fail_stale and grace_period < 2 * workers.heartbeat_interval_seconds:
        # Younger heartbeats than that belong to live workers: failing them would fail healthy trials.
        raise HpoError(f"--grace-period {grace_period} is shorter than twice the study's heartbeat interval "
                       f"({workers.heartbeat_interval_seconds} s); give at least "
                       f"{2 * workers.heartbeat_interval_seconds}")
    heartbeat = HeartbeatSettings(min(workers.heartbeat_interval_seconds, grace_period // 2), grace_period,
                                  workers.max_retry)
    opened = open_storage(url, must_exist=True, heartbeat=heartbeat, read_only_ok=not (fail_stale or trial_numbers))
    if fail_stale or trial_numbers:
        # Where the workers keep checkpoints: a trial not queued again loses its own (hpo.store.requeue).
        opened.get_heartbeat_stale_trial_callback().artifact_store = artifact_store(url, artifact_dir, create=False)[1]
    study = optuna.load_study(study_name=study.study_name, storage=opened)
    # The named trials first: a mistyped number stops the command before --fail changes anything.
    for number in fail_trials(study, opened, trial_numbers):
        click.echo(f"trial {number}: marked FAIL by hand")
    if fail_stale:
        failed = fail_stale_trials(study)
        click.echo(f"failed {len(failed)} trial(s) with no heartbeat for {grace_period} s"
                   + (f": {_queued(study, failed)}" if failed else ""))
    now = datetime.datetime.now()
    rows = [
        {"number": trial.number, "state": "RUNNING", "started": trial.datetime_start.isoformat(timespec="seconds"),
         "age_seconds": round((now - trial.datetime_start).total_seconds()),
         "worker": trial.user_attrs.get(record.WORKER, "")}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    ]
    if rows:
        write_rows(rows, "table", sys.stdout, title=f"running trials of {study.study_name}", complete_with=None)
    else:
        click.echo(f"study {study.study_name!r} has no running trial")


def _queued(study: optuna.Study, numbers: list[int]) -> str:
    """``numbers`` as a list that says which were queued again (a retry is left: ``workers.max_retry``)."""
    queued = queued_again(study.get_trials(deepcopy=False))
    said = {number: "queued again" if number in queued else "not queued again" for number in numbers}
    if len(set(said.values())) == 1:
        return f"{', '.join(map(str, numbers))} ({said[numbers[0]]})"
    return ", ".join(f"{number} ({said[number]})" for number in numbers)


def _print_summary(study: optuna.Study, elapsed_seconds: float, epochs_this_run: int) -> None:
    counts = state_counts(study.get_trials(deepcopy=False))
    not_run = f", {counts['not_run']} not run (budget already met)" if counts["not_run"] else ""
    click.echo(
        f"trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['failed']} failed{not_run}; this run took {elapsed_seconds:.1f} s"
    )
    # This run's epochs, then the study's (a resumed study's finished trials count earlier runs' epochs too).
    click.echo(f"epochs trained by this run: {epochs_this_run}")
    savings = study_savings(study)
    if savings is not None:
        click.echo(f"epochs of the study's finished trials: {savings.trained} trained of {savings.planned} a run "
                   f"without pruning would train (pruning saved {100 * savings.saved_fraction:.1f} %)")
    if counts["complete"] == 0:
        click.echo("no trial completed, so there is no best trial")
        return
    best = study.best_trial
    click.echo(f"best trial: {best.number}, value {best.value:.4f}")
    for name, value in best.params.items():
        click.echo(f"  {name} = {value!r}")
