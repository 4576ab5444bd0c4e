"""What a study holds, in a few numbers: trials per state, the best trial, the epochs pruning saved.

Read by ``hpo studies`` (one row per study) and by the end-of-run summary of
``hpo run`` (:func:`pruning_savings`, and :func:`epochs_trained` by this run's workers).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpo.store import record


def state_counts(trials: list[FrozenTrial]) -> dict[str, int]:
    """Trials per state: ``{"complete": n, "pruned": n, "failed": n, "not_run": n, "running": n}``.

    ``not_run`` are FAIL trials that never trained because the budget was already
    claimed by other workers' trials (user attribute ``not_run``); ``failed`` are the
    other FAIL trials (interrupted, a dead worker, a bug).
    """
    names = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running"}
    counts = {"complete": 0, "pruned": 0, "failed": 0, "not_run": 0, "running": 0}
    for trial in trials:
        if trial.state == TrialState.FAIL and record.NOT_RUN in trial.user_attrs:
            counts["not_run"] += 1
        elif trial.state in names:
            counts[names[trial.state]] += 1
    return counts


STUDY_COLUMNS = ("study", "direction", "complete", "pruned", "failed", "not_run", "running", "best_value", "best_trial",
                 "datetime_start")
"""The keys of :func:`study_row`, in order (the header of ``hpo studies -f csv``, also of no study)."""


def study_row(summary: optuna.study.StudySummary, trials: list[FrozenTrial]) -> dict[str, Any]:
    """One study as a flat dict for ``hpo studies``.

    Parameters
    ----------
    summary : optuna.study.StudySummary
        From :func:`optuna.get_all_study_summaries` (with ``include_best_trial=True``).
    trials : list of FrozenTrial
        All trials of the study.

    Returns
    -------
    dict
        ``study``, ``direction`` (comma-separated for several objectives), the
        counts of :func:`state_counts`, ``best_value`` and ``best_trial`` (None
        without a completed trial or with several objectives) and ``datetime_start``
        (ISO time of its first trial, None without trials).
    """
    best = summary.best_trial if len(summary.directions) == 1 else None
    return {
        "study": summary.study_name,
        "direction": ",".join(direction.name.lower() for direction in summary.directions),
        **state_counts(trials),
        "best_value": best.value if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "datetime_start": summary.datetime_start.isoformat(timespec="seconds") if summary.datetime_start else None,
    }


def study_rows(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """:func:`study_row` for every study in ``storage``, in creation order."""
    rows = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=True):
        trials = storage.get_all_trials(storage.get_study_id_from_name(summary.study_name), deepcopy=False)
        rows.append(study_row(summary, trials))
    return rows


@dataclass(frozen=True)
class PruningSavings:
    """Epochs trained by a study's finished trials, and what a run without pruning would have trained.

    Attributes
    ----------
    trained : int
        Sum of the ``epochs_run`` user attribute of the finished (complete and pruned) trials.
    planned : int
        Sum of their planned epochs (``epochs`` of the study file or of the trial's
        parameters); a diverged trial, and one whose network was too large for the
        memory (``too_large``), count their ``epochs_run``, since they stop without
        pruning too.
    """

    trained: int
    planned: int

    @property
    def saved_fraction(self) -> float:
        """Fraction in [0, 1] of the planned epochs not trained (0 when nothing was planned)."""
        return 1.0 - self.trained / self.planned if self.planned else 0.0


def pruning_savings(trials: list[FrozenTrial], fixed_epochs: int | None) -> PruningSavings | None:
    """The compute pruning saved, in epochs (book section 6.5.2: give up early on bad trials).

    Only finished trials count on both sides: a failed trial (an interrupted worker)
    was neither planned to the end nor pruned, and is retried.

    Parameters
    ----------
    trials : list of FrozenTrial
        Trials of one study (any states).
    fixed_epochs : int or None
        The study file's fixed ``epochs``; a trial's searched ``epochs`` parameter wins.

    Returns
    -------
    PruningSavings or None
        None if some finished trial's planned epochs are unknown (no fixed value and
        no ``epochs`` parameter), or there is no finished trial.
    """
    trained = planned = 0
    finished = [trial for trial in trials if trial.state in record.FINISHED_STATES]
    if not finished:
        return None
    for trial in finished:
        run = int(trial.user_attrs.get(record.EPOCHS_RUN, 0))
        epochs = trial.params.get("epochs", fixed_epochs)
        if epochs is None:
            return None
        trained += run
        stopped = record.DIVERGED in trial.user_attrs or record.TOO_LARGE in trial.user_attrs
        planned += run if stopped else int(epochs)
    return PruningSavings(trained, planned)


def study_savings(study: optuna.Study) -> PruningSavings | None:
    """:func:`pruning_savings` of a study, with the fixed epochs of its stored study file."""
    fixed = record.stored_parameters(study).get("epochs")
    return pruning_savings(study.get_trials(deepcopy=False), fixed if isinstance(fixed, int) else None)


def own_epochs(trial: FrozenTrial) -> int:
    """Epochs ``trial`` trained itself: its ``epochs_run`` less the epochs of the checkpoint it resumed from."""
    run = int(trial.user_attrs.get(record.EPOCHS_RUN, 0))
    return max(run - int(trial.user_attrs.get(record.RESUMED_FROM_EPOCH, 0)), 0)


def taken_trials(trials: Iterable[FrozenTrial]) -> set[int]:
    """The numbers of the trials no worker can take any more (all but the WAITING ones).

    Read before a run starts, for :func:`epochs_trained`: the trials of that run are the others.
    """
    return {trial.number for trial in trials if trial.state != TrialState.WAITING}


def epochs_trained(trials: Iterable[FrozenTrial], workers: Collection[str], taken_before: Collection[int]) -> int:
    """The epochs a run's workers trained: not a study's total, which counts earlier runs too.

    Parameters
    ----------
    trials : iterable of FrozenTrial
        The study's trials at the run's end.
    workers : collection of str
        The ``worker`` ids (HOST:PID) of the run's worker processes.
    taken_before : collection of int
        :func:`taken_trials` of the study at the run's start: a trial among them was run by
        an earlier run (or by another worker), whatever it says now.

    Returns
    -------
    int
        The sum of :func:`own_epochs` over the trials the workers took during the run: a trial
        resumed from a checkpoint counts only the epochs after it, which this run trained.
    """
    return sum(own_epochs(trial) for trial in trials
               if trial.number not in taken_before and trial.user_attrs.get(record.WORKER) in workers)
