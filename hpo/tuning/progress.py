"""What a running study shows: a progress bar over its trial budget (tqdm), and log lines that never mix with it."""

from __future__ import annotations

import contextlib
import logging

import optuna
from optuna.trial import TrialState
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hpo.tuning.study import count_finished

# Loggers whose lines go above the bar while it is shown, never into it.
_LOGGERS = ("hpo", "optuna")


def configure_logging() -> None:
    """Trial results of this package on stderr, in Optuna's format; Optuna's own notes only from warnings up.

    Optuna's notes ("Using an existing study", ...) repeat what hpo logs per trial.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(levelname).1s %(asctime)s] %(message)s"))
    logger = logging.getLogger("hpo")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


class Progress:
    """``with Progress(study, budget) as progress: ... progress.update(study)``.

    Shows finished (complete + pruned) trials of the whole study against ``budget``,
    so it counts other workers' trials too, and the best value so far.  While it is
    shown, the log lines of hpo and Optuna are written above it (tqdm's logging
    redirection), so a bar and a log line never share a line.  Disabled, it does
    nothing.
    """

    def __init__(self, study: optuna.Study, budget: int, *, enabled: bool = True) -> None:
        self._budget = budget
        # disable=None: no bar when stderr is not a terminal (a log file, CI).
        self._bar = tqdm(total=budget, initial=min(budget, count_finished(study)), unit="trial",
                         disable=None if enabled else True, dynamic_ncols=True)
        self._redirect = contextlib.ExitStack()

    def update(self, study: optuna.Study) -> None:
        """Refresh from the study: finished count and best value (nothing, without reading, when disabled)."""
        if self._bar.disable:
            return
        self._bar.n = min(self._budget, count_finished(study))
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            self._bar.set_postfix(best=f"{study.best_value:.4f}", refresh=False)
        self._bar.refresh()

    def __enter__(self) -> "Progress":
        if not self._bar.disable:
            self._redirect.enter_context(logging_redirect_tqdm([logging.getLogger(name) for name in _LOGGERS]))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._redirect.close()
        self._bar.close()
