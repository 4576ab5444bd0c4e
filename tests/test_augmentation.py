"""Tests of models.augmentation: shifts and flips of hand-made images, draws, seeds."""

from __future__ import annotations

import numpy as np
import pytest

from hpo.config.spec import load_spec
from hpo.tuning.data import DataError
from models.augmentation import (
    AUGMENTATIONS,
    Shift,
    ShiftFlip,
    make_augmentation,
    shift_images,
)

# A 3 x 4 image with pixels 1..12, row by row.
IMAGE = np.arange(1, 13, dtype=np.float32).reshape(1, 12)


def shifted(dy, dx, flip=False, image=IMAGE, shape=(3, 4)):
    return shift_images(image, shape, np.array([dy]), np.array([dx]), np.array([flip])).reshape(shape)


def test_shift_down_one_and_right_two_fills_with_zero():
    np.testing.assert_array_equal(shifted(1, 2), [[0, 0, 0, 0],
                                                  [0, 0, 1, 2],
                                                  [0, 0, 5, 6]])


def test_shift_up_two_and_left_one():
    np.testing.assert_array_equal(shifted(-2, -1), [[10, 11, 12, 0],
                                                    [0, 0, 0, 0],
                                                    [0, 0, 0, 0]])


def test_no_shift_is_the_image():
    np.testing.assert_array_equal(shifted(0, 0), IMAGE.reshape(3, 4))


def test_flip_mirrors_left_to_right():
    np.testing.assert_array_equal(shifted(0, 0, flip=True), [[4, 3, 2, 1],
                                                             [8, 7, 6, 5],
                                                             [12, 11, 10, 9]])


def test_flip_after_shift():
    # Shift right by one ([[0,1,2,3],...]), then mirror.
    np.testing.assert_array_equal(shifted(0, 1, flip=True), [[3, 2, 1, 0],
                                                             [7, 6, 5, 0],
                                                             [11, 10, 9, 0]])


def test_each_image_of_a_batch_gets_its_own_offset_and_input_is_unchanged():
    batch = np.stack([IMAGE[0], 100 + IMAGE[0]])
    before = batch.copy()
    out = shift_images(batch, (3, 4), np.array([0, 1]), np.array([1, 0]), np.array([False, True]))
    np.testing.assert_array_equal(out[0].reshape(3, 4), [[0, 1, 2, 3], [0, 5, 6, 7], [0, 9, 10, 11]])
    np.testing.assert_array_equal(out[1].reshape(3, 4), [[0, 0, 0, 0], [104, 103, 102, 101], [108, 107, 106, 105]])
    np.testing.assert_array_equal(batch, before)
    assert out.dtype == np.float32


def offsets_and_flips(augmentation, n=20000, seed=0):
    """Recover each image's (dy, dx, flip) from where a single bright pixel lands."""
    image = np.zeros((11, 11), dtype=np.float32)
    image[5, 2] = 1.0  # shifted it lands in columns 0..4, shifted and mirrored in 6..10
    batch = np.repeat(image.reshape(1, 121), n, axis=0)
    out = augmentation(batch, np.random.default_rng(seed)).reshape(n, 11, 11)
    rows, columns = np.nonzero(out)[1:]
    assert len(rows) == n  # no pixel lost: shifts of at most 2 keep it inside
    flip = columns >= 6
    dx = np.where(flip, (10 - columns) - 2, columns - 2)
    return rows - 5, dx, flip


def test_shift_offsets_are_uniform_over_minus_two_to_two_and_never_flip():
    dy, dx, flip = offsets_and_flips(Shift((11, 11)))
    for offsets in (dy, dx):
        counts = np.bincount(offsets + 2, minlength=5)
        assert len(counts) == 5
        np.testing.assert_allclose(counts / len(offsets), 0.2, atol=0.015)  # 5 sigma for n = 20000 is 0.0141
    assert not flip.any()
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.03  # drawn independently


def test_shift_flip_mirrors_about_half_the_images():
    _, dx, flip = offsets_and_flips(ShiftFlip((11, 11)))
    assert flip.mean() == pytest.approx(0.5, abs=0.018)  # 5 sigma for n = 20000
    np.testing.assert_allclose(np.bincount(dx + 2, minlength=5) / len(dx), 0.2, atol=0.015)


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    batch = np.random.default_rng(1).random((64, 784), dtype=np.float32)
    augmentation = make_augmentation("shift_flip", (28, 28))
    first = augmentation(batch, np.random.default_rng(7))
    np.testing.assert_array_equal(first, augmentation(batch, np.random.default_rng(7)))
    assert not np.array_equal(first, augmentation(batch, np.random.default_rng(8)))


def test_table_and_factory():
    assert list(AUGMENTATIONS) == ["none", "shift", "shift_flip"]
    assert make_augmentation("none", None) is None
    assert type(make_augmentation("shift", (8, 8))) is Shift
    assert make_augmentation("shift_flip", [28, 28]).image_shape == (28, 28)
    with pytest.raises(ValueError, match="^augmentation: expected one of none, shift, shift_flip, got 'rotate'"):
        make_augmentation("rotate", (8, 8))
    with pytest.raises(ValueError, match="^image_shape: expected"):
        make_augmentation("shift", None)
    with pytest.raises(ValueError, match=r"^x: expected rows of 8 x 8 = 64 pixels, got \(2, 63\)"):
        make_augmentation("shift", (8, 8))(np.zeros((2, 63), dtype=np.float32), np.random.default_rng(0))


def test_memory_estimate_covers_the_measured_peak():
    import tracemalloc

    from models.augmentation import augmentation_memory

    batch = np.random.default_rng(0).random((128, 784), dtype=np.float32)
    augmentation, rng = ShiftFlip((28, 28)), np.random.default_rng(0)
    tracemalloc.start()
    augmentation(batch, rng)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    estimate = augmentation_memory(128, (28, 28))
    assert peak <= estimate <= 1.3 * peak


def test_hpo_create_refuses_shifts_of_8x8_digits_in_one_line(tmp_path, run_hpo):
    # `hpo create` loads no data: the study file itself refuses shifts of digits, before any database is made.
    (tmp_path / "digits.toml").write_text('name = "digits"\n[budget]\ntrials = 1\n[parameters]\n'
                                          'augmentation = { choices = ["none", "shift"] }\n')
    result = run_hpo("create", "digits.toml", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip() == (
        "Error: digits.toml: parameters.augmentation: shift shifts images by up to 2 pixels: too much for 8 x 8 digits "
        "(dataset.name = 'digits'); use 'none'")
    assert not (tmp_path / "hpo.db").exists()


def test_shifts_of_28x28_images_and_no_augmentation_of_8x8_images_are_accepted(tmp_path):
    from hpo.tuning.data import TuningData, check_augmentation_fits

    images = np.zeros((1, 4), dtype=np.float32)
    labels = np.zeros(1, dtype=np.int64)
    path = tmp_path / "ok.toml"
    path.write_text('name = "ok"\n[budget]\ntrials = 1\n[dataset]\nname = "fashion_mnist"\n'
                    '[parameters]\naugmentation = { choices = ["none", "shift", "shift_flip"] }\n')
    check_augmentation_fits(load_spec(path), TuningData(images, labels, images, labels, 10, (28, 28)))
    path.write_text('name = "ok"\n[budget]\ntrials = 1\n')
    check_augmentation_fits(load_spec(path), TuningData(images, labels, images, labels, 10, (8, 8)))
    # Small images of an IDX data set are only known once loaded: refused then, by `hpo run` and `hpo worker`.
    path.write_text('name = "ok"\n[budget]\ntrials = 1\n[dataset]\nname = "fashion_mnist"\n'
                    '[parameters]\naugmentation = { choices = ["none", "shift"] }\n')
    with pytest.raises(DataError) as raised:
        check_augmentation_fits(load_spec(path), TuningData(images, labels, images, labels, 10, (8, 8)))
    assert str(raised.value) == (
        "parameters.augmentation: shift moves images by up to 2 pixels, too far for the 8 x 8 images of dataset "
        "'fashion_mnist' (shifts need sides of at least 16 pixels); use augmentation = 'none'")
    with pytest.raises(DataError, match="15 x 28 images"):
        path.write_text('name = "ok"\n[budget]\ntrials = 1\n[dataset]\nname = "fashion_mnist"\n'
                        '[parameters]\naugmentation = "shift"\n')
        check_augmentation_fits(load_spec(path), TuningData(images, labels, images, labels, 10, (15, 28)))
