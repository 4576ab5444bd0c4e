"""Trained weights of completed trials, kept as Optuna artifacts in a folder.

Every completed trial uploads its network's weights at its best epoch (an
uncompressed ``.npz`` file, no pickle) with ``optuna.artifacts.upload_artifact``
to a :class:`optuna.artifacts.FileSystemArtifactStore`; the artifact id is the
trial's user attribute ``weights_artifact_id``.  optuna-dashboard
(``hpo dashboard``) lists and serves the files, ``hpo evaluate --stored-weights``
loads them back.

Where the folder is (:func:`artifact_directory`):

- ``--artifact-dir DIR`` or the environment variable ``HPO_ARTIFACT_DIR``, if given;
- a SQLite study database ``path/NAME.db``: the folder ``path/NAME-artifacts``
  beside it (``hpo.db`` -> ``hpo-artifacts/``);
- a server database (PostgreSQL, ...): ``./hpo-artifacts`` in the current folder.
  Workers on several machines must then share one folder (a network file
  system, or the compose volume) given with ``--artifact-dir``, or each keeps
  its own trials' weights.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound
from sqlalchemy.engine import make_url

from hpo.errors import HpoError
from hpo.store import record
from models.network import MultiLayerNet, load_weights, save_weights

ARTIFACT_DIR_ENVIRONMENT_VARIABLE = "HPO_ARTIFACT_DIR"
# Folder for server databases when none is given, relative to the current folder.
DEFAULT_SERVER_ARTIFACT_DIR = "hpo-artifacts"
# Trial user attribute: the id of the trial's weights in the artifact store.


class ArtifactError(HpoError):
    """Stored weights that cannot be read; the message is one line."""


def artifact_directory(storage_url: str, explicit: str | os.PathLike[str] | None) -> Path:
    """The folder of the study's artifacts, as an absolute path (not created here).

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the study database.
    explicit : str or path-like, optional
        ``--artifact-dir`` (or ``$HPO_ARTIFACT_DIR``, which click passes the same
        way); wins when given.

    Returns
    -------
    pathlib.Path
        ``explicit``; else, for SQLite ``.../NAME.db``, ``.../NAME-artifacts``; else
        ``./hpo-artifacts`` in the current folder.
    """
    if explicit:
        return Path(explicit).expanduser().resolve()
    try:
        parsed = make_url(storage_url)
    except sqlalchemy.exc.ArgumentError:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database).resolve()
        return database.with_name(f"{database.stem}-artifacts")
    return (Path.cwd() / DEFAULT_SERVER_ARTIFACT_DIR).resolve()


def open_artifact_store(directory: str | os.PathLike[str], *, create: bool = True) -> FileSystemArtifactStore:
    """An Optuna file-system artifact store in ``directory``.

    Parameters
    ----------
    directory : str or path-like
        The folder (see :func:`artifact_directory`).
    create : bool, default True
        Make the folder (and its parents) if it is missing; workers do, readers such
        as the dashboard do not.

    Returns
    -------
    optuna.artifacts.FileSystemArtifactStore

    Raises
    ------
    ArtifactError
        The folder cannot be made, or is a file.
    """
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"artifact folder {path} is a file, not a folder")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ArtifactError(f"artifact folder {path}: cannot create it ({error.strerror or error})") from None
    return FileSystemArtifactStore(path)


def upload_weights(network: MultiLayerNet, trial: optuna.Trial, artifact_store: FileSystemArtifactStore) -> str:
    """Upload the network's weights as the trial's artifact ``trial-<N>-weights.npz``.

    The caller records the returned id (the objective stores it as the user attribute
    :data:`record.WEIGHTS_ARTIFACT`); a write that fails with a database error may
    be repeated, it makes a new artifact.

    Parameters
    ----------
    network : MultiLayerNet
        Written with :func:`models.network.save_weights` (parameters and batch-norm
        running statistics).
    trial : optuna.Trial
        A running trial.
    artifact_store : FileSystemArtifactStore

    Returns
    -------
    str
        The artifact id.

    Raises
    ------
    OSError
        The temporary or the stored file cannot be written.
    """
    with tempfile.TemporaryDirectory(prefix="hpo-weights-") as folder:
        path = Path(folder) / f"trial-{trial.number}-weights.npz"
        save_weights(network, path)
        return optuna.artifacts.upload_artifact(
            artifact_store=artifact_store, file_path=str(path), study_or_trial=trial,
            mimetype="application/octet-stream",
        )


def download_weights(trial: optuna.trial.FrozenTrial, directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The weights a completed trial stored, as arrays (read without pickle).

    Parameters
    ----------
    trial : optuna.trial.FrozenTrial
        A trial with the user attribute :data:`record.WEIGHTS_ARTIFACT`.
    directory : str or path-like
        The study's artifact folder (see :func:`artifact_directory`).

    Returns
    -------
    dict of str to ndarray
        For ``MultiLayerNet.load_state_dict``: ``W1``, ``b1``, ... and, with batch
        normalization, ``gamma1``, ``beta1``, ``running_mean1``, ``running_var1``, ...

    Raises
    ------
    ArtifactError
        The trial stored no weights (not completed, or run before weights were
        stored), or the file is missing from ``directory`` or not a weights archive.
    """
    artifact_id = trial.user_attrs.get(record.WEIGHTS_ARTIFACT)
    if not artifact_id and trial.state == optuna.trial.TrialState.COMPLETE:  # run before weights were stored, say
        raise ArtifactError(
            f"weights of trial {trial.number} are not in the artifact folder {Path(directory).resolve()}: the trial "
            "recorded no weights artifact; evaluate it with --retrain"
        )
    if not artifact_id:
        raise ArtifactError(
            f"trial {trial.number} has no stored weights (state {trial.state.name}; only completed trials store them)"
        )
    store = FileSystemArtifactStore(Path(directory))
    with tempfile.TemporaryDirectory(prefix="hpo-weights-") as folder:
        path = Path(folder) / f"trial-{trial.number}-weights.npz"
        try:
            optuna.artifacts.download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (ArtifactNotFound, FileNotFoundError):
            raise ArtifactError(
                f"weights of trial {trial.number} (artifact {artifact_id}) are not in the artifact folder "
                f"{Path(directory).resolve()}; "
                "give the folder the workers wrote to with --artifact-dir, or evaluate with --retrain"
            ) from None
        except ValueError as error:  # an artifact id that is a path: not written by hpo
            raise ArtifactError(f"trial {trial.number}: {error}") from None
        try:
            return load_weights(path)
        except (OSError, ValueError, zipfile.BadZipFile) as error:
            raise ArtifactError(f"weights of trial {trial.number} cannot be read: {error}") from None
