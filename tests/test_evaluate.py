"""`hpo evaluate`: test a completed trial's stored weights (or retrain it) once, save a model that reloads to the same
predictions."""

import copy
import json

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.results.evaluate import (
    EvaluationError,
    evaluate_trial,
    load_model,
    predict,
    select_trial,
)
from models.datasets import load_digits


@pytest.fixture
def finished(tiny_study):
    """The shared finished 6-trial digits study (conftest's ``tiny_study``): its folder."""
    return tiny_study


def load(folder):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'hpo.db'}")


def test_evaluate_reports_the_test_accuracy_of_the_saved_model(finished, run_hpo):
    result = run_hpo("evaluate", "--retrain", "--out", "model", "-f", "json", cwd=finished)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    best = load(finished).best_trial
    assert card["trial"] == best.number
    assert card["validation_accuracy"] == pytest.approx(best.value)
    assert card["parameters"]["learning_rate"] == best.params["learning_rate"]
    assert card["seed"] == best.user_attrs["seed"]
    # Retrained on training + validation images (digits: 1437 of 1797; 360 are test images)
    # for the epochs at which the trial did best.
    assert card["training"]["epochs"] == best.user_attrs["best_epoch"]
    assert card["training"]["train_images"] == 1437
    assert len(card["training"]["train_loss"]) == best.user_attrs["best_epoch"]
    # The saved model, reloaded from its folder, scores the card's test accuracy.
    network, reloaded_card = load_model(finished / "model")
    assert reloaded_card == card
    digits = load_digits()
    predictions = predict(network, digits.x_test)
    accuracy = float(np.mean(predictions == digits.t_test))
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert accuracy > 0.85
    # The confusion matrix and the per-class table agree with those predictions.
    confusion = np.array(card["confusion_matrix"])
    assert confusion.sum() == len(digits.t_test) == card["test_images"] == 360
    assert np.trace(confusion) == np.sum(predictions == digits.t_test)
    for row in card["per_class"]:
        k = row["class"]
        assert row["support"] == confusion[k].sum() == np.sum(digits.t_test == k)
        assert row["recall"] == pytest.approx(confusion[k, k] / confusion[k].sum(), abs=1e-4)
    assert set(card["versions"]) >= {"python", "numpy", "optuna", "hpo-from-scratch"}


def test_evaluate_table_names_test_accuracy_and_where_the_model_is(finished, run_hpo):
    result = run_hpo("evaluate", "--out", "table-model", cwd=finished)
    assert result.returncode == 0, result.stderr
    card = json.loads((finished / "table-model" / "model_card.json").read_text())
    assert f"test accuracy: {card['test_accuracy']:.4f} on 360 test images" in result.stdout
    assert "confusion matrix" in result.stdout and "per class" in result.stdout
    assert "reloaded, they give the same 360 test predictions" in result.stdout


def test_retraining_is_reproducible(finished):
    study = load(finished)
    trial = select_trial(study, None)
    first, first_result = evaluate_trial(study, trial)
    second, second_result = evaluate_trial(study, trial)
    for name, array in first.state_dict().items():
        np.testing.assert_array_equal(array, second.state_dict()[name])
    np.testing.assert_array_equal(first_result.predictions, second_result.predictions)
    # The trial's seed is what fixes it: another seed retrains to other weights.
    reseeded = copy.deepcopy(trial)
    reseeded.user_attrs = {**trial.user_attrs, "seed": trial.user_attrs["seed"] + 1}
    other, _ = evaluate_trial(study, reseeded)
    assert not np.array_equal(other.params["W1"], first.params["W1"])


def test_evaluate_a_named_trial_and_refuse_unfinished_ones(finished, run_hpo):
    study = load(finished)
    complete = [trial.number for trial in study.get_trials() if trial.state == TrialState.COMPLETE]
    other = complete[0] if complete[0] != study.best_trial.number else complete[1]
    result = run_hpo("evaluate", "--trial", str(other), "--out", "other", "-f", "json", cwd=finished)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["trial"] == other

    distributions = {"learning_rate": FloatDistribution(1e-3, 1e-1, log=True),
                     "weight_decay": FloatDistribution(1e-8, 1e-3, log=True)}
    params = {"learning_rate": 0.01, "weight_decay": 1e-5}
    for state in (TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(optuna.trial.create_trial(
            state=state, params=params, distributions=distributions,
            intermediate_values={1: 0.5} if state == TrialState.PRUNED else {}))
    pruned, failed = len(study.trials) - 2, len(study.trials) - 1
    for number, state in ((pruned, "PRUNED"), (failed, "FAIL"), (999, None)):
        result = run_hpo("evaluate", "--trial", str(number), cwd=finished)
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ")
        if state:
            assert f"trial {number} of study 'tiny' is {state}" in lines[0]
            assert "cannot be evaluated" in lines[0]
        else:
            assert "no trial 999" in lines[0]


def test_a_changed_weights_file_is_refused(finished, tmp_path, run_hpo):
    result = run_hpo("evaluate", "--out", str(tmp_path / "m"), cwd=finished)
    assert result.returncode == 0, result.stderr
    weights = tmp_path / "m" / "weights.npz"
    with np.load(weights) as archive:
        state = {name: archive[name] for name in archive.files}
    state["W1"] = state["W1"] + 1
    np.savez(weights, **state)
    with pytest.raises(EvaluationError, match="checksum differs"):
        load_model(tmp_path / "m")


def test_a_study_not_made_by_hpo_cannot_be_evaluated(tmp_path, run_hpo):
    storage = f"sqlite:///{tmp_path / 'plain.db'}"
    study = optuna.create_study(study_name="plain", storage=storage, direction="maximize")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    result = run_hpo("evaluate", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: study 'plain' was not created by hpo; it cannot be evaluated"


def test_evaluate_the_stored_weights_without_retraining(finished, run_hpo):
    study = load(finished)
    best = study.best_trial
    result = run_hpo("evaluate", "--stored-weights", "--out", "stored", "-f", "json", cwd=finished)
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["trial"] == best.number
    assert card["training"]["mode"].startswith("stored weights")
    assert card["training"]["epochs"] == best.user_attrs["best_epoch"]
    # Exactly the trial's own weights: the saved file holds the stored artifact's arrays.
    from hpo.store.artifacts import download_weights
    stored = download_weights(best, finished / "hpo-artifacts")
    network, _ = load_model(finished / "stored")
    for name, array in network.state_dict().items():
        np.testing.assert_array_equal(array, stored[name])
    digits = load_digits()
    accuracy = float(np.mean(predict(network, digits.x_test) == digits.t_test))
    assert card["test_accuracy"] == pytest.approx(accuracy, abs=1e-6)


def test_stored_weights_from_a_wrong_folder_are_one_line(finished, tmp_path, run_hpo):
    result = run_hpo("evaluate", "--stored-weights", "--artifact-dir", str(tmp_path / "empty"), cwd=finished)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: weights of trial")
    assert "--artifact-dir" in lines[0]


def test_a_saved_model_is_not_replaced_without_force(finished, run_hpo):
    first = run_hpo("evaluate", "--out", "kept", "-f", "json", cwd=finished)
    assert first.returncode == 0, first.stderr
    card = (finished / "kept" / "model_card.json").read_text()
    again = run_hpo("evaluate", "--stored-weights", "--out", "kept", cwd=finished)
    assert again.returncode == 1
    assert again.stderr.strip() == "Error: kept already holds a saved model; choose another --out, or --force to replace it"
    assert (finished / "kept" / "model_card.json").read_text() == card
    forced = run_hpo("evaluate", "--stored-weights", "--out", "kept", "--force", "-f", "json", cwd=finished)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["training"]["mode"].startswith("stored weights")


def test_an_unusable_out_folder_fails_before_training(finished, run_hpo):
    (finished / "a-file").write_text("not a folder")
    result = run_hpo("evaluate", "--out", "a-file/model", cwd=finished)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: cannot create the model folder a-file/model: ")
    assert "retraining" not in result.stdout


EDITED = "differ from those saved with its weights; the card was edited: save the model again with hpo evaluate"


@pytest.mark.parametrize(("damage", "expected"), [
    ("truncated weights", "checksum differs"),
    ("card without data", EDITED),
    ("card with a bad activation", EDITED),
    # Settings that fit the same arrays: without the card's settings checksum these would predict silently wrong.
    ("card with another activation", EDITED),
    ("card with another image shape", EDITED),
    ("card with other class names", EDITED),
    ("card with another activation and no checksum", EDITED),  # removing the checksum does not switch it off
    # A card saved before the settings checksum existed is read as before.
    ("old card without data", "the model card does not describe a network of this project"),
    ("old card with a bad activation", "the model card does not describe a network of this project"),
])
def test_a_damaged_saved_model_is_one_evaluation_error(finished, tmp_path, damage, expected, run_hpo):
    result = run_hpo("evaluate", "--stored-weights", "--out", str(tmp_path / "m"), cwd=finished)
    assert result.returncode == 0, result.stderr
    weights, card_path = tmp_path / "m" / "weights.npz", tmp_path / "m" / "model_card.json"
    card = json.loads(card_path.read_text())
    assert load_model(tmp_path / "m")[1] == card  # undamaged, it loads
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        if damage.startswith("old card"):  # format 1: written before the settings checksum
            del card["settings_sha256"]
            card["format"] = 1
        if damage.endswith("without data"):
            del card["data"]
        elif damage.endswith("bad activation"):
            card["parameters"]["activation"] = "bogus"
        elif damage.endswith("another activation"):
            card["parameters"]["activation"] = "sigmoid"
        elif damage.endswith("and no checksum"):
            card["parameters"]["activation"] = "sigmoid"
            del card["settings_sha256"]
        elif damage.endswith("another image shape"):
            card["data"]["image_shape"] = [4, 16]
        else:
            card["data"]["class_names"] = card["data"]["class_names"][::-1]
        card_path.write_text(json.dumps(card))
    with pytest.raises(EvaluationError, match=expected):
        load_model(tmp_path / "m")


def _siblings_left(folder, name):
    """Lock files and temporary folders of ``hpo evaluate`` left beside the model folder ``name``."""
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(f".{name}."))


def test_two_evaluates_at_once_into_one_new_folder_one_wins(finished, hpo_command, hpo_environment):
    import subprocess

    study = load(finished)
    complete = [trial.number for trial in study.get_trials() if trial.state == TrialState.COMPLETE]
    for round_ in range(4):
        name = f"race-{round_}"
        trials = (complete[0], complete[1])
        processes = [subprocess.Popen([hpo_command, "evaluate", "--stored-weights", "--trial", str(number),
                                       "--out", name, "-f", "json"], cwd=finished, env=hpo_environment(),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for number in trials]
        outputs = [process.communicate(timeout=300) for process in processes]
        codes = [process.returncode for process in processes]
        assert sorted(codes) == [0, 1], outputs
        winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
        lines = outputs[loser][1].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {name} "), lines
        assert "--out" in lines[0]
        # The folder holds the winner's model, whole: its card and weights, which reload with their checksum.
        assert sorted(path.name for path in (finished / name).iterdir()) == ["model_card.json", "weights.npz"]
        _, card = load_model(finished / name)
        assert card == json.loads(outputs[winner][0])
        assert card["trial"] == trials[winner]
        assert _siblings_left(finished, name) == []


def test_force_replaces_the_whole_model_and_keeps_files_it_did_not_write(finished, run_hpo):
    study = load(finished)
    top = sorted((trial for trial in study.get_trials() if trial.state == TrialState.COMPLETE),
                 key=lambda trial: (-trial.value, trial.number))
    members = lambda k: sorted(["model_card.json"] + [f"weights-trial-{trial.number}.npz" for trial in top[:k]])
    folder = finished / "forced"
    steps = [(["--ensemble", "3"], members(3)),
             (["--ensemble", "2", "--force"], members(2)),   # 5 -> 3 in the report: no old member stays
             (["--force"], ["model_card.json", "weights.npz"]),  # an ensemble replaced by one network
             (["--ensemble", "2", "--force"], members(2))]   # and the reverse
    for arguments, files in steps:
        result = run_hpo("evaluate", "--stored-weights", "--out", "forced", *arguments, "-f", "json", cwd=finished)
        assert result.returncode == 0, result.stderr
        assert sorted(path.name for path in folder.iterdir()) == files
        _, card = load_model(folder)
        assert card == json.loads(result.stdout)
        assert _siblings_left(finished, "forced") == []
    # A file hpo did not write: --force refuses to replace the folder, which keeps everything.
    (folder / "notes.txt").write_text("mine")
    card = (folder / "model_card.json").read_text()
    result = run_hpo("evaluate", "--stored-weights", "--out", "forced", "--force", cwd=finished)
    assert result.returncode == 1
    assert result.stderr.strip() == ("Error: forced holds notes.txt, which is not a saved model's file; --force "
                                     "replaces only a saved model; move it away or choose another --out")
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "model_card.json").read_text() == card
    load_model(folder)
    assert _siblings_left(finished, "forced") == []
    # Without --force, a folder of other files is not written into either.
    (finished / "papers").mkdir()
    (finished / "papers" / "draft.tex").write_text("x")
    result = run_hpo("evaluate", "--stored-weights", "--out", "papers", cwd=finished)
    assert result.returncode == 1
    assert result.stderr.strip() == ("Error: papers holds draft.tex, which is not a saved model's file; choose "
                                     "another --out (a new or empty folder)")
    assert [path.name for path in (finished / "papers").iterdir()] == ["draft.tex"]
    # An empty folder is fine.
    (finished / "empty-out").mkdir()
    result = run_hpo("evaluate", "--stored-weights", "--out", "empty-out", cwd=finished)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (finished / "empty-out").iterdir()) == ["model_card.json", "weights.npz"]


def test_a_failed_save_keeps_the_model_the_folder_held(finished, tmp_path, monkeypatch):
    from hpo.results import evaluate as evaluate_module
    from hpo.results.model_folder import ModelFolderError
    from hpo.store.artifacts import download_weights

    study = load(finished)
    trial = study.best_trial
    weights = download_weights(trial, finished / "hpo-artifacts")
    network, evaluation = evaluate_trial(study, trial, stored_weights=weights)
    evaluate_module.save_checked_model(tmp_path / "m", network, evaluation)
    before = {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()}
    real_predict = evaluate_module.predict
    monkeypatch.setattr(evaluate_module, "predict", lambda net, x: real_predict(net, x) + 1)
    with evaluate_module.prepare_model_directory(tmp_path / "m", overwrite=True) as folder:
        with pytest.raises(EvaluationError, match="does not reproduce the tested predictions"):
            evaluate_module.save_checked_model(folder, network, evaluation)
        with pytest.raises(ModelFolderError, match="is being written by another hpo evaluate"):
            evaluate_module.prepare_model_directory(tmp_path / "m", overwrite=True)
    assert {path.name: path.read_bytes() for path in (tmp_path / "m").iterdir()} == before
    assert _siblings_left(tmp_path, "m") == []


def test_stored_weights_missing_from_the_artifact_folder_are_one_clear_line(finished, tmp_path, run_hpo):
    import shutil

    shutil.copy(finished / "hpo.db", tmp_path / "hpo.db")
    shutil.copytree(finished / "hpo-artifacts", tmp_path / "hpo-artifacts")
    study = load(tmp_path)
    best = study.best_trial
    (tmp_path / "hpo-artifacts" / best.user_attrs["weights_artifact_id"]).unlink()
    folder = (tmp_path / "hpo-artifacts").resolve()
    result = run_hpo("evaluate", "--stored-weights", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: weights of trial {best.number} (artifact {best.user_attrs['weights_artifact_id']}) are not in the "
        f"artifact folder {folder}; give the folder the workers wrote to with --artifact-dir, or evaluate with "
        "--retrain")
    # A COMPLETE trial that recorded no weights artifact at all.
    distributions = {"learning_rate": FloatDistribution(1e-3, 1e-1, log=True),
                     "weight_decay": FloatDistribution(1e-8, 1e-3, log=True),
                     "dropout": FloatDistribution(0.0, 0.3)}
    study.add_trial(optuna.trial.create_trial(
        value=0.5, params={"learning_rate": 0.01, "weight_decay": 1e-5, "dropout": 0.1},
        distributions=distributions))
    number = len(study.trials) - 1
    result = run_hpo("evaluate", "--stored-weights", "--trial", str(number), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: weights of trial {number} are not in the artifact folder {folder}: the trial recorded no "
        "weights artifact; evaluate it with --retrain")
    assert not (tmp_path / "hpo-models").exists() or not any((tmp_path / "hpo-models").iterdir())


def test_an_out_link_to_a_folder_gets_the_model_in_that_folder(finished, tmp_path, run_hpo):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for arguments in ([], ["--force"]):
        result = run_hpo("evaluate", "--stored-weights", "--out", str(tmp_path / "link"), *arguments, cwd=finished)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "link").is_symlink()
        assert sorted(path.name for path in (tmp_path / "real").iterdir()) == ["model_card.json", "weights.npz"]
        load_model(tmp_path / "link")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link", "real"]


def test_stored_and_retrained_models_of_a_trial_get_their_own_default_folders(finished, tmp_path, run_hpo):
    # The README's block in order: `hpo evaluate`, then `hpo evaluate --retrain`, on a copy of the finished study.
    import shutil

    work = tmp_path / "work"
    shutil.copytree(finished, work, ignore=shutil.ignore_patterns("hpo-models", "model", "kept", "other", "stored"))
    best = load(work).best_trial.number
    stored = run_hpo("evaluate", cwd=work)
    assert stored.returncode == 0, stored.stderr
    retrained = run_hpo("evaluate", "--retrain", cwd=work)
    assert retrained.returncode == 0, retrained.stderr
    ensemble = run_hpo("evaluate", "--ensemble", "2", "--retrain", cwd=work)
    assert ensemble.returncode == 0, ensemble.stderr
    folders = sorted(path.name for path in (work / "hpo-models").iterdir())
    assert folders == ["tiny-ensemble-2-retrained", f"tiny-trial-{best}", f"tiny-trial-{best}-retrained"]
    modes = [json.loads((work / "hpo-models" / name / "model_card.json").read_text())["training"]["mode"]
             for name in folders[1:]]
    assert modes[0].startswith("stored weights") and not modes[1].startswith("stored weights")


def test_a_saved_model_folder_has_the_modes_of_an_ordinary_folder(finished, tmp_path, run_hpo):
    # Readable by the dashboard or a colleague as any folder made with the umask (mkdtemp alone makes 0700).
    import os
    import stat

    mask = os.umask(0o022)
    os.umask(mask)
    result = run_hpo("evaluate", "--out", str(tmp_path / "shared"), cwd=finished)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o777 & ~mask


def test_predict_names_the_expected_shape(finished, tmp_path, run_hpo):
    result = run_hpo("evaluate", "--out", str(tmp_path / "m"), cwd=finished)
    assert result.returncode == 0, result.stderr
    network, card = load_model(tmp_path / "m")
    images = load_digits().x_test
    with pytest.raises(ValueError, match=r"^x: expected an array of shape \(N, 64\) \(the card's data.n_features\), "
                                         r"got shape \(360, 10\)$"):
        predict(network, images[:, :10])
    with pytest.raises(ValueError, match=r"got shape \(64,\)$"):
        predict(network, images[0])
    assert card["data"]["n_features"] == 64 and predict(network, images[:3]).shape == (3,)
    no_images = predict(network, images[:0])
    assert no_images.shape == (0,) and no_images.dtype == np.int64
    # Pixels not as in training would give classes silently: refused.
    for bad, what in [(images[:3] * 16, r"values from 0 to 16"), (np.full((2, 64), np.nan), "NaN or infinite values"),
                      (np.full((2, 64), np.inf), "NaN or infinite values"), (images[:3] - 5, r"values from -5 to -4")]:
        with pytest.raises(ValueError, match=rf"^x: holds {what}; give pixels scaled to \[0, 1\] as in training"):
            predict(network, bad)
    with pytest.raises(ValueError, match="expected numbers"):
        predict(network, np.full((1, 64), "a"))
    assert (predict(network, images[:5].astype(np.float64)) == predict(network, images[:5])).all()


@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_a_killed_claim_of_the_model_folder_blocks_no_later_evaluate(tmp_path, signal_name):
    import signal
    import subprocess
    import sys

    from hpo.results.model_folder import prepare_model_directory

    # A process claims the folder, starts writing its model, and dies (as hpo evaluate does on SIGTERM: at once).
    claim = ("import sys, time; from hpo import interrupts; interrupts.exit_at_once(); "
             "from hpo.results.model_folder import prepare_model_directory; "
             f"folder = prepare_model_directory({str(tmp_path / 'm')!r}); "
             "(folder.staging / 'weights.npz').write_bytes(b'half'); print('claimed', flush=True); time.sleep(60)")
    process = subprocess.Popen([sys.executable, "-c", claim], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "claimed\n"
    assert len(_siblings_left(tmp_path, "m")) == 2  # its lock and its half-written folder
    process.send_signal(getattr(signal, signal_name))
    assert process.wait(timeout=30) == (-9 if signal_name == "SIGKILL" else 143)
    # The lock died with it: the next claim goes on, and removes what the dead one left half written.
    with prepare_model_directory(tmp_path / "m") as folder:
        assert _siblings_left(tmp_path, "m") == sorted([".m.hpo-lock", folder.staging.name])
    assert _siblings_left(tmp_path, "m") == [] and list((tmp_path / "m").iterdir()) == []


def test_a_trial_is_not_evaluated_on_images_of_another_shape_than_it_trained_on(finished):
    from hpo.store.artifacts import download_weights

    study = load(finished)
    trial = study.best_trial
    assert trial.user_attrs["image_shape"] == [8, 8]  # recorded by the objective
    # The data set's files replaced by others of as many pixels (4 x 16): the trial's weights would read them wrong.
    moved = copy.deepcopy(trial)
    moved.user_attrs["image_shape"] = [4, 16]
    for stored_weights in (None, download_weights(trial, finished / "hpo-artifacts")):
        with pytest.raises(EvaluationError, match=r"^trial \d+ trained on images of 4 x 16 pixels, but the data set's "
                                                  r"files now hold 8 x 8 images; point dataset.directory at the files"):
            evaluate_trial(study, moved, stored_weights=stored_weights)


def test_a_force_save_killed_between_its_renames_gets_its_old_model_back(tmp_path):
    from hpo.results.model_folder import prepare_model_directory

    # What a --force save killed after moving the old model aside leaves: no folder, the model in .m.hpo-old-*.
    aside = tmp_path / ".m.hpo-old-x1"
    aside.mkdir()
    (aside / "weights.npz").write_bytes(b"old weights")
    (aside / "model_card.json").write_text("{}")
    (tmp_path / ".m.hpo-new-y2").mkdir()
    with prepare_model_directory(tmp_path / "m", overwrite=True) as folder:
        assert (tmp_path / "m" / "weights.npz").read_bytes() == b"old weights"  # put back before anything else
        assert _siblings_left(tmp_path, "m") == sorted([".m.hpo-lock", folder.staging.name])
    assert sorted(path.name for path in (tmp_path / "m").iterdir()) == ["model_card.json", "weights.npz"]
    # With the folder in place (the kill came after the second rename), an old copy left aside is removed.
    aside.mkdir()
    with prepare_model_directory(tmp_path / "m", overwrite=True):
        assert not aside.exists()
