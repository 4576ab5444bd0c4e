"""hpo.store.artifacts: where the weights go, and what is said when they cannot be read."""

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.store.artifacts import (
    ArtifactError,
    artifact_directory,
    download_weights,
    open_artifact_store,
    upload_weights,
)
from models.network import MultiLayerNet


def test_artifact_directory_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_directory(f"sqlite:///{tmp_path}/runs/hpo.db", None) == tmp_path / "runs" / "hpo-artifacts"
    assert artifact_directory("sqlite:///study.db", None) == tmp_path / "study-artifacts"
    assert artifact_directory("postgresql+psycopg2://hpo:secret@db:5432/hpo", None) == tmp_path / "hpo-artifacts"
    assert artifact_directory(f"sqlite:///{tmp_path}/hpo.db", "elsewhere") == tmp_path / "elsewhere"
    assert artifact_directory("postgresql+psycopg2://db/hpo", "/shared/artifacts").as_posix() == "/shared/artifacts"


def test_open_artifact_store_creates_the_folder_only_when_asked(tmp_path):
    open_artifact_store(tmp_path / "read", create=False)
    assert not (tmp_path / "read").exists()
    open_artifact_store(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ArtifactError, match="is a file, not a folder"):
        open_artifact_store(tmp_path / "file")


def test_weights_round_trip_and_errors(tmp_path):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    store = open_artifact_store(tmp_path / "hpo-artifacts")
    network = MultiLayerNet(4, [3], 2, batch_norm=True, seed=0)
    trial = study.ask()
    artifact_id = upload_weights(network, trial, store)
    trial.set_user_attr("weights_artifact_id", artifact_id)
    study.tell(trial, 0.5)
    loaded = download_weights(study.trials[0], tmp_path / "hpo-artifacts")
    assert set(loaded) == set(network.state_dict())
    for name, array in network.state_dict().items():
        np.testing.assert_array_equal(loaded[name], array)
    [meta] = optuna.artifacts.get_all_artifact_meta(study.trials[0], storage=study._storage)
    assert meta.filename == "trial-0-weights.npz" and meta.artifact_id == artifact_id

    with pytest.raises(ArtifactError, match=f"are not in the artifact folder {tmp_path / 'other'}; give the folder"):
        download_weights(study.trials[0], tmp_path / "other")
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)
    with pytest.raises(ArtifactError, match="trial 1 has no stored weights \\(state PRUNED"):
        download_weights(study.trials[1], tmp_path / "hpo-artifacts")
    # A file that is not a weights archive is refused, never unpickled.
    (tmp_path / "hpo-artifacts" / artifact_id).write_bytes(b"not an npz")
    with pytest.raises(ArtifactError, match="weights of trial 0 cannot be read"):
        download_weights(study.trials[0], tmp_path / "hpo-artifacts")
