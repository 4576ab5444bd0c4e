"""Tests of models.datasets: IDX parsing, the loaders and the validation split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from models.datasets import (
    FASHION_MNIST_CLASS_NAMES,
    FASHION_MNIST_DIRECTORY,
    Dataset,
    DatasetError,
    load_digits,
    load_fashion_mnist,
    load_idx_directory,
    read_idx,
    train_validation_split,
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08, big_endian_dtype: str = ">u1") -> bytes:
    """The IDX encoding of ``array`` (header, then big-endian data in C order)."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian_dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False, **kwargs) -> Path:
    data = idx_bytes(array, **kwargs)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


TINY = np.arange(12, dtype=np.uint8).reshape(2, 3, 2) * 20  # 2 images of 3 x 2 pixels


# --- read_idx -------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_known_answer(tmp_path, compress):
    path = write_idx(tmp_path / "images", TINY, compress=compress)
    array = read_idx(path)
    assert array.dtype == np.uint8
    assert array.shape == (2, 3, 2)
    np.testing.assert_array_equal(array, TINY)
    assert array[1, 2, 1] == 220


def test_read_idx_detects_gzip_by_magic_bytes_not_extension(tmp_path):
    compressed = write_idx(tmp_path / "looks-raw-idx3-ubyte", TINY, compress=True)
    raw = write_idx(tmp_path / "looks-compressed.gz", TINY)
    np.testing.assert_array_equal(read_idx(compressed), TINY)
    np.testing.assert_array_equal(read_idx(raw), TINY)


@pytest.mark.parametrize(
    ("type_code", "big_endian_dtype", "native"),
    [
        (0x09, ">i1", np.int8),
        (0x0B, ">i2", np.int16),
        (0x0C, ">i4", np.int32),
        (0x0D, ">f4", np.float32),
        (0x0E, ">f8", np.float64),
    ],
)
def test_read_idx_other_types_in_native_byte_order(tmp_path, type_code, big_endian_dtype, native):
    values = np.array([[-3, 0, 1000], [7, -128, 127]]).astype(native)
    path = write_idx(tmp_path / "values", values, type_code=type_code, big_endian_dtype=big_endian_dtype)
    array = read_idx(path)
    assert array.dtype == np.dtype(native)
    assert array.dtype.isnative
    np.testing.assert_array_equal(array, values)


def test_read_idx_result_is_read_only(tmp_path):
    array = read_idx(write_idx(tmp_path / "images", TINY))
    with pytest.raises(ValueError):
        array[0, 0, 0] = 1


def test_read_idx_bad_magic(tmp_path):
    data = bytearray(idx_bytes(TINY))
    data[0] = 0x12
    path = tmp_path / "bad-magic-idx3-ubyte"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="bad-magic-idx3-ubyte: not an IDX file.*0x12 0x00"):
        read_idx(path)


def test_read_idx_unknown_type_code(tmp_path):
    data = bytearray(idx_bytes(TINY))
    data[2] = 0x07
    path = tmp_path / "odd-type-idx3-ubyte"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="odd-type-idx3-ubyte: unknown IDX type code 0x07"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx_truncated_data(tmp_path, compress):
    data = idx_bytes(TINY)[:-5]
    path = tmp_path / "short-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DatasetError) as error:
        read_idx(path)
    message = str(error.value)
    assert str(path) in message
    assert "truncated IDX file: header says 12 bytes of data" in message
    assert "found 7" in message
    assert "re-download or reinstall" in message
    assert "\n" not in message


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "header-idx3-ubyte"
    path.write_bytes(idx_bytes(TINY)[:9])
    with pytest.raises(DatasetError, match="header-idx3-ubyte: truncated IDX header"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(idx_bytes(TINY) + b"\x00\x00\x00")
    with pytest.raises(DatasetError, match="long-idx3-ubyte: IDX file too long: header says 12 bytes.*15"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(TINY))[:-12])
    with pytest.raises(DatasetError, match="cut-idx3-ubyte.gz: corrupt gzip file"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nothing-here: cannot read IDX file"):
        read_idx(tmp_path / "nothing-here")


# --- load_idx_directory ---------------------------------------------------------------------


def make_idx_directory(directory: Path, *, n_train=12, n_test=5, rows=3, cols=4, dotted=False, seed=0):
    """Write a small MNIST-format data set; return the arrays written."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        ("train", "images"): rng.integers(0, 256, size=(n_train, rows, cols), dtype=np.uint8),
        ("train", "labels"): np.arange(n_train, dtype=np.uint8) % 3,
        ("t10k", "images"): rng.integers(0, 256, size=(n_test, rows, cols), dtype=np.uint8),
        ("t10k", "labels"): np.arange(n_test, dtype=np.uint8) % 3,
    }
    separator = "." if dotted else "-"
    for (part, kind), array in arrays.items():
        suffix = "idx3-ubyte" if kind == "images" else "idx1-ubyte"
        compress = part == "train"  # mix compressed and raw files
        name = f"{part}-{kind}{separator}{suffix}" + (".gz" if compress else "")
        write_idx(directory / name, array, compress=compress)
    return arrays


@pytest.mark.parametrize("dotted", [False, True], ids=["dash", "dot"])
def test_load_idx_directory(tmp_path, dotted):
    arrays = make_idx_directory(tmp_path / "tiny-set", dotted=dotted)
    data = load_idx_directory(tmp_path / "tiny-set")
    assert isinstance(data, Dataset)
    assert data.name == "tiny-set"
    assert data.x_train.shape == (12, 12) and data.x_test.shape == (5, 12)
    assert data.x_train.dtype == np.float32 and data.t_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_train * 255, arrays["train", "images"].reshape(12, 12))
    np.testing.assert_allclose(data.x_test, arrays["t10k", "images"].reshape(5, 12) / 255, rtol=1e-6)
    np.testing.assert_array_equal(data.t_train, arrays["train", "labels"])
    np.testing.assert_array_equal(data.t_test, arrays["t10k", "labels"])
    assert data.class_names == ("0", "1", "2")
    assert not data.x_train.flags.writeable and not data.t_test.flags.writeable


def test_load_idx_directory_name_and_class_names(tmp_path):
    make_idx_directory(tmp_path)
    data = load_idx_directory(tmp_path, name="shapes", class_names=("circle", "square", "star", "cross"))
    assert data.name == "shapes"
    assert data.n_classes == 4


def test_load_idx_directory_missing_file(tmp_path):
    make_idx_directory(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError) as error:
        load_idx_directory(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path}: missing t10k labels file")
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert "put the data set's four IDX files" in message


def test_load_idx_directory_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="no-such-set: no such directory"):
        load_idx_directory(tmp_path / "no-such-set")


def test_load_idx_directory_label_count_mismatch(tmp_path):
    make_idx_directory(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError) as error:
        load_idx_directory(tmp_path)
    message = str(error.value)
    assert "t10k-labels-idx1-ubyte: 4 labels but" in message
    assert "t10k-images-idx3-ubyte has 5 images" in message


def test_load_idx_directory_label_out_of_range(tmp_path):
    make_idx_directory(tmp_path)
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: labels 0..2 outside 0..1"):
        load_idx_directory(tmp_path, class_names=("a", "b"))


def test_load_idx_directory_images_must_be_3d_uint8(tmp_path):
    make_idx_directory(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 12), dtype=np.uint8))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte: expected uint8 images of shape"):
        load_idx_directory(tmp_path)


def test_load_fashion_mnist_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "absent")


@pytest.mark.skipif(
    not FASHION_MNIST_DIRECTORY.is_dir(),
    reason=f"{FASHION_MNIST_DIRECTORY} not installed (apt-get install dataset-fashion-mnist)",
)
def test_load_fashion_mnist_real_data():
    data = load_fashion_mnist()
    assert data.name == "fashion-mnist"
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert data.t_train.shape == (60000,) and data.t_test.shape == (10000,)
    assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
    assert data.t_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert 0.0 <= data.x_test.min() and data.x_test.max() <= 1.0
    assert data.class_names == FASHION_MNIST_CLASS_NAMES and len(data.class_names) == 10
    np.testing.assert_array_equal(np.bincount(data.t_train, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(data.t_test, minlength=10), np.full(10, 1000))
    assert data.x_train.flags.c_contiguous


# --- digits and Dataset ---------------------------------------------------------------------


def test_load_digits_shapes_dtypes_range():
    data = load_digits()
    assert data.name == "digits"
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.t_train.shape == (1437,) and data.t_test.shape == (360,)
    assert data.x_train.dtype == np.float32 and data.t_train.dtype == np.int64
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.class_names == tuple("0123456789")
    assert data.n_features == 64 and data.n_classes == 10


def test_load_digits_split_is_stratified_and_seeded():
    data = load_digits()
    all_counts = np.bincount(data.t_train, minlength=10) + np.bincount(data.t_test, minlength=10)
    assert all_counts.sum() == 1797
    test_counts = np.bincount(data.t_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * all_counts) <= 1)

    again = load_digits()
    np.testing.assert_array_equal(again.x_train, data.x_train)
    np.testing.assert_array_equal(again.t_test, data.t_test)
    other = load_digits(seed=1)
    assert not np.array_equal(other.t_train, data.t_train)
    assert load_digits(test_fraction=0.5).x_test.shape[0] in (898, 899)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, "0.2"])
def test_load_digits_bad_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_dataset_is_read_only():
    data = load_digits()
    with pytest.raises(ValueError):
        data.x_train[0, 0] = 0.5
    with pytest.raises(ValueError):
        data.t_test[0] = 3
    with pytest.raises(AttributeError):
        data.name = "other"


def test_dataset_validates_its_arrays():
    x = np.zeros((4, 3), dtype=np.float32)
    t = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="Dataset.x_train: expected a float32"):
        Dataset("d", x.astype(np.float64), t, x.copy(), t.copy(), ("a", "b"))
    with pytest.raises(ValueError, match="Dataset.t_test: expected an int64"):
        Dataset("d", x, t, x.copy(), t[:3].copy(), ("a", "b"))
    with pytest.raises(ValueError, match=r"Dataset.x_test: pixel values must lie in \[0, 1\]"):
        Dataset("d", x, t, x + 2, t.copy(), ("a", "b"))
    with pytest.raises(ValueError, match="Dataset.t_train: labels must lie in 0..1"):
        Dataset("d", x, t + 2, x.copy(), t.copy(), ("a", "b"))


def test_take_train_keeps_first_examples():
    data = load_digits()
    small = data.take_train(500)
    assert small.x_train.shape == (500, 64) and small.t_train.shape == (500,)
    np.testing.assert_array_equal(small.x_train, data.x_train[:500])
    np.testing.assert_array_equal(small.t_train, data.t_train[:500])
    assert small.x_test is data.x_test and small.name == data.name
    assert not small.x_train.flags.writeable
    for bad in (0, 1438, 2.5, True):
        with pytest.raises(ValueError, match="n: expected an integer in 1..1437"):
            data.take_train(bad)


# --- train_validation_split -----------------------------------------------------------------


def test_train_validation_split_stratified_disjoint_complete():
    data = load_digits()
    n = data.t_train.shape[0]
    # Tag every row with its index in an extra feature, to trace rows through the split.
    x = np.hstack([data.x_train, np.arange(n, dtype=np.float32)[:, None]])
    x_train, t_train, x_validation, t_validation = train_validation_split(x, data.t_train, 0.2, seed=3)

    for array in (x_train, x_validation, t_train, t_validation):
        assert array.flags.c_contiguous
    assert x_train.dtype == x_validation.dtype == np.float32
    assert t_train.dtype == t_validation.dtype == np.int64
    assert x_validation.shape == (int(np.ceil(0.2 * n)), 65)
    assert x_train.shape[0] + x_validation.shape[0] == n

    train_rows = x_train[:, -1].astype(np.int64)
    validation_rows = x_validation[:, -1].astype(np.int64)
    assert np.intersect1d(train_rows, validation_rows).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_rows, validation_rows])), np.arange(n))
    np.testing.assert_array_equal(t_train, data.t_train[train_rows])
    np.testing.assert_array_equal(t_validation, data.t_train[validation_rows])
    np.testing.assert_array_equal(x_validation[:, :-1], data.x_train[validation_rows])

    class_counts = np.bincount(data.t_train, minlength=10)
    validation_counts = np.bincount(t_validation, minlength=10)
    assert np.all(np.abs(validation_counts - np.round(0.2 * class_counts)) <= 1)
    # Shuffled: the validation rows are not a block of the original order.
    assert not np.array_equal(np.sort(validation_rows), validation_rows)


def test_train_validation_split_seeded():
    data = load_digits()
    first = train_validation_split(data.x_train, data.t_train, 0.25, seed=7)
    again = train_validation_split(data.x_train, data.t_train, 0.25, seed=7)
    other = train_validation_split(data.x_train, data.t_train, 0.25, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[3], other[3])


def test_train_validation_split_converts_float64():
    x = np.linspace(0, 1, 40, dtype=np.float64).reshape(20, 2)
    t = np.arange(20) % 2
    x_train, t_train, x_validation, t_validation = train_validation_split(x, t, 0.5, seed=0)
    assert x_train.dtype == np.float32 and t_validation.dtype == np.int64
    assert x_train.shape == (10, 2) and np.bincount(t_validation).tolist() == [5, 5]


@pytest.mark.parametrize("fraction", [0, 0.0, 1.0, -0.2, 2, float("nan"), None])
def test_train_validation_split_bad_fraction(fraction):
    data = load_digits()
    with pytest.raises(ValueError, match=rf"validation_fraction: .*got {fraction!r}"):
        train_validation_split(data.x_train, data.t_train, fraction, seed=0)


def test_train_validation_split_bad_shapes():
    x = np.zeros((10, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="x: expected a 2-D array"):
        train_validation_split(x.ravel(), np.zeros(30, dtype=np.int64), 0.2, seed=0)
    with pytest.raises(ValueError, match=r"t: expected class indices of shape \(10,\)"):
        train_validation_split(x, np.zeros(9, dtype=np.int64), 0.2, seed=0)


def test_image_shape_of_digits_and_of_idx_from_the_header(tmp_path):
    assert load_digits().image_shape == (8, 8)
    make_idx_directory(tmp_path, rows=3, cols=4)
    data = load_idx_directory(tmp_path)
    assert data.image_shape == (3, 4) and data.take_train(2).image_shape == (3, 4)


def test_image_shape_must_hold_the_features():
    x = np.zeros((4, 6), dtype=np.float32)
    t = np.array([0, 1, 0, 1])
    assert Dataset("d", x, t, x.copy(), t.copy(), ("a", "b"), (2, 3)).image_shape == (2, 3)
    with pytest.raises(ValueError, match=r"^Dataset.image_shape: expected \(height, width\) of 6 pixels, got \(2, 2\)"):
        Dataset("d", x, t, x.copy(), t.copy(), ("a", "b"), (2, 2))


@pytest.mark.parametrize(("n_train", "n_test", "rows", "cols", "what"), [
    (0, 5, 3, 4, "holds 0 images of 3 x 4 pixels"),
    (12, 0, 3, 4, "holds 0 images of 3 x 4 pixels"),
    (12, 5, 0, 4, "holds 12 images of 0 x 4 pixels"),
    (12, 5, 3, 0, "holds 12 images of 3 x 0 pixels"),
])
def test_an_idx_set_without_images_or_pixels_is_refused(tmp_path, n_train, n_test, rows, cols, what):
    make_idx_directory(tmp_path, n_train=n_train, n_test=n_test, rows=rows, cols=cols)
    with pytest.raises(DatasetError, match=f"{what}; a data set needs at least one image of at least one pixel"):
        load_idx_directory(tmp_path)


def test_test_images_of_another_shape_with_as_many_pixels_are_refused(tmp_path):
    make_idx_directory(tmp_path)  # 3 x 4 training images
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 4, 3), dtype=np.uint8))  # 12 pixels too
    with pytest.raises(DatasetError, match="test images are 4 x 3 pixels, training images 3 x 4"):
        load_idx_directory(tmp_path)
