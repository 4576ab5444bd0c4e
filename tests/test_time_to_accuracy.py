"""benchmarks/time_to_accuracy.py and benchmarks/torch_search.py: the parts that need no training.

The curve of the service is rebuilt from stored trials (start time plus per-epoch
seconds); the PyTorch side maps the study file's settings onto torch.  Known answers
are worked out by hand in the comments.
"""

import datetime
import math
import sys
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the benchmark scripts import their neighbours by name

import time_to_accuracy
import torch_search

LAUNCHED = datetime.datetime(2025, 1, 1, 12, 0, 0)


def _stored_trial(study, *, start, complete, seconds, accuracies, state):
    trial = create_trial(
        state=state, value=max(accuracies) if state == TrialState.COMPLETE else None,
        params={"learning_rate": 0.01}, distributions={"learning_rate": FloatDistribution(1e-4, 1e-1, log=True)},
        intermediate_values=dict(enumerate(accuracies, start=1)),
        user_attrs={"learning_curves": {"seconds": seconds, "validation_accuracy": accuracies}},
    )
    trial.datetime_start = LAUNCHED + datetime.timedelta(seconds=start)
    trial.datetime_complete = None if complete is None else LAUNCHED + datetime.timedelta(seconds=complete)
    study.add_trial(trial)


def test_each_epoch_counts_when_it_ended_not_when_its_trial_did():
    study = optuna.create_study(direction="maximize")
    # Trial 0 starts at 5 s; epochs of 10, 12, 11 s end at 15, 27, 38 s; it completes at 40 s.
    _stored_trial(study, start=5, complete=40, seconds=[10.0, 12.0, 11.0], accuracies=[0.70, 0.80, 0.78],
                  state=TrialState.COMPLETE)
    # Trial 1 starts at 40 s; epochs of 3 and 4 s end at 43 and 47 s; pruned at 47.5 s.
    _stored_trial(study, start=40, complete=47.5, seconds=[3.0, 4.0], accuracies=[0.60, 0.85],
                  state=TrialState.PRUNED)
    # Trial 2 starts at 48 s; its stored seconds (5 + 5) overrun its end at 55 s: the end bounds them.
    _stored_trial(study, start=48, complete=55, seconds=[5.0, 5.0], accuracies=[0.90, 0.91],
                  state=TrialState.COMPLETE)
    events = time_to_accuracy.epoch_events(study.get_trials(), LAUNCHED)
    assert events == [[15.0, 0.70], [27.0, 0.80], [38.0, 0.78], [43.0, 0.60], [47.0, 0.85], [53.0, 0.90],
                      [55.0, 0.91]]
    # The running best improves at 15, 27, 47, 53 and 55 s; the budget of 54 s cuts the last.
    curve = time_to_accuracy.best_curve(events, budget_seconds=54)
    assert curve == [[15.0, 0.70], [27.0, 0.80], [47.0, 0.85], [53.0, 0.90]]
    assert time_to_accuracy.time_to_target(curve, 0.85) == 47.0
    assert time_to_accuracy.time_to_target(curve, 0.90) == 53.0
    assert time_to_accuracy.time_to_target(curve, 0.95) is None


def test_a_trial_without_learning_curves_adds_no_point():
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.FAIL))
    assert time_to_accuracy.epoch_events(study.get_trials(), LAUNCHED) == []
    assert time_to_accuracy.best_curve([], budget_seconds=60) == []


# ------------------------------------------------------------------ the PyTorch side
VALUES = {"hidden_layers": 2, "hidden_size": 8, "batch_norm": True, "dropout": 0.25, "activation": "relu",
          "weight_init": "he", "optimizer": "momentum", "learning_rate": 0.1, "weight_decay": 1e-4}


def _rates(schedule, epochs, warmup_epochs, learning_rate=0.1):
    """The learning rate of each epoch: read before the epoch, the scheduler stepped after it."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=learning_rate)
    scheduler = torch_search.build_scheduler(optimizer, schedule, epochs, warmup_epochs)
    rates = []
    for _ in range(epochs):
        rates.append(round(optimizer.param_groups[0]["lr"], 6))
        optimizer.step()
        scheduler.step()
    return rates


def test_schedules_give_the_rates_of_models_schedules():
    # models.schedules: warmup epoch e <= W at lr * e / (W + 1); after it, with n = epochs - W and
    # done = epochs after the warmup already run: step x 0.1 once done / n >= 1/2 and again at 3/4,
    # cosine (1 + cos(pi * done / n)) / 2.
    assert _rates("constant", 4, 2, 0.3) == [0.1, 0.2, 0.3, 0.3]
    assert _rates("step", 10, 2) == [0.033333, 0.066667, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert _rates("step", 4, 0, 1.0) == [1.0, 1.0, 0.1, 0.01]
    assert _rates("cosine", 4, 0, 1.0) == [1.0, 0.853553, 0.5, 0.146447]
    # W = 1, n = 2: 1.0 * 1/2, then the cosine at done = 0 and 1: 1.0, (1 + cos(pi / 2)) / 2 = 0.5.
    assert _rates("cosine", 3, 1, 1.0) == [0.5, 1.0, 0.5]


def test_the_model_and_optimizer_follow_the_study_settings():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch_search.build_model(VALUES, n_features=784, n_classes=10)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert model[3].p == 0.25 and model[1].momentum == pytest.approx(0.1)  # running = 0.9 running + 0.1 batch
    # He: std sqrt(2 / 784) = 0.0505 over 6,272 weights (sampling error about 1 %).
    assert float(model[0].weight.detach().std()) == pytest.approx(math.sqrt(2 / 784), rel=0.05)
    assert float(model[0].bias.detach().abs().max()) == 0.0
    optimizer = torch_search.build_optimizer(model, VALUES)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    decayed, kept = optimizer.param_groups
    # Weight decay on the three weight matrices only, not on biases, gamma or beta (as models/ does).
    assert [tuple(p.shape) for p in decayed["params"]] == [(8, 784), (8, 8), (10, 8)]
    assert decayed["weight_decay"] == 1e-4 and kept["weight_decay"] == 0.0
    assert len(kept["params"]) == 3 + 2 * 2  # biases of 3 Linear layers, gamma and beta of 2 batch norms
    assert isinstance(torch_search.build_optimizer(model, {**VALUES, "optimizer": "adam"}), torch.optim.Adam)
    assert torch_search.learning_rate({"optimizer": "adam", "learning_rate": "default"}) == 0.001


def test_shifts_and_flips_move_pixels_as_models_augmentation_defines():
    torch = pytest.importorskip("torch")
    image = torch.arange(1.0, 10.0).reshape(1, 9)  # 3 x 3: rows 1 2 3 / 4 5 6 / 7 8 9
    # dy = 1 (down), dx = -1 (left): out[r, c] = image[r - 1, c + 1], 0 outside.
    moved = torch_search.shift_batch(image, 3, torch.tensor([1]), torch.tensor([-1]))
    assert moved.reshape(3, 3).tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    # The same shift, then mirrored left to right.
    flipped = torch_search.shift_batch(image, 3, torch.tensor([1]), torch.tensor([-1]), torch.tensor([True]))
    assert flipped.reshape(3, 3).tolist() == [[0, 0, 0], [0, 3, 2], [0, 6, 5]]
    batch = torch.rand(64, 784)
    assert torch.equal(torch_search.augment(batch, "none", 28, torch.Generator()), batch)
    shifted = torch_search.augment(batch, "shift", 28, torch.Generator().manual_seed(0))
    assert shifted.shape == (64, 784) and not torch.equal(shifted, batch)


def test_the_script_refuses_convolution_blocks_it_cannot_build():
    # The PyTorch side builds MLPs only: the main job's convolutional space is not "the same space".
    from hpo.config.spec import load_spec

    spec = load_spec("studies/fashion_mnist.toml")
    assert spec.parameters.convolution_layers == 2
    with pytest.raises(ValueError, match=r"convolution_layers = 2: .*fashion_mnist_mlp\.toml"):
        torch_search.run_search(spec, launched=0.0, budget_seconds=1.0, target=0.9, full_curve=False)
    assert load_spec("studies/fashion_mnist_mlp.toml").parameters.convolution_layers == 0
