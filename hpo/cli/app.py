"""The ``hpo`` command group and its console script, where every user error becomes one line."""

from __future__ import annotations

import os
import sys
import traceback

import click

from hpo.errors import HpoError
from hpo.tuning.progress import configure_logging

DEBUG_ENVIRONMENT_VARIABLE = "HPO_DEBUG"
"""Set to 1 (or give ``hpo --debug``) to see the traceback of a user error."""

_debug = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hpo-from-scratch")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENVIRONMENT_VARIABLE,
              help="Show the traceback of an error [also: HPO_DEBUG=1].")
def main(debug: bool) -> None:
    """Tune a from-scratch NumPy network with Optuna; every trial is kept in a SQL study database."""
    global _debug
    _debug = debug
    configure_logging()


def _debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").lower() in ("1", "true", "yes")


def entry() -> None:
    """The ``hpo`` console script: :func:`main`, with every user error as one line.

    An :class:`hpo.errors.HpoError` (bad study file, unusable storage, missing data,
    ...) prints ``Error: MESSAGE`` and exits with status 1, without a traceback
    (``--debug`` or ``HPO_DEBUG=1`` prints the traceback too).  A bad option or
    argument (``-f xml``, ``--trial abc``, a missing ``--out``) prints ``Error:
    <click's message> (see hpo COMMAND --help)`` and exits with status 2, click's
    status for usage errors, instead of click's four-line usage block.
    """
    try:
        code = main.main(standalone_mode=False)
    except HpoError as error:
        if _debugging():
            traceback.print_exc()
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
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
