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
the measured peak: it errs on the large side (``tests/test_memory.py``). With
convolution blocks (6 x 6 to 28 x 28 images, 1 to 4 blocks, batches of 8 to 600
rows) it lies between 1.00x and 1.12x for peaks above 5 MB; below 1 MB the fixed
allowance for NumPy's reference cycles (:data:`CYCLES`) makes it up to 1.5x.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy

from models.network import FILTER_SIZE, POOL_SIZE, TEST_CHUNK
from models.trainer import EVALUATION_CHUNK

__all__ = ["CYCLES", "OBJECTS", "OPTIMIZER_STATE", "training_memory"]

OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 3}
"""Arrays the size of all parameters that each optimizer of :mod:`models.optimizers` keeps.

Momentum and Nesterov keep a velocity, AdaGrad and RMSprop a sum of squared
gradients, Adam two moments and a scratch array for its step; SGD keeps nothing.
"""

OBJECTS = 32_000
"""Bytes of the Python objects of a training: the layers and their attribute dicts, the headers of the
parameters' views, the trainer's records, what NumPy's functions hold (measured 20 to 30 kB for networks
of 2 to 14 layers)."""

CYCLES = 256_000
"""Bytes of reference cycles that ``numpy.pad`` and ``sliding_window_view`` leave behind in every
convolution's forward pass (about 265 bytes each) until Python's cyclic garbage collector frees them
(measured up to 240 kB at the peak of a training)."""

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
_BUFFER = 8192  # elements of each buffer of NumPy's iterators (NPY_BUFSIZE), for non-contiguous operands


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
    convolution_channels: Sequence[int] = (),
    image_shape: Sequence[int] | None = None,
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
      (``B x input_size``) and its per-example shuffled order and predictions,
      the Python objects (:data:`OBJECTS`) and, with convolution blocks, the
      reference cycles NumPy leaves to the garbage collector (:data:`CYCLES`);
    * plus the largest of these moments:

      - a training step: per hidden layer of width ``h`` what its forward pass
        keeps for backward (batch norm's normalized input ``B h s``, ReLU's mask
        ``B h`` bytes and output ``B h s`` -- sigmoid and tanh keep their output --,
        dropout's mask ``B h`` bytes and output ``B h s``), the scores and softmax
        of the output layer (and the last step's scores, and the labels), and the
        largest temporary: two layers' gradients in backward (about ``B h (2 s + 1)``,
        ``+ B h s`` with batch norm), the optimizer's update (``P s`` for ``lr * g``;
        more for the optimizers that flush subnormal state), or, with weight decay,
        ``lambda W`` of the largest weight matrix or filter bank;
      - the test-mode evaluation of one chunk of ``R`` rows, which replaces the
        training arrays layer by layer (so each layer holds the larger of the two
        while it runs), plus the Affine output and batch norm's output of the
        layer being computed;
      - the end of an epoch at which the best weights are copied again: a new
        copy is made while the old one is still held.

    Convolution blocks (``convolution_channels``, on images of ``image_shape``):
    block ``k`` with ``c`` filters reads ``a = h w`` pixels of ``c'`` channels
    (3 x 3 filters, padding 1) and pools them to ``q = (h // 2)(w // 2)`` pixels.
    It has ``9 c' c + c`` parameters (part of ``P``), and the first Affine layer
    reads the ``q c`` values of the last block instead of ``input_size`` values.
    Per row, each block keeps from its forward pass (in both modes) the im2col
    matrix ``9 a c' s``, ReLU's mask ``a c`` bytes (sigmoid's and tanh's output
    ``a c s``) and pooling's argmax, ``q c`` int64 indices; the last block's pooled
    image ``q c s`` is the first Affine layer's input. The largest temporaries:

    - forward: ``np.pad``'s copy ``(h + 2)(w + 2) c' s`` and the new im2col matrix
      beside the old one and the block's input, then the output ``a c s``; the
      activation's input and output (sigmoid's ``x / 2`` too); pooling's copy of
      its windows ``a c s``, its new argmax and output, and the buffers of
      ``take_along_axis`` (4 int64 per output, at most 8192 of them);
    - backward: pooling's dout, the windows' gradient ``a c s`` (and the buffers
      of ``put_along_axis``), its reshaped copy and dx ``a c s``; the activation's
      dout and dx; col2im's dout, dcol ``9 a c' s`` and padded dx, with a ufunc's
      three buffers of at most 8192 items (the first block computes no dx).

    A network with blocks runs test mode in chunks of ``T = min(256, R)`` rows
    (:data:`models.network.TEST_CHUNK`) through all layers. While a block runs,
    the blocks before it hold this pass's arrays and those after it the last
    pass's: the training step's ``B`` rows, the last chunk's (after a full chunk
    at most ``min(T, evaluation_rows - T)`` rows follow), or, in the first step
    after an evaluation, ``T`` rows (the hidden layers too).

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
    convolution_channels : sequence of int, default ()
        Filters of each convolution block (empty: no blocks), as for ``MultiLayerNet``.
    image_shape : (height, width) or (height, width, channels), optional
        Shape of one input image; required with ``convolution_channels``.

    Returns
    -------
    int
        Bytes.

    Raises
    ------
    KeyError
        ``optimizer`` is not one of :data:`OPTIMIZER_STATE`.
    ValueError
        ``convolution_channels`` without ``image_shape``.

    Examples
    --------
    >>> gigabytes = training_memory(784, [16384] * 64, 10, batch_size=100, train_rows=48000,
    ...                             evaluation_rows=12000, optimizer="adam") / 1e9
    >>> round(gigabytes)  # 16.9e9 parameters of 4 bytes, 6 arrays of them (Adam), 1.25 more while updating
    495
    """
    item = numpy.dtype(dtype).itemsize
    flag = numpy.dtype(numpy.bool_).itemsize
    blocks = _ConvolutionBlocks(input_size, convolution_channels, image_shape, activation, item)
    sizes = [blocks.features, *hidden_sizes, output_size]
    weights = [fan_in * fan_out for fan_in, fan_out in itertools.pairwise(sizes)]
    hidden = list(hidden_sizes)
    parameters = sum(weights) + sum(sizes[1:]) + (2 * sum(hidden) if batch_norm else 0) + blocks.parameters
    running = 2 * sum(hidden) * item if batch_norm else 0
    best_weights = parameters * item + running if keep_best_weights else 0
    rows = min(batch_size, train_rows)
    chunk = min(EVALUATION_CHUNK, evaluation_rows)
    # Rows each layer sees at once in test mode: a network with convolution blocks splits the chunk again.
    layer_chunk = min(TEST_CHUNK, chunk) if convolution_channels else chunk
    held = (
        2 * parameters * item
        + running
        + OPTIMIZER_STATE[optimizer] * parameters * item
        + best_weights
        + rows * input_size * item
        + train_rows * (3 * _INDEX + flag)  # shuffled order, predictions, and their comparison at the epoch's end
        + OBJECTS
        + (CYCLES if convolution_channels else 0)
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
    step_left = scores + _INDEX  # per row of a training step: its scores, softmax and labels, left for the next

    # A training step. A layer's new arrays are made while the last step's are still held; in
    # backward two layers' gradients are alive: about the same, B h (2 s + 1). The trainer holds
    # the last step's scores until the step returns.
    backward = rows * widest * (2 * item + flag)
    update = parameters * _UPDATE_TEMPORARIES[optimizer](item, flag)
    decay = max(weights + blocks.filters) * item if weight_decay > 0 else 0
    training_step = rows * (units * (replaced + kept) + step_left + output_size * item) + max(
        rows * blocks.kept + max(backward, update, decay),
        blocks.forward_peak(rows, rows) if train_rows > rows else 0, blocks.backward_peak(rows))
    # The convolution blocks of the first step after an evaluation: the layers not yet run (the hidden
    # layers among them) hold the last test-mode chunk, the softmax that of the evaluator's chunk.
    after_evaluation = (rows * (units * kept + _INDEX + output_size * item) + units * layer_chunk * evaluating
                        + chunk * output_size * item + blocks.forward_peak(rows, layer_chunk))
    # Test mode, layer chunk by layer chunk: each layer holds the larger of its training and test arrays,
    # the layer being replaced both (the last chunk's arrays, when there are several).
    # Computing a layer: its Affine output and batch norm's; then the activation's input (and
    # sigmoid's x / 2) beside the layer's old and new arrays. Computing a convolution block: the
    # blocks run hold this chunk, the others the training step's arrays or the last chunk's: the
    # rows of two chunks in a row add up to at most evaluation_rows.
    replacing = widest * max(rows * replaced, layer_chunk * evaluating if evaluation_rows > layer_chunk else 0)
    computing = max(layer_chunk * widest * item * (2 if batch_norm else 1),
                    replacing + layer_chunk * widest * item * (2 if activation == "sigmoid" else 1))
    following = min(layer_chunk, max(0, evaluation_rows - layer_chunk))  # rows of a chunk after a full one
    evaluation = units * max(rows * replaced, layer_chunk * evaluating) + rows * units * kept + max(
        layer_chunk * blocks.kept + computing,
        blocks.forward_peak(layer_chunk, max(rows, following)),
        blocks.forward_peak(following, layer_chunk) if following else 0) + rows * step_left + chunk * scores
    copying_best = (best_weights + units * (rows * kept + layer_chunk * evaluating) + layer_chunk * blocks.kept
                    + rows * step_left + chunk * scores)

    return int(held + max(training_step, after_evaluation, evaluation, copying_best))


class _ConvolutionBlocks:
    """What the convolution blocks of :class:`models.network.MultiLayerNet` hold, in bytes (see :func:`training_memory`).

    Attributes
    ----------
    parameters : int
        Filters and biases (0 without blocks).
    filters : list of int
        Entries of each block's filters.
    features : int
        Inputs of the first Affine layer: the flattened last pooled image (``input_size`` without blocks).
    kept : int
        Bytes per row that the blocks keep from a forward pass, in both modes: each block's im2col
        matrix, ReLU's mask (sigmoid's and tanh's output) and pooling's argmax, and the last pooled image.
    forward : list of (int, int, int, int)
        The busiest moments of a forward pass: (bytes per row of the temporaries, bytes per row kept
        by the layers already run in this pass, elements per row NumPy passes through buffers, bytes
        of buffer per element). The layers not yet run hold the rest of ``kept``, from the last pass.
    backward : list of (int, int, int)
        The same for backward (every layer holds this pass's arrays), without the kept column.
    """

    def __init__(self, input_size: int, channels: Sequence[int], image_shape: Sequence[int] | None,
                 activation: str, item: int) -> None:
        self.parameters = self.kept = 0
        self.filters, self.forward, self.backward = [], [], []
        self.features = input_size
        if not channels:
            return
        if image_shape is None:
            raise ValueError("image_shape: expected (height, width) of the input images with convolution_channels, "
                             "got None")
        height, width, inputs = (*image_shape, 1)[:3]
        incoming = 0  # the block's input while it runs: the last block's pooled image (the first reads the batch)
        for block, filters in enumerate(channels, start=1):
            pixels = height * width
            padded = (height + 2) * (width + 2) * inputs * item          # np.pad's copy; col2im's dx
            col = FILTER_SIZE * FILTER_SIZE * pixels * inputs * item      # im2col's matrix; backward's dcol
            out = pixels * filters * item                                 # convolution's and activation's outputs
            height, width = height // POOL_SIZE, width // POOL_SIZE
            pooled = height * width * filters                             # elements of the pooled image
            windows = POOL_SIZE * POOL_SIZE * pooled * item               # pooling's copy of its windows; their gradient
            self.filters.append(FILTER_SIZE * FILTER_SIZE * inputs * filters)
            self.parameters += self.filters[-1] + filters
            # The convolution: np.pad's copy and the new im2col matrix beside the old, then its output.
            self.forward += [(incoming + padded + col, self.kept, 0, 0), (incoming + out, self.kept + col, 0, 0)]
            self.kept += col
            if activation == "relu":  # a new mask beside the old; then the output beside the input
                self.forward += [(out + pixels * filters, self.kept, 0, 0),
                                 (2 * out, self.kept + pixels * filters, 0, 0)]
                self.kept += pixels * filters
            else:  # the new output beside the old (and sigmoid's x / 2 before it)
                self.forward.append(((3 if activation == "sigmoid" else 2) * out, self.kept, 0, 0))
                self.kept += out
            # Pooling: the copy of its windows (and ReLU's output); a new argmax beside the old, then
            # the output, by take_along_axis (buffers of 4 broadcast indices per output element).
            activated = out if activation == "relu" else 0
            self.forward += [(activated + windows + pooled * _INDEX, self.kept, 0, 0),
                             (activated + windows + pooled * item, self.kept + pooled * _INDEX, pooled, 4 * _INDEX)]
            self.kept += pooled * _INDEX
            # Pooling's gradient: its dout (the first Affine layer's dx, or the padded dx of col2im) and the
            # windows' gradient (put_along_axis's buffers: indices and values), then also dx and the windows'
            # reshaped copy. The activation's: dout and dx. The convolution's: dout, dcol and the padded dx,
            # added into by strided additions (a ufunc's 3 buffers); the first block makes no dx.
            dout = pooled * item if block == len(channels) else (height + 2) * (width + 2) * filters * item
            self.backward += [(dout + windows, pooled, 4 * _INDEX + item), (dout + 2 * windows + out, 0, 0),
                              (2 * out, 0, 0)]
            if block > 1:
                self.backward.append((out + col + padded, pixels * inputs, 3 * item))
            incoming, inputs = pooled * item, filters
        self.features = height * width * inputs
        self.kept += self.features * item  # the first Affine layer's input

    def forward_peak(self, rows: int, last_rows: int) -> int:
        """Bytes of the busiest moment of a forward pass of ``rows`` rows after one of ``last_rows`` rows."""
        return max((rows * (temporaries + done) + last_rows * (self.kept - done) + min(rows * elements, _BUFFER) * width
                    for temporaries, done, elements, width in self.forward), default=0)

    def backward_peak(self, rows: int) -> int:
        """Bytes of the busiest moment of a backward pass of ``rows`` rows, with what the blocks keep."""
        return max((rows * (temporaries + self.kept) + min(rows * elements, _BUFFER) * width
                    for temporaries, elements, width in self.backward), default=0)
