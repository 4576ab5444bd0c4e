"""Tests of models.optimizers: the first two steps of each rule, worked out by hand."""

import math

import numpy as np
import pytest

from models.optimizers import (
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSprop,
    make_optimizer,
)

EPS = 1e-7
W0 = [1.0, 2.0]
G1 = [0.5, -1.0]     # gradient of the first step
G2 = [-0.25, 0.5]    # gradient of the second step


def two_steps(optimizer):
    """Apply G1 then G2 to W0 under the key "W"; return W after each step."""
    params = {"W": np.array(W0)}
    original = params["W"]
    optimizer.update(params, {"W": np.array(G1)})
    after_first = params["W"].copy()
    optimizer.update(params, {"W": np.array(G2)})
    assert params["W"] is original, "update must work in place"
    return after_first, params["W"]


def test_sgd():
    # W -= lr * g with lr = 0.1
    first, second = two_steps(SGD(lr=0.1))
    np.testing.assert_allclose(first, [1.0 - 0.05, 2.0 + 0.1], rtol=1e-15)      # [0.95, 2.1]
    np.testing.assert_allclose(second, [0.95 + 0.025, 2.1 - 0.05], rtol=1e-15)   # [0.975, 2.05]


def test_momentum():
    # v = 0.9 v - 0.1 g; W += v
    first, second = two_steps(Momentum(lr=0.1, momentum=0.9))
    # v1 = -0.1 * G1 = [-0.05, 0.1]
    np.testing.assert_allclose(first, [0.95, 2.1], rtol=1e-15)
    # v2 = 0.9 * v1 - 0.1 * G2 = [-0.045 + 0.025, 0.09 - 0.05] = [-0.02, 0.04]
    np.testing.assert_allclose(second, [0.93, 2.14], rtol=1e-14)


def test_nesterov():
    # v = 0.9 v - 0.1 g; W += 0.81 v - 1.9 * 0.1 g  (v already updated, as in the book)
    first, second = two_steps(Nesterov(lr=0.1, momentum=0.9))
    # v1 = [-0.05, 0.1]; W1 = [1 - 0.0405 - 0.095, 2 + 0.081 + 0.19]
    np.testing.assert_allclose(first, [0.8645, 2.271], rtol=1e-14)
    # v2 = [-0.02, 0.04]; W2 = W1 + 0.81 v2 - 0.19 G2 = [0.8645 - 0.0162 + 0.0475, 2.271 + 0.0324 - 0.095]
    np.testing.assert_allclose(second, [0.8958, 2.2084], rtol=1e-14)


def test_adagrad():
    # h += g^2; W -= 0.1 g / (sqrt(h) + eps)
    first, second = two_steps(AdaGrad(lr=0.1))
    # h1 = [0.25, 1]
    np.testing.assert_allclose(first, [1.0 - 0.05 / (0.5 + EPS), 2.0 + 0.1 / (1.0 + EPS)], rtol=1e-15)
    # h2 = [0.3125, 1.25]
    expected = [first[0] + 0.025 / (math.sqrt(0.3125) + EPS), first[1] - 0.05 / (math.sqrt(1.25) + EPS)]
    np.testing.assert_allclose(second, expected, rtol=1e-15)
    np.testing.assert_allclose(second, [0.94472137, 2.05527863], rtol=1e-8)


def test_rmsprop():
    # h = 0.99 h + 0.01 g^2; W -= 0.1 g / (sqrt(h) + eps)
    first, second = two_steps(RMSprop(lr=0.1, decay_rate=0.99))
    # h1 = [0.0025, 0.01], sqrt = [0.05, 0.1]
    np.testing.assert_allclose(first, [1.0 - 0.05 / (0.05 + EPS), 2.0 + 0.1 / (0.1 + EPS)], rtol=1e-14, atol=1e-12)
    # h2 = 0.99 h1 + 0.01 G2^2 = [0.002475 + 0.000625, 0.0099 + 0.0025] = [0.0031, 0.0124]
    expected = [first[0] + 0.025 / (math.sqrt(0.0031) + EPS), first[1] - 0.05 / (math.sqrt(0.0124) + EPS)]
    np.testing.assert_allclose(second, expected, rtol=1e-14)


def test_adam():
    # m = 0.9 m + 0.1 g; v = 0.999 v + 0.001 g^2; bias correction with t = 1, 2
    first, second = two_steps(Adam(lr=0.1, beta1=0.9, beta2=0.999))
    # t = 1: m_hat = m / 0.1 = G1, v_hat = v / 0.001 = G1^2, so the step is 0.1 * g / (|g| + eps)
    np.testing.assert_allclose(first, [1.0 - 0.05 / (0.5 + EPS), 2.0 + 0.1 / (1.0 + EPS)], rtol=1e-14)
    # t = 2: m = 0.9 * [0.05, -0.1] + 0.1 * G2 = [0.02, -0.04]
    #        v = 0.999 * [0.00025, 0.001] + 0.001 * G2^2 = [0.00031225, 0.001249]
    m_hat = np.array([0.02, -0.04]) / (1 - 0.9**2)          # 1 - beta1^2 = 0.19
    v_hat = np.array([0.00031225, 0.001249]) / (1 - 0.999**2)   # 1 - beta2^2 = 0.001999
    expected = first - 0.1 * m_hat / (np.sqrt(v_hat) + EPS)
    np.testing.assert_allclose(second, expected, rtol=1e-13)
    np.testing.assert_allclose(second - first, [-0.0266337, 0.0266337], rtol=1e-6)


ALL = [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam]


@pytest.mark.parametrize("optimizer_class", ALL)
def test_state_is_kept_per_key(optimizer_class):
    # Updating "a" and "b" together must equal updating each with its own optimizer.
    rng = np.random.default_rng(0)
    together = optimizer_class(lr=0.1)
    alone = {"a": optimizer_class(lr=0.1), "b": optimizer_class(lr=0.1)}
    params = {"a": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
    separate = {key: value.copy() for key, value in params.items()}
    for _ in range(3):
        grads = {"a": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
        together.update(params, grads)
        for key in ("a", "b"):
            alone[key].update({key: separate[key]}, {key: grads[key]})
    for key in ("a", "b"):
        np.testing.assert_allclose(params[key], separate[key], rtol=1e-15)


@pytest.mark.parametrize("optimizer_class", ALL)
def test_key_added_later_starts_fresh(optimizer_class):
    # A key first seen at the second update gets its own fresh state (for Adam: t = 1).
    rng = np.random.default_rng(1)
    g = rng.standard_normal(4)
    shared = optimizer_class(lr=0.1)
    shared.update({"a": np.ones(4)}, {"a": rng.standard_normal(4)})
    late = {"b": np.ones(4)}
    shared.update(late, {"b": g})
    fresh = {"b": np.ones(4)}
    optimizer_class(lr=0.1).update(fresh, {"b": g})
    np.testing.assert_array_equal(late["b"], fresh["b"])


@pytest.mark.parametrize("optimizer_class", ALL)
def test_float32_stays_float32(optimizer_class):
    rng = np.random.default_rng(2)
    optimizer = optimizer_class(lr=np.float64(0.01))     # a NumPy float64 must not promote either
    params = {"W": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, dtype=np.float32)}
    originals = dict(params)
    for _ in range(2):
        grads = {key: rng.standard_normal(value.shape).astype(np.float32) for key, value in params.items()}
        optimizer.update(params, grads)
    for key, value in params.items():
        assert value is originals[key]
        assert value.dtype == np.float32
    for name in ("v", "h", "m"):
        for state in getattr(optimizer, name, {}).values():
            assert state.dtype == np.float32


@pytest.mark.parametrize("optimizer_class", ALL)
def test_grads_not_modified(optimizer_class):
    grads = {"W": np.array([0.5, -1.0])}
    optimizer = optimizer_class(lr=0.1)
    for _ in range(2):
        optimizer.update({"W": np.array([1.0, 2.0])}, grads)
    np.testing.assert_array_equal(grads["W"], [0.5, -1.0])


@pytest.mark.parametrize("optimizer_class", ALL)
def test_descends_on_a_quadratic(optimizer_class):
    # f(W) = 0.5 * ||W||^2, gradient W: every optimizer must shrink ||W||.
    params = {"W": np.array([3.0, -2.0])}
    optimizer = optimizer_class(lr=0.1)
    for _ in range(500):
        optimizer.update(params, {"W": params["W"].copy()})
    assert np.linalg.norm(params["W"]) < 0.5 * math.hypot(3.0, -2.0)


def test_registry_and_factory():
    assert OPTIMIZERS == {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
                          "adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam}
    for name, cls in OPTIMIZERS.items():
        optimizer = make_optimizer(name, 0.02)
        assert type(optimizer) is cls and optimizer.lr == 0.02
    assert isinstance(make_optimizer("Adam", 0.001), Adam)


def test_factory_default_learning_rates_are_the_books():
    # The book's common/optimizer.py: lr=0.01 everywhere but Adam's 0.001.
    rates = {name: make_optimizer(name).lr for name in OPTIMIZERS}
    assert rates == {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.01, "rmsprop": 0.01,
                     "adam": 0.001}


def test_factory_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        make_optimizer("lbfgs", 0.1)
    message = str(excinfo.value)
    assert "lbfgs" in message
    for name in OPTIMIZERS:
        assert name in message


@pytest.mark.parametrize("make", [
    lambda: SGD(lr=0.0),
    lambda: SGD(lr=-1.0),
    lambda: SGD(lr=float("nan")),
    lambda: Momentum(momentum=1.0),
    lambda: Nesterov(momentum=-0.5),
    lambda: AdaGrad(eps=0.0),
    lambda: RMSprop(decay_rate=1.0),
    lambda: Adam(beta1=1.0),
    lambda: Adam(beta2=-0.1),
    lambda: make_optimizer("sgd", 0.0),
])
def test_bad_hyperparameters(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("name", ["momentum", "nesterov", "rmsprop", "adam"])
def test_decaying_state_is_flushed_to_zero_instead_of_lingering_subnormal(name):
    # One gradient, then none: the state decays geometrically (0.9 ** n for momentum) and
    # would spend ~150 updates below float32's smallest normal number, where x86 is slow.
    optimizer = make_optimizer(name, 0.01)
    params = {"W": np.ones(4, dtype=np.float32)}
    optimizer.update(params, {"W": np.full(4, 1e-3, dtype=np.float32)})
    zero = {"W": np.zeros(4, dtype=np.float32)}
    tiny = np.finfo(np.float32).tiny
    states = [optimizer.v] if name in ("momentum", "nesterov") else [optimizer.h] if name == "rmsprop" \
        else [optimizer.m]
    seen_subnormal_at_flush = False
    for update in range(2, 20_000):
        optimizer.update(params, zero)
        state = np.abs(states[0]["W"])
        if update % 8 == 0:
            seen_subnormal_at_flush |= bool(np.any((state > 0) & (state < tiny)))
        if not state.any():
            break
    assert not seen_subnormal_at_flush
    assert not states[0]["W"].any(), "the state never reached 0"
    # Without the flush, 0.9 ** n * 1e-4 is subnormal from about n = 790 to n = 940.
    assert update < 20_000
