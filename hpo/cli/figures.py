"""Commands that draw or serve a study: ``plot`` (PNG files) and ``dashboard`` (optuna-dashboard)."""

from __future__ import annotations

import signal
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

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
    try:
        server = _server(host, port, optuna_dashboard.wsgi(opened, artifact_store=store))
    except OSError as error:  # address in use, or not an address of this machine
        raise HpoError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    click.echo(f"storage: {describe(url)}" + (" (read-only: notes and other changes made in the dashboard "
                                              "cannot be saved)" if is_read_only(opened) else ""))
    click.echo(f"artifacts: {directory}" + ("" if directory.is_dir() else " (no such folder yet: no weights to show)"))
    click.echo(f"dashboard: http://{host}:{port}/dashboard (Ctrl-C stops it)")

    def stop(signal_number: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it runs in a thread of its own; requests
        # being served are left to their threads (an exception raised into one would print a traceback).
        threading.Thread(target=server.shutdown, daemon=True).start()

    # Ctrl-C, and SIGTERM (docker stop, kubectl delete) and SIGHUP like it, stop the server.
    for signal_number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    click.echo("dashboard stopped")


def _server(host: str, port: int, app: Callable[..., Any]) -> WSGIServer:
    """A WSGI server for ``app`` on ``host:port`` (the standard library's, as optuna-dashboard's
    ``run_server`` uses through bottle, with a thread per request), logging each request on stderr.

    Raises
    ------
    OSError
        The address is in use or not one of this machine.
    """

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        # A thread per request, so that a client that never finishes its request cannot hold up
        # shutdown(); daemon threads end with the process.
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True

    return make_server(host, port, app, server_class=Server, handler_class=WSGIRequestHandler)


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
