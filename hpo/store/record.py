"""The trial record: every attribute hpo stores on a study and on its trials, in one place.

Optuna keeps, per study and per trial, a JSON-able dict of user attributes.  hpo writes:

On the study (by :func:`hpo.tuning.study.open_study`)

``STUDY_FILE`` = ``"hpo_spec"``
    The study file's identity (direction, metric, dataset, parameters; see
    :meth:`hpo.config.spec.StudySpec.identity`), written when the study is created.  Resuming,
    narrowing, evaluating, plotting and summarizing read the study's settings from it.
``WORKER_SETTINGS`` = ``"hpo_workers"``
    The study file's ``[workers]`` section (heartbeat interval, grace period, retries),
    rewritten by every run; ``hpo stale`` reads its grace period.

On each trial (by :class:`hpo.tuning.objective.Objective` and :mod:`hpo.tuning.worker`)

``WORKER`` (``"worker"``), ``SEED`` (``"seed"``, of the weights and mini-batches), ``IMAGE_SHAPE``
(``[height, width]`` of the images it trained on, or None; ``hpo evaluate`` refuses other files),
``EPOCHS_RUN``, ``BEST_EPOCH`` (1-based), ``LEARNING_CURVES`` (per-epoch lists),
``TRAIN_SECONDS`` (seconds of training), ``WEIGHTS_ARTIFACT`` (the Optuna artifact id of
the best epoch's weights), ``CHECKPOINT_ARTIFACT`` (the artifact id of the running trial's latest
checkpoint, :mod:`hpo.store.checkpoints`; copied to its retry, which continues from it; the file
is removed when the trial finishes, the attribute stays), ``RESUMED_FROM_EPOCH`` (on a retry that
continued from a checkpoint: the checkpoint's epoch), and, on a trial that ended early, ``DIVERGED`` or
``TOO_LARGE`` (the reason, PRUNED) or ``NOT_RUN`` (FAIL: the budget was met first).

On a queued retry of a failed trial (by :class:`hpo.store.requeue.RetryStaleTrial`), beside Optuna's own
system attributes ``failed_trial`` and ``retry_history``

``INTERRUPTIONS`` (``"hpo:interrupted"``, a system attribute)
    The numbers of the trials of ``retry_history`` that failed because their worker was stopped by a
    signal; the others crashed (a stale heartbeat, or failed by hand), and only those count against
    ``workers.max_retry``.

Of the failed trial's user attributes the retry carries only ``CARRIED_TO_RETRY``: the ``SEED`` it
trains with and the ``CHECKPOINT_ARTIFACT`` it continues from.  The others (epochs, best epoch,
curves, seconds, worker, ``RESUMED_FROM_EPOCH``) describe training the retry has not done; it
writes its own.

This module imports neither NumPy nor models/: reports, plots and summaries read the
record without loading the network code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = [
    "BEST_EPOCH", "CARRIED_TO_RETRY", "CHECKPOINT_ARTIFACT", "DIVERGED", "EPOCHS_RUN", "FINISHED_STATES", "IMAGE_SHAPE", "INTERRUPTIONS", "LEARNING_CURVES",
    "NOT_RUN", "RESUMED_FROM_EPOCH", "SEED", "STUDY_FILE", "TOO_LARGE", "TRAIN_SECONDS", "WEIGHTS_ARTIFACT", "WORKER",
    "WORKER_SETTINGS", "differences", "stored_metric", "stored_parameters", "stored_study_file", "stored_worker_settings",
]

# ------------------------------------------------------------------ study attributes
STUDY_FILE = "hpo_spec"
WORKER_SETTINGS = "hpo_workers"

# ------------------------------------------------------------------ trial attributes
WORKER = "worker"
SEED = "seed"
EPOCHS_RUN = "epochs_run"
BEST_EPOCH = "best_epoch"
LEARNING_CURVES = "learning_curves"
TRAIN_SECONDS = "train_seconds"
WEIGHTS_ARTIFACT = "weights_artifact_id"
CHECKPOINT_ARTIFACT = "checkpoint_artifact_id"
RESUMED_FROM_EPOCH = "resumed_from_epoch"
IMAGE_SHAPE = "image_shape"  # [height, width] of the images the trial trained on; hpo evaluate checks the data
DIVERGED = "diverged"
TOO_LARGE = "too_large"
NOT_RUN = "not_run"

# ------------------------------------------------------------------ system attributes of a retry
INTERRUPTIONS = "hpo:interrupted"
CARRIED_TO_RETRY = (SEED, CHECKPOINT_ARTIFACT)
"""The user attributes a queued retry takes over from the failed trial (what continuing it needs)."""

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
"""States that count against the trial budget (those of Optuna's ``MaxTrialsCallback``)."""


def stored_study_file(study: optuna.Study) -> dict[str, Any] | None:
    """The study file's identity stored on ``study``, or None for a study hpo did not create."""
    stored = study.user_attrs.get(STUDY_FILE)
    return stored if isinstance(stored, dict) else None


def stored_metric(study: optuna.Study) -> str:
    """``"validation_accuracy"`` or ``"validation_loss"``; the former for a study hpo did not create."""
    return (stored_study_file(study) or {}).get("metric", "validation_accuracy")


def stored_parameters(study: optuna.Study) -> dict[str, Any]:
    """The stored ``[parameters]`` table: name -> fixed value, or a dict of a range or choices."""
    return (stored_study_file(study) or {}).get("parameters", {})


def stored_worker_settings(study: optuna.Study) -> dict[str, Any]:
    """The stored ``[workers]`` table ({} if none was stored)."""
    stored = study.user_attrs.get(WORKER_SETTINGS)
    return stored if isinstance(stored, dict) else {}


def differences(stored: Any, current: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """Where a study file's identity differs from the stored one: (dotted path, stored JSON, file JSON).

    Examples
    --------
    >>> list(differences({"parameters": {"epochs": 5}}, {"parameters": {"epochs": 6}}))
    [('parameters.epochs', '5', '6')]
    """
    if isinstance(stored, dict) and isinstance(current, dict):
        for key in sorted(set(stored) | set(current)):
            yield from differences(stored.get(key), current.get(key), f"{path}.{key}" if path else key)
    elif stored != current:
        yield path, json.dumps(stored), json.dumps(current)
