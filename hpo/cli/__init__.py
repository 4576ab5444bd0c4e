"""The ``hpo`` command line: run and join studies, list and export trials, evaluate, plot, narrow, dashboard.

Flags follow Optuna's own CLI (``--storage``, ``--study-name``, ``-f``).  User
errors (bad study file, unreachable storage, missing data) print one line,
``Error: ...``, and exit with status 1, without a traceback; Ctrl-C exits
with 130 and SIGTERM with 143, leaving the interrupted trial marked FAIL and
queued again (it continues from its checkpoint), so the study can be resumed with
the same command.

One module per family of commands, each registering its commands on
:data:`hpo.cli.app.main`: ``running`` (run, create, worker, stale), ``reading``
(trials, best, studies), ``evaluating`` (evaluate), ``figures`` (plot, dashboard),
``narrowing`` (narrow), ``book`` (book).  Shared options and helpers are in ``common``.
"""

from hpo.cli import book, evaluating, figures, narrowing, reading, running
from hpo.cli.app import entry, main

__all__ = ["book", "entry", "evaluating", "figures", "main", "narrowing", "reading", "running"]
