"""The numbers behind the chapter's findings, from paths, activations and stored learning curves.

Pure functions: the tests assert the book's findings on them, ``hpo book``
prints them as a table and the README quotes them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "activation_findings", "batch_norm_wins", "final_values", "generalization_gaps", "path_findings",
]


def path_findings(paths: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """How each optimizer path of :func:`hpo.book.paths.optimizer_paths` went.

    Parameters
    ----------
    paths : dict of str to ndarray of shape (steps + 1, 2), float64

    Returns
    -------
    dict of str to dict
        Per optimizer: ``start_distance`` and ``end_distance`` (Euclidean distance of
        the first and last point to the minimum (0, 0)), ``y_sign_changes`` (times y
        crosses 0: the zigzag) and ``y_travel`` (sum of |dy| over the steps).
    """
    result = {}
    for name, path in paths.items():
        y = path[:, 1]
        result[name] = {
            "start_distance": float(np.hypot(*path[0])),
            "end_distance": float(np.hypot(*path[-1])),
            "y_sign_changes": int(np.count_nonzero(np.sign(y[1:]) * np.sign(y[:-1]) < 0)),
            "y_travel": float(np.abs(np.diff(y)).sum()),
        }
    return result


def activation_findings(activations: dict[str, np.ndarray]) -> dict[str, Any]:
    """Summary statistics of :func:`hpo.book.activations.book_activations`.

    Returns
    -------
    dict
        ``saturated`` : fraction of sigmoid outputs below 0.1 or above 0.9 with std 1
        (all layers); ``near_half`` : fraction of sigmoid outputs in [0.4, 0.6] with
        std 0.01; ``spread`` : per configuration, the standard deviation of each
        layer's outputs (list of 5 floats); ``he_relu_ratio`` : last layer's standard
        deviation over the first layer's with He and ReLU.
    """
    std_one = activations["std 1, sigmoid"]
    small = activations["std 0.01, sigmoid"]
    spread = {label: [float(layer.std()) for layer in values] for label, values in activations.items()}
    he = spread["He, ReLU"]
    return {
        "saturated": float(np.mean((std_one < 0.1) | (std_one > 0.9))),
        "near_half": float(np.mean((small >= 0.4) & (small <= 0.6))),
        "spread": spread,
        "he_relu_ratio": he[-1] / he[0],
    }


def final_values(curves: dict[Any, dict[str, list]], name: str) -> dict[Any, float]:
    """The last epoch's value of curve ``name`` per grid point (see :func:`hpo.book.experiments.curves_by`).

    NaN for a trial that diverged: its last epochs are missing.
    """
    return {point: _last(values, values[name]) for point, values in curves.items()}


def batch_norm_wins(curves: dict[tuple, dict[str, list]]) -> tuple[int, int, dict[float, tuple[float, float]]]:
    """At how many weight scales batch norm ends with the higher training accuracy.

    Parameters
    ----------
    curves : dict of (weight std, batch_norm) to learning curves
        From the batch-norm study; the training accuracy is ``train_eval_accuracy``
        (test mode) when recorded, else ``train_accuracy``.

    Returns
    -------
    wins : int
        Scales at which the final training accuracy with batch norm is higher, or at
        which only the network without it diverged.
    compared : int
        Scales with both trials completed.
    accuracies : dict of float to (float, float)
        Weight std -> final training accuracy (without, with) batch norm, fractions;
        NaN for a diverged run.
    """
    accuracies = {}
    for (scale, batch_norm), values in curves.items():
        if batch_norm and (scale, False) in curves:
            without = curves[(scale, False)]
            accuracies[scale] = (_last(without, _train_accuracy(without)), _last(values, _train_accuracy(values)))
    wins = sum(with_norm > without or (np.isnan(without) and not np.isnan(with_norm))
               for without, with_norm in accuracies.values())
    return wins, len(accuracies), accuracies


def generalization_gaps(curves: dict[Any, dict[str, list]]) -> dict[Any, float]:
    """Final training accuracy minus final held-out (validation) accuracy, per grid point.

    The training accuracy is ``train_eval_accuracy`` (test mode) when recorded, else
    ``train_accuracy``; a positive gap is overfitting, in accuracy points (fractions).
    """
    return {point: _last(values, _train_accuracy(values)) - _last(values, values["validation_accuracy"])
            for point, values in curves.items()}


def _train_accuracy(values: dict[str, Any]) -> list[float | None]:
    return values.get("train_eval_accuracy") or values["train_accuracy"]


def _last(values: dict[str, Any], curve: list[float | None]) -> float:
    """The final value of ``curve``; NaN when the run diverged or the value is not finite."""
    if "diverged" in values or not curve or curve[-1] is None:
        return float("nan")
    return float(curve[-1])
