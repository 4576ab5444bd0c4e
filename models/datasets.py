"""Data sets for the network: scikit-learn's digits and MNIST-format IDX files.

Every loader returns a :class:`Dataset` whose images are flattened to rows of
float32 pixels in [0, 1] and whose labels are int64 class indices.
:func:`train_validation_split` takes the validation data out of the training
data, as "Deep Learning from Scratch" section 6.5.1 prescribes: the test set is
kept for the final evaluation only.

Sources
-------
- Digits: the test part of the UCI "Optical Recognition of Handwritten Digits"
  data set (E. Alpaydin and C. Kaynak, 1998) as bundled with scikit-learn:
  1797 images of 8 x 8 pixels with values 0..16.
- IDX format: Y. LeCun, C. Cortes and C. J. C. Burges, "The MNIST database of
  handwritten digits", section "File formats for the MNIST database".
- Fashion-MNIST: H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel
  Image Dataset for Benchmarking Machine Learning Algorithms",
  arXiv:1708.07747 (2017); Debian package ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import dataclasses
import gzip
import numbers
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy

from models.validation import number, problem

__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASS_NAMES",
    "DatasetSource",
    "FASHION_MNIST_DIRECTORY",
    "Dataset",
    "DatasetError",
    "load_digits",
    "load_fashion_mnist",
    "load_idx_directory",
    "read_idx",
    "train_validation_split",
]

FASHION_MNIST_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Fashion-MNIST's labels 0..9 in order (Xiao et al. 2017, table 1)."""

# IDX type code -> big-endian NumPy dtype (LeCun et al., "File formats").
_IDX_DTYPES = {
    0x08: numpy.dtype(">u1"),
    0x09: numpy.dtype(">i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_REINSTALL = "re-download or reinstall the data set"

# (part, stem before "idx", IDX suffix): the four files of an MNIST-format set.
_IDX_FILES = (
    ("train", "images", "idx3-ubyte"),
    ("train", "labels", "idx1-ubyte"),
    ("t10k", "images", "idx3-ubyte"),
    ("t10k", "labels", "idx1-ubyte"),
)


class DatasetError(ValueError):
    """A data set file or directory is missing or malformed.

    The message is one line: the path, what is wrong, and what to do.
    """


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set split into training and test parts.

    The arrays are made read-only (``flags.writeable = False``) on
    construction, so studies and trials can share one instance without copying
    it. ``eq=False``: two instances compare equal only if they are the same
    object (comparing arrays element-wise has no single truth value).

    Parameters
    ----------
    name : str
        Short name of the data set, e.g. ``"digits"`` or ``"fashion-mnist"``.
    x_train : ndarray of shape (n_train, n_features), dtype float32
        Training inputs, one flattened image per row, pixel values in [0, 1].
    t_train : ndarray of shape (n_train,), dtype int64
        Training labels, class indices in ``range(len(class_names))``.
    x_test : ndarray of shape (n_test, n_features), dtype float32
        Test inputs, like ``x_train``.
    t_test : ndarray of shape (n_test,), dtype int64
        Test labels, like ``t_train``.
    class_names : tuple of str
        Human-readable name of each class; label ``k`` is ``class_names[k]``.
    image_shape : (int, int) or None, default None
        ``(height, width)`` of the images the rows hold (``height * width ==
        n_features``), for augmentation (:mod:`models.augmentation`); None if unknown.

    Raises
    ------
    ValueError
        If an array has the wrong dtype or shape, the parts disagree on the
        number of features, pixels lie outside [0, 1] or labels outside
        ``range(len(class_names))``, or ``image_shape`` does not multiply to the
        number of features. The message names the field.

    Examples
    --------
    >>> from models.datasets import load_digits
    >>> data = load_digits()
    >>> data.x_train.shape, data.n_classes
    ((1437, 64), 10)
    >>> small = data.take_train(500)
    >>> small.x_train.shape
    (500, 64)
    """

    name: str
    x_train: numpy.ndarray
    t_train: numpy.ndarray
    x_test: numpy.ndarray
    t_test: numpy.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        n_classes = len(self.class_names)
        if self.image_shape is not None and numpy.prod(self.image_shape) != self.x_train.shape[-1]:
            raise problem("Dataset.image_shape", f"(height, width) of {self.x_train.shape[-1]} pixels", self.image_shape)
        if n_classes < 2:
            raise ValueError(f"Dataset.class_names: need at least 2 classes, got {n_classes}")
        n_features = self.x_train.shape[1] if self.x_train.ndim == 2 else None
        for part in ("train", "test"):
            x = getattr(self, f"x_{part}")
            t = getattr(self, f"t_{part}")
            if x.dtype != numpy.float32 or x.ndim != 2 or x.shape[1] != n_features:
                raise ValueError(
                    f"Dataset.x_{part}: expected a float32 array of shape (N, {n_features}), "
                    f"got {x.dtype} of shape {x.shape}"
                )
            if t.dtype != numpy.int64 or t.shape != (x.shape[0],):
                raise ValueError(
                    f"Dataset.t_{part}: expected an int64 array of shape ({x.shape[0]},), "
                    f"got {t.dtype} of shape {t.shape}"
                )
            if x.size and not (x.min() >= 0.0 and x.max() <= 1.0):
                raise ValueError(f"Dataset.x_{part}: pixel values must lie in [0, 1]")
            if t.size and not (t.min() >= 0 and t.max() < n_classes):
                raise ValueError(
                    f"Dataset.t_{part}: labels must lie in 0..{n_classes - 1} "
                    f"({n_classes} class names), got {t.min()}..{t.max()}"
                )
            x.flags.writeable = False
            t.flags.writeable = False

    @property
    def n_features(self) -> int:
        """Number of input features D (pixels per image)."""
        return self.x_train.shape[1]

    @property
    def n_classes(self) -> int:
        """Number of classes C, ``len(class_names)``."""
        return len(self.class_names)

    def take_train(self, n: int) -> Dataset:
        """Keep only the first ``n`` training examples.

        "Deep Learning from Scratch" section 6.5.3 tunes on the first 500
        MNIST training images to make each trial fast; the validation data are
        then drawn at random from these with :func:`train_validation_split`.
        The test part and the name are unchanged.

        Parameters
        ----------
        n : int
            Number of training examples to keep, ``1 <= n <= len(t_train)``.

        Returns
        -------
        Dataset
            A data set whose ``x_train`` is ``self.x_train[:n]`` (shape
            (n, n_features), float32) and ``t_train`` is ``self.t_train[:n]``
            (shape (n,), int64); read-only views, no copy.

        Raises
        ------
        ValueError
            If ``n`` is not an integer in ``1..len(t_train)``.
        """
        n_train = self.t_train.shape[0]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 1 <= n <= n_train:
            raise problem("n", f"an integer in 1..{n_train}", n)
        return dataclasses.replace(self, x_train=self.x_train[:n], t_train=self.t_train[:n])


def _check_fraction(argument: str, value: float) -> None:
    number(argument, value, minimum=0.0, exclusive_minimum=True, maximum=1.0, exclusive_maximum=True)


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load scikit-learn's bundled 8 x 8 handwritten digits (no download).

    The 1797 images (UCI "Optical Recognition of Handwritten Digits",
    Alpaydin and Kaynak 1998; :func:`sklearn.datasets.load_digits`) have pixel
    values 0..16, which are divided by 16. The train/test split is shuffled,
    stratified by class and fixed by ``seed``
    (:func:`sklearn.model_selection.train_test_split`).

    Parameters
    ----------
    test_fraction : float, default 0.2
        Fraction of the images put in the test part, strictly between 0 and 1.
    seed : int, default 0
        Seed of the split; the same seed gives the same split.

    Returns
    -------
    Dataset
        ``name="digits"``, ``x_train`` of shape (n_train, 64) and ``x_test``
        of shape (n_test, 64), float32 in [0, 1]; labels int64 in 0..9;
        ``class_names=("0", ..., "9")``, ``image_shape=(8, 8)``. With the default fraction
        n_train = 1437 and n_test = 360.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not strictly between 0 and 1.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    _check_fraction("test_fraction", test_fraction)
    bunch = sklearn_load_digits()
    x = (bunch.data / 16.0).astype(numpy.float32)
    t = bunch.target.astype(numpy.int64)
    x_train, x_test, t_train, t_test = train_test_split(
        x, t, test_size=float(test_fraction), random_state=seed, shuffle=True, stratify=t
    )
    return Dataset(
        name="digits",
        x_train=numpy.ascontiguousarray(x_train),
        t_train=numpy.ascontiguousarray(t_train),
        x_test=numpy.ascontiguousarray(x_test),
        t_test=numpy.ascontiguousarray(t_test),
        class_names=tuple(str(k) for k in range(10)),
        image_shape=(8, 8),
    )


def read_idx(path: str | os.PathLike[str]) -> numpy.ndarray:
    """Read one MNIST-format IDX file, gzip-compressed or raw.

    Compression is detected by the gzip magic bytes ``1f 8b``, not by the
    file name. The header (LeCun et al., "The MNIST database", section "File
    formats") is big-endian: two zero bytes, a type code byte (0x08 unsigned
    byte, 0x09 signed byte, 0x0B 16-bit int, 0x0C 32-bit int, 0x0D 32-bit
    float, 0x0E 64-bit float), a byte with the number of dimensions, then one
    32-bit unsigned size per dimension; the data follow in C order.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    ndarray of shape (d1, ..., dn)
        The data with the dimensions from the header, in native byte order:
        dtype uint8, int8, int16, int32, float32 or float64 by type code. The
        array is read-only; copy it to modify it.

    Raises
    ------
    DatasetError
        If the file cannot be read, is not valid gzip, does not start with two
        zero bytes, has an unknown type code or zero dimensions, or its data
        are shorter or longer than the header's sizes say. The message names
        the file.
    """
    where = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"{where}: cannot read IDX file: {exc.strerror or exc}; check the path and its permissions"
        ) from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{where}: corrupt gzip file ({exc}); {_REINSTALL}") from exc
    if len(raw) < 4:
        raise DatasetError(
            f"{where}: not an IDX file: {len(raw)} bytes, shorter than the 4-byte header; {_REINSTALL}"
        )
    if raw[0] != 0 or raw[1] != 0:
        raise DatasetError(
            f"{where}: not an IDX file: the magic number must start with two zero bytes, "
            f"found 0x{raw[0]:02x} 0x{raw[1]:02x}; check that this is an MNIST-format IDX file"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02x} ({dtype.name})" for code, dtype in _IDX_DTYPES.items())
        raise DatasetError(
            f"{where}: unknown IDX type code 0x{type_code:02x}, expected one of {known}; "
            "check that this is an MNIST-format IDX file"
        )
    if ndim == 0:
        raise DatasetError(f"{where}: IDX header says 0 dimensions; {_REINSTALL}")
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(
            f"{where}: truncated IDX header: {ndim} dimensions need {header_size} header bytes, "
            f"found {len(raw)}; {_REINSTALL}"
        )
    shape = tuple(int(size) for size in numpy.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = dtype.itemsize
    for size in shape:
        expected *= size
    found = len(raw) - header_size
    if found != expected:
        problem = "truncated IDX file" if found < expected else "IDX file too long"
        raise DatasetError(
            f"{where}: {problem}: header says {expected} bytes of data for shape {shape}, "
            f"found {found}; {_REINSTALL}"
        )
    data = numpy.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape)
    data = data.astype(dtype.newbyteorder("="), copy=False)
    data.flags.writeable = False
    return data


def _find_idx_file(directory: Path, part: str, kind: str, suffix: str, how_to_get: str) -> Path:
    candidates = [
        f"{part}-{kind}{separator}{suffix}{gz}" for separator in ("-", ".") for gz in (".gz", "")
    ]
    for candidate in candidates:
        path = directory / candidate
        if path.is_file():
            return path
    raise DatasetError(
        f"{directory}: missing {part} {kind} file (looked for {', '.join(candidates)}); {how_to_get}"
    )


def _read_images_and_labels(images_path: Path, labels_path: Path) -> tuple[numpy.ndarray, numpy.ndarray, tuple]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != numpy.uint8 or images.ndim != 3:
        raise DatasetError(
            f"{images_path}: expected uint8 images of shape (N, rows, columns), "
            f"got {images.dtype} of shape {images.shape}; check that this is an image file"
        )
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DatasetError(
            f"{labels_path}: expected integer labels of shape (N,), "
            f"got {labels.dtype} of shape {labels.shape}; check that this is a label file"
        )
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{labels_path}: {labels.shape[0]} labels but {images_path} has {images.shape[0]} "
            f"images; use the label file that belongs to these images"
        )
    if 0 in images.shape:
        raise DatasetError(f"{images_path}: holds {images.shape[0]} images of {images.shape[1]} x {images.shape[2]} "
                           "pixels; a data set needs at least one image of at least one pixel")
    x = numpy.true_divide(
        images.reshape(images.shape[0], -1), numpy.float32(255.0), dtype=numpy.float32
    )
    return x, labels.astype(numpy.int64), tuple(int(size) for size in images.shape[1:])  # (rows, columns)


def _load_idx_directory(
    directory: Path, name: str, class_names: tuple[str, ...] | None, how_to_get: str
) -> Dataset:
    if not directory.is_dir():
        raise DatasetError(f"{directory}: no such directory; {how_to_get}")
    paths = {
        (part, kind): _find_idx_file(directory, part, kind, suffix, how_to_get)
        for part, kind, suffix in _IDX_FILES
    }
    x_train, t_train, image_shape = _read_images_and_labels(paths["train", "images"], paths["train", "labels"])
    x_test, t_test, test_shape = _read_images_and_labels(paths["t10k", "images"], paths["t10k", "labels"])
    if test_shape != image_shape:
        raise DatasetError(
            f"{paths['t10k', 'images']}: test images are {test_shape[0]} x {test_shape[1]} pixels, training images "
            f"{image_shape[0]} x {image_shape[1]}; use the test files of the same data set"
        )
    if class_names is None:
        largest = max((int(t.max()) for t in (t_train, t_test) if t.size), default=1)
        class_names = tuple(str(k) for k in range(max(largest, 1) + 1))
    for part, t in (("train", t_train), ("t10k", t_test)):
        if t.size and not (t.min() >= 0 and t.max() < len(class_names)):
            raise DatasetError(
                f"{paths[part, 'labels']}: labels {t.min()}..{t.max()} outside 0..{len(class_names) - 1} "
                f"({len(class_names)} classes); use the label file of this data set"
            )
    return Dataset(
        name=name,
        x_train=x_train,
        t_train=t_train,
        x_test=x_test,
        t_test=t_test,
        class_names=tuple(class_names),
        image_shape=image_shape,
    )


def load_idx_directory(
    directory: str | os.PathLike[str],
    *,
    name: str | None = None,
    class_names: tuple[str, ...] | None = None,
) -> Dataset:
    """Load an MNIST-format data set from the four IDX files in a directory.

    The directory must hold ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each optionally gzip-compressed with a
    ``.gz`` suffix and optionally spelt with ``.`` instead of ``-`` before
    ``idx`` (``train-images.idx3-ubyte``). Images are flattened row by row and
    divided by 255 (LeCun et al., "The MNIST database"; the book's
    ``load_mnist(normalize=True, flatten=True)``).

    Parameters
    ----------
    directory : str or os.PathLike
        The directory holding the four files.
    name : str, optional
        Name of the data set; defaults to the directory's name.
    class_names : tuple of str, optional
        Name of each class. Defaults to ``("0", "1", ..., str(max label))``.

    Returns
    -------
    Dataset
        ``x_train`` of shape (n_train, rows * columns) and ``x_test`` of shape
        (n_test, rows * columns), float32 in [0, 1]; labels int64; ``image_shape``
        ``(rows, columns)`` from the training images' IDX header.

    Raises
    ------
    DatasetError
        If the directory or one of the files is missing, a file is malformed
        (see :func:`read_idx`), the images are not uint8 of shape (N, rows,
        columns), image and label counts differ, training and test images
        differ in size, or a label lies outside ``range(len(class_names))``.
    """
    directory = Path(directory)
    how_to_get = (
        "put the data set's four IDX files (train-images, train-labels, t10k-images, "
        "t10k-labels) in this directory or pass the directory that holds them"
    )
    return _load_idx_directory(directory, name or directory.name, class_names, how_to_get)


def load_fashion_mnist(directory: str | os.PathLike[str] | None = None) -> Dataset:
    """Load Fashion-MNIST: 70,000 grey 28 x 28 images of 10 kinds of clothing.

    Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for
    Benchmarking Machine Learning Algorithms", arXiv:1708.07747 (2017). The
    Debian package ``dataset-fashion-mnist`` installs the IDX files in
    :data:`FASHION_MNIST_DIRECTORY`. Loading takes about 1 s.

    Parameters
    ----------
    directory : str or os.PathLike, optional
        Directory holding the four IDX files; defaults to
        :data:`FASHION_MNIST_DIRECTORY`.

    Returns
    -------
    Dataset
        ``name="fashion-mnist"``, ``x_train`` of shape (60000, 784) and
        ``x_test`` of shape (10000, 784), float32 in [0, 1]; labels int64 in
        0..9, 6000 training and 1000 test images per class;
        ``class_names`` = :data:`FASHION_MNIST_CLASS_NAMES`.

    Raises
    ------
    DatasetError
        If the directory or a file is missing or malformed (see
        :func:`load_idx_directory`).
    """
    path = FASHION_MNIST_DIRECTORY if directory is None else Path(directory)
    how_to_get = (
        "install the data set with `apt-get install dataset-fashion-mnist` or pass the "
        "directory that holds its four IDX files"
    )
    return _load_idx_directory(path, "fashion-mnist", FASHION_MNIST_CLASS_NAMES, how_to_get)


@dataclass(frozen=True)
class DatasetSource:
    """How a named data set is loaded: the entry of :data:`DATASETS`.

    Attributes
    ----------
    load : callable
        ``load(directory)`` -> :class:`Dataset`; ``directory`` is a path or None.
    directory : {"none", "optional", "required"}
        Whether a study file may or must name the directory of its files.
    image_shape : (height, width) or None
        Of the images of its default files (none without a directory), when known before loading them.
    """

    load: Callable[[Path | None], Dataset]
    directory: Literal["none", "optional", "required"]
    image_shape: tuple[int, int] | None = None


DATASETS: dict[str, DatasetSource] = {
    "digits": DatasetSource(lambda directory: load_digits(), "none", (8, 8)),
    "fashion_mnist": DatasetSource(load_fashion_mnist, "optional", (28, 28)),
    "idx": DatasetSource(load_idx_directory, "required"),
}
"""The data sets a study file can name (``[dataset] name``), the one table to add one to."""


def train_validation_split(
    x: numpy.ndarray,
    t: numpy.ndarray,
    validation_fraction: float,
    *,
    seed: int,
) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Split training data into a training part and a validation part.

    "Deep Learning from Scratch" section 6.5.1: hyperparameters are tuned on
    validation data taken at random from the training data, never on the test
    data. The split is shuffled and stratified, so each class keeps its share
    in both parts (:class:`sklearn.model_selection.StratifiedShuffleSplit`),
    and fixed by ``seed``.

    Parameters
    ----------
    x : ndarray of shape (N, D), float32 or float64
        Inputs.
    t : ndarray of shape (N,), int
        Class indices.
    validation_fraction : float
        Fraction of the examples put in the validation part, strictly between
        0 and 1 (the book uses 0.2).
    seed : int
        Seed of the shuffle; the same seed gives the same split.

    Returns
    -------
    x_train : ndarray of shape (N - M, D), float32, C-contiguous
    t_train : ndarray of shape (N - M,), int64, C-contiguous
    x_validation : ndarray of shape (M, D), float32, C-contiguous
    t_validation : ndarray of shape (M,), int64, C-contiguous
        M is ``ceil(validation_fraction * N)``; each class contributes about
        ``validation_fraction`` of its examples (within one). All four arrays
        are new, writeable copies.

    Raises
    ------
    ValueError
        If ``validation_fraction`` is not strictly between 0 and 1, ``x`` is
        not 2-D, ``t`` is not 1-D or their lengths differ, or a part would get
        fewer examples than there are classes (scikit-learn's message).
    """
    _check_fraction("validation_fraction", validation_fraction)
    x = numpy.asarray(x)
    t = numpy.asarray(t)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array of shape (N, D), got shape {x.shape}")
    if t.shape != (x.shape[0],):
        raise ValueError(f"t: expected class indices of shape ({x.shape[0]},), got shape {t.shape}")
    # scikit-learn takes two seconds to import: paid by the commands that split data, not by every `hpo`.
    from sklearn.model_selection import StratifiedShuffleSplit

    splitter = StratifiedShuffleSplit(n_splits=1, test_size=float(validation_fraction), random_state=seed)
    train_index, validation_index = next(splitter.split(numpy.empty((t.shape[0], 0)), t))
    return (
        numpy.ascontiguousarray(x[train_index], dtype=numpy.float32),
        numpy.ascontiguousarray(t[train_index], dtype=numpy.int64),
        numpy.ascontiguousarray(x[validation_index], dtype=numpy.float32),
        numpy.ascontiguousarray(t[validation_index], dtype=numpy.int64),
    )
