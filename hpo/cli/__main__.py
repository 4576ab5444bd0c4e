"""``python -m hpo.cli``: the ``hpo`` command."""

from hpo.cli import entry

entry()
