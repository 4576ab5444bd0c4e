"""Checkpoints of running trials, kept in the study's artifact folder, and their hand-over to retries.

A running trial writes a :class:`models.checkpoint.Checkpoint` of its latest epoch every
``workers.checkpoint_every_epochs`` epochs (the network, the optimizer's state, the random
generators, the epoch, the learning curves so far, and the weights of its best epoch so
far) into the study's :class:`optuna.artifacts.FileSystemArtifactStore`, the folder that
holds the trained weights.  A new checkpoint replaces the previous one in three steps
(:class:`CheckpointKeeper`): write the new file, store its artifact id as the trial's user
attribute ``checkpoint_artifact_id`` (:data:`hpo.store.record.CHECKPOINT_ARTIFACT`), remove
the old file.  A worker killed between two steps leaves at most one file that no trial
names (an orphan), never a trial without its checkpoint.

Checkpoints are written with the store's own ``write`` under ids of their own
(``trial-<N>-epoch-<E>-checkpoint-<uuid>.npz``), not with ``optuna.artifacts.upload_artifact``:
that records every upload in the trial's system attributes, which a retry copies and
optuna-dashboard lists, and a checkpoint is replaced every few epochs.

When a trial goes stale, Optuna's retry (:class:`hpo.store.requeue.RetryStaleTrial`) queues a
new trial with the same parameters and two of the failed trial's user attributes: the
checkpoint's id and the seed (:data:`hpo.store.record.CARRIED_TO_RETRY`).  The retry reads the checkpoint (:func:`load_checkpoint`), reports the epochs
it holds as its own intermediate values and continues with the next epoch; its first own
checkpoint replaces the inherited one.  The worker removes a trial's checkpoint when it
finishes the trial itself (:func:`remove_checkpoint`); a trial failed elsewhere keeps it for
its retry.
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Callable

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.artifacts.exceptions import ArtifactNotFound

from models.checkpoint import Checkpoint

__all__ = ["CheckpointKeeper", "load_checkpoint", "remove_checkpoint", "save_checkpoint"]

_logger = logging.getLogger(__name__)


def save_checkpoint(checkpoint: Checkpoint, trial_number: int, artifact_store: FileSystemArtifactStore) -> str:
    """Write ``checkpoint`` as a new artifact (an uncompressed ``.npz``, no pickle); its id.

    Raises
    ------
    OSError
        The file cannot be written.
    """
    artifact_id = f"trial-{trial_number}-epoch-{checkpoint.epoch}-checkpoint-{uuid.uuid4().hex}.npz"
    buffer = io.BytesIO()
    checkpoint.write(buffer)
    buffer.seek(0)
    artifact_store.write(artifact_id, buffer)
    return artifact_id


def load_checkpoint(artifact_id: str, artifact_store: FileSystemArtifactStore) -> Checkpoint | None:
    """The checkpoint ``artifact_id``, or None (logged) when it is missing or cannot be read.

    A missing checkpoint (a worker with another artifact folder, a file removed by hand)
    costs the retry its head start, not its run: it then trains from epoch 1.
    """
    try:
        with artifact_store.open_reader(artifact_id) as stream:
            return Checkpoint.read(io.BytesIO(stream.read()))
    except (ArtifactNotFound, FileNotFoundError):
        problem = "it is not in the artifact folder"
    except (OSError, ValueError) as error:
        problem = f"it cannot be read ({error})"
    _logger.warning(f"checkpoint {artifact_id}: {problem}; the trial trains from epoch 1")
    return None


def remove_checkpoint(artifact_id: str | None, artifact_store: FileSystemArtifactStore | None) -> None:
    """Remove the checkpoint ``artifact_id`` if there is one (already removed is fine)."""
    if not artifact_id or artifact_store is None:
        return
    try:
        artifact_store.remove(artifact_id)
    except (ArtifactNotFound, FileNotFoundError):
        pass
    except (OSError, ValueError) as error:
        _logger.warning(f"checkpoint {artifact_id} not removed: {error}")


class CheckpointKeeper:
    """Keeps one checkpoint per running trial: ``keeper(checkpoint)`` replaces the current one.

    Parameters
    ----------
    trial_number : int
        For the file names.
    artifact_store : FileSystemArtifactStore
    store_attribute : callable
        ``store_attribute(artifact_id)`` records the id on the trial (the user attribute
        :data:`hpo.store.record.CHECKPOINT_ARTIFACT`); raises
        ``optuna.exceptions.UpdateFinishedTrialError`` when the trial was finished elsewhere.
    current : str, optional
        The checkpoint the trial holds already (the one a retry took over).
    """

    def __init__(self, trial_number: int, artifact_store: FileSystemArtifactStore,
                 store_attribute: Callable[[str], None], current: str | None = None) -> None:
        self.trial_number = trial_number
        self.artifact_store = artifact_store
        self.store_attribute = store_attribute
        self.current = current

    def __call__(self, checkpoint: Checkpoint) -> None:
        new = save_checkpoint(checkpoint, self.trial_number, self.artifact_store)
        try:
            self.store_attribute(new)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Failed elsewhere meanwhile: its retry took over the current checkpoint, not this one.
            remove_checkpoint(new, self.artifact_store)
            raise
        old, self.current = self.current, new
        remove_checkpoint(old, self.artifact_store)
