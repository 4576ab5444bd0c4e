"""Gradient-based optimizers, each a class with one ``update(params, grads)`` method.

After "Deep Learning from Scratch" (Koki Saitoh), section 6.1 and its
``common/optimizer.py``. ``params`` and ``grads`` are dicts name -> ndarray with
matching shapes. ``update`` changes the arrays in ``params`` in place (the
network's layers hold the same arrays) and never writes to ``grads``. State
(velocities, squared-gradient sums, moments) is created lazily per name, with
the dtype of the parameter; hyperparameters are stored as Python floats so a
float32 parameter is never promoted to float64. Optimizers with decaying state
(Momentum, Nesterov, RMSprop, Adam) count their ``updates`` and set subnormal state
entries to 0 every :data:`FLUSH_INTERVAL` updates (see there).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from models.validation import fraction, number, problem

__all__ = [
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "OPTIMIZERS",
    "make_optimizer",
]


FLUSH_INTERVAL = 8
"""Every this many updates, decaying state below the dtype's smallest normal number is set to 0.

A velocity or moving average whose gradient has become 0 (a dead unit, an always-blank
pixel) decays geometrically and spends about 150 steps in float32's subnormal range
(below 1.2e-38) on its way to 0; x86 CPUs compute on subnormal numbers 10 to 100 times
slower, which made training epochs slow down by half as such entries accumulated.
Setting them to 0 is what a CPU's flush-to-zero mode does; at that size they change no
step.
"""


def _flush_subnormals(arrays: Iterable[np.ndarray]) -> None:
    """Set the subnormal entries of each array to 0, in place."""
    for array in arrays:
        np.copyto(array, 0, where=np.abs(array) < np.finfo(array.dtype).tiny)


def _positive(name: str, value: float) -> float:
    """Return ``value`` as a float after checking it is finite and > 0."""
    return number(name, value, minimum=0.0, exclusive_minimum=True)


class _Stateful:
    """``state_dict()`` and ``load_state_dict()`` of every optimizer, from two class attributes.

    ``_PER_NAME``: attributes holding a dict parameter name -> state (arrays; Adam's
    step counts ``t`` are ints); ``_COUNTS``: int attributes (``updates``).  A training
    continued from a checkpoint (:mod:`models.checkpoint`) gets the same steps as one
    that ran through only if this state comes back exactly, the counts included (they
    time the flush of subnormal numbers and Adam's bias correction).
    """

    _PER_NAME: tuple[str, ...] = ()
    _COUNTS: tuple[str, ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state, e.g. ``{"v": {"all": ndarray (P,)}, "updates": 120}`` for Momentum.

        Returns
        -------
        state : dict
            ``{attribute: {parameter name: ndarray or int}}`` for the per-parameter state
            and ``{attribute: int}`` for the counts.  The arrays are the optimizer's own,
            not copies (as PyTorch's ``Optimizer.state_dict``): write or copy them before
            the next :meth:`update`.  SGD has no state: ``{}``.
        """
        state: dict[str, Any] = {attribute: dict(getattr(self, attribute)) for attribute in self._PER_NAME}
        state.update({attribute: getattr(self, attribute) for attribute in self._COUNTS})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the optimizer's state by copies of what :meth:`state_dict` returned.

        Parameters
        ----------
        state : dict
            Exactly the keys of :meth:`state_dict`; arrays keep their dtype.

        Raises
        ------
        ValueError
            The keys differ (a state of another optimizer).
        """
        expected = {*self._PER_NAME, *self._COUNTS}
        if set(state) != expected:
            raise ValueError(f"optimizer state: expected keys {sorted(expected)} of {type(self).__name__}, "
                             f"got {sorted(state)}")
        for attribute in self._PER_NAME:
            setattr(self, attribute, {key: np.array(value) if isinstance(value, np.ndarray) else int(value)
                                      for key, value in state[attribute].items()})
        for attribute in self._COUNTS:
            setattr(self, attribute, int(state[attribute]))


class SGD(_Stateful):
    """Stochastic gradient descent: ``W -= lr * g``.

    Source: Deep Learning from Scratch, section 6.1.2.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, positive.

    Raises
    ------
    ValueError
        If ``lr`` is not a positive finite number.

    Examples
    --------
    >>> params = {"W": np.array([1.0, 2.0])}
    >>> SGD(lr=0.1).update(params, {"W": np.array([0.5, -1.0])})
    >>> params["W"]
    array([0.95, 2.1 ])
    """

    def __init__(self, lr: float = 0.01) -> None:
        self.lr = _positive("lr", lr)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params``.

        Parameters
        ----------
        params : dict of str to ndarray (float32 or float64)
            Updated in place.
        grads : dict of str to ndarray
            Gradients, same keys, shapes and dtypes as ``params``.
        """
        for key, param in params.items():
            param -= self.lr * grads[key]


class Momentum(_Stateful):
    """Momentum SGD: ``v = a * v - lr * g``; ``W += v``.

    Source: Deep Learning from Scratch, section 6.1.4 (Polyak's heavy ball).

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, positive.
    momentum : float, default 0.9
        Decay ``a`` of the velocity, in [0, 1).

    Raises
    ------
    ValueError
        If ``lr`` is not positive or ``momentum`` is outside [0, 1).

    Attributes
    ----------
    v : dict of str to ndarray
        Velocity per parameter name, created at its first update.
    """

    _PER_NAME = ("v",)
    _COUNTS = ("updates",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = _positive("lr", lr)
        self.momentum = fraction("momentum", momentum)
        self.v = {}
        self.updates = 0

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params`` (see :meth:`SGD.update`)."""
        for key, param in params.items():
            v = self.v.get(key)
            if v is None:
                v = self.v[key] = np.zeros_like(param)
            v *= self.momentum
            v -= self.lr * grads[key]
            param += v
        self.updates += 1
        if self.updates % FLUSH_INTERVAL == 0:
            _flush_subnormals(self.v.values())


class Nesterov(_Stateful):
    """Nesterov's accelerated gradient, in the book's reformulated form.

    ``v = a * v - lr * g``, then ``W += a * a * v - (1 + a) * lr * g`` (with the
    updated ``v``), exactly as ``common/optimizer.py`` of the book. The
    reformulation (Bengio, Boulanger-Lewandowski & Pascanu 2012, arXiv:1212.0901)
    rewrites Nesterov momentum (Nesterov 1983; Sutskever et al. 2013) so that the
    gradient is taken at the current parameters rather than at the look-ahead
    point. Note that the paper's form uses the velocity *before* its update in
    the ``a * a * v`` term; the book (and this class) uses the updated one,
    which amounts to a slightly stronger momentum.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, positive.
    momentum : float, default 0.9
        Momentum ``a``, in [0, 1).

    Raises
    ------
    ValueError
        If ``lr`` is not positive or ``momentum`` is outside [0, 1).

    Attributes
    ----------
    v : dict of str to ndarray
        Velocity per parameter name.
    """

    _PER_NAME = ("v",)
    _COUNTS = ("updates",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr = _positive("lr", lr)
        self.momentum = fraction("momentum", momentum)
        self.v = {}
        self.updates = 0

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params`` (see :meth:`SGD.update`)."""
        a = self.momentum
        for key, param in params.items():
            v = self.v.get(key)
            if v is None:
                v = self.v[key] = np.zeros_like(param)
            g = grads[key]
            v *= a
            v -= self.lr * g
            param += (a * a) * v
            param -= ((1.0 + a) * self.lr) * g
        self.updates += 1
        if self.updates % FLUSH_INTERVAL == 0:
            _flush_subnormals(self.v.values())


class AdaGrad(_Stateful):
    """AdaGrad: ``h += g * g``; ``W -= lr * g / (sqrt(h) + eps)``.

    Source: Duchi, Hazan & Singer 2011, "Adaptive Subgradient Methods for
    Online Learning and Stochastic Optimization"; Deep Learning from Scratch,
    section 6.1.5.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, positive.
    eps : float, default 1e-7
        Keeps the denominator away from 0; positive.

    Raises
    ------
    ValueError
        If ``lr`` or ``eps`` is not positive.

    Attributes
    ----------
    h : dict of str to ndarray
        Sum of squared gradients per parameter name.
    """

    _PER_NAME = ("h",)

    def __init__(self, lr: float = 0.01, eps: float = 1e-7) -> None:
        self.lr = _positive("lr", lr)
        self.eps = _positive("eps", eps)
        self.h = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params`` (see :meth:`SGD.update`)."""
        for key, param in params.items():
            h = self.h.get(key)
            if h is None:
                h = self.h[key] = np.zeros_like(param)
            g = grads[key]
            step = g * g
            h += step
            _scaled_step(g, h, self.eps, self.lr, out=step)
            param -= step


class RMSprop(_Stateful):
    """RMSprop: ``h = r * h + (1 - r) * g * g``; ``W -= lr * g / (sqrt(h) + eps)``.

    Source: Hinton, Srivastava & Swersky, Neural Networks for Machine Learning,
    lecture 6e (2012); Deep Learning from Scratch, section 6.1.5.

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, positive.
    decay_rate : float, default 0.99
        Decay ``r`` of the squared-gradient average, in [0, 1).
    eps : float, default 1e-7
        Keeps the denominator away from 0; positive.

    Raises
    ------
    ValueError
        If ``lr`` or ``eps`` is not positive or ``decay_rate`` is outside [0, 1).

    Attributes
    ----------
    h : dict of str to ndarray
        Moving average of squared gradients per parameter name.
    """

    _PER_NAME = ("h",)
    _COUNTS = ("updates",)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, eps: float = 1e-7) -> None:
        self.lr = _positive("lr", lr)
        self.decay_rate = fraction("decay_rate", decay_rate)
        self.eps = _positive("eps", eps)
        self.h = {}
        self.updates = 0

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params`` (see :meth:`SGD.update`)."""
        r = self.decay_rate
        for key, param in params.items():
            h = self.h.get(key)
            if h is None:
                h = self.h[key] = np.zeros_like(param)
            g = grads[key]
            step = g * g
            step *= 1.0 - r
            h *= r
            h += step
            _scaled_step(g, h, self.eps, self.lr, out=step)
            param -= step
        self.updates += 1
        if self.updates % FLUSH_INTERVAL == 0:
            _flush_subnormals(self.h.values())


class Adam(_Stateful):
    """Adam: bias-corrected moving averages of the gradient and its square.

    With ``t`` counted from 1 per parameter name::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)
        W -= lr * m_hat / (sqrt(v_hat) + eps)

    (The book folds the correction into the step size, which differs only in
    where ``eps`` enters.) Source: Kingma & Ba 2015, "Adam: A Method for
    Stochastic Optimization"; Deep Learning from Scratch, section 6.1.6.

    Parameters
    ----------
    lr : float, default 0.001
        Learning rate, positive.
    beta1 : float, default 0.9
        Decay of the first moment, in [0, 1).
    beta2 : float, default 0.999
        Decay of the second moment, in [0, 1).
    eps : float, default 1e-7
        Keeps the denominator away from 0; positive.

    Raises
    ------
    ValueError
        If ``lr`` or ``eps`` is not positive or a beta is outside [0, 1).

    Attributes
    ----------
    m, v : dict of str to ndarray
        First and second moments per parameter name.
    t : dict of str to int
        Number of updates so far per parameter name.
    """

    _PER_NAME = ("m", "v", "t")
    _COUNTS = ("updates",)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7) -> None:
        self.lr = _positive("lr", lr)
        self.beta1 = fraction("beta1", beta1)
        self.beta2 = fraction("beta2", beta2)
        self.eps = _positive("eps", eps)
        self.m, self.v, self.t = {}, {}, {}
        self._step = {}
        self.updates = 0

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        """Take one step on every array in ``params`` (see :meth:`SGD.update`)."""
        b1, b2 = self.beta1, self.beta2
        for key, param in params.items():
            m = self.m.get(key)
            if m is None:
                m = self.m[key] = np.zeros_like(param)
                self.v[key] = np.zeros_like(param)
                self.t[key] = 0
            step = self._step.get(key)  # scratch space, reused (no allocation); not part of the state
            if step is None:
                step = self._step[key] = np.empty_like(param)
            v = self.v[key]
            t = self.t[key] = self.t[key] + 1
            g = grads[key]

            np.multiply(g, 1.0 - b1, out=step)
            m *= b1
            m += step
            np.multiply(g, g, out=step)
            step *= 1.0 - b2
            v *= b2
            v += step

            np.multiply(v, 1.0 / (1.0 - b2**t), out=step)   # v_hat
            np.sqrt(step, out=step)
            step += self.eps
            np.divide(m, step, out=step)
            step *= self.lr / (1.0 - b1**t)                  # lr * m_hat / (...)
            param -= step
        self.updates += 1
        if self.updates % FLUSH_INTERVAL == 0:
            _flush_subnormals([*self.m.values(), *self.v.values()])


def _scaled_step(g: np.ndarray, h: np.ndarray, eps: float, lr: float, out: np.ndarray) -> np.ndarray:
    """Write ``lr * g / (sqrt(h) + eps)`` into ``out`` (shared by AdaGrad and RMSprop)."""
    np.sqrt(h, out=out)
    out += eps
    np.divide(g, out, out=out)
    out *= lr
    return out


Optimizer = SGD | Momentum | Nesterov | AdaGrad | RMSprop | Adam
"""Any optimizer of this module (for type hints)."""

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, learning_rate: float | str = "default") -> Optimizer:
    """Build an optimizer by name with the given learning rate and default settings.

    Parameters
    ----------
    name : str
        One of the keys of :data:`OPTIMIZERS`: "sgd", "momentum", "nesterov",
        "adagrad", "rmsprop", "adam" (case-insensitive).
    learning_rate : float or "default", default "default"
        Positive learning rate; "default" keeps the class's default, the book's
        (``common/optimizer.py``): 0.01, Adam 0.001.

    Returns
    -------
    optimizer : SGD, Momentum, Nesterov, AdaGrad, RMSprop or Adam

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the allowed names) or
        ``learning_rate`` is not positive.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise problem("optimizer", f"one of {', '.join(OPTIMIZERS)}", name)
    if isinstance(learning_rate, str) and learning_rate == "default":
        return OPTIMIZERS[key]()
    return OPTIMIZERS[key](lr=learning_rate)
