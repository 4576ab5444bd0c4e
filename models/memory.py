"""How much memory training a network takes, estimated before the network is built.

:func:`training_memory` adds up what :func:`models.trainer.train` and the layers of
:class:`models.network.MultiLayerNet` hold at their busiest moment: parameters and
gradients, the optimizer's state, the arrays each layer keeps from its forward pass
for the backward pass, the temporaries of backward and of the optimizer's update,
the test-mode evaluation of the validation set in chunks, and a copy of the weights
at the best epoch (kept by a caller that saves them, as ``hpo.tuning.objective`` does).
The data themselves are not included: they exist before training starts.

Measured against ``tracemalloc`` (which sees NumPy's allocations) with every
optimizer, activation, batch norm, dropout and weight decay, batches of 32 to
8000 rows and 0.7 to 80 MB peaks, the estimate lies between 1.00x and 1.15x of
the measured peak: it errs on the large side (``tests/test_memory.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from models.trainer import EVALUATION_CHUNK

__all__ = ["OPTIMIZER_STATE", "training_memory"]

OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 3}
"""Arrays the size of all parameters that each optimizer of :mod:`models.optimizers` keeps.

Momentum and Nesterov keep a velocity, AdaGrad and RMSprop a sum of squared
gradients, Adam two moments and a scratch array for its step; SGD keeps nothing.
"""

# Bytes, per parameter, of the temporaries of one update (besides the state):
# (bytes of the dtype's item, bytes of a bool) -> bytes. SGD and the others form
# ``lr * g`` (one item); the decaying ones also set subnormal entries to 0 every
# few updates, which takes ``abs(state)`` and a bool mask (one item + one bool);
# RMSprop does that while its ``g * g`` array is still alive.
_UPDATE_TEMPORARIES = {
    "sgd": lambda item, flag: item,
    "momentum": lambda item, flag: item + flag,
    "nesterov": lambda item, flag: item + flag,
    "adagrad": lambda item, flag: item,
    "rmsprop": lambda item, flag: 2 * item + flag,
    "adam": lambda item, flag: item + flag,
}
_INDEX = numpy.dtype(numpy.intp).itemsize  # bytes of an index (the trainer's shuffled order, its predictions)


def training_memory(
    input_size: int,
    hidden_sizes: Sequence[int],
    output_size: int,
    *,
    batch_size: int,
    train_rows: int,
    evaluation_rows: int,
    optimizer: str = "sgd",
    activation: str = "relu",
    batch_norm: bool = False,
    dropout: float = 0.0,
    weight_decay: float = 0.0,
    keep_best_weights: bool = True,
    dtype: numpy.dtype | type = numpy.float32,
) -> int:
    """Peak memory, in bytes, of training a :class:`~models.network.MultiLayerNet` with :func:`~models.trainer.train`.

    With ``s`` the bytes of one ``dtype`` item, ``P`` the number of parameters
    (weights, biases and batch norm's gamma and beta), ``B = min(batch_size,
    train_rows)`` and ``R = min(4096, evaluation_rows)`` (the rows of one test-mode
    chunk, :data:`models.trainer.EVALUATION_CHUNK`), the estimate is

    * always held: parameters and gradients ``2 P s`` (the network's two flat
      vectors), batch norm's running mean and variance, the optimizer's state
      (:data:`OPTIMIZER_STATE` times ``P s``), the copy of the best epoch's
      weights when ``keep_best_weights``, the trainer's mini-batch buffer
      (``B x input_size``) and its per-example shuffled order and predictions;
    * plus the largest of three moments:

      - a training step: per hidden layer of width ``h`` what its forward pass
        keeps for backward (batch norm's normalized input ``B h s``, ReLU's mask
        ``B h`` bytes and output ``B h s`` -- sigmoid and tanh keep their output --,
        dropout's mask ``B h`` bytes and output ``B h s``), the scores and softmax
        of the output layer, and the largest temporary: two layers' gradients in
        backward (about ``B h (2 s + 1)``, ``+ B h s`` with batch norm), the
        optimizer's update (``P s`` for ``lr * g``; more for the optimizers that
        flush subnormal state), or, with weight decay, ``lambda W`` of the largest
        weight matrix;
      - the test-mode evaluation of one chunk of ``R`` rows, which replaces the
        training arrays layer by layer (so each layer holds the larger of the two
        while it runs), plus the Affine output and batch norm's output of the
        layer being computed;
      - the end of an epoch at which the best weights are copied again: a new
        copy is made while the old one is still held.

    Parameters
    ----------
    input_size : int
        Features D of an example, >= 1.
    hidden_sizes : sequence of int
        Units of each hidden layer (may be empty).
    output_size : int
        Classes C, >= 1.
    batch_size : int
        Examples per mini-batch, >= 1 (the trainer uses at most ``train_rows``).
    train_rows : int
        Training examples N, >= 1.
    evaluation_rows : int
        Rows of the largest set evaluated in test mode after each epoch, >= 1: the
        validation split, or the training split when it is evaluated too.
    optimizer : {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"}, default "sgd"
    activation : {"relu", "sigmoid", "tanh"}, default "relu"
    batch_norm : bool, default False
    dropout : float, default 0.0
        Any value > 0 adds the dropout layers' masks and outputs.
    weight_decay : float, default 0.0
        Any value > 0 adds the temporary ``weight_decay * W`` of the largest weight matrix.
    keep_best_weights : bool, default True
        The caller copies the weights at each new best epoch (``network.state_dict()``).
    dtype : numpy float dtype, default numpy.float32
        The network's dtype.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    KeyError
        ``optimizer`` is not one of :data:`OPTIMIZER_STATE`.

    Examples
    --------
    >>> gigabytes = training_memory(784, [16384] * 64, 10, batch_size=100, train_rows=48000,
    ...                             evaluation_rows=12000, optimizer="adam") / 1e9
    >>> round(gigabytes)  # 16.9e9 parameters of 4 bytes, 6 arrays of them (Adam), 1.25 more while updating
    495
    """
    item = numpy.dtype(dtype).itemsize
    flag = numpy.dtype(numpy.bool_).itemsize
    sizes = [input_size, *hidden_sizes, output_size]
    weights = [fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
    hidden = list(hidden_sizes)
    parameters = sum(weights) + sum(sizes[1:]) + (2 * sum(hidden) if batch_norm else 0)
    running = 2 * sum(hidden) * item if batch_norm else 0
    best_weights = parameters * item + running if keep_best_weights else 0
    rows = min(batch_size, train_rows)
    chunk = min(EVALUATION_CHUNK, evaluation_rows)
    held = (
        2 * parameters * item
        + running
        + OPTIMIZER_STATE[optimizer] * parameters * item
        + best_weights
        + rows * input_size * item
        + train_rows * (3 * _INDEX + flag)  # shuffled order, predictions, and their comparison at the epoch's end
    )

    # Bytes per unit of a hidden layer, per row: the training arrays that test mode replaces
    # (ReLU's mask and output, or dropout's output; sigmoid's and tanh's output, and dropout's),
    # those it leaves (batch norm's normalized input, dropout's mask), and test mode's own.
    dropping = dropout > 0
    if activation == "relu":
        replaced = evaluating = flag + item
    else:
        replaced, evaluating = item * (2 if dropping else 1), item
    kept = (item if batch_norm else 0) + (flag if dropping else 0)
    units = sum(hidden)
    widest = max([*hidden, output_size])
    scores = 2 * output_size * item  # per row: the scores and the softmax

    # A training step. A layer's new arrays are made while the last step's are still held; in
    # backward two layers' gradients are alive: about the same, B h (2 s + 1).
    backward = rows * widest * (2 * item + flag)
    update = parameters * _UPDATE_TEMPORARIES[optimizer](item, flag)
    decay = max(weights) * item if weight_decay > 0 else 0
    training_step = rows * (units * (replaced + kept) + scores) + max(backward, update, decay)
    # Test mode, chunk by chunk: each layer holds the larger of its training and test arrays,
    # the layer being replaced both (the last chunk's arrays, when there are several).
    # Computing a layer: its Affine output and batch norm's; then the activation's input (and
    # sigmoid's x / 2) beside the layer's old and new arrays.
    replacing = widest * max(rows * replaced, chunk * evaluating if evaluation_rows > chunk else 0)
    computing = max(chunk * widest * item * (2 if batch_norm else 1),
                    replacing + chunk * widest * item * (2 if activation == "sigmoid" else 1))
    evaluation = (units * max(rows * replaced, chunk * evaluating) + rows * units * kept + computing
                  + (rows + chunk) * scores)
    copying_best = best_weights + units * (rows * kept + chunk * evaluating) + (rows + chunk) * scores

    return int(held + max(training_step, evaluation, copying_best))
