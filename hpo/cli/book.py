"""``hpo book``: the book's chapter 6, its studies and figures."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import click

from hpo import interrupts
from hpo.book import SECTIONS
from hpo.cli.app import main
from hpo.cli.common import (
    BLAS_HELP,
    command_line,
    exit_interrupted,
    limit_blas_threads,
    storage_arguments,
)
from hpo.errors import HpoError
from hpo.results.report import write_rows
from hpo.store.storage import describe


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
        from hpo.book.reproduce import (
            reproduce,  # matplotlib: only this command pays for its import
        )
    except ImportError as error:
        raise HpoError(f"hpo book needs {error.name}: pip install matplotlib") from None
    from hpo.book.experiments import STUDIES_DIRECTORY

    interrupts.install()  # from here on a signal stops the studies at a safe point (hpo.interrupts)
    out = Path(out_directory).resolve()
    url = storage or f"sqlite:///{out / 'book.db'}"
    logging.getLogger("hpo").setLevel(logging.WARNING)  # one line per study, not per trial
    limit_blas_threads(blas_threads)  # the book's small matrices run fastest on one thread
    sizes = "the book's sizes" if full else "quick sizes"
    click.echo(f"storage: {describe(url)} ({sizes})")
    started = time.perf_counter()
    try:
        if storage is None:
            out.mkdir(parents=True, exist_ok=True)
        rows = reproduce(out, storage_url=url, full=full, studies=STUDIES_DIRECTORY, echo=click.echo,
                         progress=not no_progress, sections=sections or None)
        interrupts.check()  # a signal that came after the last study's last safe point
    except ValueError as error:
        raise HpoError(str(error)) from None
    except OSError as error:
        raise HpoError(f"cannot write to {out}: {error.strerror or error}") from None
    except interrupts.Interrupted as interrupted:
        exit_interrupted(interrupted, command_line(
            "book", "--out", out_directory, *(["--full"] if full else []), *storage_arguments(storage, url),
            *(argument for section in sections for argument in ("--section", section))))
    interrupts.exit_at_once()
    write_rows(rows, "table", sys.stdout, title="The book's chapter 6: findings", fit="wrap")
    click.echo(f"figures in {out}; took {time.perf_counter() - started:.0f} s")
    click.echo(f"dashboard: {command_line('dashboard', *(storage_arguments(storage, url) or ['--storage', url]))}")
