"""Argument checks shared by models/, with one message format.

Every check raises ``ValueError("NAME: expected WHAT, got VALUE")``: the name of the
argument, what it must be, and the value it was given, so that a caller (the
study-file validation of the service, a test, a user at a prompt) sees one kind of
message whichever layer or optimizer rejected its input. Booleans are never accepted
as numbers (``True`` is an ``int`` to Python, but ``epochs=True`` is a mistake).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["as_generator", "fraction", "number", "positive_int", "problem"]


def problem(name: str, expected: str, value: Any) -> ValueError:
    """The error of this module's format: ``NAME: expected EXPECTED, got VALUE``.

    Parameters
    ----------
    name : str
        Argument name, as the caller wrote it (``"hidden_sizes"``, ``"x_train"``).
    expected : str
        What it must be (``"an integer >= 1"``).
    value : object
        What it was given; shown with ``repr``.

    Returns
    -------
    ValueError
        To be raised by the caller.

    Examples
    --------
    >>> str(problem("epochs", "an integer >= 1", 0))
    'epochs: expected an integer >= 1, got 0'
    """
    return ValueError(f"{name}: expected {expected}, got {value!r}")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` as an ``int`` after checking it is an integer >= 1.

    Python and NumPy integers are accepted; floats (even ``2.0``) and booleans are not.

    Raises
    ------
    ValueError
        ``NAME: expected an integer >= 1, got VALUE``.

    Examples
    --------
    >>> positive_int("epochs", np.int64(3))
    3
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise problem(name, "an integer >= 1", value)
    return int(value)


def number(name: str, value: Any, *, minimum: float = -math.inf, exclusive_minimum: bool = False,
           maximum: float = math.inf, exclusive_maximum: bool = False) -> float:
    """Return ``value`` as a finite ``float`` after checking it lies in the given interval.

    Parameters
    ----------
    name : str
        Argument name for the message.
    value : object
        A real number (not a bool).
    minimum, maximum : float
        Bounds of the interval; infinite bounds are open whatever the flags say.
    exclusive_minimum, exclusive_maximum : bool
        Whether the bound itself is excluded.

    Raises
    ------
    ValueError
        ``NAME: expected a finite number > 0, got VALUE`` (the interval spelled out).

    Examples
    --------
    >>> number("learning_rate", 0.01, minimum=0, exclusive_minimum=True)
    0.01
    >>> number("dropout", 1.0, minimum=0, maximum=1, exclusive_maximum=True)
    Traceback (most recent call last):
    ...
    ValueError: dropout: expected a number in [0, 1), got 1.0
    """
    if math.isfinite(minimum) and math.isfinite(maximum):
        expected = (f"a number in {'(' if exclusive_minimum else '['}{minimum:g}, "
                    f"{maximum:g}{')' if exclusive_maximum else ']'}")
    elif math.isfinite(minimum):
        expected = f"a finite number {'>' if exclusive_minimum else '>='} {minimum:g}"
    elif math.isfinite(maximum):
        expected = f"a finite number {'<' if exclusive_maximum else '<='} {maximum:g}"
    else:
        expected = "a finite number"
    if not _is_real(value) or not math.isfinite(value):
        raise problem(name, expected, value)
    below = value <= minimum if exclusive_minimum else value < minimum
    above = value >= maximum if exclusive_maximum else value > maximum
    if below or above:
        raise problem(name, expected, value)
    return float(value)


def fraction(name: str, value: Any) -> float:
    """Return ``value`` as a ``float`` after checking it lies in [0, 1) (dropout, decay rates).

    Raises
    ------
    ValueError
        ``NAME: expected a number in [0, 1), got VALUE``.
    """
    return number(name, value, minimum=0.0, maximum=1.0, exclusive_maximum=True)


def as_generator(name: str, seed: Any) -> np.random.Generator:
    """The random generator a seed stands for: the one seed rule of models/.

    Parameters
    ----------
    name : str
        Argument name for the message (``"seed"``, ``"rng"``).
    seed : int >= 0, numpy.random.Generator or None
        An int seeds ``numpy.random.default_rng(seed)``; a Generator is used as is
        (and advanced in place by its user); None draws fresh entropy from the
        operating system, so the result is not reproducible.

    Returns
    -------
    numpy.random.Generator

    Raises
    ------
    ValueError
        ``NAME: expected an int >= 0, a numpy.random.Generator or None, got VALUE``
        (floats, booleans, negative ints, strings, legacy ``RandomState`` objects).

    Examples
    --------
    >>> bool(as_generator("seed", 0).integers(10) == np.random.default_rng(0).integers(10))
    True
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise problem(name, "an int >= 0, a numpy.random.Generator or None", seed)
