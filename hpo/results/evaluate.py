"""Turn one completed trial into a tested model: retrain, test, save, reload.

Tuning chose the trial on validation data; only here is the test set used
(book, section 6.5.1: test data judge the final model, once).  By default the
network the trial itself trained (its best epoch, kept as an Optuna artifact)
is tested.  Retrained, the trial's network is rebuilt with its parameters and
seed and trained on the training *and* validation images (all the data tuning
had) for the number of epochs at which the trial did best (user attribute
``best_epoch``) instead.

The result is saved in a folder as ``weights.npz`` (plain arrays, no pickle)
and ``model_card.json`` (what the model is, how it was trained, what it
scored, with which versions).  :func:`load_model` rebuilds the network from
that folder alone.  An ensemble of several trials (:mod:`hpo.results.ensemble`)
is saved in the same way: one weights file per member and one card listing
them; :func:`load_model` and :func:`predict` serve it like one network.

Which network stands for a trial by default (the *retraining policy*) is the
one constant :data:`STORED_WEIGHTS_BY_DEFAULT`; ``benchmarks/retraining.py``
measures both policies.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpo.config.spec import DatasetSpec, Parameters
from hpo.errors import HpoError
from hpo.results.model_folder import ModelFolder, prepare_model_directory
from hpo.store import record
from hpo.tuning.data import load_dataset, other_images
from hpo.tuning.objective import build_network, training_arguments, trial_seed
from models.datasets import Dataset
from models.ensemble import Ensemble
from models.network import MultiLayerNet, load_weights, save_weights
from models.trainer import TrainingResult, train

WEIGHTS_FILE = "weights.npz"
CARD_FILE = "model_card.json"
CARD_FORMAT = 2
"""Format of the model cards written now: 2 adds ``settings_sha256``; cards of format 1 (without it) still load."""
ENSEMBLE_KIND = "ensemble"
"""``kind`` of an ensemble's model card (a single network's card has no ``kind``)."""
STORED_WEIGHTS_BY_DEFAULT = True
"""The retraining policy of ``hpo evaluate`` without ``--stored-weights`` / ``--retrain``: True tests the weights
the trial itself trained (its best epoch on the training split); False retrains the trial's network on training +
validation images for its best epoch count.  Measured by ``benchmarks/retraining.py`` (2026-12-05, the main job's
best network, 3 seeds): test accuracy 0.8933 +/- 0.0013 for the trial's own network and 0.8933 +/- 0.0021
retrained, a tie; the stored weights win it by costing no training and being the very network validation chose."""


class EvaluationError(HpoError):
    """The trial cannot be evaluated (not completed, not an hpo study, no weights); one line."""


@dataclass(frozen=True)
class Evaluation:
    """The test-set result of one trial's model.

    Attributes
    ----------
    trial_number : int
    test_accuracy : float
        Fraction of the test images classified correctly, in [0, 1].
    predictions : ndarray of shape (n_test,), int64
        Predicted class of each test image.
    labels : ndarray of shape (n_test,), int64
        True class of each test image.
    inputs : ndarray of shape (n_test, n_features), float32
        The test images (to check that a saved model predicts the same).
    class_names : tuple of str
    per_class : list of dict
        One row per class: ``class``, ``name``, ``precision``, ``recall``,
        ``f1`` (fractions) and ``support`` (test images of the class).
    confusion : ndarray of shape (n_classes, n_classes), int64
        ``confusion[i, j]``: test images of class ``i`` predicted as ``j``.
    card : dict
        The model card (see :func:`evaluate_trial`), JSON-able.
    members : tuple of Evaluation
        For an ensemble, each member's own evaluation (best first); empty for one network.
    """

    trial_number: int
    test_accuracy: float
    predictions: np.ndarray
    labels: np.ndarray
    inputs: np.ndarray
    class_names: tuple[str, ...]
    per_class: list[dict[str, Any]]
    confusion: np.ndarray
    card: dict[str, Any]
    members: tuple[Evaluation, ...] = ()


def select_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The study's best trial, or trial ``number``; it must be COMPLETE.

    Raises
    ------
    EvaluationError
        No such trial, the trial is not complete (pruned, failed, running), or
        the study has no completed trial yet.
    """
    trials = study.get_trials(deepcopy=False)
    if number is None:
        if not any(trial.state == TrialState.COMPLETE for trial in trials):
            raise EvaluationError(f"study {study.study_name!r} has no completed trial yet; nothing to evaluate")
        return study.best_trial
    if not 0 <= number < len(trials):
        raise EvaluationError(
            f"no trial {number} in study {study.study_name!r} (trials 0 to {len(trials) - 1})"
        )
    trial = trials[number]
    if trial.state != TrialState.COMPLETE:
        why = "it stopped before its last epoch" if trial.state == TrialState.PRUNED else "it has no result"
        raise EvaluationError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name}: {why}, so it cannot be "
            "evaluated; choose a COMPLETE trial (see `hpo trials`)"
        )
    return trial


def check_made_by_hpo(study: optuna.Study) -> None:
    """Refuse a study that hpo did not create (it has no stored study file record).

    Raises
    ------
    EvaluationError
        As said, in one line.
    """
    if record.stored_study_file(study) is None:
        raise EvaluationError(f"study {study.study_name!r} was not created by hpo; it cannot be evaluated")


def trial_settings(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple[DatasetSpec, dict[str, Any]]:
    """The data set and all model/training settings of ``trial``, from the study's stored study file.

    Raises
    ------
    EvaluationError
        The study was not created by hpo (no stored study file record).
    """
    check_made_by_hpo(study)
    stored = record.stored_study_file(study)
    # JSON mode: the stored record went through JSON (paths are strings there).
    dataset = DatasetSpec.model_validate_json(json.dumps(stored["dataset"]))
    # A study stored before repeated choices were refused is still evaluated.
    parameters = Parameters.model_validate_json(json.dumps(stored["parameters"]), context={"stored": True})
    values = {**parameters.fixed(), **trial.params}
    missing = sorted(set(parameters.searched()) - set(trial.params))
    if missing:  # a trial added to the study by hand (optuna's add_trial), say
        raise EvaluationError(f"trial {trial.number} of study {study.study_name!r} has no value for "
                              f"{', '.join(missing)}, which the study searches; it was not run by hpo")
    return dataset, values


def evaluate_trial(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    *,
    stored_weights: dict[str, np.ndarray] | None = None,
    seed: int | None = None,
) -> tuple[MultiLayerNet, Evaluation]:
    """Train (or restore) the network of a completed trial and test it.

    Retraining (the default) builds the trial's network with the trial's seed
    and trains it on all training images of the study (training plus
    validation split, ``train_images`` respected) for ``best_epoch`` epochs with
    the trial's optimizer, learning rate, weight decay, batch size, augmentation and
    learning-rate schedule (the schedule of the trial's ``epochs``, stopped after
    ``best_epoch``: the rates of the epochs that made the trial's best network).  The
    test set is scored after each epoch for the model card's curve only; the
    number of epochs was fixed by tuning, so nothing is chosen on test data.

    Parameters
    ----------
    study : optuna.Study
        A study created by hpo (it stores its study file's data set and settings).
    trial : optuna.trial.FrozenTrial
        A COMPLETE trial of ``study`` (see :func:`select_trial`).
    stored_weights : dict of str to ndarray, optional
        The weights the trial itself trained (its artifact); tested as they are,
        without retraining.
    seed : int, optional
        Retrain with this seed instead of the trial's (``benchmarks/retraining.py``
        measures the spread over seeds).

    Returns
    -------
    network : MultiLayerNet
        The tested network (float32).
    evaluation : Evaluation

    Raises
    ------
    EvaluationError
        The study was not created by hpo, or the stored weights do not fit the
        trial's network.
    hpo.tuning.data.DataError
        The data set's files are missing or malformed.
    """
    dataset_spec, values = trial_settings(study, trial)
    dataset = load_training_and_test(dataset_spec)
    trained_on = trial.user_attrs.get(record.IMAGE_SHAPE)  # trials stored before it was recorded: not checked
    if trained_on and dataset.image_shape and list(dataset.image_shape) != list(trained_on):
        raise EvaluationError(f"trial {trial.number} {other_images(trained_on, dataset.image_shape)}")
    if seed is None:
        seed = trial.user_attrs.get(record.SEED, trial_seed(values["seed"], trial.number))
    training: dict[str, Any]
    if stored_weights is not None:
        network = build_network(values, dataset.x_train.shape[1], dataset.n_classes, seed=np.random.default_rng(seed),
                                image_shape=dataset.image_shape)
        try:
            network.load_state_dict(stored_weights)
        except ValueError as error:
            raise EvaluationError(f"trial {trial.number}: stored weights do not fit its network: {error}") from None
        training = {"mode": "stored weights of the trial (its best epoch on the training split)",
                    "epochs": trial.user_attrs.get(record.BEST_EPOCH), "train_images": None}
    else:
        epochs = int(trial.user_attrs.get(record.BEST_EPOCH, values["epochs"]))
        network, result = train_network(values, dataset.n_classes, dataset.x_train, dataset.t_train,
                                        dataset.x_test, dataset.t_test, epochs=epochs, seed=seed,
                                        image_shape=dataset.image_shape)
        if result.diverged:
            raise EvaluationError(f"trial {trial.number}: retraining on all training images diverged: "
                                  f"{result.message}; try --stored-weights")
        training = {
            "mode": "retrained on training + validation images",
            "epochs": epochs,
            "train_images": int(len(dataset.t_train)),
            "train_loss": [round(metrics.train_loss, 5) for metrics in result.history],
            "test_accuracy_per_epoch": [round(metrics.validation_accuracy, 5) for metrics in result.history],
        }
    evaluation = _score(network, dataset, trial, values, seed, dataset_spec, study.study_name, training)
    return network, evaluation


def load_training_and_test(dataset_spec: DatasetSpec) -> Dataset:
    """The study's data set: its first ``train_images`` training images (all of them by default) and the
    test set.

    Raises
    ------
    hpo.tuning.data.DataError
        The data set's files are missing or malformed.
    """
    dataset = load_dataset(dataset_spec)
    if dataset_spec.train_images is not None:
        dataset = dataset.take_train(dataset_spec.train_images)
    return dataset


def train_network(values: dict[str, Any], n_classes: int, x_train: np.ndarray, t_train: np.ndarray,
                  x_watch: np.ndarray, t_watch: np.ndarray, *, epochs: int, seed: int,
                  image_shape: tuple[int, int] | None = None,
                  keep_best: str | None = None) -> tuple[MultiLayerNet, TrainingResult]:
    """Build a trial's network from ``values`` and train it as a trial trains: one generator of ``seed``
    draws the initial weights, then the mini-batches.

    Parameters
    ----------
    values : dict
        All model and training settings of a trial (:func:`trial_settings`).
    n_classes : int
    x_train : ndarray of shape (N, D), float32
    t_train : ndarray of shape (N,), int64
    x_watch, t_watch : ndarray of shape (M, D) and (M,)
        Scored after each epoch (validation images, or test images for the card's curve only).
    epochs : int
        Epochs to train; the learning-rate schedule still spans the trial's ``epochs``, so the
        first ``epochs`` rates are the trial's.
    seed : int
    image_shape : (height, width), optional
        Of the flattened images, for the trial's augmentation (``Dataset.image_shape``).
    keep_best : {"validation_accuracy", "validation_loss"}, optional
        Keep the weights of the epoch that was best on ``x_watch`` by this metric (ties: the
        earlier epoch), as a trial's weights artifact does; default: the last epoch's.

    Returns
    -------
    network : MultiLayerNet
    result : models.trainer.TrainingResult
        Per-epoch metrics; ``diverged`` says whether training stopped early.
    """
    rng = np.random.default_rng(seed)
    network = build_network(values, x_train.shape[1], n_classes, seed=rng, image_shape=image_shape)
    best: dict[str, Any] = {}

    def keep(metrics: Any) -> None:
        score = getattr(metrics, keep_best) * (1 if keep_best == "validation_accuracy" else -1)
        if "score" not in best or score > best["score"]:
            best.update(score=score, state=network.state_dict())

    # The trial's optimizer, schedule (over its epochs) and augmentation.
    optimizer, arguments = training_arguments(values, image_shape)
    result = train(network, optimizer, x_train, t_train, x_watch, t_watch, rng=rng,
                   callback=keep if keep_best else None, **{**arguments, "epochs": epochs})
    if best and not result.diverged:
        network.load_state_dict(best["state"])
    return network, result


def test_report(predictions: np.ndarray, labels: np.ndarray, n_classes: int,
                class_names: tuple[str, ...]) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Per-class scores and the confusion matrix of test predictions (scikit-learn's metrics).

    Parameters
    ----------
    predictions, labels : ndarray of shape (n_test,), int64
    n_classes : int
    class_names : tuple of str

    Returns
    -------
    per_class : list of dict
        ``class``, ``name``, ``precision``, ``recall`` (the class's accuracy), ``f1`` and ``support``.
    confusion : ndarray of shape (n_classes, n_classes), int64
    """
    from sklearn.metrics import (  # two seconds to import
        confusion_matrix,
        precision_recall_fscore_support,
    )

    classes = np.arange(n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=classes, zero_division=0
    )
    per_class = [
        {"class": int(k), "name": class_names[k], "precision": round(float(precision[k]), 4),
         "recall": round(float(recall[k]), 4), "f1": round(float(f1[k]), 4), "support": int(support[k])}
        for k in classes
    ]
    return per_class, confusion_matrix(labels, predictions, labels=classes)


def _score(network: MultiLayerNet, dataset: Dataset, trial: optuna.trial.FrozenTrial, values: dict[str, Any],
           seed: int, dataset_spec: DatasetSpec, study_name: str, training: dict[str, Any]) -> Evaluation:
    predictions = predict(network, dataset.x_test)
    labels = dataset.t_test
    per_class, confusion = test_report(predictions, labels, dataset.n_classes, dataset.class_names)
    test_accuracy = float(np.mean(predictions == labels))
    card = {
        "format": CARD_FORMAT,
        "study": study_name,
        "trial": trial.number,
        "validation_accuracy": trial.value,
        "test_accuracy": round(test_accuracy, 6),
        "test_images": int(len(labels)),
        "parameters": values,
        "seed": int(seed),
        "data": {**dataset_spec.model_dump(mode="json"), "class_names": list(dataset.class_names),
                 "n_features": int(dataset.x_train.shape[1]),
                 "image_shape": list(dataset.image_shape) if dataset.image_shape else None},
        "training": training,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "versions": software_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Evaluation(trial.number, test_accuracy, predictions, labels, dataset.x_test, dataset.class_names, per_class,
                      confusion, card)


def predict(network: MultiLayerNet | Ensemble, x: np.ndarray) -> np.ndarray:
    """Predicted classes in test mode (no dropout, running batch-norm statistics).

    Parameters
    ----------
    network : MultiLayerNet or models.ensemble.Ensemble
        One network (argmax of its scores) or an ensemble (argmax of its mean softmax probabilities).
    x : ndarray of shape (N, D), float32
        D is the network's input size (the card's ``data.n_features``); pixels scaled to [0, 1]
        as in training.

    Returns
    -------
    ndarray of shape (N,), int64

    Raises
    ------
    ValueError
        ``x`` is not two-dimensional with D columns, or not numbers in [0, 1] (NaN, infinite,
        or pixels not scaled as in training, such as 8-bit values 0..255).
    """
    size = getattr(network.networks[0] if isinstance(network, Ensemble) else network, "input_size", "D")
    if np.ndim(x) != 2 or size != "D" and np.shape(x)[1] != size:
        raise ValueError(f"x: expected an array of shape (N, {size}) (the card's data.n_features), "
                         f"got shape {np.shape(x)}")
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"x: expected numbers (float32 pixels in [0, 1]), got dtype {x.dtype}")
    if x.size and not (np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1):
        bad = "NaN or infinite values" if not np.isfinite(x).all() else f"values from {x.min():g} to {x.max():g}"
        raise ValueError(f"x: holds {bad}; give pixels scaled to [0, 1] as in training (8-bit images: divide by 255)")
    return np.concatenate([np.empty(0, dtype=np.int64)] + [network.predict(x[start:start + 4096]).argmax(axis=1)
                                                          for start in range(0, len(x), 4096)]).astype(np.int64)


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages a model card names."""
    versions = {"python": platform.python_version()}
    for package in ("hpo-from-scratch", "numpy", "optuna", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def save_model(directory: str | Path, network: MultiLayerNet | Ensemble,
               evaluation: Evaluation) -> tuple[Path, Path]:
    """Write ``weights.npz`` and ``model_card.json`` into ``directory`` (created if needed).

    The card records the SHA-256 of the weights file, checked by :func:`load_model`.  An
    ensemble writes one ``weights-trial-N.npz`` per member instead, each file and its SHA-256
    named in the card's ``members`` list (in ``evaluation.members`` order).

    Returns
    -------
    weights_path, card_path : Path
        For an ensemble, the first member's weights file.

    Raises
    ------
    OSError
        The folder or files cannot be written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    card_path = directory / CARD_FILE
    if isinstance(network, Ensemble):
        members, paths = [], []
        for member, member_card in zip(network.networks, evaluation.card["members"]):
            paths.append(directory / f"weights-trial-{member_card['trial']}.npz")
            save_weights(member, paths[-1])
            members.append({**member_card, "weights_file": paths[-1].name, "weights_sha256": _sha256(paths[-1]),
                            "settings_sha256": _settings_sha256(member_card, evaluation.card["data"])})
        card = {**evaluation.card, "members": members}
        card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        return paths[0], card_path
    weights_path = directory / WEIGHTS_FILE
    save_weights(network, weights_path)
    card = {**evaluation.card, "weights_file": WEIGHTS_FILE, "weights_sha256": _sha256(weights_path),
            "settings_sha256": _settings_sha256(evaluation.card, evaluation.card["data"])}
    card_path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return weights_path, card_path


def save_checked_model(directory: str | Path | ModelFolder, network: MultiLayerNet | Ensemble,
                       evaluation: Evaluation) -> tuple[Path, Path]:
    """:func:`save_model` into a fresh sibling folder, load it back and check that it predicts exactly what
    was tested, then rename it into place (:meth:`ModelFolder.install`).

    Parameters
    ----------
    directory : str, Path or ModelFolder
        A folder claimed by :func:`prepare_model_directory` (a path is claimed here, without
        ``overwrite``).

    Returns
    -------
    weights_path, card_path : Path
        In the final folder.

    Raises
    ------
    EvaluationError
        The folder cannot be claimed or written, or the saved model does not reproduce the
        tested predictions (all ``evaluation.predictions``, bit for bit); the folder then keeps
        what it held.
    """
    if not isinstance(directory, ModelFolder):
        with prepare_model_directory(directory) as folder:
            return save_checked_model(folder, network, evaluation)
    folder = directory
    try:
        weights_path, card_path = save_model(folder.staging, network, evaluation)
    except OSError as error:
        raise EvaluationError(f"cannot save the model in {folder.path}: {error.strerror or error}") from None
    reloaded, _ = load_model(folder.staging)
    if not np.array_equal(predict(reloaded, evaluation.inputs), evaluation.predictions):
        raise EvaluationError(f"the model saved in {folder.path} does not reproduce the tested predictions")
    folder.install()
    return folder.path / weights_path.name, folder.path / card_path.name


def load_model(directory: str | Path) -> tuple[MultiLayerNet | Ensemble, dict[str, Any]]:
    """Rebuild a saved model from its folder: the card's settings plus its weights file(s).

    Parameters
    ----------
    directory : str or Path
        A folder written by :func:`save_model`.

    Returns
    -------
    network : MultiLayerNet or models.ensemble.Ensemble
        Ready for :func:`predict` (float32 inputs of shape (N, n_features)); an
        ensemble's card (``kind`` "ensemble") gives an Ensemble of its members.
    card : dict
        The model card.

    Raises
    ------
    EvaluationError
        Missing or unreadable files, a card of another format, or weights whose
        checksum or shapes do not match the card.
    """
    directory = Path(directory)
    card_path = directory / CARD_FILE
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvaluationError(f"{card_path}: cannot read the model card: {error}") from None
    if not isinstance(card, dict) or card.get("format") not in (1, CARD_FORMAT):
        raise EvaluationError(f"{card_path}: not a model card of format 1 or {CARD_FORMAT}")
    if card.get("kind") != ENSEMBLE_KIND:
        return _load_network(directory, card_path, card, card), card
    members = card.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(member, dict) for member in members):
        raise EvaluationError(f"{card_path}: an ensemble's card without its list of members; save it again")
    return Ensemble([_load_network(directory, card_path, member, card) for member in members]), card


def _load_network(directory: Path, card_path: Path, entry: dict[str, Any], card: dict[str, Any]) -> MultiLayerNet:
    """The network of ``entry`` (a card, or an ensemble card's member): its checked weights file, its settings."""
    weights_path = directory / Path(str(entry.get("weights_file", WEIGHTS_FILE))).name  # never outside the folder
    try:
        checksum = _sha256(weights_path)
    except OSError as error:
        raise EvaluationError(f"{weights_path}: cannot read the weights: {error.strerror or error}") from None
    if checksum != entry.get("weights_sha256"):  # checked first: a damaged file is never parsed
        raise EvaluationError(f"{weights_path}: checksum differs from the model card; the file was changed")
    checked = card.get("format") != 1  # format 1 cards were written before the settings checksum
    if checked and entry.get("settings_sha256") != _settings_sha256(entry, card.get("data")):
        raise EvaluationError(f"{card_path}: the network's settings (parameters, data.n_features, data.image_shape, "
                              "data.class_names) differ from those saved with its weights; the card was edited: save "
                              "the model again with hpo evaluate")
    try:
        state = load_weights(weights_path)
        data = card["data"]
        image_shape = data.get("image_shape")  # cards of models before convolutions lack it
        network = build_network(entry["parameters"], data["n_features"], len(data["class_names"]), seed=0,
                                image_shape=tuple(image_shape) if image_shape else None)
    except (KeyError, TypeError, ValueError) as error:
        raise EvaluationError(f"{card_path}: the model card does not describe a network of this project "
                              f"({type(error).__name__}: {error}); save the model again with hpo evaluate") from None
    try:
        network.load_state_dict(state)
    except ValueError as error:
        raise EvaluationError(f"{weights_path}: does not fit the model card's network: {error}") from None
    return network


def _settings_sha256(entry: dict[str, Any], data: Any) -> str:
    """SHA-256 of what rebuilds a network from a card (its parameters, the input size, image shape and classes).

    A card without it (saved before it existed) loads as before; one whose settings were edited is refused,
    where the weights' own checksum could not see it (a changed image shape or activation fits the same arrays).
    """
    data = data if isinstance(data, dict) else {}
    settings = {"parameters": entry.get("parameters"), "n_features": data.get("n_features"),
                "image_shape": data.get("image_shape"), "class_names": data.get("class_names")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
