"""Several trained networks combined by averaging their softmax outputs.

Book, section 6.4.3 (the note on dropout): an ensemble trains several networks
alike and averages their outputs at test time, which raises recognition
accuracy by some points; dropout imitates that inside one network.  The
outputs averaged here are probabilities (softmax of each network's scores),
not scores: networks whose scores have different scales then weigh alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax ``exp(a - max a) / sum(exp(a - max a))`` (book, section 3.5.2, overflow-safe form).

    Parameters
    ----------
    scores : ndarray of shape (N, C), float

    Returns
    -------
    ndarray of shape (N, C), the same float dtype; each row sums to 1.
    """
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class Ensemble:
    """Networks that vote by their mean softmax probabilities.

    Parameters
    ----------
    networks : sequence of networks
        Each has ``predict(x, train=False)`` returning scores of shape (N, C)
        with the same C (a :class:`models.network.MultiLayerNet`, say).

    Raises
    ------
    ValueError
        No network given.

    Examples
    --------
    >>> ensemble = Ensemble([network_a, network_b])      # doctest: +SKIP
    >>> ensemble.predict(x).argmax(axis=1)               # doctest: +SKIP
    """

    def __init__(self, networks: Sequence[Any]) -> None:
        if len(networks) == 0:
            raise ValueError("networks: expected at least one network, got none")
        self.networks = tuple(networks)

    def __len__(self) -> int:
        return len(self.networks)

    def predict(self, x: np.typing.ArrayLike, train: bool = False) -> np.ndarray:
        """Mean of the members' softmax probabilities.

        Parameters
        ----------
        x : array_like of shape (N, D)
        train : bool, default False
            Passed to each member (test mode by default).

        Returns
        -------
        probabilities : ndarray of shape (N, C), float64
            ``mean over members k of softmax(network_k.predict(x))``; each row
            sums to 1, and its argmax is the ensemble's class.
        """
        total = None
        for network in self.networks:
            probabilities = softmax(np.asarray(network.predict(x, train), dtype=np.float64))
            total = probabilities if total is None else total + probabilities
        return total / len(self.networks)
