"""End to end: a digits study in SQLite, the objective's contract, resumption."""

import itertools
import json
import math
import re
import subprocess
import textwrap

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.config.spec import load_spec
from hpo.results.summary import study_savings
from hpo.store.storage import open_storage
from hpo.tuning.data import prepare_data
from hpo.tuning.objective import Objective, trial_seed
from hpo.tuning.study import count_finished, open_study
from hpo.tuning.worker import run_worker
from models.optimizers import SGD

SMALL_DIGITS = """
name = "digits_small"
[budget]
trials = 14
[dataset]
name = "digits"
validation_fraction = 0.2
[sampler]
type = "tpe"
seed = 0
n_startup_trials = 5
[pruner]
type = "median"
n_startup_trials = 3
n_warmup_steps = 1
[parameters]
learning_rate = { low = 1e-4, high = 1e-1, log = true }
weight_decay = { low = 1e-8, high = 1e-2, log = true }
optimizer = { choices = ["sgd", "adam"] }
hidden_layers = 1
hidden_size = 64
batch_size = 32
epochs = 8
seed = 0
"""


@pytest.fixture(scope="module")
def digits_study(tmp_path_factory, hpo_command):
    folder = tmp_path_factory.mktemp("digits")
    (folder / "study.toml").write_text(SMALL_DIGITS)
    url = f"sqlite:///{folder / 'study.db'}"
    result = subprocess.run(
        [hpo_command, "run", "study.toml", "--storage", url, "--no-progress"],
        cwd=folder, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return url, folder, result


def test_every_trial_is_persisted_and_some_are_pruned(digits_study):
    url, _, _ = digits_study
    study = optuna.load_study(study_name="digits_small", storage=url)
    trials = study.get_trials()
    states = [trial.state for trial in trials]
    assert len(trials) == 14 and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert states.count(TrialState.PRUNED) >= 1
    for trial in trials:
        # Log-uniform learning rate and weight decay, as sampled and stored.
        assert trial.distributions["learning_rate"] == FloatDistribution(1e-4, 1e-1, log=True)
        assert trial.distributions["weight_decay"] == FloatDistribution(1e-8, 1e-2, log=True)
        epochs = trial.user_attrs["epochs_run"]
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
        curves = trial.user_attrs["learning_curves"]
        assert len(curves["validation_accuracy"]) == epochs
        assert curves["validation_accuracy"] == pytest.approx([trial.intermediate_values[e] for e in range(1, epochs + 1)], abs=1e-5)
        assert trial.user_attrs["seed"] == trial_seed(0, trial.number)
        if trial.state == TrialState.COMPLETE:
            assert epochs == 8
            assert trial.value == pytest.approx(max(trial.intermediate_values.values()))
        else:
            assert epochs < 8
    assert study.best_value >= 0.95


def test_optuna_own_cli_reads_the_database(digits_study, optuna_command):
    url, folder, _ = digits_study
    result = subprocess.run(
        [optuna_command, "trials", "--storage", url, "--study-name", "digits_small", "-f", "json"],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 14


def test_hpo_trials_and_best_formats(digits_study, hpo_command):
    url, folder, run = digits_study
    study = optuna.load_study(study_name="digits_small", storage=url)
    assert f"best trial: {study.best_trial.number}, value {study.best_value:.4f}" in run.stdout

    def hpo(*arguments):
        result = subprocess.run([hpo_command, *arguments, "--storage", url],
                                cwd=folder, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    best = json.loads(hpo("best", "-f", "json"))
    assert best["number"] == study.best_trial.number and best["value"] == study.best_value
    assert best["params_learning_rate"] == study.best_params["learning_rate"]
    best_csv = hpo("best", "-f", "csv").splitlines()
    assert best_csv[0].startswith("number,state,value") and best_csv[1].startswith(f"{study.best_trial.number},COMPLETE,")
    csv_lines = hpo("trials", "-f", "csv").strip().splitlines()
    assert csv_lines[0].startswith("number,state,value,") and len(csv_lines) == 15
    table = hpo("trials", "--study-name", "digits_small")
    assert "PRUNED" in table and "COMPLETE" in table


def test_a_diverged_trial_is_pruned_and_the_study_goes_on(tmp_path):
    (tmp_path / "s.toml").write_text(textwrap.dedent("""
        name = "diverge"
        [budget]
        trials = 2
        [sampler]
        type = "random"
        seed = 0
        [pruner]
        type = "none"
        [parameters]
        learning_rate = { choices = [1e3, 0.05] }
        weight_decay = 1.0
        optimizer = "sgd"
        epochs = 3
    """))
    spec = load_spec(tmp_path / "s.toml")
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(spec, storage, spec.name)
    study.enqueue_trial({"learning_rate": 1e3})
    study.enqueue_trial({"learning_rate": 0.05})
    run_worker(study, storage, spec, prepare_data(spec.dataset))
    diverged, healthy = study.get_trials()
    assert diverged.state == TrialState.PRUNED and diverged.value is None
    # W <- W - lr * weight_decay * W multiplies W by -999 per step: the loss explodes at once.
    assert diverged.user_attrs["diverged"].startswith("training loss ")
    assert diverged.user_attrs["diverged"].endswith("; lower the learning rate")
    assert diverged.user_attrs["epochs_run"] == 0
    assert healthy.state == TrialState.COMPLETE and np.isfinite(healthy.value)
    assert study.best_trial.number == 1
    assert count_finished(study) == 2


def test_same_seed_same_trial_values(tmp_path):
    spec = load_spec("studies/digits.toml")
    data = prepare_data(spec.dataset)

    def run(seed):
        parameters = spec.parameters.model_copy(update={"epochs": 2, "seed": seed})
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
        study.optimize(Objective(spec.model_copy(update={"parameters": parameters}), data), n_trials=2)
        return [trial.params for trial in study.trials], [trial.value for trial in study.trials]

    first, again, other = run(0), run(0), run(1)
    assert again == first
    # Another training seed: the same sampled parameters, other initial weights and mini-batches, other values.
    assert other[0] == first[0] and all(a != b for a, b in zip(other[1], first[1]))


def test_no_trial_starts_after_the_timeout(tmp_path, hpo_command):
    (tmp_path / "study.toml").write_text(textwrap.dedent("""
        name = "timed"
        [budget]
        trials = 40
        timeout_seconds = 2.0
        [sampler]
        type = "random"
        seed = 0
        [pruner]
        type = "none"
        [parameters]
        learning_rate = { low = 1e-3, high = 1e-1, log = true }
        hidden_layers = 1
        hidden_size = 64
        batch_size = 32
        epochs = 4
    """))
    url = f"sqlite:///{tmp_path / 'timed.db'}"
    result = subprocess.run([hpo_command, "run", "study.toml", "--storage", url, "--no-progress"],
                            check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "stopped: timeout of 2 s reached" in result.stdout
    trials = optuna.load_study(study_name="timed", storage=url).get_trials()
    # Without the timeout the 40 trials of ~0.2 s each would run for 8 s or more.
    assert 1 <= len(trials) < 40
    first = trials[0].datetime_start  # the clock started a little before: the deadline is at most first + 2 s
    for previous, trial in itertools.pairwise(trials):
        # One worker: it looks at the clock between two trials, so a trial starts after the one before it
        # ended, and only if that was before the deadline.
        assert previous.datetime_complete <= trial.datetime_start
        assert (previous.datetime_complete - first).total_seconds() < 2.0, (trial.number, first, previous)
    # The trial running at the timeout finishes: none is left RUNNING or failed.
    assert all(trial.state == TrialState.COMPLETE for trial in trials)


EXPLODED = re.compile(r"training loss (\S+) in epoch \d+, mini-batch \d+ exceeds the limit (\S+) "
                      r"\(100 x max\(first mini-batch loss \S+, ln 10 = 2.303\)\); lower the learning rate")


def test_learning_rates_of_10_to_1000_end_exploding_trials_as_diverged(tmp_path, run_study_file):
    # Measured before the limit rule: all 8 trials COMPLETE at chance level (0.10, one 0.18) with
    # first-epoch training losses of 2.6e3 to 2.0e8 that never became NaN.
    study, _ = run_study_file(tmp_path, """
        name = "explode"
        [budget]
        trials = 8
        [sampler]
        type = "random"
        seed = 0
        [pruner]
        type = "none"
        [parameters]
        learning_rate = { low = 10.0, high = 1000.0, log = true }
        optimizer = { choices = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"] }
        hidden_layers = 1
        hidden_size = 32
        batch_size = 64
        epochs = 3
    """)
    trials = study.get_trials()
    assert len(trials) == 8 and count_finished(study) == 8
    diverged = [trial for trial in trials if "diverged" in trial.user_attrs]
    assert len(diverged) >= 6  # most such rates explode
    for trial in diverged:
        assert trial.state == TrialState.PRUNED and trial.value is None, trial.params
        match = EXPLODED.fullmatch(trial.user_attrs["diverged"])
        assert match and float(match[1]) > float(match[2]), trial.user_attrs["diverged"]
        assert "weights_artifact_id" not in trial.user_attrs
    # A trial that did not explode (its units died, say) completes, bad but finite: every loss it
    # recorded is under the smallest limit the rule can set, 100 x ln 10.
    for trial in trials:
        if trial not in diverged:
            curves = trial.user_attrs["learning_curves"]
            assert trial.state == TrialState.COMPLETE, trial.params
            assert max(curves["train_loss"] + curves["validation_loss"]) < 100 * math.log(10)


class JumpingSGD(SGD):
    """SGD whose learning rate jumps to ``then`` after ``after`` updates (a forced schedule)."""

    def __init__(self, lr, *, after, then):
        super().__init__(lr)
        self.after, self.then, self.updates = after, then, 0

    def update(self, params, grads):
        self.updates += 1
        if self.updates > self.after:
            self.lr = self.then
        super().update(params, grads)


def test_a_trial_that_explodes_after_a_good_epoch_is_not_best(tmp_path, run_study_file, monkeypatch):
    import hpo.tuning.objective

    data = prepare_data(load_spec("studies/digits.toml").dataset)
    per_epoch = -(-len(data.x_train) // 32)

    def make_optimizer(name, learning_rate):
        # learning rate 0.3 trains well for 3 epochs, then jumps to 300 (a finite explosion).
        return JumpingSGD(learning_rate, after=3 * per_epoch if learning_rate == 0.3 else 10**9, then=300.0)

    monkeypatch.setattr(hpo.tuning.objective, "make_optimizer", make_optimizer)
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study, _ = run_study_file(tmp_path, """
        name = "late_explosion"
        [budget]
        trials = 2
        [sampler]
        type = "random"
        seed = 0
        [pruner]
        type = "none"
        [parameters]
        learning_rate = { choices = [0.3, 0.05] }
        optimizer = "sgd"
        hidden_layers = 1
        hidden_size = 64
        batch_size = 32
        epochs = 4
        seed = 0
        seed_per_trial = false
    """, enqueue=[{"learning_rate": 0.3}, {"learning_rate": 0.05}], artifact_store=store)
    exploded, healthy = study.get_trials()
    # Measured: validation accuracy 0.872, 0.903, 0.951, then a training loss of 9.3e3 in epoch 4 (limit 233);
    # the healthy trial ends at 0.875. Before the limit rule the first was COMPLETE with 0.951 and best.
    # The first learned well for 3 epochs, better than the healthy trial ever does: that is the point.
    assert sorted(exploded.intermediate_values) == [1, 2, 3]
    assert max(exploded.intermediate_values.values()) > max(healthy.intermediate_values.values())
    assert exploded.state == TrialState.PRUNED  # (Optuna gives a pruned trial its last reported value)
    assert exploded.user_attrs["epochs_run"] == 3 and "weights_artifact_id" not in exploded.user_attrs
    # The learning rate jumps with the first update of epoch 4, so the loss explodes in epoch 4.
    match = EXPLODED.fullmatch(exploded.user_attrs["diverged"])
    assert match and "in epoch 4," in exploded.user_attrs["diverged"], exploded.user_attrs["diverged"]
    assert healthy.state == TrialState.COMPLETE and healthy.user_attrs["epochs_run"] == 4
    assert healthy.value == max(healthy.intermediate_values.values())
    assert "weights_artifact_id" in healthy.user_attrs
    assert study.best_trial.number == healthy.number and study.best_value == healthy.value


SIZES = """
    name = "sizes"
    [budget]
    trials = 8
    [sampler]
    type = "random"
    seed = 0
    [pruner]
    type = "none"
    [parameters]
    learning_rate = 0.05
    hidden_layers = 1
    hidden_size = { low = 16, high = 256, step = 16 }
    batch_size = 32
    epochs = 2
"""


def test_sampled_networks_too_large_for_the_memory_are_pruned_and_the_budget_is_reached(tmp_path, run_study_file, monkeypatch):
    import hpo.tuning.resources
    from hpo.tuning.resources import trial_memory

    data = prepare_data(load_spec("studies/digits.toml").dataset)
    values = {**load_spec("studies/digits.toml").parameters.fixed(), "hidden_layers": 1, "hidden_size": 128,
              "batch_size": 32, "optimizer": "sgd", "batch_norm": False, "dropout": 0.0, "weight_decay": 0.0,
              "activation": "relu", "evaluate_train": False}
    available = trial_memory(values, data)  # what 128 units need: more do not fit
    monkeypatch.setattr(hpo.tuning.resources, "available_memory", lambda: available)
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path))
    study, _ = run_study_file(tmp_path, SIZES, artifact_store=store)
    trials = study.get_trials()
    assert len(trials) == 8 and count_finished(study) == 8  # too-large trials count against the budget
    large = [trial for trial in trials if trial.params["hidden_size"] > 128]
    fitting = [trial for trial in trials if trial.params["hidden_size"] <= 128]
    assert large and fitting  # measured: 6 larger than 128 units, 2 not
    for trial in large:
        needed = trial_memory({**values, "hidden_size": trial.params["hidden_size"]}, data)
        assert trial.state == TrialState.PRUNED and trial.value is None
        assert trial.user_attrs["too_large"] == (
            f"the network (1 hidden layer of {trial.params['hidden_size']} units, batch 32, sgd) needs "
            f"{hpo.tuning.resources.format_bytes(needed)} to train; this machine has "
            f"{hpo.tuning.resources.format_bytes(available)} available; lower hidden_layers, hidden_size or batch_size")
        assert trial.user_attrs["epochs_run"] == 0 and "weights_artifact_id" not in trial.user_attrs
    for trial in fitting:
        assert trial.state == TrialState.COMPLETE and "too_large" not in trial.user_attrs
    assert study.best_trial.params["hidden_size"] <= 128
    savings = study_savings(study)  # a too-large trial planned nothing it did not run
    assert (savings.trained, savings.planned) == (2 * len(fitting), 2 * len(fitting))


def test_a_memory_error_while_training_ends_the_trial_as_too_large(tmp_path, run_study_file, monkeypatch):
    import hpo.tuning.objective

    real_train = hpo.tuning.objective.train

    def train_until_out_of_memory(*arguments, callback, **keywords):
        def report_then_fail(metrics):
            callback(metrics)
            if metrics.epoch == 1 and keywords["batch_size"] == 32:
                raise MemoryError  # as NumPy raises it when an array cannot be allocated
        return real_train(*arguments, callback=report_then_fail, **keywords)

    monkeypatch.setattr(hpo.tuning.objective, "train", train_until_out_of_memory)
    study, _ = run_study_file(tmp_path, SIZES.replace("trials = 8", "trials = 2").replace(
        "batch_size = 32", "batch_size = { choices = [32, 64] }"),
        enqueue=[{"batch_size": 32}, {"batch_size": 64}])
    failed, healthy = study.get_trials()
    assert failed.state == TrialState.PRUNED and failed.user_attrs["epochs_run"] == 1
    assert re.fullmatch(r"the network \(1 hidden layer of \d+ units, batch 32, sgd\) ran out of memory while "
                        r"training \(estimated [0-9.]+ [kMG]B, [0-9.]+ [kMG]B available at its start\); lower "
                        r"hidden_layers, hidden_size or batch_size", failed.user_attrs["too_large"]), \
        failed.user_attrs["too_large"]
    assert healthy.state == TrialState.COMPLETE and study.best_trial.number == healthy.number
