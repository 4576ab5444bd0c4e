"""End to end with convolution blocks: `hpo run` of a digits study searching convolution_layers, `hpo evaluate` of
one trial and of an ensemble from the stored weights, the saved models reloaded to the same predictions; model
cards written before convolutions (no data.image_shape, no convolution parameters) still load."""

import hashlib
import json
import re

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.results.evaluate import EvaluationError, load_model, predict
from hpo.store.artifacts import download_weights
from hpo.tuning.objective import build_network
from models.datasets import load_digits
from models.ensemble import Ensemble, softmax
from models.network import MultiLayerNet, load_weights, save_weights

STUDY = """
name = "conv"
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
learning_rate = 0.01
optimizer = "adam"
convolution_layers = { choices = [1, 2] }
convolution_channels = 4
hidden_layers = 1
hidden_size = 32
batch_size = 32
epochs = 4
"""


@pytest.fixture(scope="module")
def conv_study(tmp_path_factory, finish_study):
    """A finished 3-trial digits study "conv" (1 or 2 blocks of 4 and 8 filters) in ./hpo.db of a fresh folder."""
    return finish_study(tmp_path_factory, "conv.toml", STUDY)


def load(folder):
    return optuna.load_study(study_name="conv", storage=f"sqlite:///{folder / 'hpo.db'}")


def test_the_run_trains_networks_of_the_searched_blocks(conv_study):
    trials = load(conv_study).get_trials()
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 3
    assert {trial.params["convolution_layers"] for trial in trials} == {1, 2}      # the seeded sampler draws both
    assert all(trial.value > 0.8 for trial in trials), [trial.value for trial in trials]
    for trial in trials:                                        # the stored weights are those of the trial's blocks
        weights = download_weights(trial, conv_study / "hpo-artifacts")
        shapes = {1: {"convolution_W1": (3, 3, 1, 4)},
                  2: {"convolution_W1": (3, 3, 1, 4), "convolution_W2": (3, 3, 4, 8)}}[trial.params["convolution_layers"]]
        assert {name: array.shape for name, array in weights.items() if name.startswith("convolution_W")} == shapes


def test_evaluate_one_trial_saves_a_model_that_reloads_to_the_printed_accuracy(conv_study, run_hpo):
    result = run_hpo("evaluate", "--out", "one", cwd=conv_study)
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"test accuracy: (\d\.\d{4}) on 360 test images", result.stdout).group(1))
    assert "reloaded, they give the same 360 test predictions" in result.stdout
    network, card = load_model(conv_study / "one")
    assert card["data"]["image_shape"] == [8, 8] and card["data"]["n_features"] == 64
    assert card["training"]["mode"].startswith("stored weights")
    assert network.image_shape == (8, 8, 1)
    assert len(network.convolution_channels) == card["parameters"]["convolution_layers"]
    digits = load_digits()
    predictions = predict(network, digits.x_test)
    assert printed == pytest.approx(float(np.mean(predictions == digits.t_test)), abs=5e-5)
    assert card["test_accuracy"] == pytest.approx(float(np.mean(predictions == digits.t_test)), abs=1e-6)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (digits.t_test, predictions), 1)
    assert card["confusion_matrix"] == confusion.tolist()
    assert predict(network, digits.x_test[:0]).shape == (0,)


def test_evaluate_an_ensemble_of_two_from_the_stored_weights(conv_study, run_hpo):
    result = run_hpo("evaluate", "--ensemble", "2", "--out", "ensemble", cwd=conv_study)
    assert result.returncode == 0, result.stderr
    printed = float(re.search(r"ensemble test accuracy: (\d\.\d{4}) on 360 test images", result.stdout).group(1))
    assert "reloaded, they give the same 360 test predictions" in result.stdout
    ensemble, card = load_model(conv_study / "ensemble")
    assert isinstance(ensemble, Ensemble) and len(ensemble) == 2
    assert card["kind"] == "ensemble" and card["data"]["image_shape"] == [8, 8]
    study = load(conv_study)
    top = sorted(study.get_trials(states=[TrialState.COMPLETE]), key=lambda trial: (-trial.value, trial.number))[:2]
    assert [member["trial"] for member in card["members"]] == [trial.number for trial in top]
    # Independently: each member's stored weights in a network built for 8 x 8 images, numpy's softmax, the mean.
    digits = load_digits()
    probabilities = []
    for member, trial, network in zip(card["members"], top, ensemble.networks):
        stored = download_weights(trial, conv_study / "hpo-artifacts")
        saved = load_weights(conv_study / "ensemble" / member["weights_file"])
        assert sorted(saved) == sorted(stored) and all(np.array_equal(saved[name], stored[name]) for name in stored)
        assert member["weights_sha256"] == hashlib.sha256(
            (conv_study / "ensemble" / member["weights_file"]).read_bytes()).hexdigest()
        rebuilt = build_network(member["parameters"], 64, 10, seed=0, image_shape=(8, 8))
        rebuilt.load_state_dict(stored)
        assert len(rebuilt.convolution_channels) == trial.params["convolution_layers"]
        np.testing.assert_array_equal(network.predict(digits.x_test), rebuilt.predict(digits.x_test))
        probabilities.append(softmax(rebuilt.predict(digits.x_test).astype(np.float64)))
    predictions = np.mean(probabilities, axis=0).argmax(axis=1)
    np.testing.assert_array_equal(predict(ensemble, digits.x_test), predictions)
    accuracy = float(np.mean(predictions == digits.t_test))
    assert printed == pytest.approx(accuracy, abs=5e-5)
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert np.trace(np.array(card["confusion_matrix"])) == np.sum(predictions == digits.t_test)
    assert accuracy > 0.85


def write_card(folder, parameters, data, network):
    """A saved model as `hpo evaluate` writes it: weights.npz and model_card.json with its checksum."""
    folder.mkdir()
    save_weights(network, folder / "weights.npz")
    card = {"format": 1, "study": "old", "trial": 0, "parameters": parameters, "seed": 0, "data": data,
            "weights_file": "weights.npz",
            "weights_sha256": hashlib.sha256((folder / "weights.npz").read_bytes()).hexdigest()}
    (folder / "model_card.json").write_text(json.dumps(card))


# The parameters and data of a card written before convolutions existed: neither convolution_layers,
# convolution_channels nor data.image_shape.
OLD_PARAMETERS = {"learning_rate": 0.01, "weight_decay": 1e-5, "optimizer": "adam", "hidden_layers": 2,
                  "hidden_size": 16, "activation": "relu", "weight_init": "he", "batch_norm": True, "dropout": 0.1,
                  "batch_size": 32, "epochs": 3, "seed": 0}
OLD_DATA = {"name": "digits", "directory": None, "train_images": None, "validation_fraction": 0.2, "split_seed": 0,
            "class_names": [str(k) for k in range(10)], "n_features": 64}


def test_a_fully_connected_model_card_of_before_convolutions_still_loads(tmp_path):
    network = MultiLayerNet(64, [16, 16], 10, batch_norm=True, dropout=0.1, weight_decay=1e-5, seed=7)
    digits = load_digits()
    network.loss_and_gradient(digits.x_train[:64], digits.t_train[:64])    # running statistics off their start
    write_card(tmp_path / "old", OLD_PARAMETERS, OLD_DATA, network)
    loaded, card = load_model(tmp_path / "old")
    assert "image_shape" not in card["data"] and "convolution_layers" not in card["parameters"]
    assert isinstance(loaded, MultiLayerNet) and loaded.convolution_channels == [] and loaded.image_shape is None
    assert sorted(loaded.params) == sorted(network.params)
    np.testing.assert_array_equal(predict(loaded, digits.x_test), predict(network, digits.x_test))
    # The same card with data.image_shape null (a fully connected model of the new format) loads alike.
    write_card(tmp_path / "new", {**OLD_PARAMETERS, "convolution_layers": 0, "convolution_channels": 16},
               {**OLD_DATA, "image_shape": None}, network)
    np.testing.assert_array_equal(predict(load_model(tmp_path / "new")[0], digits.x_test),
                                  predict(network, digits.x_test))


def test_a_convolutional_card_without_its_image_shape_is_one_evaluation_error(tmp_path):
    parameters = {**OLD_PARAMETERS, "convolution_layers": 1, "convolution_channels": 4}
    network = build_network(parameters, 64, 10, seed=0, image_shape=(8, 8))
    write_card(tmp_path / "m", parameters, OLD_DATA, network)
    with pytest.raises(EvaluationError, match=r"model_card.json: the model card does not describe a network of this "
                                              r"project \(ValueError: image_shape: expected"):
        load_model(tmp_path / "m")
    write_card(tmp_path / "ok", parameters, {**OLD_DATA, "image_shape": [8, 8]}, network)
    assert load_model(tmp_path / "ok")[0].params["convolution_W1"].shape == (3, 3, 1, 4)
