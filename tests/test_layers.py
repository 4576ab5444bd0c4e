"""Tests of models.layers: numerical gradient checks, dtypes and each layer's contract."""

import math

import numpy as np
import pytest

from models.layers import (
    Affine,
    BatchNormalization,
    Dropout,
    ReLU,
    Sigmoid,
    SoftmaxWithLoss,
    Tanh,
)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def check_layer_gradients(numerical_gradient, relative_error):
    """``check_layer_gradients(layer, x, params, rng, train=True)``: checks ``backward`` against central
    differences of sum(forward(x) * R).

    ``params`` maps an attribute name of the layer's gradient (e.g. "dW") to the
    parameter array it differentiates. Returns nothing; asserts.
    """

    def check(layer, x, params, rng, train=True):
        out = layer.forward(x, train)
        weights = rng.standard_normal(out.shape)

        def f():
            return float(np.sum(layer.forward(x, train) * weights))

        layer.forward(x, train)
        dx = layer.backward(weights.copy())
        analytic = {name: getattr(layer, name).copy() for name in params}
        assert relative_error(dx, numerical_gradient(f, x)) < 1e-7
        for name, param in params.items():
            assert relative_error(analytic[name], numerical_gradient(f, param)) < 1e-7, name

    return check


class TestAffine:
    def test_forward(self):
        W = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
        b = np.array([0.5, -0.5], dtype=np.float32)
        x = np.array([[1.0, 0.0, -1.0]], dtype=np.float32)
        out = Affine(W, b).forward(x)
        np.testing.assert_array_equal(out, [[1.0 - 5.0 + 0.5, 2.0 - 6.0 - 0.5]])
        assert out.dtype == np.float32

    def test_gradients(self, rng, check_layer_gradients):
        W, b, x = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((5, 4))
        check_layer_gradients(Affine(W, b), x, {"dW": W, "db": b}, rng)

    def test_shares_parameter_arrays(self):
        W, b = np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
        layer = Affine(W, b)
        W += 1.0
        assert layer.W is W and layer.b is b
        np.testing.assert_array_equal(layer.forward(np.ones((1, 2), dtype=np.float32)), [[2.0, 2.0]])

    def test_input_grad_can_be_skipped(self, rng):
        layer = Affine(rng.standard_normal((3, 2)), np.zeros(2))
        layer.forward(rng.standard_normal((4, 3)))
        assert layer.backward(np.ones((4, 2)), input_grad=False) is None
        assert layer.dW.shape == (3, 2) and layer.db.shape == (2,)

    @pytest.mark.parametrize("W, b", [
        (np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.float32)),
        (np.zeros((3, 2), dtype=np.float32), np.zeros(3, dtype=np.float32)),
        (np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float64)),
        (np.zeros((3, 2), dtype=np.int64), np.zeros(2, dtype=np.int64)),
    ])
    def test_bad_parameters(self, W, b):
        with pytest.raises(ValueError):
            Affine(W, b)


@pytest.mark.parametrize("layer_class", [ReLU, Sigmoid, Tanh])
def test_activation_gradients(layer_class, rng, check_layer_gradients):
    x = rng.standard_normal((6, 5))
    x[np.abs(x) < 0.1] = 0.5          # keep away from ReLU's kink at 0
    check_layer_gradients(layer_class(), x, {}, rng)


@pytest.mark.parametrize("layer_class", [ReLU, Sigmoid, Tanh])
def test_activation_keeps_float32(layer_class, rng):
    layer = layer_class()
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32


def test_activation_values():
    x = np.array([[-2.0, 0.0, 3.0]])
    np.testing.assert_array_equal(ReLU().forward(x), [[0.0, 0.0, 3.0]])
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x), rtol=1e-15)


def test_sigmoid_does_not_overflow():
    with np.errstate(all="raise"):
        out = Sigmoid().forward(np.array([[-1000.0, 1000.0]], dtype=np.float32))
    np.testing.assert_array_equal(out, [[0.0, 1.0]])


def test_relu_backward_masks_nonpositive_inputs():
    layer = ReLU()
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.array([[5.0, 5.0, 5.0]])), [[0.0, 0.0, 5.0]])


class TestBatchNormalization:
    def make(self, d, dtype=np.float64, rng=None):
        if rng is None:
            return BatchNormalization(np.ones(d, dtype=dtype), np.zeros(d, dtype=dtype))
        return BatchNormalization(rng.uniform(0.5, 2.0, d).astype(dtype), rng.standard_normal(d).astype(dtype))

    def test_gradients_training_mode(self, rng, check_layer_gradients):
        layer = self.make(4, rng=rng)
        x = rng.standard_normal((5, 4)) * 3.0 + 1.0
        check_layer_gradients(layer, x, {"dgamma": layer.gamma, "dbeta": layer.beta}, rng)

    def test_gradients_batch_of_two(self, rng, check_layer_gradients):
        layer = self.make(3, rng=rng)
        x = rng.standard_normal((2, 3))
        check_layer_gradients(layer, x, {"dgamma": layer.gamma, "dbeta": layer.beta}, rng)

    def test_training_output_standardized(self, rng):
        layer = self.make(3)
        x = rng.standard_normal((1000, 3)) * [1.0, 5.0, 0.2] + [10.0, -3.0, 0.0]
        out = layer.forward(x)
        np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
        # var(xhat) = var / (var + eps) = 1 - eps/var; smallest var is 0.04 -> 1 - 2.5e-4
        np.testing.assert_allclose(out.var(axis=0), 1.0, atol=1e-3)

    def test_training_output_scaled_and_shifted(self, rng):
        layer = BatchNormalization(np.array([2.0, 0.5]), np.array([1.0, -1.0]))
        out = layer.forward(rng.standard_normal((500, 2)) * 4.0)
        np.testing.assert_allclose(out.mean(axis=0), [1.0, -1.0], atol=1e-12)
        np.testing.assert_allclose(out.std(axis=0), [2.0, 0.5], rtol=1e-3)

    def test_running_statistics(self, rng):
        layer = self.make(3)
        np.testing.assert_array_equal(layer.running_mean, 0.0)
        np.testing.assert_array_equal(layer.running_var, 1.0)
        x1 = rng.standard_normal((8, 3)) * 2.0 + 1.0
        x2 = rng.standard_normal((6, 3)) - 4.0
        layer.forward(x1)
        mean1 = 0.9 * 0.0 + 0.1 * x1.mean(axis=0)
        var1 = 0.9 * 1.0 + 0.1 * ((x1 - x1.mean(axis=0)) ** 2).mean(axis=0)   # biased variance
        np.testing.assert_allclose(layer.running_mean, mean1, rtol=1e-14)
        np.testing.assert_allclose(layer.running_var, var1, rtol=1e-14)
        layer.forward(x2)
        mean2 = 0.9 * mean1 + 0.1 * x2.mean(axis=0)
        var2 = 0.9 * var1 + 0.1 * x2.var(axis=0)
        np.testing.assert_allclose(layer.running_mean, mean2, rtol=1e-14)
        np.testing.assert_allclose(layer.running_var, var2, rtol=1e-14)

    def test_test_mode_uses_running_statistics(self, rng):
        layer = self.make(3, rng=rng)
        layer.forward(rng.standard_normal((10, 3)) * 2.0)
        mean, var = layer.running_mean.copy(), layer.running_var.copy()
        x = rng.standard_normal((4, 3))
        out = layer.forward(x, train=False)
        expected = layer.gamma * (x - mean) / np.sqrt(var + layer.eps) + layer.beta
        np.testing.assert_allclose(out, expected, rtol=1e-12)
        np.testing.assert_array_equal(layer.running_mean, mean)   # not updated in test mode
        np.testing.assert_array_equal(layer.running_var, var)

    def test_test_mode_independent_of_batch(self, rng):
        layer = self.make(4, dtype=np.float32, rng=rng)
        layer.forward((rng.standard_normal((16, 4)) * 3.0).astype(np.float32))
        batch = rng.standard_normal((7, 4)).astype(np.float32)
        alone = layer.forward(batch[2:3], train=False)
        together = layer.forward(batch, train=False)[2:3]
        with_others = layer.forward(np.concatenate([batch[2:3], 100.0 * batch]), train=False)[:1]
        np.testing.assert_array_equal(alone, together)
        np.testing.assert_array_equal(alone, with_others)

    def test_float32_preserved(self, rng):
        layer = self.make(3, dtype=np.float32, rng=rng)
        x = rng.standard_normal((5, 3)).astype(np.float32)
        assert layer.forward(x).dtype == np.float32
        assert layer.forward(x, train=False).dtype == np.float32
        layer.forward(x)
        assert layer.backward(np.ones_like(x)).dtype == np.float32
        assert layer.dgamma.dtype == layer.dbeta.dtype == np.float32
        assert layer.running_mean.dtype == layer.running_var.dtype == np.float32

    @pytest.mark.parametrize("kwargs", [{"momentum": 1.0}, {"momentum": -0.1}, {"eps": 0.0}])
    def test_bad_arguments(self, kwargs):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            BatchNormalization(np.ones(2), np.zeros(2), **kwargs)

    def test_mismatched_gamma_beta(self):
        with pytest.raises(ValueError, match="beta"):
            BatchNormalization(np.ones(2), np.zeros(3))


class TestDropout:
    def test_gradient_with_fixed_mask(self, rng, check_layer_gradients):
        layer = Dropout(0.4, rng=np.random.default_rng(0))
        layer.fixed_mask = True
        x = rng.standard_normal((6, 5))
        check_layer_gradients(layer, x, {}, rng)
        assert 0 < layer.mask.sum() < layer.mask.size

    def test_fixed_mask_reused_and_released(self, rng):
        layer = Dropout(0.5, rng=np.random.default_rng(1))
        x = np.ones((20, 30))
        layer.fixed_mask = True
        first = layer.forward(x)
        np.testing.assert_array_equal(layer.forward(x), first)
        layer.fixed_mask = False
        assert not np.array_equal(layer.forward(x), first)

    def test_fixed_mask_shape_mismatch(self):
        layer = Dropout(0.5, rng=np.random.default_rng(1))
        layer.fixed_mask = True
        layer.forward(np.ones((2, 3)))
        with pytest.raises(ValueError, match="shape"):
            layer.forward(np.ones((3, 3)))

    def test_backward_uses_forward_mask(self, rng):
        layer = Dropout(0.3, rng=np.random.default_rng(2))
        out = layer.forward(np.ones((50, 40)))
        dx = layer.backward(np.ones((50, 40)))
        np.testing.assert_array_equal(dx, out)          # same units kept, same 1/(1-ratio) scale
        np.testing.assert_array_equal(dx != 0, layer.mask)
        np.testing.assert_allclose(dx[layer.mask], 1 / 0.7, rtol=1e-15)

    def test_training_mean_matches_test_output(self):
        # Each of K = 2000 rows is an independent draw. Per element the training
        # output is x / (1 - p) with probability 1 - p, else 0: mean x, variance
        # x^2 p / (1 - p) = x^2 for p = 0.5. The column means over K rows then have
        # standard deviation |x| / sqrt(K) <= 2 / 44.7 = 0.045; 5 standard deviations
        # (0.22) are exceeded by one of 50 columns with probability ~3e-5. The
        # grand mean of out / x has standard deviation 1 / sqrt(K * 50) = 0.003;
        # we allow 0.015 (5 sd). The generator is seeded, so the test is deterministic.
        ratio, k = 0.5, 2000
        x = np.random.default_rng(3).uniform(0.5, 2.0, size=50)
        layer = Dropout(ratio, rng=np.random.default_rng(4))
        batch = np.tile(x, (k, 1))
        train_out = layer.forward(batch, train=True)
        test_out = layer.forward(batch, train=False)
        np.testing.assert_array_equal(test_out, batch)
        assert np.all(np.abs(train_out.mean(axis=0) - x) < 5 * x / math.sqrt(k))
        assert abs((train_out / batch).mean() - 1.0) < 0.015
        assert abs(layer.mask.mean() - (1 - ratio)) < 0.015   # sd sqrt(0.25 / 100000) = 0.0016

    def test_ratio_zero_is_identity(self, rng):
        layer = Dropout(0.0, rng=np.random.default_rng(5))
        x = rng.standard_normal((4, 3))
        np.testing.assert_array_equal(layer.forward(x, train=True), x)
        np.testing.assert_array_equal(layer.backward(x), x)

    def test_test_mode_is_identity(self, rng):
        x = rng.standard_normal((4, 3)).astype(np.float32)
        assert Dropout(0.9, rng=np.random.default_rng(0)).forward(x, train=False) is x

    def test_float32_preserved(self, rng):
        layer = Dropout(0.5, rng=np.random.default_rng(6))
        x = rng.standard_normal((4, 3)).astype(np.float32)
        assert layer.forward(x).dtype == np.float32
        assert layer.backward(x).dtype == np.float32

    def test_same_seed_same_mask(self):
        x = np.ones((10, 10))
        a = Dropout(0.5, rng=np.random.default_rng(7)).forward(x)
        b = Dropout(0.5, rng=np.random.default_rng(7)).forward(x)
        c = Dropout(0.5, rng=np.random.default_rng(8)).forward(x)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)  # another seed, another mask

    @pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
    def test_bad_ratio(self, ratio):
        with pytest.raises(ValueError, match="ratio"):
            Dropout(ratio)

    def test_bad_rng(self):
        with pytest.raises(ValueError, match="rng: expected an int >= 0, a numpy.random.Generator or None"):
            Dropout(0.5, rng=np.random.RandomState(42))

    def test_int_rng_is_a_seed(self):
        x = np.ones((4, 5), dtype=np.float32)
        assert np.array_equal(Dropout(0.5, rng=42).forward(x), Dropout(0.5, rng=np.random.default_rng(42)).forward(x))


class TestSoftmaxWithLoss:
    def test_gradient(self, rng, numerical_gradient, relative_error):
        layer = SoftmaxWithLoss()
        x = rng.standard_normal((5, 4)) * 3.0
        t = np.array([0, 3, 1, 1, 2])
        analytic = (layer.forward(x, t), layer.backward())[1]
        numeric = numerical_gradient(lambda: layer.forward(x, t), x)
        assert relative_error(analytic, numeric) < 1e-7

    def test_backward_formula_and_dout(self, rng):
        layer = SoftmaxWithLoss()
        x = rng.standard_normal((3, 4))
        t = np.array([1, 0, 3])
        layer.forward(x, t)
        softmax = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
        expected = (softmax - np.eye(4)[t]) / 3
        np.testing.assert_allclose(layer.backward(), expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(layer.backward(2.5), 2.5 * expected, rtol=1e-12, atol=1e-15)

    def test_loss_value(self):
        x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
        t = np.array([2, 0])
        log_softmax = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        expected = -(log_softmax[0, 2] + log_softmax[1, 0]) / 2
        assert SoftmaxWithLoss().forward(x, t) == pytest.approx(expected, rel=1e-14)

    @pytest.mark.parametrize("dtype, rel", [(np.float64, 1e-14), (np.float32, 1e-6)])
    def test_large_logits(self, dtype, rel):
        loss = SoftmaxWithLoss().forward(np.array([[1000.0, 1001.0]], dtype=dtype), np.array([1]))
        assert loss == pytest.approx(math.log1p(math.exp(-1.0)), rel=rel)

    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    def test_underflowing_probability(self, dtype):
        layer = SoftmaxWithLoss()
        with np.errstate(over="raise", divide="raise", invalid="raise"):   # exp may underflow; no log(0), no 0/0
            loss = layer.forward(np.array([[0.0, 1000.0]], dtype=dtype), np.array([0]))
            dx = layer.backward()
        assert loss == pytest.approx(1000.0, rel=1e-12)
        assert np.all(np.isfinite(dx))
        np.testing.assert_allclose(dx, [[-1.0, 1.0]])

    def test_one_hot_labels(self, rng):
        x = rng.standard_normal((4, 3))
        t = np.array([2, 0, 1, 2])
        a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
        assert a.forward(x, np.eye(3)[t]) == b.forward(x, t)
        np.testing.assert_array_equal(a.backward(), b.backward())

    def test_float32_preserved(self, rng):
        layer = SoftmaxWithLoss()
        x = rng.standard_normal((4, 3)).astype(np.float32)
        loss = layer.forward(x, np.array([0, 1, 2, 0]))
        assert isinstance(loss, float) and math.isfinite(loss)
        assert layer.y.dtype == np.float32
        assert layer.backward().dtype == np.float32

    def test_forward_does_not_modify_input(self, rng):
        x = rng.standard_normal((3, 4))
        copy = x.copy()
        SoftmaxWithLoss().forward(x, np.array([0, 1, 2]))
        np.testing.assert_array_equal(x, copy)


def test_affine_and_batch_norm_write_gradients_into_given_buffers(rng):
    x = rng.standard_normal((6, 4)).astype(np.float32)
    dout = rng.standard_normal((6, 3)).astype(np.float32)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    b = np.zeros(3, dtype=np.float32)
    fresh = Affine(W, b)
    dW, db = np.empty_like(W), np.empty_like(b)
    buffered = Affine(W, b, dW=dW, db=db)
    for layer in (fresh, buffered):
        layer.forward(x)
        layer.backward(dout)
    assert buffered.dW is dW and buffered.db is db
    np.testing.assert_array_equal(dW, fresh.dW)
    np.testing.assert_array_equal(db, fresh.db)
    np.testing.assert_allclose(dW, x.T @ dout, rtol=1e-6)

    gamma, beta = np.ones(3, dtype=np.float32), np.zeros(3, dtype=np.float32)
    dgamma, dbeta = np.empty_like(gamma), np.empty_like(beta)
    plain, into = BatchNormalization(gamma, beta), BatchNormalization(gamma, beta, dgamma=dgamma, dbeta=dbeta)
    for layer in (plain, into):
        layer.forward(dout)
        layer.backward(x[:, :3])
    assert into.dgamma is dgamma and into.dbeta is dbeta
    np.testing.assert_array_equal(dgamma, plain.dgamma)
    np.testing.assert_array_equal(dbeta, plain.dbeta)
    np.testing.assert_allclose(dbeta, x[:, :3].sum(axis=0), rtol=1e-6)

    with pytest.raises(ValueError, match=r"dW: expected an array of shape \(4, 3\) and dtype float32"):
        Affine(W, b, dW=np.empty((3, 4), dtype=np.float32), db=db)
    with pytest.raises(ValueError, match="dgamma: expected an array of shape"):
        BatchNormalization(gamma, beta, dgamma=np.empty(3, dtype=np.float64), dbeta=dbeta)
