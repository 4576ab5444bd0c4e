"""The data a study tunes on (hpo.tuning.data): the test set is never read while tuning; the split follows split_seed.

Two checks, for the bundled digits and, where its files are installed, Fashion-MNIST:
no test image is among the training and validation images, and a study tuned with
the test set replaced by garbage gives bit for bit the same trials as one tuned with
the real test set.
"""

import os
import struct
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest

import models.datasets
from hpo.config.spec import DatasetSpec, load_spec
from hpo.store.storage import open_storage
from hpo.tuning.data import DataError, load_dataset, prepare_data
from hpo.tuning.study import open_study
from hpo.tuning.worker import run_worker
from models.datasets import FASHION_MNIST_DIRECTORY, Dataset, load_digits, read_idx

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
needs_fashion_mnist = pytest.mark.skipif(
    not all((FASHION_MNIST_DIRECTORY / f"{name}.gz").is_file() for name in IDX_FILES),
    reason=f"Fashion-MNIST is not installed in {FASHION_MNIST_DIRECTORY} (apt-get install dataset-fashion-mnist)")


@pytest.fixture(autouse=True)
def fresh_data():
    """prepare_data caches per dataset spec; a poisoned load must not outlive its test."""
    prepare_data.cache_clear()
    yield
    prepare_data.cache_clear()


def rows(x: np.ndarray, t: np.ndarray) -> list[bytes]:
    """Each image with its label, as bytes: equal rows, equal bytes."""
    return [image.tobytes() + int(label).to_bytes(1, "little") for image, label in zip(x, t)]


def assert_tuning_data_hold_no_test_image(spec: DatasetSpec) -> None:
    data = prepare_data(spec)
    dataset = load_dataset(spec)  # as `hpo evaluate` reads it: its test part is what the best trial is tested on
    test_images = {image.tobytes() for image in dataset.x_test}
    assert len(test_images) == len(dataset.x_test)  # no two test images alike: each one is checked
    tuning = np.concatenate([data.x_train, data.x_validation])
    leaked = sum(image.tobytes() in test_images for image in tuning)
    assert leaked == 0, f"{leaked} of {len(test_images)} test images are in the tuning data"
    # The tuning data are the training part's first train_images rows, each once, with its label.
    kept = len(dataset.t_train) if spec.train_images is None else spec.train_images
    assert sorted(rows(tuning, np.concatenate([data.t_train, data.t_validation]))) == \
        sorted(rows(dataset.x_train[:kept], dataset.t_train[:kept]))


@pytest.mark.parametrize("spec", [DatasetSpec(), DatasetSpec(split_seed=7, validation_fraction=0.3),
                                  DatasetSpec(train_images=500, split_seed=1)], ids=["default", "seed-7", "500"])
def test_no_digits_test_image_is_in_the_tuning_data(spec):
    assert_tuning_data_hold_no_test_image(spec)
    data = prepare_data(spec)
    kept = spec.train_images or 1437  # 1797 digits: 20 % test held out by the loader
    assert len(data.x_validation) == pytest.approx(spec.validation_fraction * kept, abs=1)
    assert data.x_train.dtype == np.float32 and data.n_classes == 10
    assert prepare_data(spec) is data  # loaded once per process


@needs_fashion_mnist
def test_no_fashion_mnist_test_image_is_in_the_tuning_data():
    assert_tuning_data_hold_no_test_image(DatasetSpec(name="fashion_mnist"))


STUDY = """
name = "poison"
[budget]
trials = 4
[dataset]
{dataset}
[sampler]
type = "tpe"
seed = 0
n_startup_trials = 2
[pruner]
type = "median"
n_startup_trials = 1
[parameters]
learning_rate = {{ low = 1e-3, high = 0.3, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-2, log = true }}
optimizer = {{ choices = ["sgd", "adam"] }}
hidden_layers = 1
hidden_size = 16
batch_size = 50
epochs = 3
"""


def tune(folder: Path, dataset: str) -> list[tuple]:
    """Run the study in ``folder`` to its budget; every trial's outcome (floats as exact hex strings) and
    learning curves (without their wall-clock seconds)."""
    folder.mkdir()
    (folder / "study.toml").write_text(STUDY.format(dataset=dataset))
    spec = load_spec(folder / "study.toml")
    storage = open_storage(f"sqlite:///{folder / 'study.db'}")
    study = open_study(spec, storage, spec.name)
    run_worker(study, storage, spec, prepare_data(spec.dataset))
    prepare_data.cache_clear()
    return [(trial.number, trial.state.name, trial.params, None if trial.value is None else trial.value.hex(),
             {step: value.hex() for step, value in trial.intermediate_values.items()},
             {name: curve for name, curve in trial.user_attrs["learning_curves"].items() if name != "seconds"})
            for trial in study.get_trials()]


def assert_same_trials(clean: list[tuple], poisoned: list[tuple]) -> None:
    assert len(clean) == 4 and all(len(intermediate) >= 1 for *_, intermediate, _ in clean)
    assert poisoned == clean


def garbage_test_part(dataset: Dataset) -> Dataset:
    """``dataset`` with random test images and labels of the same shapes."""
    rng = np.random.default_rng(1)
    return Dataset(dataset.name, dataset.x_train, dataset.t_train,
                   rng.random(dataset.x_test.shape, dtype=np.float32),
                   rng.integers(0, dataset.n_classes, size=len(dataset.t_test)), dataset.class_names)


def test_digits_trials_are_bit_identical_with_a_garbage_test_set(tmp_path, monkeypatch):
    clean = tune(tmp_path / "clean", 'name = "digits"')
    loads = []
    real_load = models.datasets.load_digits

    def poisoned_load(*arguments, **keywords):
        poisoned = garbage_test_part(real_load(*arguments, **keywords))
        loads.append(poisoned)
        return poisoned

    monkeypatch.setattr(models.datasets, "load_digits", poisoned_load)  # what models.datasets.DATASETS calls
    poisoned = tune(tmp_path / "poisoned", 'name = "digits"')
    assert loads and not np.array_equal(loads[0].x_test, real_load().x_test)
    assert_same_trials(clean, poisoned)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of unsigned bytes (LeCun et al., "File formats")."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@needs_fashion_mnist
def test_fashion_mnist_trials_are_bit_identical_with_garbage_test_files(tmp_path):
    poisoned_directory = tmp_path / "poisoned-fashion-mnist"
    poisoned_directory.mkdir()
    for name in IDX_FILES[:2]:
        os.symlink(FASHION_MNIST_DIRECTORY / f"{name}.gz", poisoned_directory / f"{name}.gz")
    rng = np.random.default_rng(2)
    write_idx(poisoned_directory / IDX_FILES[2], rng.integers(0, 256, size=(10_000, 28, 28)))
    write_idx(poisoned_directory / IDX_FILES[3], rng.integers(0, 10, size=10_000))
    real_labels = read_idx(FASHION_MNIST_DIRECTORY / f"{IDX_FILES[3]}.gz")
    assert np.mean(read_idx(poisoned_directory / IDX_FILES[3]) == real_labels) < 0.2  # garbage: 10 % agree by chance

    dataset = 'name = "fashion_mnist"\ntrain_images = 500\ndirectory = "{}"'
    clean = tune(tmp_path / "clean", dataset.format(FASHION_MNIST_DIRECTORY))
    poisoned = tune(tmp_path / "poisoned", dataset.format(poisoned_directory))
    assert_same_trials(clean, poisoned)


# ------------------------------------------------------------------ split_seed
SPLIT = """
    name = "split"
    [budget]
    trials = 1
    [dataset]
    name = "digits"
    validation_fraction = 0.2
    split_seed = {split_seed}
    [sampler]
    type = "random"
    seed = 0
    [pruner]
    type = "none"
    [parameters]
    learning_rate = 0.1
    hidden_layers = 1
    hidden_size = 32
    batch_size = 64
    epochs = 2
    seed = 0
    seed_per_trial = false
"""


def run_split_study(folder, split_seed):
    """Run the one-trial study of ``split_seed`` in ``folder``; its spec and its trial."""
    folder.mkdir()
    (folder / "s.toml").write_text(textwrap.dedent(SPLIT.format(split_seed=split_seed)))
    spec = load_spec(folder / "s.toml")
    storage = open_storage(f"sqlite:///{folder / 's.db'}")
    study = open_study(spec, storage, spec.name)
    run_worker(study, storage, spec, prepare_data(spec.dataset))
    [trial] = study.get_trials()
    return spec, trial


def row_counts(x):
    """The rows of ``x`` as a multiset (digits has a few identical images)."""
    return Counter(row.tobytes() for row in x)


def test_split_seed_of_a_study_chooses_its_validation_rows(tmp_path):
    first_spec, first = run_split_study(tmp_path / "a", 0)
    other_spec, other = run_split_study(tmp_path / "b", 1)
    again_spec, again = run_split_study(tmp_path / "c", 0)
    digits = load_digits()  # the training part; the test part stays out (see test_study)
    all_rows, all_counts = row_counts(digits.x_train), np.bincount(digits.t_train, minlength=10)
    for spec in (first_spec, other_spec):
        data = prepare_data(spec.dataset)
        # A partition of the training images: nothing lost, nothing shared.
        assert row_counts(data.x_train) + row_counts(data.x_validation) == all_rows
        assert len(data.x_validation) == 288  # ceil(0.2 * 1437)
        # Stratified: each class gives a fifth of its images, within one.
        validation_counts = np.bincount(data.t_validation, minlength=10)
        assert np.all(np.abs(validation_counts - 0.2 * all_counts) <= 1), validation_counts
    zero, one = prepare_data(first_spec.dataset), prepare_data(other_spec.dataset)
    shared = sum((row_counts(zero.x_validation) & row_counts(one.x_validation)).values())
    assert shared < 0.5 * len(zero.x_validation)  # another seed: other rows (a fifth in common by chance)
    fresh = prepare_data.__wrapped__(again_spec.dataset)  # the same seed, loaded anew: the same rows, in order
    for name in ("x_train", "t_train", "x_validation", "t_validation"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(zero, name))
    # The trials were evaluated on those rows: another seed, other values; the same seed, the same ones.
    assert other.intermediate_values != first.intermediate_values
    assert again.intermediate_values == first.intermediate_values
    assert again.value == first.value


def test_a_class_of_one_image_in_the_files_is_named_without_blaming_train_images(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 3
    labels[7] = 9  # one stray label in the files: class 9 has a single image
    write_idx(tmp_path / IDX_FILES[0], rng.integers(0, 256, size=(40, 4, 4)))
    write_idx(tmp_path / IDX_FILES[1], labels)
    write_idx(tmp_path / IDX_FILES[2], rng.integers(0, 256, size=(6, 4, 4)))
    write_idx(tmp_path / IDX_FILES[3], np.arange(6) % 3)
    with pytest.raises(DataError) as caught:
        prepare_data(DatasetSpec(name="idx", directory=tmp_path))
    assert str(caught.value) == ("dataset: class 9 has one training image in the data set's files; a stratified "
                                 "validation split needs two of every class: fix or drop that image's label")


def test_a_study_does_not_go_on_with_images_of_another_shape(tmp_path, run_hpo):
    def write_images(height, width):
        rng = np.random.default_rng(0)
        write_idx(tmp_path / IDX_FILES[0], rng.integers(0, 256, size=(60, height, width)))
        write_idx(tmp_path / IDX_FILES[1], np.arange(60) % 3)
        write_idx(tmp_path / IDX_FILES[2], rng.integers(0, 256, size=(9, height, width)))
        write_idx(tmp_path / IDX_FILES[3], np.arange(9) % 3)

    study_file = (f'name = "images"\n[budget]\ntrials = {{}}\n[dataset]\nname = "idx"\ndirectory = "{tmp_path}"\n'
                  '[pruner]\ntype = "none"\n[parameters]\nhidden_size = 8\nepochs = 1\n')
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    write_images(4, 16)
    (tmp_path / "s.toml").write_text(study_file.format(1))
    assert run_hpo("run", "s.toml", "--storage", url, "--no-progress", cwd=tmp_path).returncode == 0
    write_images(16, 4)  # the same 64 pixels: the trained weights would read them scrambled
    (tmp_path / "s.toml").write_text(study_file.format(2))
    result = run_hpo("run", "s.toml", "--storage", url, "--no-progress", cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "Error: s.toml: dataset: the study's trials trained on images of 4 x 16 pixels, but the data set's files "
        "now hold 16 x 4 images; point dataset.directory at the files the study was tuned on"]
    assert len(optuna.load_study(study_name="images", storage=url).trials) == 1
