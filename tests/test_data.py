"""hpo.data: the validation split a study tunes on follows its split_seed."""

import textwrap
from collections import Counter

import numpy as np

from hpo.data import prepare_data
from hpo.spec import load_spec
from hpo.storage import open_storage
from hpo.study import open_study
from hpo.worker import run_worker
from models.datasets import load_digits

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


def rows(x):
    """The rows of ``x`` as a multiset (digits has a few identical images)."""
    return Counter(row.tobytes() for row in x)


def test_split_seed_of_a_study_chooses_its_validation_rows(tmp_path):
    first_spec, first = run_split_study(tmp_path / "a", 0)
    other_spec, other = run_split_study(tmp_path / "b", 1)
    again_spec, again = run_split_study(tmp_path / "c", 0)
    digits = load_digits()  # the training part; the test part stays out (see test_study)
    all_rows, all_counts = rows(digits.x_train), np.bincount(digits.t_train, minlength=10)
    for spec in (first_spec, other_spec):
        data = prepare_data(spec.dataset)
        # A partition of the training images: nothing lost, nothing shared.
        assert rows(data.x_train) + rows(data.x_validation) == all_rows
        assert len(data.x_validation) == 288  # ceil(0.2 * 1437)
        # Stratified: each class gives a fifth of its images, within one.
        validation_counts = np.bincount(data.t_validation, minlength=10)
        assert np.all(np.abs(validation_counts - 0.2 * all_counts) <= 1), validation_counts
    zero, one = prepare_data(first_spec.dataset), prepare_data(other_spec.dataset)
    shared = sum((rows(zero.x_validation) & rows(one.x_validation)).values())
    assert shared < 0.5 * len(zero.x_validation)  # another seed: other rows (a fifth in common by chance)
    fresh = prepare_data.__wrapped__(again_spec.dataset)  # the same seed, loaded anew: the same rows, in order
    for name in ("x_train", "t_train", "x_validation", "t_validation"):
        np.testing.assert_array_equal(getattr(fresh, name), getattr(zero, name))
    # The trials were evaluated on those rows: another seed, other values; the same seed, the same ones.
    assert other.intermediate_values != first.intermediate_values
    assert again.intermediate_values == first.intermediate_values
    assert again.value == first.value
