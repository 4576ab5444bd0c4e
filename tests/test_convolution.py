"""Tests of models.convolution: Convolution and MaxPooling against direct definitions, hand-computed answers and
numerical gradients; in-place gradient buffers; argument checks; output_side."""

import numpy as np
import pytest

from models.convolution import Convolution, MaxPooling, Reshape, output_side


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def direct_convolution(x, W, b, stride, pad):
    """The definition, one output position at a time: out[n, i, j, f] = b[f] + sum_{p, q, c}
    x_padded[n, i * stride + p, j * stride + q, c] * W[p, q, c, f] (no im2col, no reshapes of W)."""
    n, height, width, _ = x.shape
    filter_height, filter_width, _, filters = W.shape
    padded = np.zeros((n, height + 2 * pad, width + 2 * pad, x.shape[3]))
    padded[:, pad:pad + height, pad:pad + width] = x
    out_height = (height + 2 * pad - filter_height) // stride + 1
    out_width = (width + 2 * pad - filter_width) // stride + 1
    out = np.empty((n, out_height, out_width, filters))
    for i in range(out_height):
        for j in range(out_width):
            window = padded[:, i * stride:i * stride + filter_height, j * stride:j * stride + filter_width]
            out[:, i, j] = np.einsum("npqc,pqcf->nf", window, W) + b
    return out


def check_gradients(layer, x, params, rng, numerical_gradient, relative_error):
    """Backward against central differences of sum(forward(x) * R) for x and each (gradient name -> parameter)."""
    weights = rng.standard_normal(layer.forward(x).shape)

    def f():
        return float(np.sum(layer.forward(x) * weights))

    layer.forward(x)
    dx = layer.backward(weights.copy())
    analytic = {name: getattr(layer, name).copy() for name in params}
    assert dx.shape == x.shape
    assert relative_error(dx, numerical_gradient(f, x)) < 1e-8
    for name, param in params.items():
        assert relative_error(analytic[name], numerical_gradient(f, param)) < 1e-8, name


# (N, H, W, C), (FH, FW, FN), stride, pad
SHAPES = [
    ((2, 5, 5, 1), (3, 3, 2), 1, 0),
    ((2, 6, 7, 3), (3, 3, 4), 1, 1),
    ((3, 7, 6, 2), (3, 2, 3), 2, 1),
    ((1, 8, 8, 3), (5, 5, 2), 3, 2),
    ((2, 4, 5, 2), (1, 1, 3), 1, 0),
    ((2, 6, 6, 2), (3, 3, 2), 2, 0),     # stride 2 leaves the last row and column unread
    ((1, 3, 4, 1), (4, 2, 1), 1, 1),     # the filter is taller than the image, not than the padded image
]


class TestConvolution:
    @pytest.mark.parametrize("x_shape, filter_shape, stride, pad", SHAPES)
    def test_forward_equals_the_direct_definition(self, rng, x_shape, filter_shape, stride, pad):
        filter_height, filter_width, filters = filter_shape
        W = rng.standard_normal((filter_height, filter_width, x_shape[3], filters))
        b = rng.standard_normal(filters)
        x = rng.standard_normal(x_shape)
        out = Convolution(W, b, stride=stride, pad=pad).forward(x)
        expected = direct_convolution(x, W, b, stride, pad)
        assert out.shape == expected.shape == (x_shape[0], output_side(x_shape[1], filter_height, stride, pad),
                                               output_side(x_shape[2], filter_width, stride, pad), filters)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        assert out.dtype == np.float64

    def test_known_answer_of_a_3x3_image_and_a_2x2_filter(self):
        x = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)              # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
        W = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
        b = np.array([0.5])
        # Cross-correlation (the filter is not flipped): 1*1 + 2*2 + 3*4 + 4*5 = 37 at (0, 0), and so on.
        out = Convolution(W, b).forward(x)
        np.testing.assert_array_equal(out[0, :, :, 0], [[37.5, 47.5], [67.5, 77.5]])
        # Padding 1 and stride 2: windows at padded rows/columns 0 and 2 of the 5 x 5 padded image.
        # (0, 0): 4*1 = 4; (0, 1): 3*2 + 4*3 = 18; (1, 0): 2*4 + 4*7 = 36; (1, 1): 5 + 12 + 24 + 36 = 77.
        out = Convolution(W, np.zeros(1), stride=2, pad=1).forward(x)
        np.testing.assert_array_equal(out[0, :, :, 0], [[4.0, 18.0], [36.0, 77.0]])
        # Two channels and two filters: filter f sees channel c with weight W[p, q, c, f].
        x2 = np.concatenate([x, 10 * x], axis=3)                  # channel 1 is ten times channel 0
        W2 = np.zeros((2, 2, 2, 2))
        W2[0, 0, 0, 0] = 1.0                                      # filter 0: the top-left pixel of channel 0
        W2[1, 1, 1, 1] = 1.0                                      # filter 1: the bottom-right pixel of channel 1
        out = Convolution(W2, np.zeros(2)).forward(x2)
        np.testing.assert_array_equal(out[0, :, :, 0], [[1.0, 2.0], [4.0, 5.0]])
        np.testing.assert_array_equal(out[0, :, :, 1], [[50.0, 60.0], [80.0, 90.0]])

    def test_backward_known_answer(self):
        # d out / d x of a 2x2 filter of ones over a 3x3 image: each pixel counts the windows that read it.
        layer = Convolution(np.ones((2, 2, 1, 1)), np.zeros(1))
        layer.forward(np.zeros((1, 3, 3, 1)))
        dx = layer.backward(np.ones((1, 2, 2, 1)))
        np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
        np.testing.assert_array_equal(layer.db, [4.0])
        np.testing.assert_array_equal(layer.dW[:, :, 0, 0], [[0.0, 0.0], [0.0, 0.0]])

    @pytest.mark.parametrize("x_shape, filter_shape, stride, pad", SHAPES)
    def test_gradients(self, rng, x_shape, filter_shape, stride, pad, numerical_gradient, relative_error):
        filter_height, filter_width, filters = filter_shape
        W = rng.standard_normal((filter_height, filter_width, x_shape[3], filters))
        b = rng.standard_normal(filters)
        layer = Convolution(W, b, stride=stride, pad=pad)
        check_gradients(layer, rng.standard_normal(x_shape), {"dW": W, "db": b}, rng, numerical_gradient,
                        relative_error)

    def test_unread_pixels_get_zero_gradient(self, rng):
        # 6 x 6, 3 x 3 filter, stride 2, no padding: windows start at 0 and 2, so row 5 and column 5 are never read.
        layer = Convolution(rng.standard_normal((3, 3, 1, 2)), np.zeros(2), stride=2)
        layer.forward(rng.standard_normal((1, 6, 6, 1)))
        dx = layer.backward(np.ones((1, 2, 2, 2)))
        np.testing.assert_array_equal(dx[0, 5, :], 0.0)
        np.testing.assert_array_equal(dx[0, :, 5], 0.0)
        assert np.all(dx[0, :5, :5] != 0.0)

    @pytest.mark.parametrize("order", ["C", "F"])
    def test_gradient_buffers_hold_the_same_values(self, rng, order):
        W, b = rng.standard_normal((3, 3, 2, 4)), rng.standard_normal(4)
        x = rng.standard_normal((3, 6, 5, 2))
        dout = rng.standard_normal((3, 3, 3, 4))
        own = Convolution(W, b, stride=2, pad=1)
        own.forward(x)
        dx_own = own.backward(dout)
        dW, db = np.full(W.shape, np.nan, order=order), np.full(4, np.nan)
        buffered = Convolution(W, b, stride=2, pad=1, dW=dW, db=db)
        buffered.forward(x)
        dx = buffered.backward(dout)
        assert buffered.dW is dW and buffered.db is db             # written in place, not replaced
        np.testing.assert_allclose(dW, own.dW, rtol=1e-13)
        np.testing.assert_allclose(db, own.db, rtol=1e-13)
        np.testing.assert_allclose(dx, dx_own, rtol=1e-13)

    def test_input_grad_false_returns_none_and_still_sets_dW_and_db(self, rng):
        W, b = rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(3)
        x, dout = rng.standard_normal((2, 4, 4, 2)), rng.standard_normal((2, 4, 4, 3))
        full = Convolution(W, b, pad=1)
        full.forward(x)
        full.backward(dout)
        dW, db = np.zeros_like(W), np.zeros_like(b)
        for layer in (Convolution(W, b, pad=1), Convolution(W, b, pad=1, dW=dW, db=db)):
            layer.forward(x)
            assert layer.backward(dout, input_grad=False) is None
            np.testing.assert_allclose(layer.dW, full.dW, rtol=1e-13)
            np.testing.assert_allclose(layer.db, full.db, rtol=1e-13)

    def test_float32_stays_float32(self, rng):
        W, b = rng.standard_normal((3, 3, 1, 2)).astype(np.float32), np.zeros(2, dtype=np.float32)
        layer = Convolution(W, b, pad=1)
        out = layer.forward(rng.standard_normal((2, 4, 4, 1)).astype(np.float32))
        assert out.dtype == np.float32
        assert layer.backward(np.ones_like(out)).dtype == np.float32
        assert layer.dW.dtype == layer.db.dtype == np.float32

    @pytest.mark.parametrize("W, b, kwargs, match", [
        (np.zeros((3, 3, 2)), np.zeros(2), {}, r"^W: expected 4 dimension\(s\), got shape \(3, 3, 2\)"),
        (np.zeros((3, 3, 1, 2), dtype=np.int64), np.zeros(2, dtype=np.int64), {}, "^W: expected a float32 or float64"),
        (np.zeros((3, 3, 1, 2)), np.zeros(3), {}, r"^b must have shape \(2,\) and dtype float64 to match W"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2, dtype=np.float32), {}, r"^b must have shape \(2,\) and dtype float64"),
        (np.zeros((3, 3, 1, 2)), np.zeros((2, 1)), {}, r"^b: expected 1 dimension\(s\)"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"pad": -1}, "^pad: expected an integer >= 0, got -1"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"pad": True}, "^pad: expected an integer >= 0, got True"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"pad": 1.5}, "^pad: expected an integer >= 0, got 1.5"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"stride": 0}, "^stride: expected an integer >= 1, got 0"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"stride": -1}, "^stride: expected an integer >= 1, got -1"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"stride": True}, "^stride: expected an integer >= 1, got True"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"stride": 1.5}, "^stride: expected an integer >= 1, got 1.5"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"dW": np.zeros((3, 3, 2, 1))}, r"^dW: expected an array of shape"),
        (np.zeros((3, 3, 1, 2)), np.zeros(2), {"db": np.zeros(2, dtype=np.float32)}, "^db: expected an array"),
    ])
    def test_bad_arguments_name_the_argument(self, W, b, kwargs, match):
        with pytest.raises(ValueError, match=match):
            Convolution(W, b, **kwargs)

    @pytest.mark.parametrize("x_shape, pad, match", [
        ((2, 5, 5, 3), 0, r"^x: expected shape \(N, H, W, 2\), got \(2, 5, 5, 3\)"),
        ((5, 5, 2), 0, r"^x: expected shape \(N, H, W, 2\), got \(5, 5, 2\)"),
        ((1, 2, 5, 2), 0, r"^x: .*2 x 5 pixels \(padding 0\).* 3 x 3 filter"),
        ((1, 5, 1, 2), 0, r"^x: .*5 x 1 pixels \(padding 0\).* 3 x 3 filter"),
        ((1, 1, 1, 2), 0, r"^x: "),
    ])
    def test_bad_inputs_name_x(self, x_shape, pad, match):
        layer = Convolution(np.zeros((3, 3, 2, 4)), np.zeros(4), pad=pad)
        with pytest.raises(ValueError, match=match):
            layer.forward(np.zeros(x_shape))

    def test_a_filter_as_large_as_the_padded_image_fits(self):
        layer = Convolution(np.ones((3, 3, 1, 1)), np.zeros(1), pad=1)
        assert layer.forward(np.ones((1, 1, 1, 1))).shape == (1, 1, 1, 1)     # 1 + 2 = 3 pixels: one window


class TestMaxPooling:
    def test_known_answer_and_backward(self):
        x = np.array([[1.0, 3.0, 0.0, -1.0],
                      [2.0, 0.5, -2.0, -3.0],
                      [9.0, 8.0, 4.0, 4.5],
                      [7.0, 6.0, 5.0, 1.0]]).reshape(1, 4, 4, 1)
        pooling = MaxPooling(2)
        out = pooling.forward(np.concatenate([x, -x], axis=3))      # channels are pooled separately
        np.testing.assert_array_equal(out[0, :, :, 0], [[3.0, 0.0], [9.0, 5.0]])
        np.testing.assert_array_equal(out[0, :, :, 1], [[-0.5, 3.0], [-6.0, -1.0]])
        dout = np.stack([[[10.0, 20.0], [30.0, 40.0]], [[1.0, 2.0], [3.0, 4.0]]], axis=-1)[None]
        dx = pooling.backward(dout)
        np.testing.assert_array_equal(dx[0, :, :, 0], [[0, 10, 20, 0], [0, 0, 0, 0], [30, 0, 0, 0], [0, 0, 40, 0]])
        np.testing.assert_array_equal(dx[0, :, :, 1], [[0, 0, 0, 0], [0, 1, 0, 2], [0, 0, 0, 0], [0, 3, 0, 4]])

    def test_floor_mode_drops_the_rows_and_columns_of_no_whole_window(self, rng):
        x = rng.standard_normal((2, 5, 7, 3))
        pooling = MaxPooling(2)
        out = pooling.forward(x)
        assert out.shape == (2, 2, 3, 3)
        expected = x[:, :4, :6].reshape(2, 2, 2, 3, 2, 3).max(axis=(2, 4))
        np.testing.assert_array_equal(out, expected)
        dx = pooling.backward(np.ones_like(out))
        assert dx.shape == x.shape
        np.testing.assert_array_equal(dx[:, 4, :], 0.0)             # the dropped row
        np.testing.assert_array_equal(dx[:, :, 6], 0.0)             # the dropped column
        assert dx.sum() == out.size                                 # one 1 per window, nowhere else
        np.testing.assert_array_equal(dx[:, :4, :6], x[:, :4, :6] == np.repeat(np.repeat(out, 2, 1), 2, 2))

    def test_ties_give_the_whole_gradient_to_the_first_maximum(self):
        x = np.array([[2.0, 2.0, 0.0, 5.0],
                      [2.0, 2.0, 5.0, 5.0]]).reshape(1, 2, 4, 1)
        pooling = MaxPooling(2)
        np.testing.assert_array_equal(pooling.forward(x)[0, :, :, 0], [[2.0, 5.0]])
        dx = pooling.backward(np.array([[[[7.0], [3.0]]]]))
        # Row-major first: (0, 0) in the first window, (0, 3) in the second.
        np.testing.assert_array_equal(dx[0, :, :, 0], [[7.0, 0.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])

    @pytest.mark.parametrize("size, x_shape", [(2, (2, 4, 6, 3)), (2, (1, 5, 5, 2)), (3, (2, 7, 6, 1)), (1, (1, 3, 2, 2))])
    def test_gradient(self, rng, size, x_shape, numerical_gradient, relative_error):
        # Distinct values at least 0.01 apart: a step of 1e-5 never changes which one is the maximum.
        x = rng.permutation(np.prod(x_shape)).reshape(x_shape) * 0.01
        check_gradients(MaxPooling(size), x, {}, rng, numerical_gradient, relative_error)

    def test_size_1_is_the_identity(self, rng):
        x = rng.standard_normal((2, 3, 3, 2))
        pooling = MaxPooling(1)
        np.testing.assert_array_equal(pooling.forward(x), x)
        np.testing.assert_array_equal(pooling.backward(x), x)

    @pytest.mark.parametrize("size", [0, -1, True, 1.5, "2"])
    def test_bad_size_names_it(self, size):
        with pytest.raises(ValueError, match=f"^size: expected an integer >= 1, got {size!r}"):
            MaxPooling(size)

    @pytest.mark.parametrize("x_shape", [(4, 4), (1, 4, 4), (1, 1, 4, 4, 1)])
    def test_input_of_other_dimensions_names_x(self, x_shape):
        with pytest.raises(ValueError, match=r"^x: expected shape \(N, H, W, C\)"):
            MaxPooling(2).forward(np.zeros(x_shape))

    def test_images_smaller_than_a_window_name_x(self):
        with pytest.raises(ValueError, match=r"^x: .*1 x 4 pixels.* 2 x 2"):
            MaxPooling(2).forward(np.zeros((1, 1, 4, 1)))


def test_reshape_round_trip(rng):
    x = rng.standard_normal((3, 12))
    to_images = Reshape((2, 3, 2))
    images = to_images.forward(x)
    np.testing.assert_array_equal(images[1, 1, 2], x[1, 10:12])    # channels-last: (row 1, column 2) -> 1*6 + 2*2
    flatten = Reshape((-1,))
    np.testing.assert_array_equal(flatten.forward(images), x)
    assert flatten.backward(x).shape == (3, 2, 3, 2)
    assert to_images.backward(images).shape == (3, 12)


@pytest.mark.parametrize("side, filter_side, stride, pad, expected", [
    (28, 3, 1, 1, 28), (28, 5, 1, 0, 24), (7, 3, 2, 1, 4), (8, 2, 2, 0, 4), (7, 2, 2, 0, 3),
    (5, 5, 1, 0, 1), (1, 3, 1, 1, 1), (10, 3, 3, 0, 3), (6, 3, 2, 0, 2),
])
def test_output_side(side, filter_side, stride, pad, expected):
    # (side + 2 pad - filter) // stride + 1, the book's equation (7.1) rounded down.
    assert output_side(side, filter_side, stride, pad) == expected == (side + 2 * pad - filter_side) // stride + 1


def test_output_side_refuses_a_filter_larger_than_the_padded_side():
    assert output_side(2, 4, 1, 1) == 1
    with pytest.raises(ValueError, match="a side of 2 pixels \\(padding 0\\) is smaller than the filter or pool of 3"):
        output_side(2, 3)


def test_reshape_of_a_batch_of_no_examples():
    # NumPy cannot infer -1 for 0 rows; a network's Flatten must still give (0, features) (predict of no images).
    assert Reshape((-1,)).forward(np.zeros((0, 2, 2, 3))).shape == (0, 12)
    assert Reshape((2, -1)).forward(np.zeros((0, 3, 4))).shape == (0, 2, 6)
    assert Reshape((2, 2, 1)).forward(np.zeros((0, 4))).shape == (0, 2, 2, 1)
