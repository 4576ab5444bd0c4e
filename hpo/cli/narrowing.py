"""``hpo narrow``: coarse-to-fine search (book 6.5.2), a new study file from the best trials."""

from __future__ import annotations

import math

import click

from hpo.cli.app import main
from hpo.cli.common import (
    STUDY_NAME_HELP,
    check_new_study_name,
    command_line,
    load_study,
    storage_arguments,
    storage_option,
    study_name_option,
)
from hpo.config.spec import load_spec
from hpo.errors import HpoError
from hpo.results.narrow import DEFAULT_MARGIN, log_ranges, narrow_study_file
from hpo.store.storage import storage_url


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
@storage_option
@study_name_option(STUDY_NAME_HELP)
@click.option("--margin", type=FiniteFloatRange(min=1), default=DEFAULT_MARGIN, show_default=True,
              help="Widen the top trials' span by this factor at each end, in log space (low / F, high * F).")
@click.option("--out", help="New study file [default: next to STUDY_FILE, "
              "named like digits-narrow-1.toml].")
@click.option("--name", "new_name", callback=check_new_study_name,
              help="The new study's name [default: NAME-narrow-1, or N+1 after -narrow-N].")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
def narrow(study_file: str, top: int, storage: str | None, study_name: str | None, margin: float,
           out: str | None, new_name: str | None, force: bool) -> None:
    """Shrink STUDY_FILE's log-scale ranges to the span of the top trials: coarse-to-fine search (book 6.5.2)."""
    spec = load_spec(study_file)
    if not log_ranges(spec):
        raise HpoError(f"{study_file}: no searched range has log = true; nothing to narrow")
    study = load_study(storage, study_name or spec.name)
    try:
        result = narrow_study_file(study_file, study, top, margin=margin, name=new_name, out=out, force=force)
    except OSError as error:
        raise HpoError(f"cannot write {out or 'the new study file'}: {error.strerror or error}") from None
    click.echo(f"top {result.top} of {result.completed} completed trials of study {study.study_name}:")
    for item in result.ranges:
        change = "" if item.narrower else " (unchanged: the top trials span the whole range)"
        click.echo(f"  {item.parameter}: {item.old[0]:g} .. {item.old[1]:g} -> {item.new[0]:g} .. {item.new[1]:g}"
                   f"{change}")
    click.echo(f"wrote {result.path} (study {result.name})")
    click.echo(f"next: {command_line('run', str(result.path), *storage_arguments(storage, storage_url(storage)))}")
