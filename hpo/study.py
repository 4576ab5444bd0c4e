"""Create or resume the Optuna study a study file describes (running it is `hpo.worker`).

The study file's identity (direction, metric, dataset and parameters) is stored
as the study's user attribute ``hpo_spec`` when the study is created.  A file
that disagrees with it is refused, because its trials would not be comparable
with the stored ones.  Budget, sampler and pruner may change between runs.
"""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo.spec import StudySpec

SPEC_ATTRIBUTE = "hpo_spec"
WORKERS_ATTRIBUTE = "hpo_workers"
# States that count against the trial budget (Optuna's MaxTrialsCallback states).
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
# Trial user attribute of a FAIL trial that found the budget claimed by other
# workers' trials and never trained (see hpo.worker).
ATTRIBUTE_NOT_RUN = "not_run"


class StudyMismatchError(ValueError):
    """The study file disagrees with the stored study; the message shows both values."""


def open_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    *,
    create: bool = True,
) -> optuna.Study:
    """Create the study, or load it if it exists, with the file's sampler and pruner.

    Safe to call from many processes at once: Optuna creates the study once and
    the others load it.  Processes sharing a study, and a resumed study, never
    repeat each other's samples: a seeded sampler draws trial *n* from a stream of
    its own (:class:`hpo.registry.TrialSeededSampler`).

    Parameters
    ----------
    spec : StudySpec
    storage : optuna.storages.BaseStorage
    study_name : str
    create : bool
        False: the study must exist already (``hpo worker``).

    Raises
    ------
    StudyMismatchError
        The stored study was created from a different direction, metric, dataset
        or search space, or (``create=False``) there is no such study.
    """
    if not create and study_name not in optuna.get_all_study_names(storage):
        raise StudyMismatchError(f"no study {study_name!r} in this storage; create it first with `hpo create`")
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=spec.direction,
        sampler=spec.make_sampler(),
        pruner=spec.make_pruner(),
        load_if_exists=True,
    )
    identity = spec.identity()
    stored = study.user_attrs.get(SPEC_ATTRIBUTE)
    if stored is None and study.get_trials(deepcopy=False):
        raise StudyMismatchError(
            f"study {study_name!r} was not created by hpo (it has trials but no study file record); "
            "use another --study-name"
        )
    if stored is None:
        stored_directions = [direction.name.lower() for direction in study.directions]
        if stored_directions != [spec.direction]:
            raise StudyMismatchError(
                f"study {study_name!r}: stored direction(s) {stored_directions}, "
                f"study file says direction = {spec.direction!r}; use another --study-name"
            )
        study.set_user_attr(SPEC_ATTRIBUTE, identity)  # racing creators write the same value
    else:
        differences = list(_differences(stored, identity))
        if differences:
            raise StudyMismatchError(
                f"study {study_name!r} was created from a different study file: "
                + "; ".join(f"{path}: stored {old}, file {new}" for path, old, new in differences)
                + ". Use another --study-name, or restore the file."
            )
    # Read by `hpo stale` for the grace period; not part of the identity (it may change).
    study.set_user_attr(WORKERS_ATTRIBUTE, spec.workers.model_dump())
    return study


def _differences(stored: Any, current: Any, path: str = "") -> Any:
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current)):
            yield from _differences(stored.get(key), current.get(key), f"{path}.{key}" if path else key)
    elif stored != current:
        yield path, json.dumps(stored), json.dumps(current)


def count_finished(study: optuna.Study) -> int:
    """Trials that count against the budget: complete and pruned."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
