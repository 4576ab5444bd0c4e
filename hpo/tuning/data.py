"""The data a study tunes on, loaded once per process.

Loading Fashion-MNIST takes about a second and 200 MB, so every trial of a
process shares one copy: :func:`prepare_data` is cached on the (hashable,
frozen) dataset specification.  The test set is dropped here: tuning
never sees it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hpo.config.ranges import largest
from hpo.config.spec import Choices, DatasetSpec, StudySpec
from hpo.errors import HpoError
from models.augmentation import AUGMENTATIONS, MAX_SHIFT, MIN_IMAGE_SIDE
from models.datasets import DATASETS, Dataset, DatasetError, train_validation_split
from models.network import most_convolution_blocks


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
    image_shape : (int, int) or None
        ``(height, width)`` of the images (augmentation needs it); None if the data set
        does not say.
    """

    x_train: np.ndarray
    t_train: np.ndarray
    x_validation: np.ndarray
    t_validation: np.ndarray
    n_classes: int
    image_shape: tuple[int, int] | None = None

    @property
    def n_features(self) -> int:
        """Input size D of the network."""
        return self.x_train.shape[1]


class DataError(HpoError):
    """The data a study file names cannot be loaded or split; the message names the file or field."""


def load_dataset(spec: DatasetSpec) -> Dataset:
    """Load the whole data set (training and test) that ``spec`` names.

    Raises
    ------
    DataError
        Missing or malformed IDX files (models.datasets.DatasetError); the message
        starts with ``dataset:`` and names the file.
    """
    try:
        return DATASETS[spec.name].load(spec.directory)
    except DatasetError as error:
        raise DataError(f"dataset: {error}") from error


@functools.lru_cache(maxsize=2)
def prepare_data(spec: DatasetSpec) -> TuningData:
    """Training data of ``spec``, cut to ``train_images`` and split for validation.

    The split is shuffled and stratified with ``spec.split_seed`` (book, section
    6.5.1: validation data come from shuffled training data).

    Raises
    ------
    DataError
        As :func:`load_dataset`; or ``train_images`` exceeds the training set, or ``train_images`` /
        ``validation_fraction`` leave too few images of a class to split; the
        message names the field.
    """
    dataset = load_dataset(spec)
    available = len(dataset.t_train)
    if spec.train_images is not None:
        if spec.train_images > available:
            raise DataError(
                f"dataset.train_images = {spec.train_images}: the {dataset.name} training set has "
                f"{available} images; lower it"
            )
        dataset = dataset.take_train(spec.train_images)
    _check_split(dataset.t_train, spec)
    x_train, t_train, x_validation, t_validation = train_validation_split(
        dataset.x_train, dataset.t_train, spec.validation_fraction, seed=spec.split_seed
    )
    return TuningData(x_train, t_train, x_validation, t_validation, dataset.n_classes, dataset.image_shape)


def check_augmentation_fits(spec: StudySpec, data: TuningData) -> None:
    """Refuse shift augmentations of images too small for them (sides below :data:`models.augmentation.MIN_IMAGE_SIDE`).

    Raises
    ------
    DataError
        ``parameters.augmentation`` fixes or allows "shift" or "shift_flip" and the data set's
        images (``data.image_shape``) have a side below 16 pixels (scikit-learn's 8 x 8 digits).
    """
    augmentation = spec.parameters.augmentation
    names = augmentation.choices if isinstance(augmentation, Choices) else [augmentation]
    shifting = sorted(name for name in set(names) if AUGMENTATIONS.get(name) is not None)
    if shifting and data.image_shape is not None and min(data.image_shape) < MIN_IMAGE_SIDE:
        height, width = data.image_shape
        raise DataError(
            f"parameters.augmentation: {', '.join(shifting)} moves images by up to {MAX_SHIFT} pixels, too far for "
            f"the {height} x {width} images of dataset {spec.dataset.name!r} (shifts need sides of at least "
            f"{MIN_IMAGE_SIDE} pixels); use augmentation = 'none'"
        )


def check_convolution_fits(spec: StudySpec, data: TuningData) -> None:
    """Refuse convolution blocks for data without images, or more blocks than the images can be halved.

    Raises
    ------
    DataError
        ``parameters.convolution_layers`` fixes or allows blocks and the data set has no
        image shape, or a side of its images would fall below one pixel (each block's
        2 x 2 pooling halves it: digits' 8 x 8 images take at most 3 blocks).
    """
    most = largest(spec.parameters.convolution_layers)
    if most == 0:
        return
    if data.image_shape is None:
        raise DataError(f"parameters.convolution_layers: dataset {spec.dataset.name!r} has no image shape for "
                        "convolutions; use convolution_layers = 0")
    height, width = data.image_shape
    fits = most_convolution_blocks(height, width)
    if most > fits:
        blocks = "1 block halves" if most == 1 else f"{most} blocks halve"
        raise DataError(f"parameters.convolution_layers: {blocks} the {height} x {width} images of dataset "
                        f"{spec.dataset.name!r} below one pixel; use at most {fits}")


def other_images(trained: Sequence[int], now: Sequence[int]) -> str:
    """Why weights trained on images of shape ``trained`` must not read the data set's images of shape ``now``
    (as many pixels, in other rows): the end of a one-line error, after the trials it is about."""
    return (f"trained on images of {trained[0]} x {trained[1]} pixels, but the data set's files now hold "
            f"{now[0]} x {now[1]} images; point dataset.directory at the files the study was tuned on")


def _check_split(labels: np.ndarray, spec: DatasetSpec) -> None:
    """A stratified split needs two images of every class and one of each class per part."""
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    if counts[present].min() < 2:
        rare = int(present[np.argmin(counts[present])])
        if spec.train_images is None:  # all the data set's images: the files hold a class of one image
            raise DataError(f"dataset: class {rare} has one training image in the data set's files; a stratified "
                            "validation split needs two of every class: fix or drop that image's label")
        raise DataError(
            f"dataset.train_images = {spec.train_images}: class {rare} has one training image; "
            "a stratified validation split needs two of every class, raise train_images"
        )
    n = len(labels)
    n_validation = math.ceil(spec.validation_fraction * n)
    n_classes = len(present)
    if n_validation < n_classes or n - n_validation < n_classes:
        raise DataError(
            f"dataset.validation_fraction = {spec.validation_fraction}: of {n} training images it holds out "
            f"{n_validation} and keeps {n - n_validation}, but each part needs one image of each of the "
            f"{n_classes} classes"
        )
