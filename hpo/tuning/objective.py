"""Trial -> trained network -> value: the Optuna objective.

Each trial samples the searched parameters (log-uniform learning rate and
weight decay, book section 6.5.2), builds a :class:`models.network.MultiLayerNet`,
trains it on the training split, reports the validation metric after every
epoch (``trial.report(value, epoch)``) and is pruned when the study's pruner
says so (book section 6.5.2: give up early on bad values).  The test set is
never used here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore

from hpo.config.spec import Choices, FloatRange, IntRange, StudySpec
from hpo.store import record
from hpo.store.artifacts import upload_weights
from hpo.store.checkpoints import CheckpointKeeper, load_checkpoint
from hpo.store.retrying import RetryingStorage
from hpo.tuning import resources
from hpo.tuning.data import TuningData
from models.augmentation import make_augmentation
from models.checkpoint import Checkpoint, random_generators
from models.network import MultiLayerNet
from models.optimizers import Optimizer, make_optimizer
from models.schedules import make_schedule
from models.trainer import EpochMetrics, train

_logger = logging.getLogger(__name__)


def suggest_parameters(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """All model and training settings of one trial: fixed values plus sampled ones.

    Ranges map to ``trial.suggest_float`` / ``trial.suggest_int`` (``log = true``
    samples uniformly in log space), choices to ``trial.suggest_categorical``.
    """
    values = spec.parameters.fixed()
    for name, searched in spec.parameters.searched().items():
        values[name] = _suggest(trial, name, searched)
    return values


def _suggest(trial: optuna.Trial, name: str, searched: Choices | IntRange | FloatRange) -> Any:
    if isinstance(searched, Choices):
        return trial.suggest_categorical(name, searched.choices)
    if isinstance(searched, IntRange):
        return trial.suggest_int(name, searched.low, searched.high, step=searched.step, log=searched.log)
    return trial.suggest_float(name, searched.low, searched.high, step=searched.step, log=searched.log)


def trial_seed(base_seed: int, trial_number: int) -> int:
    """The seed of trial ``trial_number``: independent streams from NumPy's SeedSequence."""
    return int(np.random.SeedSequence([base_seed, trial_number]).generate_state(1)[0])


def build_network(values: dict[str, Any], n_features: int, n_classes: int, seed: int,
                  image_shape: tuple[int, int] | None = None) -> MultiLayerNet:
    """The network one trial trains, from its settings (see :func:`suggest_parameters`).

    With ``convolution_layers`` > 0 the inputs are images of ``image_shape`` (height,
    width); block k has ``convolution_channels * 2 ** (k - 1)`` filters.

    Raises
    ------
    ValueError
        Convolution blocks without an image shape, or more blocks than the images
        can be halved (the message names the setting).
    """
    blocks = values.get("convolution_layers", 0)  # models saved before convolutions have none
    channels = [values.get("convolution_channels", 16) * 2 ** k for k in range(blocks)]
    return MultiLayerNet(
        convolution_channels=channels,
        image_shape=image_shape if blocks else None,
        input_size=n_features,
        hidden_sizes=[values["hidden_size"]] * values["hidden_layers"],
        output_size=n_classes,
        activation=values["activation"],
        weight_init=values["weight_init"],
        batch_norm=values["batch_norm"],
        dropout=values["dropout"],
        weight_decay=values["weight_decay"],
        seed=seed,
    )


def training_arguments(values: dict[str, Any], image_shape: tuple[int, int] | None) -> tuple[Optimizer, dict[str, Any]]:
    """The optimizer and the keyword arguments of :func:`models.trainer.train` of one trial's settings.

    One place for everything that trains from a trial's values (the objective and
    :func:`hpo.results.evaluate.evaluate_trial`): the optimizer with the trial's
    learning rate (a number or "default", the optimizer's own), ``epochs``,
    ``batch_size``, the learning-rate ``schedule`` over the trial's ``epochs`` with its
    warmup (from the optimizer's rate) and the ``augmentation`` of images of
    ``image_shape`` ((height, width), or None when the data set does not say).
    """
    optimizer = make_optimizer(values["optimizer"], values["learning_rate"])
    schedule = make_schedule(values["learning_rate_schedule"], optimizer.lr, values["epochs"], values["warmup_epochs"])
    return optimizer, {
        "epochs": values["epochs"],
        "batch_size": values["batch_size"],
        "schedule": schedule,
        "augmentation": make_augmentation(values["augmentation"], image_shape),
    }


class Objective:
    """The Optuna objective of a study: ``objective(trial) -> best validation metric``.

    Parameters
    ----------
    spec : StudySpec
        The study file (search space, fixed settings, metric).
    data : TuningData
        Training and validation split, loaded once per process and shared by trials.
    after_epoch : callable, optional
        Called with no argument after each epoch's report (the worker checks for
        trials of dead workers there).
    before_batch : callable, optional
        Called with no argument before every mini-batch (see
        :func:`models.trainer.train`); what it raises ends the trial (the worker
        stops there when a signal asked it to, :func:`hpo.interrupts.check`).
    storage : hpo.store.retrying.RetryingStorage, optional
        The study's storage: a trial's user attributes are then written in two
        transactions (at its start, at its end) instead of one each.  (Retries of
        storage calls through a database outage are the storage's: see
        :mod:`hpo.store.retrying`.)
    user_attrs : dict, optional
        User attributes stored on every trial at its start, with its seed (the
        worker stores its ``worker`` id).
    artifact_store : optuna.artifacts.FileSystemArtifactStore, optional
        Where a completed trial uploads its network's weights at its best epoch
        (see :mod:`hpo.store.artifacts`); the artifact id becomes the user attribute
        ``weights_artifact_id``.  None stores no weights.

    Notes
    -----
    A trial whose loss explodes (a diverged trial: a loss that is not finite or
    exceeds 100 x max(first mini-batch loss, ln C), see
    :func:`models.trainer.divergence_limit`) is ended as PRUNED with the user
    attribute ``diverged`` giving the reason: the study goes on, the trial never
    has a NaN value and is never the best, and the sampler still learns that the
    region is bad.  A trial whose network cannot fit in memory ends the same way
    with the user attribute ``too_large``: before the network is built, when
    :func:`hpo.tuning.resources.trial_memory` exceeds :func:`hpo.tuning.resources.available_memory`,
    or when training raises MemoryError all the same.  Both count against the
    budget, so a space that is mostly too large still ends.

    Learning curves (per-epoch training loss/accuracy, validation loss/accuracy,
    and compute seconds of training plus validation, plus test-mode training
    loss/accuracy ``train_eval_loss`` and ``train_eval_accuracy`` with
    ``parameters.evaluate_train``, and the ``learning_rate`` of each epoch) are stored as the user attribute
    ``learning_curves``; the validation metric per epoch also as intermediate
    values.  Trial *n* trains with :func:`trial_seed` of (seed, n), or with
    ``seed`` itself when ``parameters.seed_per_trial`` is false.

    With an ``artifact_store``, a running trial keeps a checkpoint of its latest epoch
    every ``workers.checkpoint_every_epochs`` epochs (:mod:`hpo.store.checkpoints`).  A
    retry of a failed trial (it carries the failed trial's seed and checkpoint id,
    :data:`hpo.store.record.CARRIED_TO_RETRY`) trains
    with the failed trial's seed and, when it names a checkpoint, reports the checkpoint's
    epochs as its own intermediate values (the pruner sees the same curve) and continues
    from the next epoch; its user attribute ``resumed_from_epoch`` says from where.
    """

    def __init__(self, spec: StudySpec, data: TuningData, *, after_epoch: Callable[[], None] | None = None,
                 artifact_store: FileSystemArtifactStore | None = None,
                 before_batch: Callable[[], None] | None = None, storage: RetryingStorage | None = None,
                 user_attrs: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.data = data
        self.after_epoch = after_epoch
        self.artifact_store = artifact_store
        self.before_batch = before_batch
        self.storage = storage
        self.user_attrs = dict(user_attrs or {})
        # Epochs this objective trained, over all its trials (not those a retry took over from a checkpoint).
        self.epochs_trained = 0

    def _store(self, trial: optuna.Trial, attributes: dict[str, Any]) -> None:
        """Write user attributes of the running trial: in one transaction when the storage allows it."""
        if self.storage is not None:
            # Optuna has no public accessor for a trial's storage id; its own heartbeat thread uses this one.
            self.storage.set_trial_user_attrs(trial._trial_id, attributes)
            return
        for key, value in attributes.items():
            trial.set_user_attr(key, value)

    def __call__(self, trial: optuna.Trial) -> float:
        inherited = trial.user_attrs  # a retry's seed and checkpoint id (hpo.store.requeue); else {}
        fixed = self.spec.parameters.fixed()  # the seed is never searched
        seed = trial_seed(fixed["seed"], trial.number) if fixed["seed_per_trial"] else fixed["seed"]
        seed = inherited.get(record.SEED, seed)  # a retry trains as the trial it repeats
        shape = list(self.data.image_shape) if self.data.image_shape else None
        self._store(trial, {**self.user_attrs, record.SEED: seed, record.IMAGE_SHAPE: shape})
        values = suggest_parameters(trial, self.spec)
        # A network that cannot fit ends before it is built (resources: estimate and machine).
        needed = resources.trial_memory(values, self.data, keep_best_weights=self.artifact_store is not None)
        available = resources.available_memory()
        described = f"the network ({resources.describe_network(values)})"
        if needed > available:
            self._too_large(trial, values, f"{described} needs {resources.format_bytes(needed)} to train; this "
                                           f"machine has {resources.format_bytes(available)} available",
                            untrained=_record([], self.spec.metric, 0.0))
        try:
            return self._train(trial, values, seed, inherited.get(record.CHECKPOINT_ARTIFACT))
        except MemoryError:
            pass  # leaving the handler frees the network's arrays (the exception's frames) before storing
        self._too_large(trial, values, f"{described} ran out of memory while training (estimated "
                                       f"{resources.format_bytes(needed)}, {resources.format_bytes(available)} "
                                       "available at its start)")

    def _too_large(self, trial: optuna.Trial, values: dict[str, Any], reason: str, *,
                   untrained: dict[str, Any] | None = None) -> NoReturn:
        """End ``trial`` as PRUNED with the user attribute ``too_large`` (like ``diverged``).

        ``values``: the trial's settings, for what to lower; ``untrained``: the attributes of a
        trial that trained no epoch (it was refused before).
        """
        reason = f"{reason}; {resources.lower(values)}"
        self._store(trial, {**(untrained or {}), record.TOO_LARGE: reason})
        raise optuna.TrialPruned(f"too large: {reason}")

    def _train(self, trial: optuna.Trial, values: dict[str, Any], seed: int, checkpoint_id: str | None) -> float:
        """Build, train and report the network of ``values`` (from the checkpoint ``checkpoint_id`` when it can be
        read); its best validation metric."""
        rng = np.random.default_rng(seed)
        network = build_network(values, self.data.n_features, self.data.n_classes, seed=rng,
                                image_shape=self.data.image_shape)
        optimizer, arguments = training_arguments(values, self.data.image_shape)
        metric = self.spec.metric
        history: list[EpochMetrics] = []
        best_state: dict[str, np.ndarray] = {}  # the network at its best epoch so far, for the weights artifact
        resume = self._resume(trial, checkpoint_id, history, best_state, values["epochs"],
                              network=network, generators=random_generators(network, rng))
        keep = None
        every = self.spec.workers.checkpoint_every_epochs
        if self.artifact_store is not None and every > 0:
            keeper = CheckpointKeeper(trial.number, self.artifact_store, current=checkpoint_id,
                                      store_attribute=lambda new: self._store(trial, {record.CHECKPOINT_ARTIFACT: new}))

            def keep(checkpoint: Checkpoint) -> None:
                if _best_index(history, metric) != len(history) - 1:  # the best epoch is an earlier one: keep it too
                    checkpoint.extras["best"] = best_state
                keeper(checkpoint)

        def report(metrics: EpochMetrics) -> None:
            history.append(metrics)
            self.epochs_trained += 1
            if self.artifact_store is not None and _is_new_best(history, metric):
                best_state.update(network.state_dict())
            trial.report(getattr(metrics, metric), metrics.epoch)
            if self.after_epoch is not None:
                self.after_epoch()
            last_epoch = metrics.epoch == values["epochs"]  # a finished run is complete, not pruned
            if not last_epoch and trial.should_prune():
                raise optuna.TrialPruned(
                    f"pruned after epoch {metrics.epoch} with {metric} {getattr(metrics, metric):.4f}"
                )

        started = time.perf_counter()
        try:
            result = train(
                network,
                optimizer,
                self.data.x_train,
                self.data.t_train,
                self.data.x_validation,
                self.data.t_validation,
                rng=rng,
                callback=report,
                evaluate_train=values["evaluate_train"],
                before_batch=self.before_batch,
                **arguments,
                resume_from=resume,
                checkpoint_every=max(every, 1),  # (every = 0: no keep, no checkpoints)
                on_checkpoint=keep,
            )
        except BaseException:
            # Pruned, interrupted or failed: what it trained is kept.
            self._store(trial, _record(history, metric, time.perf_counter() - started))
            raise
        attributes = _record(history, metric, time.perf_counter() - started)
        if result.diverged:
            self._store(trial, {**attributes, record.DIVERGED: result.message})
            raise optuna.TrialPruned(f"diverged: {result.message}")
        if self.artifact_store is not None and best_state:
            network.load_state_dict(best_state)
            attributes[record.WEIGHTS_ARTIFACT] = upload_weights(network, trial, self.artifact_store)
        self._store(trial, attributes)
        return _best(history, metric)

    def _resume(self, trial: optuna.Trial, checkpoint_id: str | None, history: list[EpochMetrics],
                best_state: dict[str, np.ndarray], epochs: int, *, network: MultiLayerNet,
                generators: dict[str, np.random.Generator]) -> Checkpoint | None:
        """The checkpoint a retry continues from, its epochs reported and put in ``history``; None to start afresh.

        A checkpoint that does not fit the trial (:meth:`models.checkpoint.Checkpoint.check`: its epoch,
        history, parameter shapes or generators; a file changed by hand, say) is logged and ignored
        before anything is reported: the retry then trains from epoch 1.
        """
        if not checkpoint_id or self.artifact_store is None:
            return None
        checkpoint = load_checkpoint(checkpoint_id, self.artifact_store)
        if checkpoint is None:
            return None
        try:
            checkpoint.check(epochs, network, generators)
            rows = [EpochMetrics(**row) for row in checkpoint.history]
        except (TypeError, ValueError) as error:
            _logger.warning(f"checkpoint {checkpoint_id}: it does not fit trial {trial.number} ({error}); "
                            "the trial trains from epoch 1")
            return None
        history.extend(rows)
        best_state.update(checkpoint.extras.get("best") or checkpoint.network)
        for metrics in history:
            trial.report(getattr(metrics, self.spec.metric), metrics.epoch)
        self._store(trial, {record.RESUMED_FROM_EPOCH: checkpoint.epoch})
        return checkpoint


def _best_index(history: list[EpochMetrics], metric: str) -> int:
    """Index in ``history`` of the best epoch, the earliest on ties."""
    scores = [getattr(metrics, metric) for metrics in history]
    return int(np.argmax(scores) if metric == "validation_accuracy" else np.argmin(scores))


def _best(history: list[EpochMetrics], metric: str) -> float:
    values = [getattr(metrics, metric) for metrics in history]
    return max(values) if metric == "validation_accuracy" else min(values)


def _is_new_best(history: list[EpochMetrics], metric: str) -> bool:
    """The last epoch beats every earlier one (a tie keeps the earlier epoch, as ``best_epoch`` does)."""
    *earlier, last = [getattr(metrics, metric) for metrics in history]
    if not earlier:
        return True
    return last > max(earlier) if metric == "validation_accuracy" else last < min(earlier)


def _record(history: list[EpochMetrics], metric: str, seconds: float) -> dict[str, Any]:
    """The user attributes of a trial's training: seconds, epochs, best epoch, learning curves (rounded, to keep
    the study database small)."""
    attributes: dict[str, Any] = {record.TRAIN_SECONDS: round(seconds, 3), record.EPOCHS_RUN: len(history)}
    if history:
        attributes[record.BEST_EPOCH] = history[_best_index(history, metric)].epoch
        attributes[record.LEARNING_CURVES] = {
            name: [_round(getattr(metrics, name)) for metrics in history]
            for name in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "seconds")
        }
        # The rate of each epoch (the schedule's), to 6 significant digits: rates of 1e-6 must not round to 0.
        attributes[record.LEARNING_CURVES]["learning_rate"] = [
            None if metrics.learning_rate is None else float(f"{metrics.learning_rate:.6g}") for metrics in history]
        if history[0].train_eval_accuracy is not None:  # parameters.evaluate_train
            for name in ("train_eval_loss", "train_eval_accuracy"):
                attributes[record.LEARNING_CURVES][name] = [_round(getattr(metrics, name)) for metrics in history]
    return attributes


def _round(value: float) -> float | None:
    return round(float(value), 5) if math.isfinite(value) else None
