"""Convolution and max pooling layers for images, by im2col, with forward and backward.

After "Deep Learning from Scratch" (Koki Saitoh), chapter 7: ``Convolution``
(section 7.4.3) and ``Pooling`` (section 7.4.4), which the book implements by
unfolding every filter window into one row of a matrix (``im2col``) so that a
convolution becomes one matrix product.

Conventions (the same as :mod:`models.layers`, with images instead of vectors)
-------------------------------------------------------------------------------
* Images are channels-last: shape (N, H, W, C). The book uses (N, C, H, W);
  channels-last makes every window's row of ``im2col`` one reshape of a
  sliding-window view and keeps the channels contiguous for the matrix product.
* Filters have shape (FH, FW, C, FN) (height, width, input channels, filters,
  the layout TensorFlow calls HWIO); the book's ``(FN, C, FH, FW)`` holds the
  same numbers in another order.
* Parameters are held by reference, never copied; the gradient buffers ``dW``
  and ``db`` may be given so that backward writes into them in place.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.layers import _check_float_array, _check_gradient_buffer
from models.validation import positive_int, problem

__all__ = ["Convolution", "MaxPooling", "Reshape", "output_side"]


def output_side(side: int, filter_side: int, stride: int = 1, pad: int = 0) -> int:
    """Output height (or width) of a convolution or pooling: ``(side + 2 pad - filter) // stride + 1``.

    Source: Deep Learning from Scratch, section 7.2.4, equation (7.1), rounded
    down where the book requires an exact division.

    Raises
    ------
    ValueError
        If the filter does not fit the padded side once.
    """
    if side + 2 * pad < filter_side:
        raise ValueError(f"a side of {side} pixels (padding {pad}) is smaller than the filter or pool of {filter_side}")
    return (side + 2 * pad - filter_side) // stride + 1


class Convolution:
    """2-D convolution (cross-correlation, as in the book and every framework) with bias.

    ``out[n, i, j, f] = b[f] + sum over (p, q, c) of x_padded[n, i*stride + p, j*stride + q, c] * W[p, q, c, f]``.

    Source: Deep Learning from Scratch, section 7.4.3 (im2col, then one matrix
    product; backward by the transposed products and ``col2im``).

    Parameters
    ----------
    W : ndarray of shape (FH, FW, C, FN), float32 or float64
        Filters, held by reference.
    b : ndarray of shape (FN,), same dtype
        One bias per filter, held by reference.
    stride : int >= 1, default 1
    pad : int >= 0, default 0
        Zeros added on every side of each image.
    dW, db : ndarrays shaped and typed like ``W`` and ``b``, optional
        Buffers that :meth:`backward` writes the gradients into.

    Raises
    ------
    ValueError
        If ``W`` is not 4-D, ``b`` does not have FN entries of ``W``'s dtype, a
        gradient buffer does not match, or ``stride`` / ``pad`` are not integers
        of the stated range.

    Attributes
    ----------
    dW : ndarray of shape (FH, FW, C, FN), set by :meth:`backward`
    db : ndarray of shape (FN,), set by :meth:`backward`

    Examples
    --------
    >>> W = np.ones((3, 3, 1, 2), dtype=np.float32); b = np.zeros(2, dtype=np.float32)
    >>> Convolution(W, b, pad=1).forward(np.ones((4, 5, 5, 1), dtype=np.float32)).shape
    (4, 5, 5, 2)
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, *, stride: int = 1, pad: int = 0,
                 dW: np.ndarray | None = None, db: np.ndarray | None = None) -> None:
        _check_float_array("W", W, 4)
        _check_float_array("b", b, 1)
        if b.shape[0] != W.shape[3] or b.dtype != W.dtype:
            raise ValueError(f"b must have shape ({W.shape[3]},) and dtype {W.dtype} to match W, "
                             f"got shape {b.shape} and dtype {b.dtype}")
        _check_gradient_buffer("dW", dW, W)
        _check_gradient_buffer("db", db, b)
        self.W, self.b = W, b
        self.stride = positive_int("stride", stride)
        if not isinstance(pad, numbers.Integral) or isinstance(pad, bool) or pad < 0:
            raise problem("pad", "an integer >= 0", pad)
        self.pad = int(pad)
        self.dW, self.db = dW, db
        self._write_in_place = dW is not None and db is not None
        self.x_shape = None   # shape of the last input, (N, H, W, C)
        self.col = None       # its im2col matrix, (N * OH * OW, FH * FW * C)

    def _im2col(self, x: np.ndarray) -> np.ndarray:
        """Rows of every filter window: (N * OH * OW, FH * FW * C), ordered like ``W``'s first three axes."""
        filter_height, filter_width = self.W.shape[:2]
        if self.pad:
            x = np.pad(x, ((0, 0), (self.pad, self.pad), (self.pad, self.pad), (0, 0)))
        windows = sliding_window_view(x, (filter_height, filter_width), axis=(1, 2))  # (N, H', W', C, FH, FW)
        windows = windows[:, ::self.stride, ::self.stride].transpose(0, 1, 2, 4, 5, 3)
        return windows.reshape(-1, filter_height * filter_width * x.shape[3])

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Convolve every image with every filter and add the biases.

        Parameters
        ----------
        x : ndarray of shape (N, H, W, C), dtype of ``W``
        train : bool, default True
            Unused; present so every layer has the same signature.

        Returns
        -------
        out : ndarray of shape (N, OH, OW, FN), dtype of ``x``
            ``OH = (H + 2 pad - FH) // stride + 1`` (:func:`output_side`), OW alike.

        Raises
        ------
        ValueError
            If ``x`` is not 4-D with C channels, or the filter is larger than the padded image.
        """
        filter_height, filter_width, channels, filters = self.W.shape
        if x.ndim != 4 or x.shape[3] != channels:
            raise ValueError(f"x: expected shape (N, H, W, {channels}), got {x.shape}")
        if x.shape[1] + 2 * self.pad < filter_height or x.shape[2] + 2 * self.pad < filter_width:
            raise ValueError(f"x: images of {x.shape[1]} x {x.shape[2]} pixels (padding {self.pad}) are smaller than "
                             f"the {filter_height} x {filter_width} filters")
        out_height = output_side(x.shape[1], filter_height, self.stride, self.pad)
        out_width = output_side(x.shape[2], filter_width, self.stride, self.pad)
        self.x_shape = x.shape
        self.col = self._im2col(x)
        out = self.col @ self.W.reshape(-1, filters)
        out += self.b
        return out.reshape(x.shape[0], out_height, out_width, filters)

    def backward(self, dout: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the convolution; sets ``dW`` and ``db``.

        Parameters
        ----------
        dout : ndarray of shape (N, OH, OW, FN)
        input_grad : bool, default True
            False skips the gradient with respect to ``x`` (``col2im``) and returns
            None: the network's first layer does not need it.

        Returns
        -------
        dx : ndarray of shape (N, H, W, C), or None
            Each window's gradient row added back onto the pixels it was read
            from (``col2im``, one addition per filter position).
        """
        filter_height, filter_width, channels, filters = self.W.shape
        dout = dout.reshape(-1, filters)
        if self._write_in_place:
            if self.dW.flags.c_contiguous:  # the reshape is a view: the product goes straight into dW
                np.matmul(self.col.T, dout, out=self.dW.reshape(-1, filters))
            else:                           # it would be a copy, and dW would never see the product
                self.dW[...] = (self.col.T @ dout).reshape(self.W.shape)
            np.sum(dout, axis=0, out=self.db)
        else:
            self.dW = (self.col.T @ dout).reshape(self.W.shape)
            self.db = dout.sum(axis=0)
        if not input_grad:
            return None
        n, height, width, _ = self.x_shape
        out_height = output_side(height, filter_height, self.stride, self.pad)
        out_width = output_side(width, filter_width, self.stride, self.pad)
        dcol = (dout @ self.W.reshape(-1, filters).T).reshape(n, out_height, out_width, filter_height, filter_width,
                                                               channels)
        dx = np.zeros((n, height + 2 * self.pad, width + 2 * self.pad, channels), dtype=dout.dtype)
        rows, cols = self.stride * out_height, self.stride * out_width
        for p in range(filter_height):
            for q in range(filter_width):
                dx[:, p:p + rows:self.stride, q:q + cols:self.stride] += dcol[:, :, :, p, q]
        return dx[:, self.pad:self.pad + height, self.pad:self.pad + width]


class MaxPooling:
    """Max pooling over non-overlapping ``size`` x ``size`` windows (stride = size).

    Rows and columns that do not fill a whole window are dropped (floor mode,
    as ``torch.nn.MaxPool2d`` does), and get zero gradient. Of equal maxima in
    a window the first (row-major) takes the gradient, as the book's
    ``argmax`` does.

    Source: Deep Learning from Scratch, section 7.4.4.

    Parameters
    ----------
    size : int >= 1, default 2

    Examples
    --------
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    >>> MaxPooling(2).forward(x)[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """

    def __init__(self, size: int = 2) -> None:
        self.size = positive_int("size", size)
        self.x_shape = None   # (N, H, W, C) of the last input
        self.argmax = None    # index of each window's maximum, (N, OH, OW, C)

    def _windows(self, x: np.ndarray) -> np.ndarray:
        """The windows as the last axis: (N, OH, OW, C, size * size) (a copy)."""
        n, height, width, channels = x.shape
        s = self.size
        out_height, out_width = output_side(height, s, s), output_side(width, s, s)
        x = x[:, :out_height * s, :out_width * s]
        windows = x.reshape(n, out_height, s, out_width, s, channels).transpose(0, 1, 3, 5, 2, 4)
        return windows.reshape(n, out_height, out_width, channels, s * s)

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """The maximum of every window, channel by channel.

        Parameters
        ----------
        x : ndarray of shape (N, H, W, C), float32 or float64
        train : bool, default True
            Unused.

        Returns
        -------
        out : ndarray of shape (N, H // size, W // size, C), dtype of ``x``

        Raises
        ------
        ValueError
            If ``x`` is not 4-D or a side is smaller than ``size``.
        """
        if x.ndim != 4:
            raise ValueError(f"x: expected shape (N, H, W, C), got {x.shape}")
        if min(x.shape[1:3]) < self.size:
            raise ValueError(f"x: images of {x.shape[1]} x {x.shape[2]} pixels are smaller than the "
                             f"{self.size} x {self.size} pooling window")
        windows = self._windows(x)
        self.x_shape = x.shape
        self.argmax = windows.argmax(axis=4)
        return np.take_along_axis(windows, self.argmax[..., None], axis=4)[..., 0]

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Route each window's gradient to the position of its maximum; zero elsewhere.

        Parameters
        ----------
        dout : ndarray of shape (N, OH, OW, C)

        Returns
        -------
        dx : ndarray of shape (N, H, W, C), dtype of ``dout``
        """
        n, _, _, channels = self.x_shape
        s = self.size
        out_height, out_width = dout.shape[1:3]
        dwindows = np.zeros((*dout.shape, s * s), dtype=dout.dtype)
        np.put_along_axis(dwindows, self.argmax[..., None], dout[..., None], axis=4)
        dx = np.zeros(self.x_shape, dtype=dout.dtype)
        dx[:, :out_height * s, :out_width * s] = (
            dwindows.reshape(n, out_height, out_width, channels, s, s).transpose(0, 1, 4, 2, 5, 3)
            .reshape(n, out_height * s, out_width * s, channels))
        return dx


class Reshape:
    """Reshape every example, e.g. flat vectors (N, H * W * C) to images (N, H, W, C) and back.

    Parameters
    ----------
    shape : tuple of int
        Shape of one example at the output; ``(-1,)`` flattens.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.x_shape = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """``x.reshape(N, *shape)`` (a view when ``x`` is contiguous)."""
        self.x_shape = x.shape
        shape = self.shape
        if -1 in shape:  # NumPy cannot infer it for a batch of no examples
            known = math.prod(side for side in shape if side != -1)
            shape = tuple(math.prod(x.shape[1:]) // known if side == -1 else side for side in shape)
        return x.reshape(x.shape[0], *shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """The gradient in the shape of the last input."""
        return dout.reshape(self.x_shape)
