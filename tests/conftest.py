"""Shared test helpers: the installed console scripts, numerical gradients."""

import sys
from pathlib import Path

import numpy as np

BIN = Path(sys.executable).parent
HPO = str(BIN / "hpo")
OPTUNA = str(BIN / "optuna")


def numerical_gradient(f, x, h=1e-5):
    """Central differences of the scalar function ``f()`` with respect to ``x``, perturbed in place."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = f()
        x[index] = original - h
        f_minus = f()
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||), floored so that two ~0 gradients compare by absolute error."""
    return np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-3)
