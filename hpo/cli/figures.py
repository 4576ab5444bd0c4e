"""Commands that draw or serve a study: ``plot`` (PNG files) and ``dashboard`` (optuna-dashboard)."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import click

from hpo.cli.app import main
from hpo.cli.common import (
    artifact_dir_option,
    artifact_store,
    load_study,
    open_study_storage,
    storage_option,
    study_name_option,
)
from hpo.errors import HpoError
from hpo.store.storage import describe, is_read_only


@main.command()
@storage_option
@artifact_dir_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the dashboard to the network (it has no login).")
@click.option("--port", type=click.IntRange(min=1, max=65_535), default=8080, show_default=True)
def dashboard(storage: str | None, artifact_dir: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study database, with the trials' weight artifacts; Ctrl-C stops it."""
    try:
        import optuna_dashboard
    except ImportError:
        raise HpoError("optuna-dashboard is not installed; pip install 'hpo-from-scratch[dashboard]'") from None
    url, opened = open_study_storage(storage, must_exist=True, read_only_ok=True)
    directory, store = artifact_store(url, artifact_dir, create=False)
    _check_address(host, port)
    click.echo(f"storage: {describe(url)}" + (" (read-only: notes and other changes made in the dashboard "
                                              "cannot be saved)" if is_read_only(opened) else ""))
    click.echo(f"artifacts: {directory}" + ("" if directory.is_dir() else " (no such folder yet: no weights to show)"))
    click.echo(f"dashboard: http://{host}:{port}/dashboard (Ctrl-C stops it)")
    # Ctrl-C, and SIGTERM (docker stop) like it, stop the server: it catches KeyboardInterrupt itself.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # Returns when interrupted: the server catches KeyboardInterrupt itself.
        optuna_dashboard.run_server(opened, host=host, port=port, artifact_store=store)
    except KeyboardInterrupt:
        pass
    except OSError as error:  # address in use, or not an address of this machine
        raise HpoError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    click.echo("dashboard stopped")


def _check_address(host: str, port: int) -> None:
    """Fail in one line, before the server prints its banner, if ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as the server (bottle's wsgiref) chooses
    try:
        # Like the server, with SO_REUSEADDR: a port left in TIME_WAIT is free.
        socket.create_server((host, port), family=family).close()
    except OSError as error:  # address in use, or not an address of this machine
        raise HpoError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None


@main.command()
@storage_option
@study_name_option("Study to draw [default: the only study in the storage].")
@click.option("--out", "out_directory", required=True, help="Folder for the PNG files (created if missing).")
def plot(storage: str | None, study_name: str | None, out_directory: str) -> None:
    """Write PNGs of a study: history, learning curves, importances, learning rate x weight decay, top 20."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; before pyplot is imported
    from hpo.results.plots import (
        write_plots,  # matplotlib: only this command pays for its import
    )

    study = load_study(storage, study_name)
    if Path(out_directory).exists() and not Path(out_directory).is_dir():
        raise HpoError(f"--out {out_directory} is a file; give a folder for the PNG files")
    try:
        result = write_plots(study, out_directory)
    except OSError as error:
        raise HpoError(f"cannot write the plots to {out_directory}: {error.strerror or error}") from None
    for path in result.written:
        click.echo(f"wrote {path}")
    for filename, reason in result.skipped.items():
        click.echo(f"skipped {filename}: {reason}")
