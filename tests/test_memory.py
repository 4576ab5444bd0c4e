"""models.memory: the estimate of training's memory against the peak tracemalloc measures."""

import tracemalloc

import numpy as np
import pytest

from models.memory import OPTIMIZER_STATE, training_memory
from models.network import MultiLayerNet
from models.optimizers import OPTIMIZERS, make_optimizer
from models.trainer import train


def measured_peak(input_size, hidden_sizes, output_size, *, batch_size, train_rows, evaluation_rows,
                  optimizer="sgd", activation="relu", batch_norm=False, dropout=0.0, weight_decay=0.0):
    """Peak bytes NumPy allocates while a network is built and trained for 2 epochs, as hpo.tuning.objective does
    (a copy of the weights at each new best epoch: here every epoch, the objective's worst case)."""
    rng = np.random.default_rng(0)
    x = rng.random((train_rows, input_size), dtype=np.float32)
    t = rng.integers(0, output_size, train_rows)
    x_validation = rng.random((evaluation_rows, input_size), dtype=np.float32)
    t_validation = rng.integers(0, output_size, evaluation_rows)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        network = MultiLayerNet(input_size, hidden_sizes, output_size, activation=activation,
                                batch_norm=batch_norm, dropout=dropout, weight_decay=weight_decay, seed=1)
        best_state = {}
        result = train(network, make_optimizer(optimizer, 1e-4), x, t, x_validation, t_validation, epochs=2,
                       batch_size=batch_size, rng=rng, callback=lambda metrics: best_state.update(network.state_dict()))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert result.epochs_run == 2 and not result.diverged
    return peak


# Measured (estimate / peak): 1.02, 1.11, 1.11, 1.15, 1.04, 1.04 -- the estimate errs on the large side.
CONFIGURATIONS = [
    # parameters dominate (0.67 M of them)
    dict(input_size=784, hidden_sizes=[512, 512], output_size=10, batch_size=256, train_rows=3000,
         evaluation_rows=1500),
    # Adam's three state arrays, batch norm's normalized inputs, dropout's masks
    dict(input_size=784, hidden_sizes=[512, 512], output_size=10, batch_size=256, train_rows=3000,
         evaluation_rows=1500, optimizer="adam", batch_norm=True, dropout=0.5),
    # sigmoid (keeps its output), momentum's velocity and flush, weight decay's lambda W, 2 test-mode chunks
    dict(input_size=784, hidden_sizes=[256, 256, 256], output_size=10, batch_size=1000, train_rows=3000,
         evaluation_rows=6000, optimizer="momentum", activation="sigmoid", weight_decay=1e-4),
    # activations of a large mini-batch dominate; tanh and dropout, RMSprop
    dict(input_size=784, hidden_sizes=[1024], output_size=10, batch_size=2000, train_rows=4000,
         evaluation_rows=2000, optimizer="rmsprop", activation="tanh", dropout=0.3),
    # the test-mode chunks of 4096 rows dominate
    dict(input_size=784, hidden_sizes=[1024, 1024], output_size=10, batch_size=500, train_rows=4000,
         evaluation_rows=10000, optimizer="adagrad"),
    # softmax regression
    dict(input_size=784, hidden_sizes=[], output_size=10, batch_size=100, train_rows=3000,
         evaluation_rows=1500, optimizer="nesterov"),
]


@pytest.mark.parametrize("configuration", CONFIGURATIONS, ids=lambda c: f"{c['hidden_sizes']}-{c.get('optimizer', 'sgd')}")
def test_the_estimate_is_within_0_95_to_1_25_of_the_measured_peak(configuration):
    estimate = training_memory(**configuration)
    peak = measured_peak(**configuration)
    assert 0.95 * peak <= estimate <= 1.25 * peak, (estimate / 1e6, peak / 1e6)


def test_the_optimizer_table_counts_the_state_each_optimizer_keeps():
    # After one update of a flat vector, the arrays of that size an optimizer holds are its state.
    parameters = {"all": np.zeros(1000, dtype=np.float32)}
    gradients = {"all": np.ones(1000, dtype=np.float32)}
    assert set(OPTIMIZER_STATE) == set(OPTIMIZERS)
    for name in OPTIMIZERS:
        optimizer = make_optimizer(name, 0.1)
        optimizer.update(parameters, gradients)
        kept = sum(array.size for value in vars(optimizer).values() if isinstance(value, dict)
                   for array in value.values() if isinstance(array, np.ndarray))
        assert kept == OPTIMIZER_STATE[name] * 1000, name


def test_known_parts_of_the_estimate():
    # P = 784 * 100 + 100 + 100 * 10 + 10 = 79,510 parameters of 4 bytes. Adam adds 3 P s of state and
    # a larger update (abs and a bool mask of its state: P (s + 1)) than SGD's lr * g (P s): 13 P more.
    arguments = dict(batch_size=1, train_rows=1, evaluation_rows=1, keep_best_weights=False)
    sgd = training_memory(784, [100], 10, optimizer="sgd", **arguments)
    adam = training_memory(784, [100], 10, optimizer="adam", **arguments)
    assert adam - sgd == 79_510 * (3 * 4 + 1)
    # Keeping the best weights costs one copy of them (Adam: the update stays the busiest moment).
    assert training_memory(784, [100], 10, optimizer="adam", **{**arguments, "keep_best_weights": True}) \
        - adam == 79_510 * 4
    # float64 doubles what the parameters take.
    assert training_memory(784, [100], 10, dtype=np.float64, **arguments) == pytest.approx(2 * sgd, rel=0.01)
