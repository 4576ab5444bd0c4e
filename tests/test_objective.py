"""hpo.tuning.objective: the epochs at which a trial may be pruned, and what a study of validation loss stores."""

import textwrap

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.spec import load_spec
from hpo.store.artifacts import download_weights
from hpo.tuning.data import prepare_data
from hpo.tuning.objective import Objective, build_network
from models.trainer import EpochMetrics, TrainingResult

# ------------------------------------------------------------------- pruning
THRESHOLD = """
    name = "threshold"
    [budget]
    trials = 1
    [sampler]
    type = "random"
    seed = 0
    [pruner]
    type = "threshold"
    lower = 1.1                 # no accuracy reaches it: every check the pruner makes says prune
    n_warmup_steps = {warmup}
    [parameters]
    learning_rate = 0.1
    hidden_layers = 1
    hidden_size = 32
    batch_size = 64
    epochs = 3
"""


@pytest.mark.parametrize(("warmup", "state", "epochs_run"), [
    (3, TrialState.COMPLETE, 3),  # the pruner's first check is the last epoch: too late to save anything
    (2, TrialState.PRUNED, 2),    # one epoch earlier it is obeyed
])
def test_a_trial_that_reaches_its_last_epoch_is_complete_whatever_the_pruner_says(tmp_path, run_study_file, warmup, state,
                                                                                  epochs_run):
    study, spec = run_study_file(tmp_path, THRESHOLD.format(warmup=warmup))
    [trial] = study.get_trials()
    assert (trial.state, trial.user_attrs["epochs_run"]) == (state, epochs_run)
    assert sorted(trial.intermediate_values) == list(range(1, epochs_run + 1))
    # The pruner does say prune at the trial's last reported epoch, also when that is the last of the run.
    assert spec.make_pruner().prune(study, trial)
    if state == TrialState.COMPLETE:
        assert trial.value == max(trial.intermediate_values.values())
        assert study.best_trial.number == trial.number


def scripted_trainer(scripts):
    """A stand-in for models.trainer.train that reports the next script's validation accuracies, one per epoch."""
    scripts = iter(scripts)

    def train(*arguments, epochs, callback, **keywords):
        accuracies = next(scripts)
        assert len(accuracies) == epochs
        result = TrainingResult()
        for epoch, accuracy in enumerate(accuracies, start=1):
            metrics = EpochMetrics(epoch, 1.0, accuracy, 1.0, accuracy, 0.0)
            result.history.append(metrics)
            callback(metrics)
        return result

    return train


PINNED = """
    name = "pinned"
    [budget]
    trials = 6
    [pruner]
    type = "threshold"
    lower = 0.5
    n_warmup_steps = {warmup}
    interval_steps = {interval}
    [parameters]
    hidden_size = 8
    epochs = 6
"""


@pytest.mark.parametrize(("warmup", "interval", "prunable"), [
    # Optuna checks at steps s >= n_warmup_steps with (s - n_warmup_steps) % interval_steps == 0, a check
    # at a step without a report at the next report: epochs count from 1, so the check of step 0 happens
    # at epoch 1. The objective never prunes at the last epoch (6).
    (0, 1, [1, 2, 3, 4, 5]),
    (2, 1, [2, 3, 4, 5]),
    (5, 1, [5]),
    (6, 1, []),
    (0, 2, [1, 2, 4]),
    (1, 2, [1, 3, 5]),
    (2, 3, [2, 5]),
    (3, 3, [3]),
    (1, 4, [1, 5]),
    (0, 6, [1]),
    (4, 6, [4]),
])
def test_the_epochs_at_which_a_trial_can_be_pruned(tmp_path, monkeypatch, warmup, interval, prunable):
    import hpo.tuning.objective

    # Trial k reports 0.9 at every epoch but epoch k + 1, where it reports 0.1 (below the pruner's lower = 0.5):
    # it is pruned at that epoch exactly when the pruner checks there and the objective obeys.
    epochs = 6
    scripts = [[0.1 if epoch == low else 0.9 for epoch in range(1, epochs + 1)] for low in range(1, epochs + 1)]
    monkeypatch.setattr(hpo.tuning.objective, "train", scripted_trainer(scripts))
    (tmp_path / "s.toml").write_text(textwrap.dedent(PINNED.format(warmup=warmup, interval=interval)))
    spec = load_spec(tmp_path / "s.toml")
    study = optuna.create_study(direction="maximize", pruner=spec.make_pruner())
    study.optimize(Objective(spec, prepare_data(spec.dataset)), n_trials=epochs)
    outcomes = [(trial.state, trial.user_attrs["epochs_run"]) for trial in study.trials]
    assert outcomes == [(TrialState.PRUNED, low) if low in prunable else (TrialState.COMPLETE, epochs)
                        for low in range(1, epochs + 1)]
    for trial in study.trials:
        assert sorted(trial.intermediate_values) == list(range(1, trial.user_attrs["epochs_run"] + 1))
        if trial.state == TrialState.COMPLETE:
            assert trial.value == 0.9


# ----------------------------------------------------- metric = "validation_loss"
LOSS = """
    name = "loss"
    direction = "minimize"
    metric = "validation_loss"
    [budget]
    trials = 3
    [sampler]
    type = "random"
    seed = 0
    [pruner]
    type = "none"
    [parameters]
    learning_rate = 0.03        # Adam at 0.03 is noisy: the validation loss goes up and down
    optimizer = "adam"
    hidden_layers = 1
    hidden_size = 64
    batch_size = 32
    epochs = 8
"""


def test_a_validation_loss_study_keeps_the_lowest_epoch_and_its_weights(tmp_path, run_study_file):
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study, spec = run_study_file(tmp_path, LOSS, artifact_store=store)
    data = prepare_data(spec.dataset)
    trials = study.get_trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        losses = [trial.intermediate_values[epoch] for epoch in range(1, 9)]  # epochs count from 1
        assert trial.value == min(losses)
        assert trial.user_attrs["best_epoch"] == int(np.argmin(losses)) + 1
        assert trial.user_attrs["learning_curves"]["validation_loss"] == pytest.approx(losses, abs=1e-5)
        # The stored weights are those of the best epoch: reloaded, they give its validation loss again.
        network = build_network(spec.parameters.fixed(), data.n_features, data.n_classes, seed=0)
        network.load_state_dict(download_weights(trial, tmp_path))
        assert network.loss(data.x_validation, data.t_validation) == pytest.approx(trial.value, rel=1e-5)
    assert study.best_trial.number == min(trials, key=lambda trial: trial.value).number
    # Some trial's lowest loss comes before its last epoch, so weights of the last epoch would give
    # another loss (measured: best epochs 6, 5 and 4 of 8).
    assert any(trial.user_attrs["best_epoch"] < 8 for trial in trials)


SCHEDULED = """
    name = "scheduled"
    [budget]
    trials = 3
    [dataset]
    name = "idx"
    directory = "{directory}"
    train_images = 300
    [sampler]
    type = "grid"
    [pruner]
    type = "none"
    [parameters]
    learning_rate = 0.1
    optimizer = "sgd"
    hidden_size = 20
    batch_size = 50
    epochs = 3
    learning_rate_schedule = { choices = ["constant", "step", "cosine"] }
    warmup_epochs = 1
    augmentation = "shift"
"""


def test_a_study_searching_the_schedule_with_shifted_images_stores_each_epochs_rate(tmp_path, run_study_file,
                                                                                    monkeypatch, digits_16x16_idx):
    from hpo.results import evaluate
    from models.augmentation import Shift

    study, _ = run_study_file(tmp_path, SCHEDULED.replace("{directory}", str(digits_16x16_idx)))
    # Warmup: 0.1 * 1/2; then 2 epochs starting 0 and 1/2 of the way: step 0.1, 0.01; cosine 0.1, 0.1 * (1 + cos(pi/2)) / 2.
    expected = {"constant": [0.05, 0.1, 0.1], "step": [0.05, 0.1, 0.01], "cosine": [0.05, 0.1, 0.05]}
    trials = study.get_trials()
    assert sorted(trial.params["learning_rate_schedule"] for trial in trials) == ["constant", "cosine", "step"]
    for trial in trials:
        assert trial.state == TrialState.COMPLETE
        curves = trial.user_attrs["learning_curves"]
        assert curves["learning_rate"] == pytest.approx(expected[trial.params["learning_rate_schedule"]], rel=1e-9)
        assert len(curves["validation_accuracy"]) == 3
    # Retraining the best trial takes the same schedule and augmentation (the rates of its best epochs).
    retrained, train = [], evaluate.train

    def recording_train(*arguments, **keywords):
        result = train(*arguments, **keywords)
        retrained.append((keywords, result))
        return result

    monkeypatch.setattr(evaluate, "train", recording_train)
    best = study.best_trial
    evaluation = evaluate.evaluate_trial(study, best)[1]
    (keywords, result), = retrained
    assert evaluation.card["training"]["epochs"] == best.user_attrs["best_epoch"] == result.epochs_run
    assert isinstance(keywords["augmentation"], Shift) and keywords["augmentation"].image_shape == (16, 16)
    assert [metrics.learning_rate for metrics in result.history] == pytest.approx(
        expected[best.params["learning_rate_schedule"]][: result.epochs_run], rel=1e-9)
