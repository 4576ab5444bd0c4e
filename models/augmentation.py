"""Data augmentation of training mini-batches: random shifts and horizontal flips.

A network that sees each training image moved by a pixel or two, or mirrored,
learns that these changes do not change the class, and overfits less (Simard,
Steinkraus & Platt 2003, "Best Practices for Convolutional Neural Networks Applied
to Visual Document Analysis", section 2: expanding the training set with
transformed images; Krizhevsky, Sutskever & Hinton 2012, section 4.1: random
translations and horizontal reflections). :func:`models.trainer.train` applies an
augmentation to each training mini-batch after gathering it; validation and test
data are never augmented.

Each image of a mini-batch (a row of N flattened ``height x width`` pixels) gets
its own random shift ``(dy, dx)``, each drawn uniformly from -2..2, and with
:class:`ShiftFlip` a mirror image left to right with probability 1/2. Pixels
shifted in from outside the image are 0 (the background of MNIST-style images).
All draws come from the generator passed in (the trial's), so a run is
reproducible; the work is one gather from a zero-padded copy of the batch, with
no Python loop over images.

Examples
--------
>>> import numpy as np
>>> image = np.arange(1, 10, dtype=np.float32).reshape(1, 9)      # 3 x 3 image 1..9
>>> shift_images(image, (3, 3), np.array([1]), np.array([-1])).reshape(3, 3)
array([[0., 0., 0.],
       [2., 3., 0.],
       [5., 6., 0.]], dtype=float32)
"""

from __future__ import annotations

import numpy

from models.validation import positive_int, problem

__all__ = [
    "AUGMENTATIONS",
    "FLIP_PROBABILITY",
    "MAX_SHIFT",
    "MIN_IMAGE_SIDE",
    "Shift",
    "ShiftFlip",
    "augmentation_memory",
    "make_augmentation",
    "shift_images",
]

MAX_SHIFT = 2
"""Largest shift, in pixels, in each direction (up, down, left, right)."""

MIN_IMAGE_SIDE = 8 * MAX_SHIFT
"""Smallest image height and width, in pixels, that a study file may shift (16: 2 pixels are at most 1/8 of it).

A 2-pixel shift of scikit-learn's 8 x 8 digits moves a quarter of the image out of it
(measured: validation accuracy 0.35 instead of 0.93)."""

FLIP_PROBABILITY = 0.5
"""Probability that :class:`ShiftFlip` mirrors an image left to right."""


def shift_images(x: numpy.ndarray, image_shape: tuple[int, int], dy: numpy.ndarray, dx: numpy.ndarray,
                 flip: numpy.ndarray | None = None) -> numpy.ndarray:
    """Shift (and optionally mirror) each flattened image by its own offset, filling with 0.

    Image ``i`` is shifted, ``shifted[r, c] = image[r - dy[i], c - dx[i]]`` (0 where that
    lies outside the image), then, where ``flip[i]``, mirrored left to right:
    ``out[r, c] = shifted[r, width - 1 - c]``. Positive ``dy`` moves the content
    down, positive ``dx`` to the right (before the mirror).

    Parameters
    ----------
    x : ndarray of shape (N, height * width), float32 or float64
        Flattened images, row by row.
    image_shape : (int, int)
        ``(height, width)``.
    dy, dx : ndarray of shape (N,), int
        Offsets, each in ``-MAX_SHIFT..MAX_SHIFT``.
    flip : ndarray of shape (N,), bool, optional
        Which images to mirror left to right first.

    Returns
    -------
    ndarray of shape (N, height * width), dtype of ``x``
        New array; ``x`` is unchanged.
    """
    height, width = image_shape
    n, pad = x.shape[0], MAX_SHIFT
    padded_width = width + 2 * pad
    padded = numpy.zeros((n, height + 2 * pad, padded_width), dtype=x.dtype)
    padded[:, pad:pad + height, pad:pad + width] = x.reshape(n, height, width)
    rows = numpy.arange(height)[:, None] * padded_width
    columns = numpy.arange(width)[None, :]
    plain = (rows + columns).ravel()  # (height * width,) offsets of the image within its padded copy
    # Offset of each padded image, plus where its unshifted top-left pixel would be read from.
    start = numpy.arange(n) * padded.shape[1] * padded_width + (pad - dy) * padded_width + (pad - dx)
    if flip is None:
        index = start[:, None] + plain[None, :]
    else:
        index = numpy.where(flip[:, None], (rows + (width - 1 - columns)).ravel()[None, :], plain[None, :])
        index += start[:, None]
    return numpy.take(padded.ravel(), index)


def augmentation_memory(batch_size: int, image_shape: tuple[int, int], itemsize: int = 4) -> int:
    """Peak bytes that augmenting one mini-batch adds to training (:func:`shift_images`).

    The zero-padded copy ``B x (height + 4) x (width + 4)`` items, the gather index
    ``B x height x width`` indices (``intp``) and the result ``B x height x width``
    items, with ``B = batch_size`` and ``itemsize`` the bytes of one pixel (4 for float32),
    plus three index arrays of one image (the offsets of a plain and a mirrored image).
    """
    height, width = image_shape
    index = numpy.dtype(numpy.intp).itemsize
    padded = (height + 2 * MAX_SHIFT) * (width + 2 * MAX_SHIFT) * itemsize
    return batch_size * (padded + height * width * (index + itemsize)) + 3 * height * width * index


class Shift:
    """Random shifts of up to :data:`MAX_SHIFT` pixels in each direction, filled with 0.

    Parameters
    ----------
    image_shape : (int, int)
        ``(height, width)`` of the images the rows of a mini-batch hold.

    Raises
    ------
    ValueError
        If ``image_shape`` is not a pair of integers >= 1.  (Smaller images than
        :data:`MIN_IMAGE_SIDE` are shifted too; study files refuse them, see
        :func:`hpo.tuning.data.check_augmentation_fits`.)
    """

    flips = False

    def __init__(self, image_shape: tuple[int, int]) -> None:
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
            raise problem("image_shape", "(height, width)", image_shape)
        self.image_shape = (positive_int("image_shape[0]", image_shape[0]),
                            positive_int("image_shape[1]", image_shape[1]))

    def __call__(self, x: numpy.ndarray, rng: numpy.random.Generator) -> numpy.ndarray:
        """Augment one mini-batch.

        Draws, in this order, ``dy`` and ``dx`` for each image (``rng.integers(-2, 3,
        size=(2, N))``) and, with flips, one uniform number per image (flipped when
        below :data:`FLIP_PROBABILITY`).

        Parameters
        ----------
        x : ndarray of shape (N, height * width), float32 or float64
        rng : numpy.random.Generator

        Returns
        -------
        ndarray of shape (N, height * width), dtype of ``x``: a new array.

        Raises
        ------
        ValueError
            If the rows of ``x`` do not hold ``height * width`` pixels.
        """
        height, width = self.image_shape
        if x.ndim != 2 or x.shape[1] != height * width:
            raise problem("x", f"rows of {height} x {width} = {height * width} pixels", x.shape)
        dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(2, x.shape[0]))
        flip = rng.random(x.shape[0]) < FLIP_PROBABILITY if self.flips else None
        return shift_images(x, self.image_shape, dy, dx, flip)


class ShiftFlip(Shift):
    """:class:`Shift` plus a mirror image left to right with probability :data:`FLIP_PROBABILITY`.

    Not for data whose classes a mirror changes (digits: a mirrored 2 is no 2).
    """

    flips = True


AUGMENTATIONS: dict[str, type[Shift] | None] = {
    "none": None,
    "shift": Shift,
    "shift_flip": ShiftFlip,
}
"""The augmentations a study file can name (``augmentation``), the one table to add one to."""

MIRRORING = ("shift_flip",)
"""Augmentations that mirror images (refused for data sets whose classes a mirror changes)."""


def make_augmentation(name: str, image_shape: tuple[int, int] | None) -> Shift | None:
    """Build an augmentation by name for images of ``image_shape``.

    Parameters
    ----------
    name : str
        One of the keys of :data:`AUGMENTATIONS`: "none", "shift", "shift_flip".
    image_shape : (int, int) or None
        ``(height, width)`` of the images; None (unknown) is allowed with "none" only.

    Returns
    -------
    Shift, ShiftFlip or None
        None for "none": :func:`models.trainer.train` then leaves mini-batches as they are.

    Raises
    ------
    ValueError
        If ``name`` is unknown, or an augmentation is asked for without an image shape.
    """
    if name not in AUGMENTATIONS:
        raise problem("augmentation", f"one of {', '.join(AUGMENTATIONS)}", name)
    kind = AUGMENTATIONS[name]
    if kind is None:
        return None
    if image_shape is None:
        raise problem("image_shape", f"(height, width) of the images for augmentation {name!r}", image_shape)
    return kind(image_shape)
