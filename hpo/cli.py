"""The ``hpo`` command line: run studies, list trials, print the best trial.

Flags follow Optuna's own CLI (``--storage``, ``--study-name``, ``-f``).  User
errors (bad study file, unreachable storage, missing data) print one line,
``Error: ...``, and exit with status 1, without a traceback; Ctrl-C exits
with 130 and SIGTERM with 143, leaving the interrupted trial marked FAIL so
the study can be resumed with the same command.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import optuna
from optuna.trial import TrialState

from hpo.data import prepare_data
from hpo.report import FORMATS, trial_row, write_record, write_rows
from hpo.spec import SpecError, StudySpec, load_spec
from hpo.storage import StorageError, describe, open_storage, storage_url
from hpo.study import StudyMismatchError, count_finished, open_study, run_study
from models.datasets import DatasetError

STORAGE_HELP = "SQLAlchemy URL of the study database [default: $HPO_STORAGE, else sqlite:///./hpo.db]"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so Optuna marks the running trial FAIL."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


class _HideInterruptTraceback(logging.Filter):
    """Ctrl-C and SIGTERM are no bugs: keep Optuna's "Trial n failed" line, drop its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] and issubclass(record.exc_info[0], KeyboardInterrupt):
            record.exc_info = None
        return True


# The logger on which Optuna reports a failed trial.
logging.getLogger("optuna.study._optimize").addFilter(_HideInterruptTraceback())


def _fail(message: str) -> click.ClickException:
    return click.ClickException(message)


def _load_spec(path: str) -> StudySpec:
    try:
        return load_spec(path)
    except SpecError as error:
        raise _fail(str(error)) from None


def _open(storage: str | None, *, must_exist: bool) -> tuple[str, optuna.storages.RDBStorage]:
    url = storage_url(storage)
    try:
        return url, open_storage(url, must_exist=must_exist)
    except StorageError as error:
        raise _fail(str(error)) from None


def _load_study(storage: str | None, study_name: str | None) -> optuna.Study:
    url, opened = _open(storage, must_exist=True)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(opened, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            listing = ", ".join(names) if names else "none"
            raise _fail(f"storage {describe(url)} holds {len(names)} studies ({listing}); choose one with --study-name")
        study_name = names[0]
    if study_name not in names:
        raise _fail(f"no study {study_name!r} in {describe(url)}; studies there: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpo-from-scratch")
def main() -> None:
    """Tune a from-scratch NumPy network with Optuna; every trial is kept in a SQL study database."""


@main.command()
@click.argument("study_file")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study name [default: the file's name field].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def run(study_file: str, storage: str | None, study_name: str | None, no_progress: bool) -> None:
    """Create or resume the study in STUDY_FILE and run it until its trial budget."""
    spec = _load_spec(study_file)
    try:
        data = prepare_data(spec.dataset)
    except (DatasetError, ValueError) as error:
        raise _fail(f"{study_file}: dataset: {error}") from None
    url, opened = _open(storage, must_exist=False)
    name = study_name or spec.name
    try:
        study = open_study(spec, opened, name)
    except StudyMismatchError as error:
        raise _fail(str(error)) from None
    click.echo(f"storage: {describe(url)}")
    click.echo(
        f"study: {name} ({count_finished(study)} of {spec.budget.trials} trials finished; "
        f"{len(data.x_train)} training and {len(data.x_validation)} validation images)"
    )
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = time.perf_counter()
    try:
        run_study(study, spec, data, show_progress_bar=not no_progress)
    except KeyboardInterrupt as interrupt:
        code = 143 if isinstance(interrupt, Terminated) else 130
        click.echo(
            f"\nInterrupted: the running trial is marked FAIL; resume with: hpo run {study_file} "
            f"--storage {describe(url)} --study-name {name}",
            err=True,
        )
        sys.exit(code)
    elapsed = time.perf_counter() - started
    _print_summary(study, elapsed)
    click.echo(f"list trials: hpo trials --storage {describe(url)} --study-name {name}")


def _print_summary(study: optuna.Study, elapsed_seconds: float) -> None:
    counts = {state: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for trial in study.get_trials(deepcopy=False):
        if trial.state in counts:
            counts[trial.state] += 1
    click.echo(
        f"trials: {counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed; this run took {elapsed_seconds:.1f} s"
    )
    if counts[TrialState.COMPLETE] == 0:
        click.echo("no completed trial yet")
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
    """List every trial of a study: state, value, parameters, duration, epochs."""
    study = _load_study(storage, study_name)
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    write_rows(rows, output_format, sys.stdout, title=study.study_name)


@main.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study-name", help="Study to read [default: the only study in the storage].")
@click.option("-f", "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True)
def best(storage: str | None, study_name: str | None, output_format: str) -> None:
    """Print the best completed trial of a study."""
    study = _load_study(storage, study_name)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise _fail(f"study {study.study_name!r} has no completed trial yet")
    write_record(trial_row(study.best_trial), output_format, sys.stdout, title=f"best trial of {study.study_name}")


if __name__ == "__main__":
    main()
