"""models.validation: one message format for every argument check of models/."""

import math

import numpy as np
import pytest

from models.layers import BatchNormalization, Dropout
from models.network import MultiLayerNet
from models.optimizers import Adam, make_optimizer
from models.trainer import train
from models.validation import as_generator, fraction, number, positive_int


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "3", None])
def test_positive_int_refuses(value):
    with pytest.raises(ValueError, match=rf"^epochs: expected an integer >= 1, got {value!r}$".replace("(", r"\(")):
        positive_int("epochs", value)


def test_positive_int_accepts_numpy_integers():
    assert positive_int("n", np.int32(7)) == 7 and type(positive_int("n", np.int32(7))) is int


@pytest.mark.parametrize(("bounds", "value", "message"), [
    ({"minimum": 0, "exclusive_minimum": True}, 0.0, "a finite number > 0"),
    ({"minimum": 0}, -1e-9, "a finite number >= 0"),
    ({"minimum": 0, "maximum": 1, "exclusive_maximum": True}, 1.0, "a number in [0, 1)"),
    ({"minimum": 0, "exclusive_minimum": True, "maximum": 1}, 0.0, "a number in (0, 1]"),
    ({"maximum": 5}, 6, "a finite number <= 5"),
    ({}, math.inf, "a finite number"),
    ({}, math.nan, "a finite number"),
    ({}, False, "a finite number"),
])
def test_number_refuses_outside_its_interval(bounds, value, message):
    with pytest.raises(ValueError) as error:
        number("x", value, **bounds)
    assert str(error.value) == f"x: expected {message}, got {value!r}"


def test_number_accepts_the_closed_bounds():
    assert number("x", 0, minimum=0, maximum=1) == 0.0
    assert number("x", 1, minimum=0, maximum=1) == 1.0
    assert fraction("x", 0) == 0.0


def test_as_generator():
    generator = np.random.default_rng(3)
    assert as_generator("seed", generator) is generator
    assert as_generator("seed", np.uint8(5)).integers(1 << 30) == np.random.default_rng(5).integers(1 << 30)
    assert isinstance(as_generator("seed", None), np.random.Generator)
    for bad in (-1, 1.0, True, "1", np.random.RandomState(0), [1, 2]):
        with pytest.raises(ValueError, match="^seed: expected an int >= 0, a numpy.random.Generator or None, got"):
            as_generator("seed", bad)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: MultiLayerNet(0, [3], 2), "input_size: expected an integer >= 1, got 0"),
    (lambda: MultiLayerNet(4, [3, 0], 2), "hidden_sizes: expected an integer >= 1, got 0"),
    (lambda: MultiLayerNet(4, "33", 2), "hidden_sizes: expected a sequence of integers >= 1, got '33'"),
    (lambda: MultiLayerNet(4, [3], 2, activation="gelu"), "activation: expected one of relu, sigmoid, tanh, got 'gelu'"),
    (lambda: MultiLayerNet(4, [3], 2, weight_init=-1.0), "weight_init: expected a finite number > 0, got -1.0"),
    (lambda: MultiLayerNet(4, [3], 2, weight_init="lecun"), "weight_init: expected 'he', 'xavier' or a finite number > 0"),
    (lambda: MultiLayerNet(4, [3], 2, dropout=1.0), r"dropout: expected a number in \[0, 1\), got 1.0"),
    (lambda: MultiLayerNet(4, [3], 2, weight_decay=-0.1), "weight_decay: expected a finite number >= 0, got -0.1"),
    (lambda: MultiLayerNet(4, [3], 2, seed=1.5), "seed: expected an int >= 0, a numpy.random.Generator or None, got 1.5"),
    (lambda: Adam(lr=0), "lr: expected a finite number > 0, got 0"),
    (lambda: Adam(beta1=1.0), r"beta1: expected a number in \[0, 1\), got 1.0"),
    (lambda: make_optimizer("lion"), "optimizer: expected one of sgd, momentum, nesterov, adagrad, rmsprop, adam"),
    (lambda: Dropout(1.0), r"ratio: expected a number in \[0, 1\)"),
    (lambda: BatchNormalization(np.ones(2), np.zeros(2), eps=0.0), "eps: expected a finite number > 0, got 0"),
])
def test_models_share_one_message_format(build, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        build()


def test_network_and_trainer_take_the_same_seeds():
    # The same seed gives the same generator to the network (weights) and the trainer (shuffling).
    x = np.random.default_rng(0).random((20, 4), dtype=np.float32)
    t = np.arange(20) % 2
    for seed in (0, np.int64(0), np.random.default_rng(0)):
        network = MultiLayerNet(4, [3], 2, seed=seed)
        assert np.array_equal(network.params["W1"], MultiLayerNet(4, [3], 2, seed=0).params["W1"])
    runs = [train(MultiLayerNet(4, [3], 2, seed=1), make_optimizer("sgd", 0.1), x, t, x, t,
                  epochs=2, batch_size=5, rng=rng).history[-1].train_loss
            for rng in (7, np.int64(7), np.random.default_rng(7), 8)]
    assert runs[0] == runs[1] == runs[2] != runs[3]
