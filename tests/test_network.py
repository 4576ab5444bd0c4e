"""Tests of models.network.MultiLayerNet: backprop vs numerical gradients, weight decay,
dtype discipline, initialization, seeding, validation and saving."""

import math

import numpy as np
import pytest

from models.layers import Affine, BatchNormalization, Dropout, ReLU, Sigmoid, Tanh
from models.network import MultiLayerNet
from models.optimizers import SGD, Adam


def freeze_dropout(net):
    """Make every Dropout layer reuse one mask (drawn at the next training pass)."""
    for layer in net.layers.values():
        if isinstance(layer, Dropout):
            layer.fixed_mask = True


def data(n=4, d=6, c=3, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, c, size=n)


def perturb(net, seed=1):
    """Give biases, gamma and beta non-trivial values so that their gradients are tested."""
    rng = np.random.default_rng(seed)
    for name, value in net.params.items():
        if not name.startswith("W"):
            value += 0.3 * rng.standard_normal(value.shape).astype(value.dtype)


@pytest.fixture
def check_network_gradient(numerical_gradient, relative_error):
    """``check_network_gradient(net, x, t)``: backprop against central differences, parameter by parameter."""

    def check(net, x, t):
        freeze_dropout(net)
        grads = net.gradient(x, t)
        assert set(grads) == set(net.params)
        for name, param in net.params.items():
            numeric = numerical_gradient(lambda: net.loss(x, t, train=True), param)
            assert grads[name].shape == param.shape
            assert relative_error(grads[name], numeric) < 1e-6, name

    return check


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_gradient_with_batch_norm_dropout_and_weight_decay(activation, check_network_gradient):
    net = MultiLayerNet(6, [5, 4], 3, activation=activation, weight_init="xavier", batch_norm=True,
                        dropout=0.3, weight_decay=0.1, seed=0, dtype=np.float64)
    perturb(net)
    x, t = data(n=4)
    check_network_gradient(net, x, t)
    # Batch norm subtracts the batch mean, so the preceding biases get no gradient.
    grads = net.gradient(x, t)
    np.testing.assert_allclose(grads["b1"], 0.0, atol=1e-12)
    np.testing.assert_allclose(grads["b2"], 0.0, atol=1e-12)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_gradient_plain(activation, check_network_gradient):
    net = MultiLayerNet(6, [5], 3, activation=activation, weight_decay=0.05, seed=1, dtype=np.float64)
    perturb(net)
    x, t = data(n=3)
    check_network_gradient(net, x, t)


def test_gradient_batch_of_two_one_hot_labels(check_network_gradient):
    net = MultiLayerNet(5, [4, 4], 3, activation="tanh", batch_norm=True, dropout=0.5, weight_decay=0.2,
                        seed=2, dtype=np.float64)
    perturb(net)
    x, t = data(n=2, d=5)
    check_network_gradient(net, x, np.eye(3)[t])


def test_gradient_softmax_regression(check_network_gradient):
    net = MultiLayerNet(6, [], 3, weight_decay=0.1, seed=3, dtype=np.float64)
    assert list(net.params) == ["W1", "b1"]
    assert list(net.layers) == ["Affine1"]
    x, t = data(n=5)
    check_network_gradient(net, x, t)


def test_layer_order_and_names():
    net = MultiLayerNet(4, [3, 2], 2, activation="sigmoid", batch_norm=True, dropout=0.5, seed=0)
    assert list(net.layers) == ["Affine1", "BatchNorm1", "Activation1", "Dropout1",
                                "Affine2", "BatchNorm2", "Activation2", "Dropout2", "Affine3"]
    kinds = [Affine, BatchNormalization, Sigmoid, Dropout] * 2 + [Affine]
    assert [type(layer) for layer in net.layers.values()] == kinds
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    plain = MultiLayerNet(4, [3], 2, activation="tanh")
    assert [type(layer) for layer in plain.layers.values()] == [Affine, Tanh, Affine]
    assert [type(layer) for layer in MultiLayerNet(4, [3], 2).layers.values()] == [Affine, ReLU, Affine]


def test_layers_share_parameter_arrays():
    net = MultiLayerNet(4, [3], 2, batch_norm=True, seed=0)
    assert net.layers["Affine1"].W is net.params["W1"]
    assert net.layers["Affine1"].b is net.params["b1"]
    assert net.layers["BatchNorm1"].gamma is net.params["gamma1"]
    assert net.layers["BatchNorm1"].beta is net.params["beta1"]
    assert net.layers["Affine2"].W is net.params["W2"]
    x, t = data(n=5, d=4, c=2, dtype=np.float32)
    before = net.predict(x)
    SGD(lr=0.5).update(net.params, net.gradient(x, t))
    assert not np.array_equal(net.predict(x), before)


def test_weight_decay_term_exact():
    x, t = data(n=5)
    plain = MultiLayerNet(6, [5, 4], 3, batch_norm=True, weight_decay=0.0, seed=4, dtype=np.float64)
    decayed = MultiLayerNet(6, [5, 4], 3, batch_norm=True, weight_decay=0.1, seed=4, dtype=np.float64)
    perturb(plain)
    perturb(decayed)
    squares = sum(np.sum(decayed.params[f"W{i}"] ** 2) for i in (1, 2, 3))
    assert decayed.loss(x, t) == pytest.approx(plain.loss(x, t) + 0.5 * 0.1 * squares, rel=1e-13)

    # Biases, gamma and beta do not enter the term: changing them changes both losses alike.
    for net in (plain, decayed):
        for name in ("b1", "gamma1", "beta2", "b3"):
            net.params[name] += 1.0
    assert decayed.loss(x, t) == pytest.approx(plain.loss(x, t) + 0.5 * 0.1 * squares, rel=1e-13)

    grads_plain, grads_decayed = plain.gradient(x, t), decayed.gradient(x, t)
    for name, value in decayed.params.items():
        expected = grads_plain[name] + (0.1 * value if name.startswith("W") else 0.0)
        np.testing.assert_allclose(grads_decayed[name], expected, rtol=1e-12, atol=1e-15)


def test_loss_and_gradient_consistent():
    net = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.2, weight_decay=0.01, seed=5,
                        dtype=np.float64)
    freeze_dropout(net)
    x, t = data(n=8)
    loss, scores, grads = net.loss_and_gradient(x, t)
    assert isinstance(loss, float)
    np.testing.assert_allclose(scores, net.predict(x, train=True), rtol=1e-14)
    assert loss == pytest.approx(net.loss(x, t, train=True), rel=1e-14)
    for name, value in net.gradient(x, t).items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-13)


def test_float32_preserved_everywhere():
    net = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.2, weight_decay=0.01, seed=6)
    assert net.dtype == np.float32
    assert all(value.dtype == np.float32 for value in net.params.values())
    x32, t = data(n=8, dtype=np.float32)
    for x in (x32, x32.astype(np.float64)):           # float64 inputs are cast, not promoted to
        assert net.predict(x).dtype == np.float32
        assert net.predict(x, train=True).dtype == np.float32
        loss, scores, grads = net.loss_and_gradient(x, t)
        assert scores.dtype == np.float32 and math.isfinite(loss)
        assert all(grads[name].dtype == np.float32 for name in net.params)
        assert isinstance(net.loss(x, t), float)
    optimizer = Adam(lr=0.01)
    for _ in range(3):
        optimizer.update(net.params, net.gradient(x32, t))
    assert all(value.dtype == np.float32 for value in net.params.values())
    assert all(value.dtype == np.float32 for value in net.state_dict().values())


def test_float64_network():
    net = MultiLayerNet(6, [5], 3, batch_norm=True, seed=0, dtype=np.float64)
    x, t = data(n=4, dtype=np.float32)
    assert net.predict(x).dtype == np.float64
    assert all(value.dtype == np.float64 for value in net.gradient(x, t).values())


def test_same_seed_same_network_and_masks():
    x, _ = data(n=6, dtype=np.float32)
    a = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.5, seed=7)
    b = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.5, seed=7)
    c = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.5, seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(a.params["W1"], c.params["W1"])
    np.testing.assert_array_equal(a.predict(x, train=True), b.predict(x, train=True))   # same dropout masks
    # Another seed draws other masks too: given the parameters of seed 7, c's first pass drops other units.
    fresh = MultiLayerNet(6, [5, 4], 3, batch_norm=True, dropout=0.5, seed=7)
    c.load_state_dict(fresh.state_dict())
    assert not np.array_equal(fresh.predict(x, train=True), c.predict(x, train=True))


def test_generator_seed_and_no_global_state():
    np.random.seed(0)
    global_state = np.random.get_state()[1].copy()
    from_int = MultiLayerNet(6, [5], 3, dropout=0.5, seed=9)
    from_generator = MultiLayerNet(6, [5], 3, dropout=0.5, seed=np.random.default_rng(9))
    np.testing.assert_array_equal(from_int.params["W1"], from_generator.params["W1"])
    assert not np.array_equal(MultiLayerNet(6, [5], 3, seed=np.random.default_rng(10)).params["W1"],
                              from_int.params["W1"])
    x, _ = data(n=4, dtype=np.float32)
    from_int.predict(x, train=True)
    MultiLayerNet(6, [5], 3, dropout=0.5, seed=None).predict(x, train=True)
    np.testing.assert_array_equal(np.random.get_state()[1], global_state)


@pytest.mark.parametrize("weight_init, std_of_fan_in", [
    ("he", lambda fan_in: math.sqrt(2.0 / fan_in)),
    ("xavier", lambda fan_in: math.sqrt(1.0 / fan_in)),
    (0.01, lambda fan_in: 0.01),
    (1, lambda fan_in: 1.0),
])
def test_weight_init_std(weight_init, std_of_fan_in):
    # Each matrix has >= 60,000 Gaussian entries, so the sample std is within
    # 1/sqrt(2 * 60000) = 0.3 % of the target (one sd); 2 % is > 6 sd.
    sizes = [800, 300, 200, 300]
    net = MultiLayerNet(sizes[0], sizes[1:-1], sizes[-1], weight_init=weight_init, batch_norm=True, seed=10)
    for i, fan_in in enumerate(sizes[:-1], start=1):
        W = net.params[f"W{i}"].astype(np.float64)
        target = std_of_fan_in(fan_in)
        assert W.std() == pytest.approx(target, rel=0.02), f"W{i}"
        assert abs(W.mean()) < 0.02 * target
        np.testing.assert_array_equal(net.params[f"b{i}"], 0.0)
    for i in (1, 2):
        np.testing.assert_array_equal(net.params[f"gamma{i}"], 1.0)
        np.testing.assert_array_equal(net.params[f"beta{i}"], 0.0)


def test_accuracy():
    net = MultiLayerNet(6, [5], 3, batch_norm=True, dropout=0.5, seed=11)
    x, t = data(n=25, dtype=np.float32)
    expected = float(np.mean(net.predict(x).argmax(axis=1) == t))
    running_mean = net.layers["BatchNorm1"].running_mean.copy()
    assert net.accuracy(x, t) == expected
    assert net.accuracy(x, t, batch_size=4) == expected       # batching does not change the result
    assert net.accuracy(x, np.eye(3)[t]) == expected          # one-hot labels
    np.testing.assert_array_equal(net.layers["BatchNorm1"].running_mean, running_mean)   # test mode
    scores = net.predict(x)
    assert net.accuracy(x, scores.argmax(axis=1)) == 1.0
    with pytest.raises(ValueError):
        net.accuracy(x[:0], t[:0])


def test_training_reduces_loss():
    rng = np.random.default_rng(12)
    centers = rng.standard_normal((3, 10)) * 3.0
    t = rng.integers(0, 3, size=300)
    x = (centers[t] + rng.standard_normal((300, 10))).astype(np.float32)
    net = MultiLayerNet(10, [16], 3, batch_norm=True, dropout=0.1, weight_decay=1e-4, seed=13)
    optimizer = Adam(lr=0.01)
    start = net.loss(x, t)
    for step in range(100):
        batch = rng.choice(300, size=32, replace=False)
        optimizer.update(net.params, net.gradient(x[batch], t[batch]))
    assert net.loss(x, t) < 0.5 * start
    assert net.accuracy(x, t) > 0.9


def test_state_dict_round_trip(tmp_path):
    net = MultiLayerNet(6, [5, 4], 3, batch_norm=True, seed=14)
    x, t = data(n=10, dtype=np.float32)
    net.gradient(x, t)                                  # moves the running statistics
    state = net.state_dict()
    assert set(state) == set(net.params) | {"running_mean1", "running_var1", "running_mean2", "running_var2"}
    state["W1"] += 1.0                                  # a copy: the network is unaffected
    assert not np.array_equal(state["W1"], net.params["W1"])
    state["W1"] -= 1.0

    path = tmp_path / "weights.npz"
    np.savez(path, **net.state_dict())
    other = MultiLayerNet(6, [5, 4], 3, batch_norm=True, seed=15)
    W1 = other.params["W1"]
    with np.load(path) as loaded:                       # allow_pickle is False by default
        other.load_state_dict(loaded)
    assert other.params["W1"] is W1                     # loaded in place: layers still share it
    np.testing.assert_array_equal(other.predict(x), net.predict(x))
    np.testing.assert_array_equal(other.layers["BatchNorm2"].running_var, net.layers["BatchNorm2"].running_var)


def test_load_state_dict_rejects_mismatch():
    net = MultiLayerNet(6, [5], 3, batch_norm=True, seed=0)
    state = net.state_dict()
    with pytest.raises(ValueError, match="running_var1"):
        net.load_state_dict({k: v for k, v in state.items() if k != "running_var1"})
    with pytest.raises(ValueError, match="W1"):
        net.load_state_dict({**state, "W1": np.zeros((6, 4), dtype=np.float32)})
    with pytest.raises(ValueError, match="extra"):
        net.load_state_dict({**state, "extra": np.zeros(1)})


@pytest.mark.parametrize("kwargs, argument", [
    ({"input_size": 0}, "input_size"),
    ({"input_size": 2.5}, "input_size"),
    ({"input_size": True}, "input_size"),
    ({"output_size": -3}, "output_size"),
    ({"hidden_sizes": [4, 0]}, "hidden_sizes"),
    ({"hidden_sizes": [4.0]}, "hidden_sizes"),
    ({"hidden_sizes": 4}, "hidden_sizes"),
    ({"hidden_sizes": "44"}, "hidden_sizes"),
    ({"activation": "softplus"}, "activation"),
    ({"activation": None}, "activation"),
    ({"weight_init": "glorot"}, "weight_init"),
    ({"weight_init": 0.0}, "weight_init"),
    ({"weight_init": -0.1}, "weight_init"),
    ({"weight_init": float("nan")}, "weight_init"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"dropout": "0.5"}, "dropout"),
    ({"weight_decay": -1e-4}, "weight_decay"),
    ({"weight_decay": float("inf")}, "weight_decay"),
    ({"dtype": np.float16}, "dtype"),
    ({"dtype": np.int32}, "dtype"),
    ({"dtype": None}, "dtype"),
    ({"dtype": "not a dtype"}, "dtype"),
    ({"seed": "abc"}, "seed"),
])
def test_bad_constructor_arguments(kwargs, argument):
    arguments = {"input_size": 4, "hidden_sizes": [3], "output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=argument):
        MultiLayerNet(**arguments)


def test_parameters_and_gradients_are_views_of_two_flat_vectors():
    net = MultiLayerNet(6, [5, 4], 3, batch_norm=True, seed=0)
    sizes = {name: array.size for name, array in net.params.items()}
    assert net.params_vector.shape == net.grads_vector.shape == (sum(sizes.values()),) == (6*5+5 + 5*4+4 + 4*3+3 + 2*(5+4),)
    for name, array in net.params.items():
        assert np.shares_memory(array, net.params_vector) and np.shares_memory(net.grads[name], net.grads_vector)
    x, t = data(n=7, d=6, c=3, dtype=np.float32)
    loss, _, grads = net.loss_and_gradient(x, t)
    for name, grad in grads.items():
        assert grad is net.grads[name]  # the layers wrote into the views, in place
    assert np.array_equal(np.concatenate([g.ravel() for g in grads.values()]), net.grads_vector)


def test_one_update_of_the_flat_vectors_equals_updates_per_parameter():
    # Every optimizer is elementwise: one Adam step over the flat vector gives the same bits.
    x, t = data(n=8, d=6, c=3, dtype=np.float32)
    per_key, flat = (MultiLayerNet(6, [5, 4], 3, batch_norm=True, weight_decay=0.1, seed=2) for _ in range(2))
    adam_per_key, adam_flat = Adam(lr=0.01), Adam(lr=0.01)
    for _ in range(3):
        adam_per_key.update(per_key.params, per_key.gradient(x, t))
        flat.gradient(x, t)
        adam_flat.update({"all": flat.params_vector}, {"all": flat.grads_vector})
    for name, array in per_key.params.items():
        np.testing.assert_array_equal(array, flat.params[name])


def test_loss_and_accuracy_equal_loss_and_accuracy_from_one_forward_pass():
    net = MultiLayerNet(6, [5], 3, batch_norm=True, dropout=0.3, weight_decay=0.01, seed=4)
    x, t = data(n=9, d=6, c=3, dtype=np.float32)
    net.loss_and_gradient(x, t)  # moves the batch-norm running statistics off their start
    loss, accuracy = net.loss_and_accuracy(x, t)
    assert loss == net.loss(x, t, train=False)
    assert accuracy == net.accuracy(x, t)
    assert accuracy == np.mean(net.predict(x).argmax(axis=1) == t)


def test_load_weights_of_a_damaged_archive_is_a_value_error(tmp_path):
    from models.network import load_weights, save_weights

    path = tmp_path / "w.npz"
    save_weights(MultiLayerNet(4, [3], 2, seed=0), path)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ValueError, match="damaged .npz archive"):
        load_weights(path)
