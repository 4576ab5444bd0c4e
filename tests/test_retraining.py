"""benchmarks/retraining.py: both retraining policies of the best trial, over seeds, through evaluate's code."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo.results.evaluate import (
    evaluate_trial,
    load_training_and_test,
    predict,
    trial_settings,
)
from hpo.store.artifacts import download_weights

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

STUDY = """
name = "small"
[budget]
trials = 3
[dataset]
name = "digits"
[sampler]
type = "random"
seed = 1
[pruner]
type = "none"
[parameters]
learning_rate = { low = 1e-3, high = 1e-1, log = true }
optimizer = "adam"
hidden_layers = 1
hidden_size = 32
dropout = 0.2
batch_size = 32
epochs = 6
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, finish_study):
    return finish_study(tmp_path_factory, "small.toml", STUDY)


def test_the_benchmark_reports_both_policies_over_the_seeds(finished, console_scripts):
    out = finished / "retraining.json"
    result = subprocess.run([str(console_scripts / "python"), str(BENCHMARKS / "retraining.py"), "--storage",
                             f"sqlite:///{finished / 'hpo.db'}", "--seeds", "0", "1", "--out", str(out)],
                            check=False, capture_output=True, text=True, timeout=300, cwd=finished)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{finished / 'hpo.db'}")
    best = study.best_trial
    assert report["trial"] == best.number and report["best_epoch"] == best.user_attrs["best_epoch"]
    # digits: 1437 training images, 20 % of them held out for validation by the tuning split.
    assert report["train_images"] == {"own": 1149, "retrained": 1437}
    assert report["default_policy_today"] == "own"
    assert [row["seed"] for row in report["results"]] == [0, 1]
    for policy in ("own", "retrained"):
        accuracies = [row[policy] for row in report["results"]]
        assert report["summary"][policy]["mean"] == pytest.approx(statistics.fmean(accuracies), abs=1e-6)
        assert report["summary"][policy]["std"] == pytest.approx(statistics.stdev(accuracies), abs=1e-6)
        assert all(0.8 < accuracy <= 1 for accuracy in accuracies)
        assert f"{policy}: test accuracy {report['summary'][policy]['mean']:.4f} +/- " in result.stdout
    # The retrained policy is evaluate's retraining with the seed: same accuracy.
    _, seed_one = evaluate_trial(study, best, seed=1)
    assert report["results"][1]["retrained"] == pytest.approx(seed_one.test_accuracy, abs=1e-6)


def test_the_own_network_with_the_trials_seed_is_the_stored_network(finished):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from retraining import own_network
    finally:
        sys.path.remove(str(BENCHMARKS))
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{finished / 'hpo.db'}")
    best = study.best_trial
    network = own_network(study, best, best.user_attrs["seed"])
    stored = download_weights(best, finished / "hpo-artifacts")
    for name, array in stored.items():
        np.testing.assert_array_equal(network.state_dict()[name], array)
    # Another seed trains another network.
    other = own_network(study, best, best.user_attrs["seed"] + 1)
    assert not np.array_equal(other.params["W1"], stored["W1"])
    dataset = load_training_and_test(trial_settings(study, best)[0])
    assert 0.8 < float(np.mean(predict(other, dataset.x_test) == dataset.t_test)) <= 1
