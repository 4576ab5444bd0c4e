"""Mini-batch training with a validation pass after every epoch.

"Deep Learning from Scratch" trains by epochs of randomly drawn mini-batches
(section 4.5, ``common/trainer.py``) and tunes hyperparameters on validation
data (section 6.5). :func:`train` does that: each epoch visits every training
example once in a fresh random order, updates the parameters after each
mini-batch, then evaluates the network in test mode on the validation data and
hands the epoch's :class:`EpochMetrics` to a callback, where a caller can
record them or stop the run by raising (e.g. Optuna's ``TrialPruned``). A run
whose loss explodes is stopped and reported as diverged (see :func:`divergence_limit`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy

from models.checkpoint import Checkpoint, random_generators
from models.validation import as_generator, positive_int

__all__ = ["DIVERGENCE_FACTOR", "EVALUATION_CHUNK", "EpochMetrics", "TrainingResult", "divergence_limit", "train"]

EVALUATION_CHUNK = 4096
"""Rows per test-mode forward pass when evaluating a set: bounds the memory of the
activations (rows x widest layer x 4 bytes) independently of the set's size."""

DIVERGENCE_FACTOR = 100.0
"""A loss above this many times the start loss (see :func:`divergence_limit`) has exploded."""


def divergence_limit(first_loss: float, n_classes: int) -> float:
    """The largest loss a run may reach before it counts as diverged.

    ``DIVERGENCE_FACTOR * max(first_loss, ln C)``: 100 times the loss the run
    started from, where the start is at least ``ln C``, the cross-entropy of a
    uniform prediction over C classes (what a freshly initialized network
    scores, about 2.30 for 10 classes).  A healthy run's loss falls below its
    start; one that climbs a hundredfold has left any useful region (the losses
    of 1e24 seen with learning rates of 10 to 1000, which never become NaN when
    ReLU units die) and will not come back.

    Parameters
    ----------
    first_loss : float
        Loss of the run's first mini-batch (cross-entropy plus weight decay term), finite.
    n_classes : int
        Number of classes C >= 1.

    Returns
    -------
    float
        The limit, in the loss's units (nats per example).

    Examples
    --------
    >>> round(divergence_limit(2.1, 10), 2)      # ln 10 = 2.303 is the larger
    230.26
    >>> divergence_limit(50.0, 10)                # a large start (std = 10 weights, say)
    5000.0
    """
    return DIVERGENCE_FACTOR * max(first_loss, math.log(n_classes))


@dataclass
class EpochMetrics:
    """What one epoch of :func:`train` measured.

    Attributes
    ----------
    epoch : int
        Epoch number, counted from 1.
    train_loss : float
        Mean of the epoch's mini-batch losses (cross-entropy plus the weight
        decay term), each taken in training mode before that mini-batch's
        update; every mini-batch counts once, the last partial one included.
    train_accuracy : float
        Fraction of the epoch's training examples classified correctly by the
        training-mode forward passes of their mini-batches (dropout on, batch
        statistics), in [0, 1].
    validation_loss : float
        Loss on the whole validation set in test mode after the epoch,
        including the weight decay term.
    validation_accuracy : float
        Fraction of the validation set classified correctly in test mode after
        the epoch, in [0, 1].
    seconds : float
        Wall time of the epoch in seconds, training and validation together.
    train_eval_loss : float or None
        With ``train(..., evaluate_train=True)``: loss on the whole training set in
        test mode after the epoch (dropout off, batch norm's running statistics),
        as the book's ``common/trainer.py`` measures training accuracy; else None.
    train_eval_accuracy : float or None
        The same for the accuracy, in [0, 1]; else None.
    learning_rate : float or None
        The optimizer's step size ``lr`` during the epoch (set by ``train(..., schedule=...)``,
        else the optimizer's own); None for an optimizer without ``lr``.
    """

    epoch: int
    train_loss: float
    train_accuracy: float
    validation_loss: float
    validation_accuracy: float
    seconds: float
    train_eval_loss: float | None = None
    train_eval_accuracy: float | None = None
    learning_rate: float | None = None


@dataclass
class TrainingResult:
    """The outcome of :func:`train`.

    Attributes
    ----------
    history : list of EpochMetrics
        One entry per completed epoch, in order. Only finite losses appear: an
        epoch cut short by divergence is not recorded.
    diverged : bool
        True if a loss exploded (not finite, or above :func:`divergence_limit`) and
        training stopped early.
    message : str
        ``""`` when training ran all epochs; otherwise why it stopped, e.g.
        ``"training loss became nan in epoch 3, mini-batch 17; lower the learning rate"``
        or ``"training loss 5.7e+24 in epoch 3, mini-batch 17 exceeds the limit 230.259
        (100 x max(first mini-batch loss 2.301, ln 10 = 2.303)); lower the learning rate"``.
    """

    history: list[EpochMetrics] = field(default_factory=list)
    diverged: bool = False
    message: str = ""

    @property
    def best_validation_accuracy(self) -> float | None:
        """Highest validation accuracy over the history (fraction); None if no epoch completed."""
        if not self.history:
            return None
        return max(metrics.validation_accuracy for metrics in self.history)

    @property
    def best_epoch(self) -> int | None:
        """Epoch (1-based) of the highest validation accuracy, earliest on ties; None if none completed."""
        if not self.history:
            return None
        return max(self.history, key=lambda metrics: metrics.validation_accuracy).epoch

    @property
    def epochs_run(self) -> int:
        """Number of completed epochs, ``len(history)``."""
        return len(self.history)


def _check_data(x_name: str, x: Any, t_name: str, t: Any, n_features: int | None) -> None:
    if not isinstance(x, numpy.ndarray) or x.ndim != 2 or x.shape[0] == 0:
        shape = getattr(x, "shape", type(x).__name__)
        raise ValueError(f"{x_name}: expected a non-empty 2-D array of shape (N, D), got {shape}")
    if n_features is not None and x.shape[1] != n_features:
        raise ValueError(f"{x_name}: expected {n_features} features like x_train, got shape {x.shape}")
    if not isinstance(t, numpy.ndarray) or t.ndim not in (1, 2) or t.shape[0] != x.shape[0]:
        shape = getattr(t, "shape", type(t).__name__)
        raise ValueError(
            f"{t_name}: expected labels of shape ({x.shape[0]},) or one-hot ({x.shape[0]}, C) "
            f"matching {x_name}, got {shape}"
        )


def _class_indices(t: numpy.ndarray) -> numpy.ndarray:
    return t.argmax(axis=1) if t.ndim == 2 else t


def _evaluate(network: Any, x: numpy.ndarray, t: numpy.ndarray) -> tuple[float, float]:
    """Test-mode loss and accuracy on (x, t), in chunks of ``EVALUATION_CHUNK`` rows.

    The loss of a chunk is its mean cross-entropy plus the weight decay term,
    which is the same for every chunk, so the size-weighted mean of the chunk
    losses is the loss of the whole set.
    """
    n = x.shape[0]
    loss_sum = 0.0
    correct = 0.0
    for start in range(0, n, EVALUATION_CHUNK):
        xc = x[start : start + EVALUATION_CHUNK]
        tc = t[start : start + EVALUATION_CHUNK]
        rows = xc.shape[0]
        loss, accuracy = network.loss_and_accuracy(xc, tc)  # one forward pass for both
        loss_sum += float(loss) * rows
        correct += float(accuracy) * rows
    return loss_sum / n, correct / n


def _exploded(which: str, loss: float, first: tuple[float, int] | None, when: str) -> str:
    """Why ``loss`` ends the run as diverged, or ``""`` if it does not.

    ``first`` is (first mini-batch loss, number of classes) of :func:`divergence_limit`,
    None before the first finite mini-batch loss.
    """
    if not math.isfinite(loss):
        return f"{which} became {loss} {when}; lower the learning rate"
    if first is not None and loss > (limit := divergence_limit(*first)):
        first_loss, n_classes = first
        return (f"{which} {loss:.6g} {when} exceeds the limit {limit:.6g} ({DIVERGENCE_FACTOR:g} x max(first "
                f"mini-batch loss {first_loss:.4g}, ln {n_classes} = {math.log(n_classes):.4g})); "
                "lower the learning rate")
    return ""


def train(
    network: Any,
    optimizer: Any,
    x_train: numpy.ndarray,
    t_train: numpy.ndarray,
    x_validation: numpy.ndarray,
    t_validation: numpy.ndarray,
    *,
    epochs: int,
    batch_size: int,
    rng: numpy.random.Generator | int | None,
    callback: Callable[[EpochMetrics], None] | None = None,
    evaluate_train: bool = False,
    before_batch: Callable[[], None] | None = None,
    schedule: Any = None,
    augmentation: Callable[[numpy.ndarray, numpy.random.Generator], numpy.ndarray] | None = None,
    resume_from: Checkpoint | None = None,
    checkpoint_every: int = 1,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> TrainingResult:
    """Train ``network`` with ``optimizer`` by epochs of shuffled mini-batches.

    Each epoch draws a permutation of the training examples from ``rng`` and
    walks through it in mini-batches of ``batch_size`` (the last, partial
    mini-batch included), so every example is used exactly once per epoch.
    For each mini-batch it calls ``network.loss_and_gradient(xb, tb)`` and
    then ``optimizer.update(network.params, grads)``, or one update of the
    network's two flat vectors when ``network.flat_vectors()`` returns them (book sections 4.5 and
    6.1). After the epoch it evaluates the network in test mode on the whole
    validation set and calls ``callback(metrics)``.

    Training stops early as diverged (``diverged=True`` and a message saying
    which loss, its value, the limit and "lower the learning rate") as soon as
    a mini-batch's training loss or the validation loss is not finite or exceeds
    ``100 * max(first mini-batch loss, ln C)`` (:func:`divergence_limit`; C is
    the number of classes, the width of the scores, and ln C the loss of a
    uniform prediction); the unfinished epoch is neither recorded nor passed to
    the callback, and the mini-batch's gradient is not applied. An exception raised
    by the callback propagates unchanged and ends training: that is how a
    caller stops a run (e.g. Optuna's ``TrialPruned``).

    The result depends only on the inputs: the network's initial parameters,
    the optimizer's state and ``rng``. Nothing is logged or printed; NumPy's
    overflow and invalid-value warnings are silenced during the network's
    computations, since a run they concern is reported as diverged. The
    network's parameters and the optimizer's state are updated in place.

    Parameters
    ----------
    network : models.network.MultiLayerNet
        Or any object with ``params`` (dict of arrays),
        ``loss_and_gradient(x, t)`` returning ``(loss, scores, grads)`` with
        ``scores`` the training-mode output of shape (batch, C),
        ``loss_and_accuracy(x, t)`` (test mode) and ``flat_vectors()`` (a pair of
        flat parameter and gradient vectors, or None to be updated by name).
    optimizer : object
        Has ``update(params, grads)``, e.g. from
        ``models.optimizers.make_optimizer``.
    x_train : ndarray of shape (N, D), float32 (float64 accepted)
        Training inputs.
    t_train : ndarray of shape (N,) int class indices, or one-hot (N, C)
        Training labels.
    x_validation : ndarray of shape (M, D), same dtype as ``x_train``
        Validation inputs, used in test mode only.
    t_validation : ndarray of shape (M,) or (M, C)
        Validation labels.
    epochs : int
        Number of passes over the training data, >= 1.
    batch_size : int
        Examples per mini-batch, >= 1; larger than N means one mini-batch per
        epoch.
    rng : numpy.random.Generator, int >= 0 or None
        Source of the shuffling, by the one seed rule of models/
        (:func:`models.validation.as_generator`): an int seeds a new Generator, a
        Generator is advanced in place, None is not reproducible.
    callback : callable, optional
        Called as ``callback(metrics)`` with the :class:`EpochMetrics` of each
        completed epoch, in order. Its return value is ignored; an exception
        it raises stops training and propagates.
    evaluate_train : bool, default False
        Also evaluate the whole training set in test mode after each epoch
        (``EpochMetrics.train_eval_loss`` and ``train_eval_accuracy``), as the
        book's figures of sections 6.3 and 6.4 do; costs one forward pass over
        the training data per epoch.
    before_batch : callable, optional
        Called with no argument before every mini-batch and before each epoch's
        validation pass: a safe point where the caller may stop training by
        raising (the service raises there when a signal asked it to stop). An
        exception it raises propagates unchanged; the parameters then hold the
        last completed update.
    schedule : models.schedules.ConstantSchedule, optional
        Or any object with ``rate(epoch) -> float``: before each epoch the
        optimizer's ``lr`` is set to ``schedule.rate(epoch)`` (see
        :mod:`models.schedules`). None keeps the optimizer's rate.
    augmentation : callable, optional
        ``augmentation(xb, rng) -> xb'`` of the same shape, applied to each
        training mini-batch's inputs after gathering them, with the run's
        generator (see :mod:`models.augmentation`); validation data are never
        augmented. None trains on the images as they are and draws nothing for it.
    resume_from : models.checkpoint.Checkpoint, optional
        Continue a training from its checkpoint: the network's parameters and
        running statistics, the optimizer's state, the generators (``rng``, the
        network's: :func:`models.checkpoint.random_generators`) and the divergence
        limit are set from it, its history starts the result, and training goes on
        with epoch ``resume_from.epoch + 1`` up to ``epochs`` (the total, as in the
        run that wrote it). Give the same network and optimizer settings, data and
        ``batch_size``: the result then equals (bit for bit) that of the run that
        was never interrupted. ``callback`` sees the new epochs only.
    checkpoint_every : int, default 1
        With ``on_checkpoint``: take a checkpoint after every this many epochs, >= 1.
    on_checkpoint : callable, optional
        Called as ``on_checkpoint(checkpoint)`` after epoch *k* when *k* is a multiple
        of ``checkpoint_every`` and not the last epoch (a finished training needs
        none), after ``callback`` returned: an epoch the callback stops (a pruned
        trial) gets no checkpoint, and the checkpoint's history is what the callback
        saw. The checkpoint holds the optimizer's live arrays: write it before
        returning. An exception it raises propagates and ends training.

    Returns
    -------
    TrainingResult
        The per-epoch history, whether training diverged, and why.

    Raises
    ------
    ValueError
        If ``epochs``, ``batch_size`` or ``checkpoint_every`` is not an integer >= 1,
        ``resume_from.epoch`` exceeds ``epochs``, the checkpoint does not fit the
        network or optimizer, an ``x`` is not
        a non-empty 2-D array, ``x_validation`` has a different number of
        features than ``x_train``, a ``t`` does not match its ``x``, or ``rng``
        is not an int >= 0, a Generator or None.
    Exception
        Whatever ``callback`` or ``before_batch`` raises.

    Examples
    --------
    >>> import numpy as np
    >>> from models.datasets import load_digits, train_validation_split
    >>> from models.network import MultiLayerNet
    >>> from models.optimizers import make_optimizer
    >>> data = load_digits()
    >>> x, t, xv, tv = train_validation_split(data.x_train, data.t_train, 0.2, seed=0)
    >>> net = MultiLayerNet(64, [50], 10, seed=0)
    >>> result = train(net, make_optimizer("adam", 0.01), x, t, xv, tv,
    ...                epochs=2, batch_size=32, rng=np.random.default_rng(0))
    >>> result.epochs_run
    2
    """
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    _check_data("x_train", x_train, "t_train", t_train, None)
    _check_data("x_validation", x_validation, "t_validation", t_validation, x_train.shape[1])
    generator = as_generator("rng", rng)
    checkpoint_every = positive_int("checkpoint_every", checkpoint_every)
    generators = random_generators(network, generator)

    # A network that keeps its parameters and gradients in two flat vectors is
    # updated in one pass over them instead of one small array at a time.
    flat = network.flat_vectors()
    if flat is not None:
        update_params, update_grads = {"all": flat[0]}, {"all": flat[1]}
    else:
        update_params = update_grads = None
    n = x_train.shape[0]
    batch_starts = range(0, n, batch_size)
    train_classes = _class_indices(t_train)
    losses = numpy.empty(len(batch_starts), dtype=numpy.float64)
    predictions = numpy.empty(n, dtype=numpy.intp)
    # The inputs of each mini-batch are gathered by index into this one buffer.
    x_batch = numpy.empty((min(batch_size, n), x_train.shape[1]), dtype=x_train.dtype)
    result = TrainingResult()
    first = None  # (first mini-batch loss, classes): they set the divergence limit
    done = 0  # epochs completed before this call (by the run that wrote resume_from)
    if resume_from is not None:
        done, first = _resume(resume_from, epochs, network, optimizer, generators, result)

    for epoch in range(done + 1, epochs + 1):
        started = time.perf_counter()
        if schedule is not None:
            optimizer.lr = schedule.rate(epoch)
        order = generator.permutation(n)
        # Overflow in a diverging run is reported by the result, not by NumPy warnings.
        with numpy.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for batch, start in enumerate(batch_starts):
                if before_batch is not None:
                    before_batch()
                index = order[start : start + batch_size]
                # mode="clip" lets take write straight into the buffer (the indices are valid).
                xb = numpy.take(x_train, index, axis=0, out=x_batch[: len(index)], mode="clip")
                if augmentation is not None:
                    xb = augmentation(xb, generator)
                loss, scores, grads = network.loss_and_gradient(xb, t_train[index])
                if first is None and math.isfinite(loss):
                    first = (loss, scores.shape[1])
                problem = _exploded("training loss", loss, first, f"in epoch {epoch}, mini-batch {batch + 1}")
                if problem:
                    result.diverged, result.message = True, problem
                    return result
                if update_params is None:
                    optimizer.update(network.params, grads)
                else:
                    optimizer.update(update_params, update_grads)
                losses[batch] = loss
                predictions[start : start + batch_size] = scores.argmax(axis=1)
            if before_batch is not None:
                before_batch()
            validation_loss, validation_accuracy = _evaluate(network, x_validation, t_validation)
            train_eval = _evaluate(network, x_train, t_train) if evaluate_train else (None, None)
        problem = _exploded("validation loss", validation_loss, first, f"after epoch {epoch}")
        if problem:
            result.diverged, result.message = True, problem
            return result
        train_accuracy = numpy.count_nonzero(predictions == train_classes[order]) / n
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=float(losses.mean()),
            train_accuracy=float(train_accuracy),
            validation_loss=validation_loss,
            validation_accuracy=validation_accuracy,
            seconds=time.perf_counter() - started,
            train_eval_loss=train_eval[0],
            train_eval_accuracy=train_eval[1],
            learning_rate=getattr(optimizer, "lr", None),
        )
        result.history.append(metrics)
        if callback is not None:
            callback(metrics)
        if on_checkpoint is not None and epoch % checkpoint_every == 0 and epoch < epochs:
            on_checkpoint(Checkpoint(
                epoch=epoch, network=network.state_dict(), optimizer=optimizer.state_dict(),
                generators={name: source.bit_generator.state for name, source in generators.items()},
                history=[dataclasses.asdict(metrics) for metrics in result.history], first_loss=first,
            ))
    return result


def _resume(checkpoint: Checkpoint, epochs: int, network: Any, optimizer: Any,
            generators: dict[str, numpy.random.Generator], result: TrainingResult) -> tuple[int, Any]:
    """Set the training's state from ``checkpoint``: (epochs it completed, first-loss pair)."""
    checkpoint.check(epochs, network, generators)
    network.load_state_dict(checkpoint.network)
    optimizer.load_state_dict(checkpoint.optimizer)
    checkpoint.restore_generators(generators)
    result.history.extend(EpochMetrics(**row) for row in checkpoint.history)
    return checkpoint.epoch, checkpoint.first_loss
