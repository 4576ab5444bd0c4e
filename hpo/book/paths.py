"""Optimizer paths on a 2-D function (the book's section 6.1.7, ``ch06/optimizer_compare_naive.py``).

``f(x, y) = x**2 / 20 + y**2`` is a bowl stretched along x: its gradient points
mostly along y, not at the minimum (0, 0).  Starting from (-7, 2), 30 steps of
each optimizer of :mod:`models.optimizers` show the book's finding: SGD zigzags
in y, Momentum rolls like a ball, AdaGrad's steps shrink along y first, Adam
combines both.  This is not a training run, so it is not a study.
"""

from __future__ import annotations

import numpy as np

from models.optimizers import make_optimizer

__all__ = ["BOOK_OPTIMIZERS", "START", "STEPS", "f", "gradient", "optimizer_path", "optimizer_paths"]

START = (-7.0, 2.0)
"""Starting point (x, y) of the book's figure 6-8."""

STEPS = 30
"""Updates per optimizer in the book's figure 6-8."""

BOOK_OPTIMIZERS = {"SGD": ("sgd", 0.95), "Momentum": ("momentum", 0.1), "AdaGrad": ("adagrad", 1.5), "Adam": ("adam", 0.3)}
"""Figure title -> (optimizer name of :func:`models.optimizers.make_optimizer`, learning rate), as in the book."""


def f(x, y):
    """The book's test function ``x**2 / 20 + y**2`` (equation 6.2), elementwise.

    Parameters
    ----------
    x, y : float or ndarray of one shape

    Returns
    -------
    float or ndarray of that shape
    """
    return x**2 / 20.0 + y**2


def gradient(x, y):
    """Gradient ``(x / 10, 2 y)`` of :func:`f`.

    Parameters
    ----------
    x, y : float or ndarray

    Returns
    -------
    (df/dx, df/dy) : tuple of float or ndarray
    """
    return x / 10.0, 2.0 * y


def optimizer_path(name, learning_rate, *, start=START, steps=STEPS):
    """Positions visited by one optimizer minimizing :func:`f`.

    Parameters
    ----------
    name : str
        Optimizer of :func:`models.optimizers.make_optimizer` ("sgd", "momentum", "adagrad", "adam", ...).
    learning_rate : float
        Its step size, positive.
    start : (float, float), default (-7, 2)
    steps : int, default 30
        Number of updates.

    Returns
    -------
    path : ndarray of shape (steps + 1, 2), float64
        Row 0 is ``start``, row k the position (x, y) after k updates.
    """
    optimizer = make_optimizer(name, learning_rate)
    params = {"x": np.array([start[0]], dtype=np.float64), "y": np.array([start[1]], dtype=np.float64)}
    path = np.empty((steps + 1, 2), dtype=np.float64)
    path[0] = start
    for step in range(1, steps + 1):
        dx, dy = gradient(params["x"], params["y"])
        optimizer.update(params, {"x": dx, "y": dy})
        path[step] = params["x"][0], params["y"][0]
    return path


def optimizer_paths(*, start=START, steps=STEPS):
    """The book's four paths (figure 6-8): :data:`BOOK_OPTIMIZERS` from ``start``.

    Returns
    -------
    paths : dict of str to ndarray of shape (steps + 1, 2), float64
        Figure title ("SGD", "Momentum", "AdaGrad", "Adam") -> :func:`optimizer_path`.
    """
    return {title: optimizer_path(name, rate, start=start, steps=steps)
            for title, (name, rate) in BOOK_OPTIMIZERS.items()}
