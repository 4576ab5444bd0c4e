"""The book's chapter 6 (hpo.book): each finding asserted on a small, seeded configuration.

The training items run the study files of studies/book/ through the service (SQLite,
one worker) with smaller sizes given as overrides, on the first images of
Fashion-MNIST (skipped when its files are absent).
"""

import json
import math
import subprocess

import numpy as np
import optuna
import pytest
import threadpoolctl

from hpo.book.activations import (
    BOOK_CONFIGURATIONS,
    book_activations,
    layer_activations,
)
from hpo.book.experiments import (
    BOOK_STUDIES,
    book_spec,
    curves_by,
    run_study,
    search_summary,
    with_overrides,
)
from hpo.book.findings import (
    activation_findings,
    batch_norm_wins,
    final_values,
    generalization_gaps,
    path_findings,
)
from hpo.book.paths import BOOK_OPTIMIZERS, optimizer_path, optimizer_paths
from hpo.config.spec import Choices, SpecError
from hpo.tuning.data import prepare_data
from models.datasets import FASHION_MNIST_DIRECTORY

needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DIRECTORY.is_dir(),
    reason=f"{FASHION_MNIST_DIRECTORY} not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    # One BLAS thread, as `hpo book` uses: small matrices, and other processes share the cores.
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        yield f"sqlite:///{tmp_path_factory.mktemp('book') / 'book.db'}"


def run(key, storage, **overrides):
    spec = book_spec(key, overrides=overrides)
    return spec, run_study(spec, storage)


# ------------------------------------------------------------------ study files
def test_book_study_files_hold_the_books_settings():
    optimizers = book_spec("optimizers", full=True)
    assert optimizers.parameters.optimizer == Choices(
        choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
    assert optimizers.parameters.learning_rate == "default" and optimizers.parameters.seed_per_trial is False
    assert (optimizers.parameters.hidden_layers, optimizers.parameters.batch_size) == (4, 128)
    assert isinstance(optimizers.make_sampler(), optuna.samplers.GridSampler)
    batch_norm = book_spec("batch_norm", full=True)
    scales = batch_norm.parameters.weight_init.choices
    assert np.allclose(scales, np.logspace(0, -4, 16), rtol=1e-3)
    assert batch_norm.budget.trials == 32 and batch_norm.parameters.epochs == 20
    overfitting = book_spec("overfitting_dropout", full=True)
    assert overfitting.dataset.train_images * (1 - overfitting.dataset.validation_fraction) == pytest.approx(300)
    random, tpe = book_spec("search_random", full=True), book_spec("search_tpe", full=True)
    assert random.parameters == tpe.parameters and random.dataset == tpe.dataset
    assert random.budget.trials == tpe.budget.trials == 100
    assert (random.sampler.type, random.pruner.type, tpe.sampler.type, tpe.pruner.type) == \
        ("random", "none", "tpe", "median")
    # Quick runs are stored under their own names, so they never mix with the book's sizes.
    assert {book_spec(key).name for key in BOOK_STUDIES} == {book_spec(key, full=True).name + "_quick"
                                                            for key in BOOK_STUDIES}


def test_the_two_searches_sample_independently():
    # With one sampler seed, TPE's random start-up trials repeated random search's first trials.
    distributions = {"learning_rate": optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True),
                     "weight_decay": optuna.distributions.FloatDistribution(1e-8, 1e-4, log=True)}
    first = {}
    for key in ("search_random", "search_tpe"):
        study = optuna.create_study(direction="maximize", sampler=book_spec(key, full=True).make_sampler())
        first[key] = []
        for _ in range(5):
            trial = study.ask(distributions)
            first[key].append(trial.params["learning_rate"])
            study.tell(trial, 0.5)
    assert book_spec("search_random", full=True).sampler.seed != book_spec("search_tpe", full=True).sampler.seed
    assert not set(first["search_random"]) & set(first["search_tpe"])


def test_overrides_are_validated_like_a_study_file():
    with pytest.raises(SpecError, match="parameters.epochs"):
        book_spec("optimizers", overrides={"parameters": {"epochs": 0}})
    spec = book_spec("optimizers", full=True)
    assert with_overrides(spec, {"budget": {"trials": 2}}).budget.trials == 2


# ------------------------------------------------------- 6.1.7 optimizer paths
def test_optimizer_paths_approach_the_minimum_and_sgd_zigzags():
    paths = optimizer_paths()
    assert list(paths) == ["SGD", "Momentum", "AdaGrad", "Adam"]
    found = path_findings(paths)
    for name, path in paths.items():
        assert path.shape == (31, 2) and tuple(path[0]) == (-7.0, 2.0)
        assert found[name]["end_distance"] < found[name]["start_distance"] / 2, name
    # SGD's steps overshoot along y every time (y -> -0.9 y); AdaGrad's shrink.
    assert found["SGD"]["y_sign_changes"] == 30
    assert found["AdaGrad"]["y_sign_changes"] <= 1
    assert found["SGD"]["y_travel"] > 5 * found["AdaGrad"]["y_travel"]


def test_sgd_path_is_the_closed_form():
    # x -> x (1 - lr/10), y -> y (1 - 2 lr): plain gradient descent, step by step.
    name, rate = BOOK_OPTIMIZERS["SGD"]
    path = optimizer_path(name, rate, steps=5)
    steps = np.arange(6)
    assert np.allclose(path[:, 0], -7 * (1 - rate / 10) ** steps)
    assert np.allclose(path[:, 1], 2 * (1 - 2 * rate) ** steps)


# -------------------------------------------------- 6.2.2 activation histograms
def test_activation_histograms_show_saturation_collapse_and_he_spread():
    activations = book_activations()
    assert list(activations) == list(BOOK_CONFIGURATIONS)
    assert all(values.shape == (5, 1000, 100) and values.dtype == np.float64 for values in activations.values())
    found = activation_findings(activations)
    assert found["saturated"] > 0.5                      # std 1 + sigmoid: near 0 and 1
    assert found["near_half"] > 0.99                     # std 0.01 + sigmoid: near 0.5
    assert 0.5 < found["he_relu_ratio"] < 2.0            # He + ReLU: the spread stays
    assert found["spread"]["std 0.01, sigmoid"][-1] < 0.05
    # Xavier with sigmoid keeps a wider spread in the last layer than std 0.01.
    assert found["spread"]["Xavier, sigmoid"][-1] > 5 * found["spread"]["std 0.01, sigmoid"][-1]


def test_activations_use_the_models_layers():
    values = layer_activations("he", "relu", examples=10, units=4, layers=2, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10, 4))
    first = np.maximum(0, x @ (rng.standard_normal((4, 4)) * math.sqrt(2 / 4)))
    assert np.allclose(values[0], first)


# ---------------------------------------------------- training items (studies)
@needs_fashion_mnist
def test_optimizers_sgd_learns_slowest_on_the_same_mini_batches(storage):
    spec, study = run("optimizers", storage, dataset={"train_images": 5000}, parameters={"epochs": 4})
    curves = curves_by(study, spec)
    assert list(curves) == ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
    losses = final_values(curves, "train_loss")
    assert max(losses, key=losses.get) == "sgd", losses
    # One seed for every trial: the same initial weights and mini-batches.
    assert {trial.user_attrs["seed"] for trial in study.trials} == {0}


@needs_fashion_mnist
def test_weight_init_small_std_does_not_learn_and_he_learns_fastest(storage):
    spec, study = run("weight_init", storage, dataset={"train_images": 5000}, parameters={"epochs": 4})
    losses = final_values(curves_by(study, spec), "train_loss")
    assert losses[0.01] == pytest.approx(math.log(10), abs=0.01), losses   # chance level
    assert losses["he"] < losses["xavier"] < losses[0.01], losses


@needs_fashion_mnist
def test_batch_norm_trains_better_at_most_of_16_scales(storage):
    spec, study = run("batch_norm", storage, parameters={"epochs": 7})   # 1,000 images, 70 mini-batches
    curves = curves_by(study, spec)
    assert len(curves) == 32 and "train_eval_accuracy" in curves[(1.0, True)]
    wins, compared, accuracies = batch_norm_wins(curves)
    assert compared == 16
    labels = prepare_data(spec.dataset).t_train
    chance = np.bincount(labels).max() / len(labels)  # a constant prediction's accuracy, at best (0.114)
    # Without batch norm, each 100-unit ReLU layer multiplies the scale of the signal (and, on the way
    # back, of the gradients) by about gain = w sqrt(100 / 2), w the weights' std:
    # - gain <= 0.2 (w <= 0.028): over the 4 hidden-to-hidden layers and the output, the scores shrink
    #   by 0.2^5 = 3e-4 or more, and every weight's gradient by the other layers' gains: nothing but
    #   the output biases learns, and the network predicts one class;
    # - gain >= 3.5 (w >= 0.49): the scores grow by 3.5^5 = 500 or more, the first loss is in the
    #   thousands (3679 at w = 0.54) and one step of SGD at 0.01 throws the weights out: diverged.
    # With batch norm, a hidden pre-activation's variance is w^2 * 100 * E[relu(z)^2] = 50 w^2 for
    # normalized z; past BN's eps = 1e-5 (w >= 4.5e-4) normalizing removes the scale, and it learns.
    vanishing = [w for w in accuracies if w * math.sqrt(50) <= 0.2]
    exploding = [w for w in accuracies if w * math.sqrt(50) >= 3.5]
    normalized = [w for w in accuracies if 50 * w**2 >= 1e-5]
    assert len(vanishing) == 10 and len(exploding) == 2 and len(normalized) == 13
    for w in vanishing:
        assert accuracies[w][0] <= chance, (w, accuracies)
    for w in exploding:
        assert np.isnan(accuracies[w][0]), (w, accuracies)
    for w in normalized:
        assert accuracies[w][1] > chance, (w, accuracies)
    # So batch norm wins at the 7 + 2 scales that are both (the book: at almost every scale; measured 13).
    assert len(set(vanishing + exploding) & set(normalized)) == 9
    assert wins >= 9, accuracies


@needs_fashion_mnist
def test_weight_decay_and_dropout_shrink_the_overfitting_gap(storage):
    sizes = {"parameters": {"epochs": 100}}
    decay_spec, decay = run("overfitting_weight_decay", storage, **sizes)
    dropout_spec, dropout = run("overfitting_dropout", storage, **sizes)
    decay_curves, dropout_curves = curves_by(decay, decay_spec), curves_by(dropout, dropout_spec)
    assert final_values(decay_curves, "train_eval_accuracy")[0.0] > 0.85       # it overfits
    decay_gaps, dropout_gaps = generalization_gaps(decay_curves), generalization_gaps(dropout_curves)
    assert decay_gaps[0.1] < decay_gaps[0.0] - 0.03, decay_gaps
    assert dropout_gaps[0.2] < dropout_gaps[0.0] - 0.03, dropout_gaps


@needs_fashion_mnist
def test_random_search_and_tpe_with_pruning_both_report_best_and_time(storage):
    sizes = {"budget": {"trials": 8}, "parameters": {"epochs": 8}, "pruner": {"n_startup_trials": 2,
                                                                            "n_warmup_steps": 2}}
    random_spec, random_study = run("search_random", storage, budget={"trials": 8}, parameters={"epochs": 8})
    tpe_spec, tpe_study = run("search_tpe", storage, **sizes)
    random, tpe = search_summary(random_study), search_summary(tpe_study)
    assert random.complete == 8 and random.pruned == 0
    assert tpe.complete + tpe.pruned == 8
    for summary in (random, tpe):
        assert 0.0 < summary.best_value <= 1.0 and summary.wall_seconds > 0
        assert np.all(np.diff(summary.best_so_far) >= 0) and summary.best_so_far[-1] == summary.best_value
    assert random.seconds_to_reach(random.best_value) <= random.wall_seconds
    assert random.seconds_to_reach(2.0) is None


# ------------------------------------------------------------------ the command
def test_book_command_refuses_a_bad_storage(tmp_path, hpo_command):
    result = subprocess.run([hpo_command, "book", "--out", str(tmp_path / "figures"), "--storage", "nosuchdb://x"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_book_command_runs_only_the_sections_asked_for(tmp_path, hpo_command):
    out = tmp_path / "figures"
    result = subprocess.run([hpo_command, "book", "--out", str(out), "--section", "6.1.7", "--no-progress"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert [row["section"] for row in json.loads((out / "findings.json").read_text())] == ["6.1.7"]
    assert sorted(path.name for path in out.glob("*.png")) == ["1_optimizer_paths.png"]
    refused = subprocess.run([hpo_command, "book", "--out", str(out), "--section", "6.9"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode == 2 and "'--section'" in refused.stderr
