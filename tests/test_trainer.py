"""Tests of models.trainer: epochs, callback, divergence, determinism, shuffling."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pytest

from models.datasets import load_digits, train_validation_split
from models.network import MultiLayerNet
from models.optimizers import SGD, make_optimizer
from models.trainer import EpochMetrics, TrainingResult, divergence_limit, train


@pytest.fixture(scope="module")
def digits_split():
    data = load_digits()
    return train_validation_split(data.x_train, data.t_train, 0.2, seed=0)


def digits_network(seed=0, **kwargs):
    return MultiLayerNet(64, [64, 64], 10, seed=seed, **kwargs)


def without_seconds(history):
    return [dataclasses.replace(metrics, seconds=0.0) for metrics in history]


class RecordingNet:
    """A stand-in network that records the rows it sees and returns scripted values.

    Column 0 of x holds the row's index in the training set. The training-mode
    scores classify a row correctly when its index is even; losses are
    ``losses[call]`` (default 1.0 + call number).
    """

    def __init__(self, n_classes=3, losses=None, validation_loss=0.5):
        self.params = {"W": np.zeros(2, dtype=np.float32)}
        self.n_classes = n_classes
        self.losses = losses
        self.validation_loss = validation_loss
        self.batches = []  # row indices of each mini-batch, in order
        self.loss_calls = []  # sizes of test-mode evaluation chunks

    def loss_and_gradient(self, x, t):
        rows = x[:, 0].astype(np.int64)
        self.batches.append(rows)
        labels = t.argmax(axis=1) if t.ndim == 2 else t
        predicted = np.where(rows % 2 == 0, labels, (labels + 1) % self.n_classes)
        scores = np.eye(self.n_classes, dtype=np.float32)[predicted]
        call = len(self.batches) - 1
        loss = self.losses[call] if self.losses is not None else 1.0 + call
        return loss, scores, {"W": np.ones(2, dtype=np.float32)}

    def loss(self, x, t, train=False):
        assert train is False
        self.loss_calls.append(x.shape[0])
        return self.validation_loss

    def accuracy(self, x, t):
        return 0.75

    def loss_and_accuracy(self, x, t):
        return self.loss(x, t), self.accuracy(x, t)

    def flat_vectors(self):
        return None  # updated by name


class CountingOptimizer:
    def __init__(self):
        self.updates = 0

    def update(self, params, grads):
        self.updates += 1
        for key in params:
            params[key] -= 0.1 * grads[key]


def indexed_data(n, n_features=3, n_classes=3):
    x = np.zeros((n, n_features), dtype=np.float32)
    x[:, 0] = np.arange(n)
    t = np.arange(n, dtype=np.int64) % n_classes
    return x, t


# --- with the real network and optimizers ---------------------------------------------------


def test_training_on_digits_reaches_high_validation_accuracy(digits_split):
    x, t, xv, tv = digits_split
    network = digits_network()
    result = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, epochs=8, batch_size=32, rng=0)
    assert not result.diverged and result.message == ""
    assert result.epochs_run == 8
    # Measured (seeds 0..3): best 0.958..0.972, last epoch 0.948..0.972; seed 0: best 0.965, last 0.948.
    assert result.best_validation_accuracy >= 0.94
    assert result.history[-1].validation_accuracy >= 0.92
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert result.history[-1].validation_loss < result.history[0].validation_loss
    best = max(result.history, key=lambda m: m.validation_accuracy)
    assert result.best_epoch == best.epoch
    # The reported validation metrics are the network's own test-mode metrics.
    assert result.history[-1].validation_accuracy == pytest.approx(network.accuracy(xv, tv))
    assert result.history[-1].validation_loss == pytest.approx(network.loss(xv, tv, train=False), rel=1e-5)


def test_evaluate_train_measures_the_training_set_in_test_mode(digits_split):
    x, t, xv, tv = digits_split
    network = MultiLayerNet(64, [32], 10, dropout=0.5, seed=0)
    result = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, epochs=2, batch_size=32, rng=0,
                   evaluate_train=True)
    last = result.history[-1]
    # Test mode: no units dropped, unlike the mini-batch accuracy of train_accuracy.
    assert last.train_eval_accuracy == pytest.approx(network.accuracy(x, t))
    assert last.train_eval_loss == pytest.approx(network.loss(x, t, train=False), rel=1e-5)
    assert last.train_eval_accuracy > last.train_accuracy
    plain = train(MultiLayerNet(64, [32], 10, seed=0), make_optimizer("adam", 0.01), x, t, xv, tv,
                  epochs=1, batch_size=32, rng=0)
    assert plain.history[0].train_eval_accuracy is None and plain.history[0].train_eval_loss is None


def test_callback_sees_every_epoch_in_order(digits_split):
    x, t, xv, tv = digits_split
    seen = []
    result = train(
        digits_network(),
        make_optimizer("momentum", 0.05),
        x,
        t,
        xv,
        tv,
        epochs=4,
        batch_size=64,
        rng=np.random.default_rng(1),
        callback=seen.append,
    )
    assert [m.epoch for m in seen] == [1, 2, 3, 4]
    assert seen == result.history
    for metrics in seen:
        assert isinstance(metrics, EpochMetrics)
        assert 0.0 <= metrics.train_accuracy <= 1.0 and 0.0 <= metrics.validation_accuracy <= 1.0
        assert math.isfinite(metrics.train_loss) and math.isfinite(metrics.validation_loss)
        assert metrics.seconds > 0.0


def test_exception_in_callback_stops_training_and_propagates(digits_split):
    x, t, xv, tv = digits_split

    class Stop(Exception):
        pass

    seen = []

    def callback(metrics):
        seen.append(metrics.epoch)
        if metrics.epoch == 2:
            raise Stop("pruned")

    optimizer = CountingOptimizer()
    with pytest.raises(Stop, match="pruned"):
        train(digits_network(), optimizer, x, t, xv, tv, epochs=10, batch_size=100, rng=0, callback=callback)
    assert seen == [1, 2]
    assert optimizer.updates == 2 * math.ceil(x.shape[0] / 100)


@pytest.mark.parametrize(("learning_rate", "batch_size"), [(1e6, 32), (20.0, 256)])
def test_huge_learning_rate_diverges_at_the_second_mini_batch(digits_split, learning_rate, batch_size):
    # With weight decay lambda = 1, the first SGD step makes each weight matrix W' = (1 - lr) W - lr g
    # (g: the gradient of the cross-entropy alone), so ||W'|| >= (lr - 1) ||W|| - lr ||g||. The loss of
    # mini-batch 2 is at least its weight decay term 0.5 * sum ||W'||^2 (the cross-entropy is >= 0): when
    # that bound exceeds 100 x the first mini-batch's loss, mini-batch 2 diverges (mini-batch 1 cannot:
    # the limit is 100 x its own loss).
    x, t, xv, tv = digits_split
    first = np.random.default_rng(0).permutation(len(x))[:batch_size]  # what train(rng=0) draws first
    first_loss, _, grads = digits_network(weight_decay=1.0).loss_and_gradient(x[first], t[first])
    bound = 0.0
    for name in ("W1", "W2", "W3"):
        weights = digits_network(weight_decay=1.0).params[name].astype(np.float64)
        data_part = np.linalg.norm(grads[name] - weights)  # dW = g + lambda W
        bound += 0.5 * max((learning_rate - 1) * np.linalg.norm(weights) - learning_rate * data_part, 0.0) ** 2
    assert bound > 100 * first_loss  # the derivation applies (by 2.9x at lr = 20, 7.6e9x at lr = 1e6)

    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainer keeps NumPy's overflow warnings quiet
        result = train(
            digits_network(weight_decay=1.0), SGD(lr=learning_rate), x, t, xv, tv,
            epochs=5, batch_size=batch_size, rng=0, callback=seen.append,
        )
    assert result.diverged
    # The first loss is large here (the weight decay term of lambda = 1 is about 137).
    match = re.fullmatch(r"training loss (\S+) in (.+) exceeds the limit (\S+) \(100 x max\(first mini-batch "
                         r"loss (\S+), ln 10 = 2.303\)\); lower the learning rate", result.message)
    assert match, result.message
    loss, limit, reported_first = float(match[1]), float(match[3]), float(match[4])
    assert match[2] == "epoch 1, mini-batch 2"
    assert reported_first == pytest.approx(first_loss, rel=1e-3) and limit == pytest.approx(100 * first_loss, rel=1e-3)
    assert loss >= bound * (1 - 1e-3)
    assert result.epochs_run == 0 and seen == result.history == []


def test_same_seed_same_history(digits_split):
    x, t, xv, tv = digits_split

    def run(rng):
        network = digits_network(seed=3, batch_norm=True, dropout=0.1, weight_decay=1e-4)
        return train(network, make_optimizer("adam", 0.005), x, t, xv, tv, epochs=3, batch_size=50, rng=rng)

    first = run(5)
    again = run(np.random.default_rng(5))
    other = run(6)
    assert without_seconds(first.history) == without_seconds(again.history)
    assert without_seconds(first.history) != without_seconds(other.history)


# --- with stand-ins: exact bookkeeping ------------------------------------------------------


def test_every_training_example_once_per_epoch_in_fresh_order():
    x, t = indexed_data(10)
    network = RecordingNet()
    optimizer = CountingOptimizer()
    train(network, optimizer, x, t, x[:4], t[:4], epochs=3, batch_size=4, rng=0)
    assert [len(rows) for rows in network.batches] == [4, 4, 2] * 3  # last partial batch included
    assert optimizer.updates == 9
    orders = [np.concatenate(network.batches[3 * e : 3 * e + 3]) for e in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(10))
    assert not all(np.array_equal(orders[0], order) for order in orders[1:])
    assert not np.array_equal(orders[0], np.arange(10))


def test_shuffling_follows_the_generator():
    x, t = indexed_data(10)
    network = RecordingNet()
    train(network, CountingOptimizer(), x, t, x, t, epochs=2, batch_size=10, rng=np.random.default_rng(42))
    expected = np.random.default_rng(42)
    np.testing.assert_array_equal(network.batches[0], expected.permutation(10))
    np.testing.assert_array_equal(network.batches[1], expected.permutation(10))


def test_epoch_metrics_bookkeeping():
    x, t = indexed_data(10)
    network = RecordingNet(losses=[1.0, 2.0, 6.0, 0.5, 0.5, 0.5])
    result = train(network, CountingOptimizer(), x, t, x[:5], t[:5], epochs=2, batch_size=4, rng=0)
    first, second = result.history
    assert first.epoch == 1 and second.epoch == 2
    assert first.train_loss == pytest.approx(3.0)  # mean of the mini-batch losses
    assert second.train_loss == pytest.approx(0.5)
    assert first.train_accuracy == pytest.approx(0.5)  # even indices are classified correctly
    assert first.validation_loss == pytest.approx(0.5)
    assert first.validation_accuracy == pytest.approx(0.75)


def test_one_hot_labels_are_accepted():
    x, t = indexed_data(9)
    one_hot = np.eye(3, dtype=np.float32)[t]
    result = train(RecordingNet(), CountingOptimizer(), x, one_hot, x, one_hot, epochs=1, batch_size=4, rng=0)
    assert result.history[0].train_accuracy == pytest.approx(5 / 9)


def test_validation_is_evaluated_in_chunks(monkeypatch):
    import models.trainer as trainer

    monkeypatch.setattr(trainer, "EVALUATION_CHUNK", 4)
    x, t = indexed_data(10)
    network = RecordingNet()
    train(network, CountingOptimizer(), x, t, x, t, epochs=1, batch_size=10, rng=0)
    assert network.loss_calls == [4, 4, 2]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_batch_loss_stops_at_once(bad):
    x, t = indexed_data(10)
    network = RecordingNet(losses=[1.0, 1.0, 1.0, 1.0, 1.0, bad, 1.0])
    optimizer = CountingOptimizer()
    seen = []
    result = train(network, optimizer, x, t, x, t, epochs=5, batch_size=4, rng=0, callback=seen.append)
    assert result.diverged
    assert result.message == f"training loss became {bad} in epoch 2, mini-batch 3; lower the learning rate"
    assert [m.epoch for m in result.history] == [1] and seen == result.history
    assert len(network.batches) == 6 and optimizer.updates == 5  # no update with the bad gradient


def test_nonfinite_validation_loss_is_divergence():
    x, t = indexed_data(10)
    seen = []
    result = train(
        RecordingNet(validation_loss=float("inf")), CountingOptimizer(), x, t, x, t,
        epochs=3, batch_size=4, rng=0, callback=seen.append,
    )
    assert result.diverged
    assert result.message == "validation loss became inf after epoch 1; lower the learning rate"
    assert result.history == [] and seen == []
    assert result.best_validation_accuracy is None and result.best_epoch is None and result.epochs_run == 0


def test_divergence_limit_known_answers():
    assert divergence_limit(2.0, 10) == pytest.approx(100 * math.log(10))  # 230.2585: ln 10 is the larger
    assert divergence_limit(5.0, 10) == 500.0
    assert divergence_limit(0.5, 3) == pytest.approx(109.861229)           # 100 * ln 3
    assert divergence_limit(0.0, 1) == 0.0                                  # one class: ln 1 = 0


@pytest.mark.parametrize(
    "first_loss, limit, limit_text, start_text",
    [
        (2.0, 200.0, "200", "2, ln 3 = 1.099"),               # the first loss sets the limit
        (0.5, 100 * math.log(3), "109.861", "0.5, ln 3 = 1.099"),  # ln C sets it (C = 3: the scores' width)
    ],
)
def test_a_training_loss_above_the_limit_is_divergence(first_loss, limit, limit_text, start_text):
    x, t = indexed_data(12)  # 3 mini-batches of 4 per epoch
    below = limit * (1 - 1e-6)
    healthy = train(RecordingNet(losses=[first_loss, below, 1.0] * 3), CountingOptimizer(), x, t, x, t,
                    epochs=3, batch_size=4, rng=0)
    assert not healthy.diverged and healthy.message == "" and healthy.epochs_run == 3

    above = limit * (1 + 1e-6)
    optimizer = CountingOptimizer()
    seen = []
    result = train(RecordingNet(losses=[first_loss, 1.0, 1.0, 1.0, above, 1.0]), optimizer, x, t, x, t,
                   epochs=3, batch_size=4, rng=0, callback=seen.append)
    assert result.diverged
    assert result.message == (f"training loss {above:.6g} in epoch 2, mini-batch 2 exceeds the limit {limit_text} "
                              f"(100 x max(first mini-batch loss {start_text})); lower the learning rate")
    assert [m.epoch for m in result.history] == [1] and seen == result.history
    assert optimizer.updates == 4  # not with the exploded mini-batch's gradient


def test_a_validation_loss_above_the_limit_is_divergence():
    x, t = indexed_data(8)
    losses = [2.0, 1.0] * 3  # first loss 2.0 > ln 3: limit 200
    fine = train(RecordingNet(losses=losses, validation_loss=199.9), CountingOptimizer(), x, t, x, t,
                 epochs=3, batch_size=4, rng=0)
    assert not fine.diverged and fine.epochs_run == 3
    result = train(RecordingNet(losses=losses, validation_loss=200.1), CountingOptimizer(), x, t, x, t,
                   epochs=3, batch_size=4, rng=0)
    assert result.diverged and result.history == []
    assert result.message == ("validation loss 200.1 after epoch 1 exceeds the limit 200 (100 x max(first "
                              "mini-batch loss 2, ln 3 = 1.099)); lower the learning rate")


def test_training_result_properties():
    def metrics(epoch, accuracy):
        return EpochMetrics(epoch, 1.0, 0.5, 1.0, accuracy, 0.1)

    result = TrainingResult(history=[metrics(1, 0.6), metrics(2, 0.8), metrics(3, 0.8), metrics(4, 0.7)])
    assert result.best_validation_accuracy == 0.8
    assert result.best_epoch == 2  # earliest on ties
    assert result.epochs_run == 4
    assert not result.diverged and result.message == ""


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, "epochs: expected an integer >= 1, got 0"),
        ({"epochs": 2.0}, "epochs: expected an integer >= 1"),
        ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0"),
        ({"x_train": np.zeros(10, dtype=np.float32)}, "x_train: expected a non-empty 2-D array"),
        ({"t_train": np.zeros(9, dtype=np.int64)}, r"t_train: expected labels of shape \(10,\)"),
        ({"x_validation": np.zeros((4, 2), dtype=np.float32)}, "x_validation: expected 3 features"),
        ({"t_validation": np.zeros(3, dtype=np.int64)}, r"t_validation: expected labels of shape \(4,\)"),
    ],
)
def test_arguments_are_checked(kwargs, match):
    x, t = indexed_data(10)
    arguments = dict(
        network=RecordingNet(), optimizer=CountingOptimizer(), x_train=x, t_train=t,
        x_validation=x[:4], t_validation=t[:4], epochs=1, batch_size=4, rng=0,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train(**arguments)
    assert arguments["network"].batches == []


@pytest.mark.parametrize("rng", [np.random.RandomState(0), 1.5, True, -1, "0"])
def test_rng_must_be_generator_int_or_none(rng):
    x, t = indexed_data(10)
    with pytest.raises(ValueError, match="rng: expected an int >= 0, a numpy.random.Generator or None, got"):
        train(RecordingNet(), CountingOptimizer(), x, t, x, t, epochs=1, batch_size=4, rng=rng)


def test_a_deep_copied_network_still_trains(digits_split):
    # A deep copy turns the views of the flat vectors into separate arrays: the trainer
    # must then update the arrays the layers use, one by one.
    import copy

    x, t, xv, tv = digits_split
    original = digits_network(seed=1)
    copied = copy.deepcopy(original)
    assert not np.may_share_memory(copied.params["W1"], copied.params_vector)
    first = train(original, make_optimizer("adam", 0.01), x, t, xv, tv, epochs=3, batch_size=32, rng=0)
    second = train(copied, make_optimizer("adam", 0.01), x, t, xv, tv, epochs=3, batch_size=32, rng=0)
    assert second.history[-1].validation_accuracy > 0.85
    assert [m.validation_loss for m in second.history] == [m.validation_loss for m in first.history]
    for name, array in original.state_dict().items():
        np.testing.assert_array_equal(array, copied.state_dict()[name])


# --- learning-rate schedules and augmentation -------------------------------------------------


class RateRecordingOptimizer(CountingOptimizer):
    """Records its ``lr`` at every update."""

    def __init__(self, lr):
        super().__init__()
        self.lr = lr
        self.rates = []

    def update(self, params, grads):
        self.rates.append(self.lr)
        super().update(params, grads)


def test_schedule_sets_the_optimizers_rate_before_each_epoch():
    from models.schedules import make_schedule

    x, t = indexed_data(10)
    optimizer = RateRecordingOptimizer(lr=123.0)
    result = train(RecordingNet(), optimizer, x, t, x[:4], t[:4], epochs=4, batch_size=4, rng=0,
                   schedule=make_schedule("step", 1.0, epochs=4, warmup_epochs=1))
    # Warmup 1 * 1/2, then 3 epochs starting 0, 1/3, 2/3 of the way: 1, 1, 0.1 (2/3 >= 1/2, < 3/4).
    assert optimizer.rates == pytest.approx([0.5] * 3 + [1.0] * 6 + [0.1] * 3)
    assert [metrics.learning_rate for metrics in result.history] == pytest.approx([0.5, 1.0, 1.0, 0.1])


def test_without_schedule_the_epochs_report_the_optimizers_own_rate(digits_split):
    x, t, xv, tv = digits_split
    result = train(digits_network(), SGD(lr=0.05), x, t, xv, tv, epochs=2, batch_size=100, rng=0)
    assert [metrics.learning_rate for metrics in result.history] == [0.05, 0.05]


def test_augmentation_gets_each_training_batch_and_the_runs_generator():
    x, t = indexed_data(10)
    generator = np.random.default_rng(3)
    seen = []

    def augmentation(xb, rng):
        assert rng is generator
        seen.append(xb[:, 0].copy())
        out = xb.copy()
        out[:, 0] = 9 - out[:, 0]  # the network then records the mirrored row numbers
        return out

    network = RecordingNet()
    train(network, CountingOptimizer(), x, t, x[:4], t[:4], epochs=2, batch_size=4, rng=generator,
          augmentation=augmentation)
    assert len(seen) == 6
    for before, after in zip(seen, network.batches, strict=True):
        np.testing.assert_array_equal(after, 9 - before)


def test_augmented_training_is_reproducible_and_validation_is_never_augmented(digits_split):
    from models.augmentation import make_augmentation

    x, t, xv, tv = digits_split
    shift = make_augmentation("shift", (8, 8))
    xv_before = xv.copy()

    def run(augmentation):
        network = digits_network()
        result = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, epochs=2, batch_size=50,
                       rng=np.random.default_rng(5), augmentation=augmentation)
        return network, result

    network, result = run(shift)
    # The validation metrics are those of the plain validation images.
    loss, accuracy = network.loss_and_accuracy(xv, tv)
    assert result.history[-1].validation_accuracy == pytest.approx(float(accuracy), abs=1e-12)
    assert result.history[-1].validation_loss == pytest.approx(float(loss), rel=1e-6)
    np.testing.assert_array_equal(xv, xv_before)
    again = run(shift)[1]
    assert without_seconds(again.history) == without_seconds(result.history)
    plain = run(None)[1]
    assert without_seconds(plain.history) != without_seconds(result.history)
