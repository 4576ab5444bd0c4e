"""The ``hpo`` console script: signals are handled before anything heavy is imported.

Importing the command line (NumPy, Optuna, SQLAlchemy, pydantic) takes a second or
more; a Ctrl-C in that time would print Python's ``KeyboardInterrupt`` traceback.
This module imports nothing but :mod:`hpo.interrupts` first, so that a signal ends
the process at once with one line until a command takes the signals over.
"""

from hpo import interrupts


def main() -> None:
    """Run the ``hpo`` command (:func:`hpo.cli.app.entry`)."""
    interrupts.exit_at_once()
    from hpo.cli import entry

    entry()
