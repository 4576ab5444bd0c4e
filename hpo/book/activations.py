"""Hidden-layer activations for several initial weight scales (the book's section 6.2.2-6.2.3).

As ``ch06/weight_init_activation_histogram.py``: 1000 examples of 100
standard-normal features go through 5 fully connected layers of 100 units
(no biases) with one activation function; the histograms of each layer's
outputs show how the initial weights' standard deviation shapes them:

- std 1 with sigmoid: outputs pile up at 0 and 1, where the gradient vanishes;
- std 0.01 with sigmoid: outputs pile up at 0.5 ("limited expressiveness");
- Xavier (std sqrt(1/n)) with sigmoid or tanh: spread over the whole range;
- He (std sqrt(2/n)) with ReLU: the same spread in every layer.

The activations are the layers of :mod:`models.layers`.  Not a training run.
"""

from __future__ import annotations

import math

import numpy as np

from models.network import ACTIVATIONS

__all__ = ["BOOK_CONFIGURATIONS", "initial_std", "layer_activations", "book_activations"]

BOOK_CONFIGURATIONS = {
    "std 1, sigmoid": (1.0, "sigmoid"),
    "std 0.01, sigmoid": (0.01, "sigmoid"),
    "Xavier, sigmoid": ("xavier", "sigmoid"),
    "Xavier, tanh": ("xavier", "tanh"),
    "He, ReLU": ("he", "relu"),
}
"""Label -> (weight_init, activation): the book's figures 6-10 to 6-14."""


def initial_std(weight_init, fan_in):
    """Standard deviation of the initial weights, as :class:`models.network.MultiLayerNet` draws them.

    Parameters
    ----------
    weight_init : {"xavier", "he"} or float
        "xavier": sqrt(1 / fan_in) (Glorot & Bengio 2010); "he": sqrt(2 / fan_in)
        (He et al. 2015); a number: that fixed standard deviation.
    fan_in : int
        Units of the layer's input.

    Returns
    -------
    float
    """
    if weight_init == "xavier":
        return math.sqrt(1.0 / fan_in)
    if weight_init == "he":
        return math.sqrt(2.0 / fan_in)
    return float(weight_init)


def layer_activations(weight_init, activation, *, examples=1000, units=100, layers=5, seed=0):
    """Outputs of every hidden layer for standard-normal inputs.

    Parameters
    ----------
    weight_init : {"xavier", "he"} or float
        See :func:`initial_std`.
    activation : {"sigmoid", "tanh", "relu"}
    examples : int, default 1000
    units : int, default 100
        Input features and units of every layer.
    layers : int, default 5
    seed : int, default 0
        Seed of ``numpy.random.default_rng`` for the inputs and the weights.

    Returns
    -------
    activations : ndarray of shape (layers, examples, units), float64
        ``activations[i]`` is the output of hidden layer i + 1.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((examples, units))
    outputs = np.empty((layers, examples, units), dtype=np.float64)
    for layer in range(layers):
        weights = rng.standard_normal((units, units)) * initial_std(weight_init, units)
        x = ACTIVATIONS[activation]().forward(x @ weights, train=False)
        outputs[layer] = x
    return outputs


def book_activations(*, seed=0):
    """:func:`layer_activations` of every configuration in :data:`BOOK_CONFIGURATIONS`.

    Returns
    -------
    dict of str to ndarray of shape (5, 1000, 100), float64
    """
    return {label: layer_activations(weight_init, activation, seed=seed)
            for label, (weight_init, activation) in BOOK_CONFIGURATIONS.items()}
