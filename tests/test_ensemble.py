"""`hpo evaluate --ensemble K`: the top K trials' networks averaged by their softmax outputs, saved and reloaded."""

import json
import math
import re
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo.results.ensemble import evaluate_ensemble, select_top_trials
from hpo.results.evaluate import (
    EvaluationError,
    evaluate_trial,
    load_model,
    predict,
    save_checked_model,
)
from hpo.store.artifacts import download_weights
from hpo.tuning.objective import build_network
from models.datasets import FASHION_MNIST_DIRECTORY, load_digits, load_fashion_mnist
from models.ensemble import Ensemble, softmax
from models.network import load_weights

ROOT = Path(__file__).resolve().parents[1]

class FixedScores:
    """A stand-in network whose scores are given: ``predict(x)`` returns ``scores`` for the rows of ``x``."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def predict(self, x, train=False):
        return self.scores[: len(x)]


# Two networks whose softmax outputs are known exactly: scores = log(probabilities).
A = np.log([[0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])
B = np.log([[0.7, 0.29, 0.01], [0.2, 0.6, 0.2]])


def test_softmax_of_log_probabilities_gives_them_back_whatever_the_shift():
    np.testing.assert_allclose(softmax(A), [[0.1, 0.1, 0.8], [0.5, 0.25, 0.25]], rtol=1e-12)
    np.testing.assert_allclose(softmax(A + 1000.0), softmax(A), rtol=1e-12)  # no overflow: max subtracted
    # exp(0) / (exp(0) + exp(ln 3)) = 1/4
    np.testing.assert_allclose(softmax(np.array([[0.0, math.log(3.0)]])), [[0.25, 0.75]], rtol=1e-12)


def test_an_ensemble_averages_probabilities_not_scores():
    ensemble = Ensemble([FixedScores(A), FixedScores(B)])
    x = np.zeros((2, 4), dtype=np.float32)
    # Row 0: ([0.1, 0.1, 0.8] + [0.7, 0.29, 0.01]) / 2 = [0.4, 0.195, 0.405]  -> class 2.
    # Row 1: ([0.5, 0.25, 0.25] + [0.2, 0.6, 0.2]) / 2 = [0.35, 0.425, 0.225] -> class 1.
    np.testing.assert_allclose(ensemble.predict(x), [[0.4, 0.195, 0.405], [0.35, 0.425, 0.225]], rtol=1e-12)
    np.testing.assert_array_equal(predict(ensemble, x), [2, 1])
    # Averaging the scores would pick class 0 in row 0: (ln 0.1 + ln 0.7) / 2 > (ln 0.8 + ln 0.01) / 2.
    assert ((A + B) / 2).argmax(axis=1)[0] == 0
    # One member: its own probabilities.
    np.testing.assert_allclose(Ensemble([FixedScores(B)]).predict(x), softmax(B), rtol=1e-12)
    with pytest.raises(ValueError, match="networks: expected at least one network"):
        Ensemble([])


@pytest.fixture
def finished(tiny_study):
    """The shared finished 6-trial digits study (conftest's ``tiny_study``): its folder."""
    return tiny_study


def load(folder):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'hpo.db'}")


def test_the_top_trials_are_the_best_completed_ones_by_the_direction(finished):
    study = load(finished)
    top = select_top_trials(study, 3)
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    values = sorted((trial.value for trial in complete), reverse=True)
    assert [trial.value for trial in top] == values[:3]
    assert top[0].number == study.best_trial.number
    with pytest.raises(EvaluationError, match=r"^--ensemble 7: study 'tiny' has 6 completed trials; ask for at most 6$"):
        select_top_trials(study, 7)
    with pytest.raises(EvaluationError, match="expected at least 1 member, got 0"):
        select_top_trials(study, 0)


def test_a_minimizing_study_ranks_its_lowest_values_first():
    study = optuna.create_study(direction="minimize")
    for value in (0.5, 0.2, 0.9, 0.2, 0.1):
        study.add_trial(optuna.trial.create_trial(value=value))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert [trial.number for trial in select_top_trials(study, 3)] == [4, 1, 3]  # 0.1, then 0.2 twice (lower first)
    with pytest.raises(EvaluationError, match="has 5 completed trials"):
        select_top_trials(study, 6)


def test_a_saved_ensemble_loads_and_predicts_as_in_memory(finished, tmp_path):
    study = load(finished)
    trials = select_top_trials(study, 3)
    ensemble, evaluation = evaluate_ensemble(
        study, trials, stored_weights=lambda trial: download_weights(trial, finished / "hpo-artifacts"))
    save_checked_model(tmp_path / "m", ensemble, evaluation)
    reloaded, card = load_model(tmp_path / "m")
    assert isinstance(reloaded, Ensemble) and len(reloaded) == 3
    digits = load_digits()
    np.testing.assert_array_equal(reloaded.predict(digits.x_test), ensemble.predict(digits.x_test))
    np.testing.assert_array_equal(predict(reloaded, digits.x_test), predict(ensemble, digits.x_test))
    np.testing.assert_array_equal(predict(reloaded, digits.x_test), evaluation.predictions)
    # One card: the members, their trials, files and checksums, and the ensemble's accuracy.
    assert sorted(path.name for path in (tmp_path / "m").iterdir()) == sorted(
        ["model_card.json"] + [f"weights-trial-{trial.number}.npz" for trial in trials])
    assert [member["trial"] for member in card["members"]] == [trial.number for trial in trials]
    assert [member["validation_value"] for member in card["members"]] == [trial.value for trial in trials]
    import hashlib
    for member in card["members"]:
        assert member["weights_sha256"] == hashlib.sha256((tmp_path / "m" / member["weights_file"]).read_bytes()).hexdigest()
    accuracy = float(np.mean(evaluation.predictions == digits.t_test))
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert card["kind"] == "ensemble" and card["test_images"] == 360
    # A member's settings edited by hand (an activation that fits the same arrays) are refused, not served.
    import json

    from hpo.results.evaluate import EvaluationError
    card["members"][1]["parameters"]["activation"] = "tanh"
    (tmp_path / "m" / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(EvaluationError, match="the card was edited"):
        load_model(tmp_path / "m")


def test_retrained_members_are_the_networks_plain_evaluate_retrains(finished):
    study = load(finished)
    trials = select_top_trials(study, 2)
    ensemble, evaluation = evaluate_ensemble(study, trials)
    for trial, network, member in zip(trials, ensemble.networks, evaluation.members):
        alone, alone_evaluation = evaluate_trial(study, trial)
        for name, array in alone.state_dict().items():
            np.testing.assert_array_equal(network.state_dict()[name], array)
        assert member.test_accuracy == alone_evaluation.test_accuracy
        assert member.card["training"]["mode"] == "retrained on training + validation images"


def test_cli_ensemble_accuracy_is_the_mean_softmax_accuracy_of_the_saved_members(finished, run_hpo):
    result = run_hpo("evaluate", "--stored-weights", "--ensemble", "3", "--out", "ens3", cwd=finished)
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"ensemble test accuracy: (\d\.\d{4}) on 360 test images", result.stdout).group(1))
    # Independently: each member's saved weights, its own network, numpy's softmax, the mean, the argmax.
    card = json.loads((finished / "ens3" / "model_card.json").read_text())
    digits = load_digits()
    study = load(finished)
    # The 6 trials of the run are complete (no pruner); other tests may add pruned and failed ones.
    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    top = sorted(complete, key=lambda trial: -trial.value)[:3]
    assert [member["trial"] for member in card["members"]] == [trial.number for trial in top]
    accuracies = [member["test_accuracy"] for member in card["members"]]
    assert (f"(the best trial alone: {accuracies[0]:.4f}; the most accurate member alone: {max(accuracies):.4f})"
            in result.stdout)
    probabilities = []
    for member, trial in zip(card["members"], top):
        network = build_network(member["parameters"], 64, 10, seed=0)
        state = load_weights(finished / "ens3" / member["weights_file"])
        stored = download_weights(trial, finished / "hpo-artifacts")  # exactly the trial's own weights
        assert all(np.array_equal(state[name], stored[name]) for name in stored)
        network.load_state_dict(state)
        scores = network.predict(digits.x_test).astype(np.float64)
        exp = np.exp(scores - scores.max(axis=1, keepdims=True))
        probabilities.append(exp / exp.sum(axis=1, keepdims=True))
        alone = float(np.mean(scores.argmax(axis=1) == digits.t_test))
        assert member["test_accuracy"] == pytest.approx(alone, abs=1e-6)
        assert re.search(rf"│ \d +│ {trial.number} +│ {trial.value:.4f} +│ {alone:.4f} +│", result.stdout)
    accuracy = float(np.mean(np.mean(probabilities, axis=0).argmax(axis=1) == digits.t_test))
    assert printed == pytest.approx(accuracy, abs=5e-5)
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert "per class (test set)" in result.stdout and "confusion matrix" in result.stdout
    assert "saved: 3 weights files" in result.stdout


def test_an_ensemble_of_one_is_plain_evaluate(finished, run_hpo):
    one = run_hpo("evaluate", "--stored-weights", "--ensemble", "1", "--out", "one", "-f", "json", cwd=finished)
    plain = run_hpo("evaluate", "--stored-weights", "--out", "plain", "-f", "json", cwd=finished)
    assert one.returncode == 0 and plain.returncode == 0, one.stderr + plain.stderr
    first, second = json.loads(one.stdout), json.loads(plain.stdout)
    first.pop("created"), second.pop("created")
    assert first == second and "kind" not in first
    # --trial N with --ensemble 1 is plain `hpo evaluate --trial N`.
    number = load(finished).best_trial.number
    chosen = run_hpo("evaluate", "--stored-weights", "--trial", str(number), "--ensemble", "1", "--out", "one-trial",
                     "-f", "json", cwd=finished)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["trial"] == number


@pytest.mark.parametrize(("arguments", "status", "message"), [
    (("--ensemble", "0"), 2, "Error: Invalid value for '--ensemble': 0 is not in the range x>=1."),
    (("--ensemble", "7"), 1, "Error: --ensemble 7: study 'tiny' has 6 completed trials; ask for at most 6"),
    (("--ensemble", "2", "--trial", "0"), 1, "Error: --trial and --ensemble exclude each other"),
])
def test_bad_ensemble_options_are_one_line(finished, run_hpo, arguments, status, message):
    result = run_hpo("evaluate", *arguments, "--out", "never", cwd=finished)
    assert result.returncode == status
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (finished / "never").exists()


def test_a_changed_member_file_is_refused(finished, tmp_path, run_hpo):
    result = run_hpo("evaluate", "--stored-weights", "--ensemble", "2", "--out", str(tmp_path / "m"), cwd=finished)
    assert result.returncode == 0, result.stderr
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    second = tmp_path / "m" / card["members"][1]["weights_file"]
    state = load_weights(second)
    state["W1"] = state["W1"] + 1
    np.savez(second, **state)
    with pytest.raises(EvaluationError) as caught:
        load_model(tmp_path / "m")
    message = str(caught.value)
    assert message == f"{second}: checksum differs from the model card; the file was changed"
    assert "\n" not in message


needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_DIRECTORY.is_dir(),
    reason=f"{FASHION_MNIST_DIRECTORY} not installed (apt-get install dataset-fashion-mnist)",
)


@needs_fashion_mnist
def test_quick_check_an_ensemble_of_three_is_at_least_as_accurate_as_the_best_trial(tmp_path, run_hpo):
    """Issue 13's quick check: studies/fashion_mnist_quick.toml (6,000 images), then --ensemble 3."""
    study_file = ROOT / "studies" / "fashion_mnist_quick.toml"
    result = run_hpo("run", str(study_file), "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_hpo("evaluate", "--stored-weights", "--ensemble", "3", "--out", "ens", "-f", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["test_images"] == 10000
    best = card["members"][0]
    study = optuna.load_study(study_name="fashion_mnist_quick", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    assert best["trial"] == study.best_trial.number
    # The best trial alone, from its own stored weights, scored here independently.
    fashion = load_fashion_mnist()
    network = build_network(best["parameters"], 784, 10, seed=0)
    network.load_state_dict(download_weights(study.best_trial, tmp_path / "hpo-artifacts"))
    alone = float(np.mean(network.predict(fashion.x_test).argmax(axis=1) == fashion.t_test))
    assert best["test_accuracy"] == pytest.approx(alone, abs=1e-6)
    assert alone > 0.75
    assert card["test_accuracy"] >= alone
