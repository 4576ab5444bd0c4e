"""Create or resume the Optuna study a study file describes (running it is `hpo.tuning.worker`).

The study file's identity (direction, metric, dataset and parameters) is stored
as the study's user attribute ``hpo_spec`` when the study is created.  A file
that disagrees with it is refused, because its trials would not be comparable
with the stored ones.  Budget, sampler and pruner may change between runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from hpo.config.spec import StudySpec
from hpo.errors import HpoError
from hpo.store import record
from hpo.store.retrying import RetryingStorage
from hpo.store.storage import describe, open_storage
from hpo.tuning.data import (
    DataError,
    TuningData,
    check_augmentation_fits,
    check_convolution_fits,
    other_images,
    prepare_data,
)
from hpo.tuning.resources import TooLargeError, check_study_fits


class StudyMismatchError(HpoError):
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
    its own (:class:`hpo.config.registry.TrialSeededSampler`).

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
    stored = record.stored_study_file(study)
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
        study.set_user_attr(record.STUDY_FILE, identity)  # racing creators write the same value
    else:
        differences = list(record.differences(stored, identity))
        if differences:
            raise StudyMismatchError(
                f"study {study_name!r} was created from a different study file: "
                + "; ".join(f"{path}: stored {old}, file {new}" for path, old, new in differences)
                + ". Use another --study-name, or restore the file."
            )
    # Read by `hpo stale` for the grace period; not part of the identity (it may change).
    study.set_user_attr(record.WORKER_SETTINGS, spec.workers.model_dump())
    return study


def count_finished(study: optuna.Study) -> int:
    """Trials that count against the budget: complete and pruned."""
    return len(study.get_trials(deepcopy=False, states=record.FINISHED_STATES))


@dataclass
class PreparedStudy:
    """A study ready to run: its file, its data (None if not loaded), storage URL, storage and study."""

    spec: StudySpec
    data: TuningData | None
    url: str
    storage: RetryingStorage
    study: optuna.Study


def prepare_study(spec: StudySpec, url: str, study_name: str | None = None, *, create: bool = True,
                  load_data: bool = True, source: str | None = None) -> PreparedStudy:
    """Load the data, check that the study fits in memory, open the storage and create or load the study.

    What every way of running a study does first (``hpo run``, ``create``, ``worker``,
    the workers of ``hpo run --jobs``, ``hpo book``): bad input fails here, as one
    line, before the database is touched.  The data are loaded once per process
    (:func:`hpo.tuning.data.prepare_data`).

    Parameters
    ----------
    spec : StudySpec
    url : str
        SQLAlchemy URL of the study database.
    study_name : str, optional
        Default: the file's ``name``.
    create : bool
        False: the database and the study must exist already (``hpo worker``).
    load_data : bool
        False: skip the data and the memory check (``hpo create``).
    source : str, optional
        The study file's path, put in front of data and memory errors.

    Raises
    ------
    hpo.tuning.data.DataError, hpo.tuning.resources.TooLargeError
        The data cannot be loaded or split, or the smallest network of the study
        cannot be trained in the memory available.
    hpo.store.storage.StorageError
        The storage cannot be opened (or, without ``create``, does not exist).  Once
        open, calls to it wait out a database outage (:class:`hpo.store.retrying.RetryingStorage`).
    StudyMismatchError
        The stored study was made from another file, or (without ``create``) does not exist.
    """
    prefix = f"{source}: " if source else ""
    data = None
    if load_data:
        try:
            data = prepare_data(spec.dataset)
            check_augmentation_fits(spec, data)
            check_convolution_fits(spec, data)
            check_study_fits(spec, data)  # the smallest network the file allows must fit in memory
        except DataError as error:
            raise DataError(f"{prefix}{error}") from None
        except TooLargeError as error:
            raise TooLargeError(f"{prefix}parameters: {error}") from None
    name = study_name or spec.name
    # A worker joins an existing study: it creates no database and no tables.
    storage = RetryingStorage(open_storage(url, must_exist=not create, heartbeat=spec.heartbeat()))
    if not create and name not in optuna.get_all_study_names(storage):
        raise StudyMismatchError(f"no study {name!r} in {describe(url)}; create it first with `hpo create`")
    study = open_study(spec, storage, name, create=create)
    if data is not None and data.image_shape is not None:
        _check_same_images(study, data, prefix)
    return PreparedStudy(spec, data, url, storage, study)


def _check_same_images(study: optuna.Study, data: TuningData, prefix: str) -> None:
    """Refuse data files whose images have another shape than the study's trials trained on (as many pixels).

    Raises
    ------
    DataError
        Names both shapes and says to use the files the study was tuned on.
    """
    trained = {tuple(shape) for trial in study.get_trials(deepcopy=False)
               if (shape := trial.user_attrs.get(record.IMAGE_SHAPE))}
    now = tuple(data.image_shape)
    if trained - {now}:
        raise DataError(f"{prefix}dataset: the study's trials {other_images(min(trained - {now}), now)}")
