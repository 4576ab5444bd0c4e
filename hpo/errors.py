"""The one base class of the errors a user of ``hpo`` can fix.

Every error the service raises for bad input or an unusable environment (a study file,
a storage URL, a study that differs from its file, a data set, a network too large for
memory, an evaluation, a figure, narrowing, local workers) derives from
:class:`HpoError`, with a message of one line per problem that names the file, field or
value and says what to do.  The command line turns any of them into ``Error: MESSAGE``
and exit status 1 in one place (:func:`hpo.cli.entry`); ``--debug`` or
``HPO_DEBUG=1`` shows the traceback instead.  Anything else that escapes is a bug and
keeps its traceback.

The exception is :class:`hpo.interrupts.Interrupted`, a request to stop (SIGINT,
SIGTERM, SIGHUP), not an error: it stays a ``KeyboardInterrupt`` so that no
``except Exception`` on its way (Optuna's, SQLAlchemy's, ours) can swallow it.
"""

from __future__ import annotations

__all__ = ["HpoError"]


class HpoError(Exception):
    """A problem the user can fix; ``str(error)`` is the message to show, without a traceback.

    Subclasses say which part of the service refused: :class:`hpo.config.spec.SpecError`,
    :class:`hpo.store.storage.StorageError`, :class:`hpo.tuning.study.StudyMismatchError`,
    :class:`hpo.tuning.data.DataError`, :class:`hpo.tuning.resources.TooLargeError`,
    :class:`hpo.store.artifacts.ArtifactError`, :class:`hpo.results.evaluate.EvaluationError`,
    :class:`hpo.results.plots.PlotUnavailable`, :class:`hpo.results.narrow.NarrowError`,
    :class:`hpo.tuning.local_workers.WorkersFailed`.
    """
