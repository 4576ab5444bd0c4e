"""Commands that read studies: ``trials``, ``best``, ``studies``."""

from __future__ import annotations

import sys

import click
import optuna
from optuna.trial import TrialState

from hpo.cli.app import main
from hpo.cli.common import (
    format_option,
    load_study,
    load_study_from,
    open_study_storage,
    storage_option,
    study_name_option,
)
from hpo.errors import HpoError
from hpo.results.report import trial_row, write_record, write_rows
from hpo.results.summary import STUDY_COLUMNS, study_rows
from hpo.store.storage import describe


@main.command()
@storage_option
@study_name_option("Study to list [default: the only study in the storage].")
@format_option()
def trials(storage: str | None, study_name: str | None, output_format: str) -> None:
    """List every trial of a study (of every study, with a `study` column, when several and no --study-name)."""
    url, opened = open_study_storage(storage, must_exist=True, read_only_ok=True)
    names = optuna.get_all_study_names(opened)
    if study_name is None and len(names) > 1:
        rows = [{"study": name, **trial_row(trial)} for name in names
                for trial in optuna.load_study(study_name=name, storage=opened).get_trials(deepcopy=False)]
        if not rows and output_format == "table":
            click.echo(f"the {len(names)} studies in {describe(url)} have no trials yet")
            return
        write_rows(rows, output_format, sys.stdout, title=f"trials of {len(names)} studies")
        return
    study = load_study_from(opened, url, study_name)
    rows = [trial_row(trial) for trial in study.get_trials(deepcopy=False)]
    if not rows and output_format == "table":
        click.echo(f"study {study.study_name!r} has no trials yet")
        return
    write_rows(rows, output_format, sys.stdout, title=study.study_name)


@main.command()
@storage_option
@study_name_option()
@format_option()
def best(storage: str | None, study_name: str | None, output_format: str) -> None:
    """Print the best completed trial of a study."""
    study = load_study(storage, study_name)
    if len(study.directions) > 1:
        raise HpoError(f"study {study.study_name!r} has {len(study.directions)} objectives; "
                       "hpo best reads single-objective studies (see `hpo trials`)")
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise HpoError(f"study {study.study_name!r} has no completed trial yet")
    write_record(trial_row(study.best_trial), output_format, sys.stdout, title=f"best trial of {study.study_name}")


@main.command()
@storage_option
@format_option()
def studies(storage: str | None, output_format: str) -> None:
    """List every study in the storage: direction, trials per state, best value and trial, start time."""
    url, opened = open_study_storage(storage, must_exist=True, read_only_ok=True)
    rows = study_rows(opened)
    if not rows and output_format == "table":
        click.echo(f"storage {describe(url)} holds no study yet; start one with `hpo run STUDY_FILE`")
        return
    write_rows(rows, output_format, sys.stdout, title=f"studies in {describe(url)}", columns=STUDY_COLUMNS)
