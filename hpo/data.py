"""The data a study tunes on, loaded once per process.

Loading Fashion-MNIST takes about a second and 200 MB, so every trial of a
process shares one copy: :func:`prepare_data` is cached on the (hashable,
frozen) dataset specification.  The test set is dropped here; only
``hpo evaluate`` reads it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from hpo.spec import DatasetSpec
from models.datasets import (
    Dataset,
    load_digits,
    load_fashion_mnist,
    load_idx_directory,
    train_validation_split,
)


@dataclass(frozen=True)
class TuningData:
    """Training and validation arrays of one study.

    Attributes
    ----------
    x_train : ndarray of shape (n_train, n_features), float32 in [0, 1]
    t_train : ndarray of shape (n_train,), int64 class indices
    x_validation : ndarray of shape (n_validation, n_features), float32
    t_validation : ndarray of shape (n_validation,), int64
    n_classes : int
    """

    x_train: np.ndarray
    t_train: np.ndarray
    x_validation: np.ndarray
    t_validation: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        """Input size D of the network."""
        return self.x_train.shape[1]


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Load the whole data set (training and test) that ``spec`` names.

    Raises
    ------
    models.datasets.DatasetError
        Missing or malformed IDX files; the message names the file.
    """
    if spec.name == "digits":
        return load_digits()
    if spec.name == "fashion_mnist":
        return load_fashion_mnist(spec.directory)
    return load_idx_directory(spec.directory)


@functools.lru_cache(maxsize=2)
def prepare_data(spec: DatasetSpec) -> TuningData:
    """Training data of ``spec``, cut to ``train_images`` and split for validation.

    The split is shuffled and stratified with ``spec.split_seed`` (book, section
    6.5.1: validation data come from shuffled training data).

    Raises
    ------
    models.datasets.DatasetError
        As :func:`load_dataset`.
    ValueError
        ``train_images`` leaves too few images of a class to split.
    """
    dataset = load_dataset(spec)
    if spec.train_images is not None:
        dataset = dataset.take_train(spec.train_images)
    x_train, t_train, x_validation, t_validation = train_validation_split(
        dataset.x_train, dataset.t_train, spec.validation_fraction, seed=spec.split_seed
    )
    return TuningData(x_train, t_train, x_validation, t_validation, dataset.n_classes)
