"""A fully connected multi-layer network built from the layers in ``models.layers``.

After "Deep Learning from Scratch" (Koki Saitoh), chapter 6 and its
``common/multi_layer_net_extend.py``: weight initialization (6.2), batch
normalization (6.3), weight decay and dropout (6.4). Optional convolution
blocks in front of the hidden layers follow chapter 7 (``SimpleConvNet``, 7.5).
"""

from __future__ import annotations

import math
import numbers
import zipfile
from collections.abc import Mapping, Sequence
from os import PathLike

import numpy as np
import numpy.typing

from models.convolution import Convolution, MaxPooling, Reshape, output_side
from models.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)
from models.validation import as_generator, fraction, number, positive_int, problem

__all__ = ["MultiLayerNet", "ACTIVATIONS", "WEIGHT_INITS", "most_convolution_blocks", "save_weights", "load_weights"]

ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
"""Activation name -> layer class."""

WEIGHT_INITS = ("he", "xavier")
"""Named weight initializations; a positive number is a fixed standard deviation."""

FILTER_SIZE = 3
"""Side of every convolution filter (3 x 3, padding 1: the image keeps its size until pooling)."""

POOL_SIZE = 2
"""Side of every max-pooling window (and its stride): each block halves the image."""

TEST_CHUNK = 256
"""Rows a network with convolution blocks runs at once in test mode: im2col of 4,096
28 x 28 images would take about 115 MB for the first block alone."""

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class MultiLayerNet:
    """Fully connected network with optional convolution blocks, batch normalization, dropout and weight decay.

    With ``convolution_channels``, each input row is first seen as an image of
    ``image_shape`` and passes, per block ``k`` (1-based), ``Convolution{k}``
    (``FILTER_SIZE`` x ``FILTER_SIZE`` filters, stride 1, padding 1) ->
    ``ConvolutionActivation{k}`` -> ``Pooling{k}`` (max over ``POOL_SIZE`` x
    ``POOL_SIZE``), then ``Flatten`` into the hidden layers (book, section 7.5:
    conv - relu - pool - affine, with more blocks). Batch normalization and
    dropout apply to the hidden layers only.

    Layers, per hidden layer ``i`` (1-based): ``Affine{i}`` -> ``BatchNorm{i}``
    (if ``batch_norm``) -> ``Activation{i}`` -> ``Dropout{i}`` (if ``dropout``
    > 0); then the output layer ``Affine{L+1}``, whose scores feed
    ``SoftmaxWithLoss``. The layers hold the very arrays in :attr:`params`, so an
    optimizer updating ``params`` in place updates the network.

    Sources: Deep Learning from Scratch, sections 6.2 (initialization: Glorot &
    Bengio 2010 "xavier", He et al. 2015 "he"), 6.3 (batch normalization, Ioffe &
    Szegedy 2015), 6.4 (weight decay; dropout, Srivastava et al. 2014).

    Parameters
    ----------
    input_size : int
        Number of input features D, positive; with convolution blocks, the pixels
        of one image (the product of ``image_shape``).
    hidden_sizes : sequence of int
        Units of each hidden layer, positive; empty gives softmax regression.
    output_size : int
        Number of classes C, positive.
    activation : {"relu", "sigmoid", "tanh"}, default "relu"
        Hidden activation.
    weight_init : {"he", "xavier"} or float, default "he"
        Standard deviation of the Gaussian weights of every Affine layer:
        "he" = sqrt(2 / fan_in), "xavier" = sqrt(1 / fan_in), a positive number =
        that fixed value. Biases start at 0, gamma at 1, beta at 0.
    batch_norm : bool, default False
        Insert batch normalization after each hidden Affine layer.
    dropout : float, default 0.0
        Dropout ratio after each hidden activation, in [0, 1); 0 means no
        Dropout layers.
    weight_decay : float, default 0.0
        L2 coefficient lambda >= 0: the loss gains 0.5 * lambda * sum(W**2) over
        the weight matrices (not biases, gamma or beta).
    convolution_channels : sequence of int, default ()
        Filters of each convolution block, positive; empty (the default) gives
        the plain fully connected network of chapter 6.
    image_shape : (height, width) or (height, width, channels), optional
        Shape of one input image (channels-last; channels 1 if not given);
        required with ``convolution_channels``. Every block halves each side,
        rounding down, and a side must stay at least 1.
    seed : int >= 0, numpy.random.Generator or None, default None
        Source of all randomness (initial weights and dropout masks), by the one
        seed rule of models/ (:func:`models.validation.as_generator`): an int seeds a
        new Generator, a Generator is used as is, None is not reproducible.
    dtype : numpy float32 or float64, default numpy.float32
        Dtype of all parameters and computations; inputs are cast to it.

    Raises
    ------
    ValueError
        If an argument is outside its allowed values; the message names the
        argument and what it allows (``NAME: expected WHAT, got VALUE``).

    Attributes
    ----------
    params : dict of str to ndarray
        ``W{i}`` (fan_in, fan_out), ``b{i}`` (fan_out,), ``gamma{i}``/``beta{i}``
        (hidden size,) for hidden layers with batch norm; i = 1 .. L+1 for W, b.
        Convolution block k adds ``convolution_W{k}`` (FILTER_SIZE, FILTER_SIZE,
        channels in, channels out) and ``convolution_b{k}`` (channels out,).
    grads : dict of str to ndarray
        Same keys and shapes: the gradients of the last :meth:`loss_and_gradient`,
        written in place by the layers' backward passes.
    params_vector, grads_vector : ndarray of shape (P,), the network's dtype
        All parameters (gradients) as one flat vector; the arrays of ``params``
        (``grads``) are views into it. An optimizer given these two vectors
        updates every parameter in one pass (what :func:`models.trainer.train`
        does through :meth:`flat_vectors`), with the same result as updating them one by one.
    layers : dict of str to layer
        The layers in forward order (insertion order), named as above.
    last_layer : SoftmaxWithLoss

    Examples
    --------
    >>> net = MultiLayerNet(784, [100, 100], 10, batch_norm=True, seed=0)
    >>> x = np.zeros((2, 784), dtype=np.float32); t = np.array([3, 7])
    >>> loss, scores, grads = net.loss_and_gradient(x, t)
    >>> scores.shape, sorted(grads) == sorted(net.params)
    ((2, 10), True)
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], output_size: int, activation: str = "relu",
                 weight_init: str | float = "he", batch_norm: bool = False, dropout: float = 0.0,
                 weight_decay: float = 0.0, seed: int | np.random.Generator | None = None,
                 dtype: type | np.dtype = np.float32, *, convolution_channels: Sequence[int] = (),
                 image_shape: Sequence[int] | None = None) -> None:
        input_size = positive_int("input_size", input_size)
        output_size = positive_int("output_size", output_size)
        if isinstance(hidden_sizes, (str, bytes)) or not hasattr(hidden_sizes, "__iter__"):
            raise problem("hidden_sizes", "a sequence of integers >= 1", hidden_sizes)
        hidden_sizes = [positive_int("hidden_sizes", size) for size in hidden_sizes]
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise problem("activation", f"one of {', '.join(ACTIVATIONS)}", activation)
        if isinstance(weight_init, str) or not _is_real(weight_init):
            if weight_init not in WEIGHT_INITS:
                raise problem("weight_init", "'he', 'xavier' or a finite number > 0", weight_init)
        else:
            weight_init = number("weight_init", weight_init, minimum=0.0, exclusive_minimum=True)
        dropout = fraction("dropout", dropout)
        weight_decay = number("weight_decay", weight_decay, minimum=0.0)
        try:
            resolved = np.dtype(dtype) if dtype is not None else None
        except TypeError:
            resolved = None
        if resolved is None or resolved not in _DTYPES:   # (a dtype compares equal to None)
            raise problem("dtype", "numpy.float32 or numpy.float64", dtype)
        dtype = resolved
        rng = as_generator("seed", seed)
        convolution_channels, image_shape = _convolution_arguments(convolution_channels, image_shape, input_size)

        self.input_size = input_size
        self.hidden_sizes = hidden_sizes
        self.output_size = output_size
        self.activation = activation
        self.weight_init = weight_init
        self.batch_norm = bool(batch_norm)
        self.dropout = float(dropout)
        self.weight_decay = float(weight_decay)
        self.dtype = dtype
        self.rng = rng
        self.convolution_channels = convolution_channels
        self.image_shape = image_shape

        self.params = {}
        self.grads = {}
        self._init_params()
        self.layers = {}
        self._build_layers()
        self.last_layer = SoftmaxWithLoss()

    def _init_params(self) -> None:
        """Draw Gaussian weights with the chosen standard deviation; zero biases.

        Every parameter (and its gradient) is a view of one flat vector,
        :attr:`params_vector` (:attr:`grads_vector`), so that an optimizer can
        update all of them in one pass instead of one small array at a time.
        """
        sizes = [self._features_after_convolution(), *self.hidden_sizes, self.output_size]
        shapes = {}
        filter_shapes = self._filter_shapes()
        for k, filter_shape in enumerate(filter_shapes, start=1):
            shapes[f"convolution_W{k}"], shapes[f"convolution_b{k}"] = filter_shape, filter_shape[-1:]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
            shapes[f"W{i}"], shapes[f"b{i}"] = (fan_in, fan_out), (fan_out,)
            if self.batch_norm and i <= len(self.hidden_sizes):
                shapes[f"gamma{i}"], shapes[f"beta{i}"] = (fan_out,), (fan_out,)
        total = sum(math.prod(shape) for shape in shapes.values())
        self.params_vector = np.zeros(total, dtype=self.dtype)
        self.grads_vector = np.zeros(total, dtype=self.dtype)
        start = 0
        for name, shape in shapes.items():
            end = start + math.prod(shape)
            self.params[name] = self.params_vector[start:end].reshape(shape)
            self.grads[name] = self.grads_vector[start:end].reshape(shape)
            start = end
        weights = [(f"convolution_W{k}", math.prod(shape[:3])) for k, shape in enumerate(filter_shapes, start=1)]
        weights += [(f"W{i}", fan_in) for i, fan_in in enumerate(sizes[:-1], start=1)]
        for name, fan_in in weights:   # the book's fan_in of a filter: C * FH * FW (section 7.5)
            if self.weight_init == "he":
                std = math.sqrt(2.0 / fan_in)
            elif self.weight_init == "xavier":
                std = math.sqrt(1.0 / fan_in)
            else:
                std = float(self.weight_init)
            W = self.params[name]
            self.rng.standard_normal(W.shape, dtype=self.dtype, out=W)
            W *= std
        for i in range(1, len(self.hidden_sizes) + 1):
            if f"gamma{i}" in self.params:
                self.params[f"gamma{i}"].fill(1.0)

    def _filter_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shape (FILTER_SIZE, FILTER_SIZE, channels in, channels out) of each block's filters."""
        channels = [self.image_shape[2] if self.image_shape else 1, *self.convolution_channels]
        return [(FILTER_SIZE, FILTER_SIZE, c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:])]

    def _features_after_convolution(self) -> int:
        """Inputs of the first Affine layer: D, or the pixels times channels of the last pooled image."""
        if not self.convolution_channels:
            return self.input_size
        height, width, _ = self.image_shape
        for _ in self.convolution_channels:
            height, width = output_side(height, POOL_SIZE, POOL_SIZE), output_side(width, POOL_SIZE, POOL_SIZE)
        return height * width * self.convolution_channels[-1]

    def _build_layers(self) -> None:
        """Compose the layers in forward order, sharing the arrays in ``params``."""
        p, g = self.params, self.grads
        if self.convolution_channels:
            self.layers["Image"] = Reshape(self.image_shape)
            for k in range(1, len(self.convolution_channels) + 1):
                self.layers[f"Convolution{k}"] = Convolution(p[f"convolution_W{k}"], p[f"convolution_b{k}"], pad=1,
                                                             dW=g[f"convolution_W{k}"], db=g[f"convolution_b{k}"])
                self.layers[f"ConvolutionActivation{k}"] = ACTIVATIONS[self.activation]()
                self.layers[f"Pooling{k}"] = MaxPooling(POOL_SIZE)
            self.layers["Flatten"] = Reshape((-1,))
        for i in range(1, len(self.hidden_sizes) + 1):
            self.layers[f"Affine{i}"] = Affine(p[f"W{i}"], p[f"b{i}"], dW=g[f"W{i}"], db=g[f"b{i}"])
            if self.batch_norm:
                self.layers[f"BatchNorm{i}"] = BatchNormalization(p[f"gamma{i}"], p[f"beta{i}"],
                                                                  dgamma=g[f"gamma{i}"], dbeta=g[f"beta{i}"])
            self.layers[f"Activation{i}"] = ACTIVATIONS[self.activation]()
            if self.dropout > 0.0:
                self.layers[f"Dropout{i}"] = Dropout(self.dropout, rng=self.rng)
        out = len(self.hidden_sizes) + 1
        self.layers[f"Affine{out}"] = Affine(p[f"W{out}"], p[f"b{out}"], dW=g[f"W{out}"], db=g[f"b{out}"])

    @property
    def n_affine(self) -> int:
        """Number of Affine layers, L + 1."""
        return len(self.hidden_sizes) + 1

    def flat_vectors(self) -> tuple[np.ndarray, np.ndarray] | None:
        """All parameters and all gradients as two flat vectors, for one-pass optimizer updates.

        Returns
        -------
        (params_vector, grads_vector) : two ndarrays of shape (P,), the network's dtype
            When every array of :attr:`params` and :attr:`grads` is a view of them, so
            that updating the vectors updates the layers; an optimizer's
            ``update({"all": params_vector}, {"all": grads_vector})`` then equals
            updating each array by name.
        None
            When they are not views any more (``copy.deepcopy`` of a network makes
            every array separate): update :attr:`params` by name instead.
        """
        if self.grads.keys() != self.params.keys():
            return None
        shared = all(np.may_share_memory(self.params[name], self.params_vector)
                     and np.may_share_memory(self.grads[name], self.grads_vector) for name in self.params)
        return (self.params_vector, self.grads_vector) if shared else None

    def _as_input(self, x: np.typing.ArrayLike) -> np.ndarray:
        """Return ``x`` as an array of the network's dtype (no copy if it already is)."""
        return np.asarray(x, dtype=self.dtype)

    def _forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        if not train and self.convolution_channels and len(x) > TEST_CHUNK:   # bound im2col's memory
            return np.concatenate([self._forward(x[start:start + TEST_CHUNK], False)
                                   for start in range(0, len(x), TEST_CHUNK)])
        for layer in self.layers.values():
            x = layer.forward(x, train)
        return x

    def _weight_decay_term(self) -> float:
        """0.5 * weight_decay * sum of squared weight matrices and filters, as a float."""
        if self.weight_decay == 0.0:
            return 0.0
        squares = sum(float(np.vdot(self.params[name], self.params[name])) for name in self._weight_names())
        return 0.5 * self.weight_decay * squares

    def _weight_names(self) -> list[str]:
        """Names of the parameters weight decay applies to: filters and weight matrices."""
        return ([f"convolution_W{k}" for k in range(1, len(self.convolution_channels) + 1)]
                + [f"W{i}" for i in range(1, self.n_affine + 1)])

    def predict(self, x: np.typing.ArrayLike, train: bool = False) -> np.ndarray:
        """Scores (logits) of the output layer.

        Parameters
        ----------
        x : array_like of shape (N, D)
            Inputs; cast to the network's dtype.
        train : bool, default False
            Training mode: batch statistics in batch norm (updating its running
            statistics) and random dropout masks.

        Returns
        -------
        scores : ndarray of shape (N, C), the network's dtype
        """
        return self._forward(self._as_input(x), train)

    def loss(self, x: np.typing.ArrayLike, t: np.ndarray, train: bool = False) -> float:
        """Mean cross-entropy plus ``0.5 * weight_decay * sum(W**2)``.

        Parameters
        ----------
        x : array_like of shape (N, D)
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)
        train : bool, default False
            See :meth:`predict`.

        Returns
        -------
        loss : float
        """
        scores = self.predict(x, train)
        return self.last_layer.forward(scores, np.asarray(t)) + self._weight_decay_term()

    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int = 10000) -> float:
        """Fraction of correctly classified samples, in test mode.

        Parameters
        ----------
        x : array_like of shape (N, D)
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)
        batch_size : int, default 10000
            Rows evaluated at once, bounding memory.

        Returns
        -------
        accuracy : float in [0, 1]

        Raises
        ------
        ValueError
            If ``x`` has no rows or ``t`` has a different number of rows.
        """
        t = np.asarray(t)
        if t.ndim == 2:
            t = t.argmax(axis=1)
        n = len(x)
        if n == 0 or len(t) != n:
            raise problem("x, t", "the same positive number of rows", (n, len(t)))
        correct = 0
        for start in range(0, n, batch_size):
            scores = self.predict(x[start:start + batch_size], train=False)
            correct += int(np.count_nonzero(scores.argmax(axis=1) == t[start:start + batch_size]))
        return correct / n

    def loss_and_accuracy(self, x: np.typing.ArrayLike, t: np.ndarray) -> tuple[float, float]:
        """:meth:`loss` and :meth:`accuracy` in test mode from one forward pass.

        Parameters
        ----------
        x : array_like of shape (N, D), N >= 1
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)

        Returns
        -------
        loss : float
            Mean cross-entropy plus the weight-decay term.
        accuracy : float in [0, 1]
        """
        t = np.asarray(t)
        scores = self.predict(x, train=False)
        loss = self.last_layer.forward(scores, t) + self._weight_decay_term()
        labels = t.argmax(axis=1) if t.ndim == 2 else t
        return loss, int(np.count_nonzero(scores.argmax(axis=1) == labels)) / len(labels)

    def loss_and_gradient(self, x: np.typing.ArrayLike, t: np.ndarray) -> tuple[float, np.ndarray, dict[str, np.ndarray]]:
        """One training-mode forward and backward pass.

        Parameters
        ----------
        x : array_like of shape (N, D)
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)

        Returns
        -------
        loss : float
            Mean cross-entropy plus the weight-decay term.
        scores : ndarray of shape (N, C), the network's dtype
            Scores of this training forward pass (for train accuracy without a
            second pass).
        grads : dict of str to ndarray
            Same keys, shapes and dtype as :attr:`params`; ``dW`` includes
            ``weight_decay * W``.
        """
        scores = self.predict(x, train=True)
        loss = self.last_layer.forward(scores, np.asarray(t)) + self._weight_decay_term()

        dout = self.last_layer.backward(1.0)
        layers = [layer for name, layer in self.layers.items() if name != "Image"]   # x needs no reshaping back
        for layer in reversed(layers[1:]):
            dout = layer.backward(dout)
        layers[0].backward(dout, input_grad=False)   # no one needs d loss / d x

        grads = {}
        for k in range(1, len(self.convolution_channels) + 1):
            convolution = self.layers[f"Convolution{k}"]
            grads[f"convolution_W{k}"], grads[f"convolution_b{k}"] = convolution.dW, convolution.db
        for i in range(1, self.n_affine + 1):
            affine = self.layers[f"Affine{i}"]
            grads[f"W{i}"], grads[f"b{i}"] = affine.dW, affine.db
            if f"BatchNorm{i}" in self.layers:
                batch_norm = self.layers[f"BatchNorm{i}"]
                grads[f"gamma{i}"], grads[f"beta{i}"] = batch_norm.dgamma, batch_norm.dbeta
        if self.weight_decay:
            for name in self._weight_names():
                grads[name] += self.weight_decay * self.params[name]
        return loss, scores, grads

    def gradient(self, x: np.typing.ArrayLike, t: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of :meth:`loss` (training mode) by backpropagation.

        Parameters
        ----------
        x : array_like of shape (N, D)
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)

        Returns
        -------
        grads : dict of str to ndarray
            Same keys, shapes and dtype as :attr:`params`: the arrays of
            :attr:`grads`, overwritten by the next call (copy them to keep them).
        """
        return self.loss_and_gradient(x, t)[2]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all parameters and batch-norm running statistics.

        Returns
        -------
        state : dict of str to ndarray
            :attr:`params` plus ``running_mean{i}`` and ``running_var{i}`` for
            each batch-norm layer; suitable for ``numpy.savez``.
        """
        state = {name: array.copy() for name, array in self.params.items()}
        for i in range(1, len(self.hidden_sizes) + 1):
            if f"BatchNorm{i}" in self.layers:
                batch_norm = self.layers[f"BatchNorm{i}"]
                state[f"running_mean{i}"] = batch_norm.running_mean.copy()
                state[f"running_var{i}"] = batch_norm.running_var.copy()
        return state

    def load_state_dict(self, state: Mapping[str, np.typing.ArrayLike]) -> None:
        """Copy arrays from ``state`` into the network, in place.

        Parameters
        ----------
        state : mapping of str to array_like
            Exactly the keys and shapes of :meth:`state_dict` (e.g. an opened
            ``.npz`` file); values are cast to the network's dtype.

        Raises
        ------
        ValueError
            If keys are missing or unexpected, or a shape differs.
        """
        targets = dict(self.params)
        for i in range(1, len(self.hidden_sizes) + 1):
            if f"BatchNorm{i}" in self.layers:
                batch_norm = self.layers[f"BatchNorm{i}"]
                targets[f"running_mean{i}"] = batch_norm.running_mean
                targets[f"running_var{i}"] = batch_norm.running_var
        keys = set(state.keys())
        if keys != set(targets):
            missing, unexpected = sorted(set(targets) - keys), sorted(keys - set(targets))
            raise ValueError(f"state does not match the network: missing {missing}, unexpected {unexpected}")
        for name, target in targets.items():
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"state[{name!r}] has shape {value.shape}, expected {target.shape}")
            np.copyto(target, value, casting="same_kind")


def save_weights(network: MultiLayerNet, path: str | PathLike) -> None:
    """Write ``network.state_dict()`` to an uncompressed ``.npz`` file (no pickle).

    Parameters
    ----------
    network : MultiLayerNet
    path : str or path-like
        Target file; NumPy adds ``.npz`` if the name lacks it.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    np.savez(path, **network.state_dict())


def load_weights(path: str | PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` file written by :func:`save_weights`, refusing pickled objects.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    state : dict of str to ndarray
        For :meth:`MultiLayerNet.load_state_dict`.

    Raises
    ------
    OSError
        The file is missing or unreadable.
    ValueError
        The file is not an ``.npz`` archive of plain numeric arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise ValueError(f"{path}: not an .npz archive of weights")
            return {name: archive[name] for name in archive.files}
    except zipfile.BadZipFile as error:  # truncated or damaged archive
        raise ValueError(f"{path}: damaged .npz archive ({error})") from None


def _is_real(value: object) -> bool:
    """True for real numbers other than bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def most_convolution_blocks(height: int, width: int) -> int:
    """How many convolution blocks images of ``height`` x ``width`` pixels take.

    Each block's ``POOL_SIZE`` x ``POOL_SIZE`` max pooling divides the sides, rounding down
    (:func:`models.convolution.output_side`), and a side must stay at least one pixel: 8 x 8
    digits take 3 blocks, 28 x 28 Fashion-MNIST 4, 28 x 7 images 2.
    """
    most, side = 0, min(height, width)
    while side >= POOL_SIZE:
        most, side = most + 1, side // POOL_SIZE
    return most


def _convolution_arguments(channels: Sequence[int], image_shape: Sequence[int] | None,
                           input_size: int) -> tuple[list[int], tuple[int, int, int] | None]:
    """Checked ``convolution_channels`` and ``image_shape`` as (height, width, channels), or None without blocks."""
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise problem("convolution_channels", "a sequence of integers >= 1", channels)
    channels = [positive_int("convolution_channels", count) for count in channels]
    if image_shape is None:
        if channels:
            raise problem("image_shape", "(height, width) of the input images with convolution_channels", None)
        return channels, None
    if isinstance(image_shape, (str, bytes)) or not hasattr(image_shape, "__iter__") or len(image_shape) not in (2, 3):
        raise problem("image_shape", "(height, width) or (height, width, channels)", image_shape)
    shape = tuple(positive_int("image_shape", side) for side in image_shape)
    shape = shape if len(shape) == 3 else (*shape, 1)
    if math.prod(shape) != input_size:
        raise problem("image_shape", f"a shape of input_size = {input_size} values", image_shape)
    most = most_convolution_blocks(shape[0], shape[1])
    if len(channels) > most:
        raise problem("convolution_channels", f"at most {most} blocks for images of {shape[0]} x {shape[1]} pixels "
                      "(each block halves the sides)", channels)
    return channels, shape
