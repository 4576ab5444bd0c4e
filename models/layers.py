"""Layers of the from-scratch network, each a small class with forward and backward.

After "Deep Learning from Scratch" (Koki Saitoh), chapters 5 and 6: every layer
keeps on ``self`` what its backward pass needs, so backpropagation can be read
line by line.

Conventions
-----------
* Inputs ``x`` have shape (N, D); arrays are float32 by default, float64 is
  accepted. The dtype of every output equals the dtype of the inputs and
  parameters: scalars are Python floats so that NumPy never promotes float32
  to float64.
* ``forward(x, train=True)`` returns the layer output; ``backward(dout)``
  returns the gradient of the loss with respect to ``x``, and must follow a
  forward pass (it uses what that pass stored).
* Parameter arrays (``Affine.W``, ``BatchNormalization.gamma``, ...) are held
  by reference, never copied: an optimizer updating them in place is seen by
  the layer.
"""

from __future__ import annotations

import numpy as np

from models.validation import as_generator, fraction, number

__all__ = [
    "Affine",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "BatchNormalization",
    "Dropout",
    "SoftmaxWithLoss",
]

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_float_array(name: str, array: object, ndim: int) -> None:
    """Raise ValueError unless ``array`` is a float32/float64 ndarray of ``ndim`` dims."""
    if not isinstance(array, np.ndarray) or array.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"{name}: expected a float32 or float64 numpy.ndarray, got {type(array).__name__}"
                         f"{' of dtype ' + str(array.dtype) if isinstance(array, np.ndarray) else ''}")
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {array.shape}")


def _check_gradient_buffer(name: str, buffer: np.ndarray | None, parameter: np.ndarray) -> None:
    """Raise ValueError unless ``buffer`` is None or an array like ``parameter``."""
    if buffer is not None and (not isinstance(buffer, np.ndarray) or buffer.shape != parameter.shape
                               or buffer.dtype != parameter.dtype):
        raise ValueError(f"{name}: expected an array of shape {parameter.shape} and dtype {parameter.dtype}")


class Affine:
    """Fully connected layer: ``out = x @ W + b``.

    Source: Deep Learning from Scratch, section 5.6.2.

    Parameters
    ----------
    W : ndarray of shape (D, M), float32 or float64
        Weight matrix, held by reference.
    b : ndarray of shape (M,), same dtype as ``W``
        Bias vector, held by reference.
    dW, db : ndarray of the shapes and dtype of ``W`` and ``b``, optional
        Arrays that :meth:`backward` writes the gradients into, in place (the
        network passes views of one flat gradient vector, so an optimizer can
        update all parameters in one pass). By default each backward pass
        allocates new arrays.

    Raises
    ------
    ValueError
        If ``W`` is not 2-D, ``b`` not 1-D of length M, their dtypes are not
        the same float32/float64, or a gradient buffer does not match.

    Attributes
    ----------
    dW : ndarray of shape (D, M)
        Gradient with respect to ``W``, set by :meth:`backward`.
    db : ndarray of shape (M,)
        Gradient with respect to ``b``, set by :meth:`backward`.

    Examples
    --------
    >>> W = np.ones((3, 2), dtype=np.float32); b = np.zeros(2, dtype=np.float32)
    >>> Affine(W, b).forward(np.ones((4, 3), dtype=np.float32)).shape
    (4, 2)
    """

    def __init__(self, W: np.ndarray, b: np.ndarray, *, dW: np.ndarray | None = None,
                 db: np.ndarray | None = None) -> None:
        _check_float_array("W", W, 2)
        _check_float_array("b", b, 1)
        if b.shape[0] != W.shape[1] or b.dtype != W.dtype:
            raise ValueError(f"b must have shape ({W.shape[1]},) and dtype {W.dtype} to match W, "
                             f"got shape {b.shape} and dtype {b.dtype}")
        _check_gradient_buffer("dW", dW, W)
        _check_gradient_buffer("db", db, b)
        self.W = W
        self.b = b
        self.x = None
        self.dW = dW
        self.db = db
        self._write_in_place = dW is not None and db is not None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Compute ``x @ W + b``.

        Parameters
        ----------
        x : ndarray of shape (N, D), dtype of ``W``
            Input batch.
        train : bool, default True
            Unused; present so every layer has the same signature.

        Returns
        -------
        out : ndarray of shape (N, M), dtype of ``x``
        """
        self.x = x
        out = x @ self.W
        out += self.b
        return out

    def backward(self, dout: np.ndarray, *, input_grad: bool = True) -> np.ndarray | None:
        """Backpropagate through the affine map; sets ``dW`` and ``db``.

        Parameters
        ----------
        dout : ndarray of shape (N, M)
            Gradient of the loss with respect to the output.
        input_grad : bool, default True
            If False, skip computing the gradient with respect to ``x`` and
            return None (the network's first layer does not need it, which
            saves one matrix product over the widest input).

        Returns
        -------
        dx : ndarray of shape (N, D) or None
            ``dout @ W.T``, or None when ``input_grad`` is False.
        """
        if self._write_in_place:
            np.matmul(self.x.T, dout, out=self.dW)
            np.sum(dout, axis=0, out=self.db)
        else:
            self.dW = self.x.T @ dout
            self.db = dout.sum(axis=0)
        return dout @ self.W.T if input_grad else None


class ReLU:
    """Rectified linear unit: ``out = max(x, 0)``.

    Source: Deep Learning from Scratch, section 5.5.1.
    """

    def __init__(self) -> None:
        self.mask = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Apply ``max(x, 0)`` elementwise.

        Parameters
        ----------
        x : ndarray of shape (N, D), float32 or float64
        train : bool, default True
            Unused.

        Returns
        -------
        out : ndarray of shape (N, D), dtype of ``x``
        """
        self.mask = x > 0
        return np.maximum(x, 0)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Pass the gradient where the input was positive, zero elsewhere.

        Parameters
        ----------
        dout : ndarray of shape (N, D)

        Returns
        -------
        dx : ndarray of shape (N, D), dtype of ``dout``
        """
        return dout * self.mask


class Sigmoid:
    """Logistic sigmoid: ``out = 1 / (1 + exp(-x))``.

    Computed as ``(1 + tanh(x / 2)) / 2``, the same function, which cannot
    overflow for large negative ``x``. Source: Deep Learning from Scratch,
    section 5.5.2.
    """

    def __init__(self) -> None:
        self.out = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Apply the sigmoid elementwise.

        Parameters
        ----------
        x : ndarray of shape (N, D), float32 or float64
        train : bool, default True
            Unused.

        Returns
        -------
        out : ndarray of shape (N, D), dtype of ``x``, values in [0, 1]
        """
        out = np.tanh(x * 0.5)
        out += 1.0
        out *= 0.5
        self.out = out
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Multiply by the derivative ``out * (1 - out)``.

        Parameters
        ----------
        dout : ndarray of shape (N, D)

        Returns
        -------
        dx : ndarray of shape (N, D), dtype of ``dout``
        """
        dx = 1.0 - self.out
        dx *= self.out
        dx *= dout
        return dx


class Tanh:
    """Hyperbolic tangent activation.

    Source: Deep Learning from Scratch, section 6.2.4 (Xavier initialization
    suits tanh and sigmoid).
    """

    def __init__(self) -> None:
        self.out = None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Apply ``tanh`` elementwise.

        Parameters
        ----------
        x : ndarray of shape (N, D), float32 or float64
        train : bool, default True
            Unused.

        Returns
        -------
        out : ndarray of shape (N, D), dtype of ``x``, values in [-1, 1]
        """
        self.out = np.tanh(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Multiply by the derivative ``1 - out**2``.

        Parameters
        ----------
        dout : ndarray of shape (N, D)

        Returns
        -------
        dx : ndarray of shape (N, D), dtype of ``dout``
        """
        dx = self.out * self.out
        np.subtract(1.0, dx, out=dx)
        dx *= dout
        return dx


class BatchNormalization:
    """Batch normalization: normalize each column over the batch, then scale and shift.

    Training mode uses the batch mean and biased variance and updates the running
    statistics ``running = momentum * running + (1 - momentum) * batch``; test
    mode (``train=False``) uses the running statistics, so a sample's output
    does not depend on the rest of its batch.

    Source: Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep
    Network Training by Reducing Internal Covariate Shift"; Deep Learning from
    Scratch, section 6.3.

    Parameters
    ----------
    gamma : ndarray of shape (D,), float32 or float64
        Scale, held by reference (the network initializes it to ones).
    beta : ndarray of shape (D,), same dtype as ``gamma``
        Shift, held by reference (the network initializes it to zeros).
    momentum : float, default 0.9
        Weight of the old running statistics, in [0, 1).
    eps : float, default 1e-5
        Added to the variance before the square root; positive.
    dgamma, dbeta : ndarray of the shape and dtype of ``gamma``, optional
        Arrays that :meth:`backward` writes the gradients into, in place (see
        :class:`Affine`). By default each backward pass allocates new arrays.

    Raises
    ------
    ValueError
        If ``gamma``/``beta`` are not 1-D float arrays of equal shape and dtype,
        ``momentum`` is outside [0, 1) or ``eps`` is not positive.

    Attributes
    ----------
    running_mean : ndarray of shape (D,)
        Starts at zeros, dtype of ``gamma``.
    running_var : ndarray of shape (D,)
        Starts at ones, dtype of ``gamma``.
    dgamma, dbeta : ndarray of shape (D,)
        Gradients set by :meth:`backward`.
    """

    def __init__(self, gamma: np.ndarray, beta: np.ndarray, momentum: float = 0.9, eps: float = 1e-5, *,
                 dgamma: np.ndarray | None = None, dbeta: np.ndarray | None = None) -> None:
        _check_float_array("gamma", gamma, 1)
        _check_float_array("beta", beta, 1)
        if beta.shape != gamma.shape or beta.dtype != gamma.dtype:
            raise ValueError(f"beta: expected shape {gamma.shape} and dtype {gamma.dtype} to match gamma, "
                             f"got shape {beta.shape} and dtype {beta.dtype}")
        _check_gradient_buffer("dgamma", dgamma, gamma)
        _check_gradient_buffer("dbeta", dbeta, beta)
        self.momentum = fraction("momentum", momentum)
        self.eps = number("eps", eps, minimum=0.0, exclusive_minimum=True)
        self.gamma = gamma
        self.beta = beta
        self.running_mean = np.zeros_like(gamma)
        self.running_var = np.ones_like(gamma)
        self.xhat = None      # normalized input of the last training pass, (N, D)
        self.inv_std = None   # 1 / sqrt(batch variance + eps), (D,)
        self.dgamma = dgamma
        self.dbeta = dbeta
        self._write_in_place = dgamma is not None and dbeta is not None

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Normalize, scale by ``gamma`` and shift by ``beta``.

        Parameters
        ----------
        x : ndarray of shape (N, D), dtype of ``gamma``
        train : bool, default True
            True: batch statistics (N >= 2 for a meaningful variance) and update
            the running statistics. False: running statistics.

        Returns
        -------
        out : ndarray of shape (N, D), dtype of ``x``
        """
        if not train:
            scale = self.gamma / np.sqrt(self.running_var + self.eps)
            out = x * scale
            out += self.beta - self.running_mean * scale
            return out

        mean = x.mean(axis=0)
        xhat = x - mean
        var = np.einsum("nd,nd->d", xhat, xhat) / x.shape[0]   # biased variance
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat *= inv_std
        self.xhat, self.inv_std = xhat, inv_std

        m = self.momentum
        self.running_mean *= m
        self.running_mean += (1.0 - m) * mean
        self.running_var *= m
        self.running_var += (1.0 - m) * var

        out = xhat * self.gamma
        out += self.beta
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Backpropagate through scale/shift and the batch mean and variance.

        Uses the compact form (with ``dxhat = dout * gamma``)::

            dx = inv_std / N * (N * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
               = gamma * inv_std * (dout - (dbeta + xhat * dgamma) / N)

        Must follow a training-mode forward pass. Sets ``dgamma`` and ``dbeta``.

        Parameters
        ----------
        dout : ndarray of shape (N, D)

        Returns
        -------
        dx : ndarray of shape (N, D), dtype of ``dout``
        """
        n = dout.shape[0]
        if self._write_in_place:
            np.sum(dout, axis=0, out=self.dbeta)
            np.einsum("nd,nd->d", dout, self.xhat, out=self.dgamma)
        else:
            self.dbeta = dout.sum(axis=0)
            self.dgamma = np.einsum("nd,nd->d", dout, self.xhat)
        dx = self.xhat * (self.dgamma / n)
        dx += self.dbeta / n
        np.subtract(dout, dx, out=dx)
        dx *= self.gamma * self.inv_std
        return dx


class Dropout:
    """Inverted dropout: drop units at random in training, rescale the survivors.

    Training: ``mask = rng.random(x.shape) >= ratio``, ``out = x * mask / (1 - ratio)``.
    Test (``train=False``): identity. Scaling at training time makes the test
    output equal the expectation of the training output (the book scales by
    ``1 - ratio`` at test time instead; never both).

    Fixed mask, for numerical gradient checks: set ``fixed_mask = True`` and
    every training forward pass reuses the mask of the previous one (the first
    pass after setting it draws a mask if none exists yet). Set it back to
    False to draw a fresh mask per pass again. A reused mask must match the
    input shape.

    Source: Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural
    Networks from Overfitting"; Deep Learning from Scratch, section 6.4.3.

    Parameters
    ----------
    ratio : float
        Probability of dropping a unit, in [0, 1). 0 makes the layer the identity.
    rng : numpy.random.Generator, optional, keyword-only
        Source of the masks; default ``numpy.random.default_rng()``.

    Raises
    ------
    ValueError
        If ``ratio`` is outside [0, 1) or ``rng`` is not a Generator.

    Attributes
    ----------
    mask : ndarray of bool, shape (N, D), or None
        Kept units of the last training pass.
    fixed_mask : bool
        Reuse ``mask`` instead of drawing a new one (default False).

    Examples
    --------
    >>> layer = Dropout(0.5, rng=np.random.default_rng(0))
    >>> layer.fixed_mask = True          # gradient check: same mask every pass
    """

    def __init__(self, ratio: float, *, rng: int | np.random.Generator | None = None) -> None:
        self.ratio = fraction("ratio", ratio)
        self.rng = as_generator("rng", rng)
        self.mask = None
        self.fixed_mask = False

    def forward(self, x: np.ndarray, train: bool = True) -> np.ndarray:
        """Drop and rescale (training) or pass through (test).

        Parameters
        ----------
        x : ndarray of shape (N, D), float32 or float64
        train : bool, default True

        Returns
        -------
        out : ndarray of shape (N, D), dtype of ``x`` (``x`` itself in test
        mode or when ``ratio`` is 0)

        Raises
        ------
        ValueError
            If ``fixed_mask`` is set and the kept mask's shape differs from ``x``'s.
        """
        if not train or self.ratio == 0.0:
            return x
        if not self.fixed_mask or self.mask is None:
            self.mask = self.rng.random(x.shape, dtype=np.float32) >= self.ratio
        elif self.mask.shape != x.shape:
            raise ValueError(f"fixed_mask is set but the kept mask has shape {self.mask.shape}, "
                             f"input has shape {x.shape}")
        out = x * self.mask
        out *= 1.0 / (1.0 - self.ratio)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """Apply the same mask and scale as the last training forward pass.

        Parameters
        ----------
        dout : ndarray of shape (N, D)

        Returns
        -------
        dx : ndarray of shape (N, D), dtype of ``dout``
        """
        if self.ratio == 0.0:
            return dout
        dx = dout * self.mask
        dx *= 1.0 / (1.0 - self.ratio)
        return dx


class SoftmaxWithLoss:
    """Softmax followed by the mean cross-entropy loss, fused for stability.

    The row maximum is subtracted before exponentiating and the loss is taken
    from the log-softmax ``z_t - log(sum(exp(z)))`` (log-sum-exp), so it stays
    finite when a probability underflows to 0 and for logits such as
    [1000, 1001].

    Source: Deep Learning from Scratch, sections 3.5.2 and 5.6.3.

    Attributes
    ----------
    y : ndarray of shape (N, C)
        Softmax probabilities of the last forward pass.
    t : ndarray of int, shape (N,)
        Class indices of the last forward pass.
    """

    def __init__(self) -> None:
        self.y = None
        self.t = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> float:
        """Return the mean cross-entropy of ``softmax(x)`` against ``t``.

        Parameters
        ----------
        x : ndarray of shape (N, C), float32 or float64
            Scores (logits).
        t : ndarray of int, shape (N,), or one-hot ndarray of shape (N, C)
            Class indices in [0, C), or one-hot rows (converted with argmax).

        Returns
        -------
        loss : float
            ``-mean(log softmax(x)[n, t[n]])``.
        """
        if t.ndim == 2:
            t = t.argmax(axis=1)
        rows = np.arange(x.shape[0])
        z = x - x.max(axis=1, keepdims=True)
        z_true = z[rows, t]
        np.exp(z, out=z)                  # z now holds exp(z), reused for softmax
        sum_exp = z.sum(axis=1)
        z /= sum_exp[:, None]
        self.y, self.t = z, t
        return float(np.mean(np.log(sum_exp) - z_true))

    def backward(self, dout: float = 1.0) -> np.ndarray:
        """Gradient of the loss with respect to the scores: ``(y - onehot(t)) / N * dout``.

        Parameters
        ----------
        dout : float, default 1.0
            Gradient of the final objective with respect to the loss.

        Returns
        -------
        dx : ndarray of shape (N, C), dtype of the scores
        """
        n = self.y.shape[0]
        scale = float(dout) / n
        dx = self.y * scale
        dx[np.arange(n), self.t] -= scale
        return dx
