"""The top K completed trials of a study, combined into one model by averaging their softmax outputs.

Book, section 6.4.3: several networks trained alike, with their outputs
averaged at test time, recognize a few points better than one.  Each member
is a trial's network exactly as :func:`hpo.results.evaluate.evaluate_trial`
makes it (retrained, or the trial's stored weights), tested alone; the
ensemble (:class:`models.ensemble.Ensemble`) averages the members' softmax
probabilities.  It is saved and loaded like one network
(:func:`hpo.results.evaluate.save_checked_model`, :func:`~hpo.results.evaluate.load_model`).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.results.evaluate import (
    CARD_FORMAT,
    ENSEMBLE_KIND,
    Evaluation,
    EvaluationError,
    evaluate_trial,
    predict,
    software_versions,
    test_report,
)
from models.ensemble import Ensemble
from models.network import MultiLayerNet

COMBINATION = "mean of the members' softmax probabilities; class = argmax"


def select_top_trials(study: optuna.Study, k: int) -> list[optuna.trial.FrozenTrial]:
    """The ``k`` best COMPLETE trials of ``study`` by its direction, best first (ties: lower number first).

    Raises
    ------
    EvaluationError
        ``k`` < 1, or the study has fewer than ``k`` completed trials.
    """
    if k < 1:
        raise EvaluationError(f"--ensemble: expected at least 1 member, got {k}")
    complete = [trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len(complete) < k:
        raise EvaluationError(f"--ensemble {k}: study {study.study_name!r} has {len(complete)} completed "
                              f"trial{'' if len(complete) == 1 else 's'}; ask for at most {len(complete)}")
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(complete, key=lambda trial: (sign * trial.value, trial.number))[:k]


def evaluate_ensemble(
    study: optuna.Study,
    trials: list[optuna.trial.FrozenTrial],
    *,
    stored_weights: Callable[[optuna.trial.FrozenTrial], dict[str, np.ndarray]] | None = None,
) -> tuple[Ensemble, Evaluation]:
    """Make and test each trial's network as ``hpo evaluate`` does, then their ensemble.

    Parameters
    ----------
    study : optuna.Study
        A study created by hpo.
    trials : list of FrozenTrial
        COMPLETE trials of ``study`` (:func:`select_top_trials`), best first.
    stored_weights : callable, optional
        ``stored_weights(trial)`` gives the weights the trial stored (its artifact);
        without it, each member is retrained.

    Returns
    -------
    ensemble : models.ensemble.Ensemble
        The members' networks, in the order of ``trials``.
    evaluation : Evaluation
        The ensemble's test result; ``members`` holds each member's own
        :class:`~hpo.results.evaluate.Evaluation`; ``trial_number`` is the best member's.
        The card lists the members (trial, validation value, test accuracy,
        parameters, seed, training) and the ensemble's test accuracy, per-class
        table and confusion matrix.

    Raises
    ------
    EvaluationError, hpo.store.artifacts.ArtifactError, hpo.tuning.data.DataError
        As :func:`~hpo.results.evaluate.evaluate_trial` and the weights' download.
    """
    networks: list[MultiLayerNet] = []
    members: list[Evaluation] = []
    for trial in trials:
        weights = stored_weights(trial) if stored_weights is not None else None
        network, evaluation = evaluate_trial(study, trial, stored_weights=weights)
        networks.append(network)
        members.append(evaluation)
    ensemble = Ensemble(networks)
    first = members[0]
    predictions = predict(ensemble, first.inputs)
    per_class, confusion = test_report(predictions, first.labels, len(first.class_names), first.class_names)
    test_accuracy = float(np.mean(predictions == first.labels))
    card = {
        "format": CARD_FORMAT,
        "kind": ENSEMBLE_KIND,
        "study": study.study_name,
        "combination": COMBINATION,
        "test_accuracy": round(test_accuracy, 6),
        "test_images": len(first.labels),
        "members": [{"trial": member.trial_number, "validation_value": member.card["validation_accuracy"],
                     "test_accuracy": member.card["test_accuracy"], "parameters": member.card["parameters"],
                     "seed": member.card["seed"], "training": member.card["training"]} for member in members],
        "data": first.card["data"],
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "versions": software_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017
    }
    evaluation = Evaluation(first.trial_number, test_accuracy, predictions, first.labels, first.inputs,
                            first.class_names, per_class, confusion, card, members=tuple(members))
    return ensemble, evaluation
