"""The chapter's training experiments as studies, and the numbers read back from them.

Each comparison of "Deep Learning from Scratch" chapter 6 is a study file under
``studies/`` (:data:`BOOK_STUDIES`): a grid over the compared setting with the
others fixed and no pruning, or (section 6.5.3) a search.  The files keep the
book's sizes; a quick run shrinks budget, epochs or training images by
overrides of the loaded :class:`~hpo.config.spec.StudySpec` (re-validated like a file)
and stores its study under the name ``<name>_quick``, so quick and full runs
can share one database.  Studies run through the service
(:func:`hpo.tuning.study.open_study` and :func:`hpo.tuning.worker.run_worker`), so every trial
is in the study database (optuna-dashboard can open it) and a second run
resumes instead of training again.  Results are read from the stored trials'
``learning_curves`` (see :class:`hpo.tuning.objective.Objective`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from hpo.config.spec import Choices, SpecError, StudySpec, format_errors, load_spec
from hpo.store import record
from hpo.tuning import worker
from hpo.tuning.data import prepare_data
from hpo.tuning.study import prepare_study

__all__ = [
    "BOOK_STUDIES", "STUDIES_DIRECTORY", "BookStudy", "SearchSummary", "book_spec", "curves_by",
    "iterations_per_epoch", "run_study", "search_summary", "with_overrides",
]

_REPOSITORY_STUDIES = Path(__file__).resolve().parents[2] / "studies"
STUDIES_DIRECTORY = _REPOSITORY_STUDIES if _REPOSITORY_STUDIES.is_dir() else Path.cwd() / "studies"
"""The repository's ``studies/`` folder (an editable install or a checkout), else ``./studies``
(an installed package, as in the Docker image, whose working folder holds ``studies/``)."""


@dataclass(frozen=True)
class BookStudy:
    """One training experiment of the chapter.

    Attributes
    ----------
    section : str
        The book's section, e.g. "6.1.8".
    file : str
        Study file, relative to the studies folder; it holds the book's sizes.
    quick : dict
        Overrides of a quick run, by section of the study file
        (``{"parameters": {"epochs": 10}, "dataset": {"train_images": 12000}}``).
    """

    section: str
    file: str
    quick: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


BOOK_STUDIES: dict[str, BookStudy] = {
    "optimizers": BookStudy("6.1.8", "book/optimizers.toml",
                            {"dataset": {"train_images": 12000}, "parameters": {"epochs": 5}}),
    "weight_init": BookStudy("6.2.4", "book/weight_init.toml",
                             {"dataset": {"train_images": 12000}, "parameters": {"epochs": 5}}),
    "batch_norm": BookStudy("6.3.2", "book/batch_norm.toml", {"parameters": {"epochs": 10}}),
    "overfitting_weight_decay": BookStudy("6.4.2", "book/overfitting_weight_decay.toml",
                                          {"parameters": {"epochs": 100}}),
    "overfitting_dropout": BookStudy("6.4.3", "book/overfitting_dropout.toml", {"parameters": {"epochs": 100}}),
    "search_random": BookStudy("6.5.3", "book_6_5.toml", {"budget": {"trials": 40}, "parameters": {"epochs": 30}}),
    "search_tpe": BookStudy("6.5.3", "book/book_6_5_tpe.toml",
                            {"budget": {"trials": 40}, "parameters": {"epochs": 30}}),
}
"""Key -> experiment, in the chapter's order. The quick sizes run in a few minutes on 2 cores."""


def with_overrides(spec: StudySpec, overrides: Mapping[str, Any]) -> StudySpec:
    """``spec`` with some fields replaced, validated again as a study file would be.

    Parameters
    ----------
    spec : StudySpec
    overrides : mapping
        Top-level fields (``name``) or sections of the study file, e.g.
        ``{"budget": {"trials": 30}, "parameters": {"epochs": 20}}``; a section's
        keys replace those keys only.

    Returns
    -------
    StudySpec

    Raises
    ------
    SpecError
        The result does not validate (an epoch count of 0, say); one line per field.
    """
    data = spec.model_dump()
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    try:
        return StudySpec.model_validate(data)
    except ValidationError as error:
        raise SpecError("; ".join(f"override of {spec.name}: {line}" for line in format_errors(error))) from None


def book_spec(key: str, *, full: bool = False, studies: str | Path = STUDIES_DIRECTORY,
              overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """The study specification of experiment ``key`` of :data:`BOOK_STUDIES`.

    Parameters
    ----------
    key : str
    full : bool, default False
        True: the file as it is (the book's sizes); False: with the experiment's
        quick overrides and the study name ``<name>_quick``.
    studies : str or Path
        Folder holding the study files.
    overrides : mapping, optional
        Further overrides (see :func:`with_overrides`), applied last; tests use
        them for smaller sizes.

    Raises
    ------
    SpecError
        The file is missing or invalid, or an override does not validate.
    """
    experiment = BOOK_STUDIES[key]
    spec = load_spec(Path(studies) / experiment.file)
    if not full:
        spec = with_overrides(spec, {**experiment.quick, "name": f"{spec.name}_quick"})
    if overrides:
        spec = with_overrides(spec, overrides)
    return spec


def run_study(spec: StudySpec, storage_url: str, *, progress: bool = False) -> optuna.Study:
    """Create or resume the study ``spec.name`` in ``storage_url`` and run it to its budget.

    One worker in this process (:func:`hpo.tuning.worker.run_worker`); a study already at
    its budget runs nothing and is returned as stored.  ``progress`` shows a
    progress bar (on a terminal).

    Raises
    ------
    hpo.errors.HpoError
        As :func:`hpo.tuning.study.prepare_study`: missing data files or sizes that cannot
        be split, unusable storage, or a stored study of this name made from another file.
    """
    prepared = prepare_study(spec, storage_url)
    worker.run_study(prepared, progress=progress)
    return prepared.study


def curves_by(study: optuna.Study, spec: StudySpec) -> dict[Any, dict[str, Any]]:
    """Learning curves of a grid study's finished trials, by grid point, in the file's order.

    Parameters
    ----------
    study : optuna.Study
    spec : StudySpec
        Its grid: the searched parameters' ``choices``, in declaration order.

    Returns
    -------
    dict
        Grid point -> the trial's ``learning_curves`` (``train_loss``, ``train_accuracy``,
        ``validation_loss``, ``validation_accuracy``, ``seconds``, and with
        ``evaluate_train`` ``train_eval_loss``, ``train_eval_accuracy``: lists with one
        value per epoch, losses in nats, accuracies as fractions, seconds of wall
        time).  A trial that diverged (its loss exploded, see
        :class:`hpo.tuning.objective.Objective`) has the epochs before that, possibly none,
        and ``diverged``: the reason.  A grid point is the parameter's value when one
        parameter is searched, else the tuple of values in declaration order.  Points
        without a finished trial are left out.
    """
    searched = {name: value.choices for name, value in spec.parameters.searched().items()
                if isinstance(value, Choices)}
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    result = {}
    for point in itertools.product(*searched.values()):
        wanted = dict(zip(searched, point))
        for trial in finished:
            if all(_same(trial.params.get(name), value) for name, value in wanted.items()):
                curves = dict(trial.user_attrs.get(record.LEARNING_CURVES) or dict.fromkeys(_CURVE_NAMES, []))
                if record.DIVERGED in trial.user_attrs:
                    curves["diverged"] = trial.user_attrs[record.DIVERGED]
                result[point[0] if len(point) == 1 else point] = curves
                break
    return result


_CURVE_NAMES = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "seconds")


def _same(stored: Any, value: Any) -> bool:
    # Exact comparison: False == 0 and 1 == 1.0 in Python, but not as grid points of different kinds.
    return type(stored) is type(value) and stored == value


def iterations_per_epoch(spec: StudySpec) -> int:
    """Mini-batches per epoch of a study with a fixed batch size.

    Parameters
    ----------
    spec : StudySpec

    Returns
    -------
    int
        ceil(training images after the validation split / batch size).
    """
    data = prepare_data(spec.dataset)
    return math.ceil(len(data.t_train) / spec.parameters.batch_size)


@dataclass(frozen=True)
class SearchSummary:
    """How a search went, from its stored trials' times.

    Attributes
    ----------
    best_value : float or None
        Best completed trial's value (validation accuracy, a fraction); None without one.
    wall_seconds : float
        From the first trial's start to the last trial's end, seconds.
    complete, pruned : int
        Trials in these states.
    finished_seconds : ndarray of shape (n,), float64
        For each completed trial, in order of completion: seconds since the search began.
    best_so_far : ndarray of shape (n,), float64
        Best value among the completed trials up to each of those times.
    """

    best_value: float | None
    wall_seconds: float
    complete: int
    pruned: int
    finished_seconds: np.ndarray
    best_so_far: np.ndarray

    def seconds_to_reach(self, target: float) -> float | None:
        """Seconds after which a completed trial first reached ``target`` (None: never)."""
        reached = np.flatnonzero(self.best_so_far >= target)
        return float(self.finished_seconds[reached[0]]) if reached.size else None


def search_summary(study: optuna.Study) -> SearchSummary:
    """:class:`SearchSummary` of a maximizing study, from its stored trials.

    Raises
    ------
    ValueError
        The study has no finished trial.
    """
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not finished:
        raise ValueError(f"study {study.study_name!r} has no finished trial")
    began = min(trial.datetime_start for trial in finished)
    ended = max(trial.datetime_complete for trial in finished)
    completed = sorted((trial for trial in finished if trial.state == TrialState.COMPLETE),
                       key=lambda trial: trial.datetime_complete)
    seconds = np.array([(trial.datetime_complete - began).total_seconds() for trial in completed], dtype=np.float64)
    best = np.maximum.accumulate(np.array([trial.value for trial in completed], dtype=np.float64)) \
        if completed else np.empty(0, dtype=np.float64)
    return SearchSummary(
        best_value=float(best[-1]) if completed else None,
        wall_seconds=(ended - began).total_seconds(),
        complete=len(completed),
        pruned=len(finished) - len(completed),
        finished_seconds=seconds,
        best_so_far=best,
    )
