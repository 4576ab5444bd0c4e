"""The ``--out`` folder of ``hpo evaluate``: claimed atomically, filled by renaming a finished model into place.

Two commands given the same folder must not mix their files, and an interrupted or
failed save must leave the folder as it was.  A lock file created with
``O_CREAT | O_EXCL`` beside the folder lets exactly one command claim it; the model is
written into a fresh sibling folder and renamed into place (``os.replace``; with
``--force`` the old folder is renamed aside first, then removed).

The lock is an ``flock`` on that file, which the kernel drops when its process dies:
an ``hpo evaluate`` killed or interrupted at any moment never blocks the next one,
which removes the sibling folder the dead one left half written.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Self

from hpo.errors import HpoError


class ModelFolderError(HpoError):
    """The model folder cannot be claimed, written or replaced; one line."""


MODEL_FILE_PATTERN = re.compile(r"model_card\.json|weights\.npz|weights-trial-\d+\.npz")
"""Names of the files a saved model consists of (a card, one network's or ensemble members' weights)."""


class ModelFolder:
    """The ``--out`` folder of one ``hpo evaluate``, claimed before any training (:func:`prepare_model_directory`).

    Claimed by an exclusive ``flock`` of a lock file beside it (``.NAME.hpo-lock``), so that of two
    commands given the same folder exactly one goes on; the lock dies with its process.  The model is written into a fresh
    sibling folder and renamed into place (:meth:`install`): the named folder never holds half a model.
    Use it as a context manager; leaving it removes the lock, the unused sibling folder, and the folder
    itself if this claim created it and it is still empty.

    Raises
    ------
    ModelFolderError
        When made, as :func:`prepare_model_directory` says.
    """

    def __init__(self, path: Path, *, replace: bool) -> None:
        self.path = path
        self.replace = replace
        target = Path(os.path.realpath(path))  # a link to a folder: the folder it leads to is replaced
        if not target.name:
            raise ModelFolderError(f"{path} cannot hold a saved model; give a folder with --out")
        self._target = target
        self._lock = target.with_name(f".{target.name}.hpo-lock")
        self._staging: Path | None = None
        self._created = False
        self._lock_descriptor: int | None = None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ModelFolderError(f"cannot create the model folder {path}: {error.strerror or error}") from None
        self._lock_descriptor = self._claim()
        try:
            self._clean_up_after_a_dead_claim()
            self._check_contents()
            try:
                os.mkdir(target)  # atomic: fails if it exists
                self._created = True
            except FileExistsError:
                if not target.is_dir():
                    raise ModelFolderError(f"cannot create the model folder {path}: a file is in the way") from None
            # Made with the umask's modes, as the model folder will be (mkdtemp would make it 0700).
            self._staging = target.with_name(f".{target.name}.hpo-new-{uuid.uuid4().hex}")
            os.mkdir(self._staging)
        except OSError as error:
            self.release()
            raise ModelFolderError(f"cannot create the model folder {path}: {error.strerror or error}") from None
        except BaseException:
            self.release()
            raise

    def _clean_up_after_a_dead_claim(self) -> None:
        """Remove the half-written sibling folders of a claim that died; put back a model it had moved aside.

        A ``--force`` save killed between its two renames leaves the old model in ``.NAME.hpo-old-*`` and no
        folder: that model is renamed back into place, as if the save had never started.
        """
        prefix = f".{glob.escape(self._target.name)}.hpo-"
        for orphan in self._target.parent.glob(prefix + "new-*"):
            shutil.rmtree(orphan, ignore_errors=True)
        moved_aside = sorted(self._target.parent.glob(prefix + "old-*"), key=lambda path: path.stat().st_mtime)
        for orphan in reversed(moved_aside):  # the newest first: the model the folder held last
            if not self._target.exists():
                os.replace(orphan, self._target)
            else:
                shutil.rmtree(orphan, ignore_errors=True)

    def _claim(self) -> int:
        """Open and ``flock`` the lock file; its descriptor. Retried when the file was replaced meanwhile.

        Raises
        ------
        ModelFolderError
            Another live process holds the lock, or the file cannot be made.
        """
        while True:
            try:
                descriptor = os.open(self._lock, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as error:
                raise ModelFolderError(f"cannot create the model folder {self.path}: {error.strerror or error}") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                raise ModelFolderError(f"{self.path} is being written by another hpo evaluate; wait for it to end "
                                       "or choose another --out") from None
            try:
                current = os.stat(self._lock).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(descriptor).st_ino:  # not removed by a releasing holder since we opened it
                os.ftruncate(descriptor, 0)
                os.write(descriptor, f"{os.getpid()}\n".encode())
                return descriptor
            os.close(descriptor)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def staging(self) -> Path:
        """The sibling folder the model is written into before :meth:`install`."""
        if self._staging is None:
            raise ModelFolderError(f"the model folder {self.path} was released")
        return self._staging

    def _check_contents(self) -> None:
        """Refuse a folder that holds files of no saved model, or (without ``replace``) a saved model.

        Raises
        ------
        ModelFolderError
            As said; the message names one such file.
        """
        target = self._target
        if not target.is_dir():
            return
        names = sorted(entry.name for entry in target.iterdir())
        foreign = [name for name in names if not MODEL_FILE_PATTERN.fullmatch(name) or (target / name).is_dir()]
        if foreign:
            what = ("--force replaces only a saved model; move it away or choose another --out" if self.replace
                    else "choose another --out (a new or empty folder)")
            raise ModelFolderError(f"{self.path} holds {foreign[0]}, which is not a saved model's file; {what}")
        if names and not self.replace:
            raise ModelFolderError(f"{self.path} already holds a saved model; choose another --out, or --force to "
                                  "replace it")

    def install(self) -> None:
        """Put the model written in :attr:`staging` in place of the folder's contents, by renames.

        Raises
        ------
        ModelFolderError
            The folder now holds files of no saved model (or, without ``replace``, a model), or a rename failed;
            the folder then keeps what it held.
        """
        self._check_contents()
        staging, target = self.staging, self._target
        try:
            if not target.exists() or not any(target.iterdir()):
                os.replace(staging, target)  # over an empty folder, allowed
            else:
                aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.hpo-old-"))
                os.replace(target, aside)
                try:
                    os.replace(staging, target)
                except OSError:
                    os.replace(aside, target)
                    raise
                shutil.rmtree(aside, ignore_errors=True)
        except OSError as error:
            raise ModelFolderError(f"cannot save the model in {self.path}: {error.strerror or error}") from None
        self._staging = None
        self._created = False

    def release(self) -> None:
        """Remove the lock, the unused sibling folder, and the folder if this claim made it and it is empty."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        if self._created:
            with contextlib.suppress(OSError):
                self._target.rmdir()  # only if still empty
            self._created = False
        if self._lock_descriptor is not None:
            with contextlib.suppress(FileNotFoundError):
                self._lock.unlink()  # while still holding it: a waiter that opened it retries on a new file
            os.close(self._lock_descriptor)
            self._lock_descriptor = None


def prepare_model_directory(directory: str | Path, *, overwrite: bool = False) -> ModelFolder:
    """Claim the folder a model will be saved in, before any training (see :class:`ModelFolder`).

    Parameters
    ----------
    directory : str or Path
        The ``--out`` folder: new, empty, or (with ``overwrite``) holding a saved model only.
    overwrite : bool
        ``--force``: the saved model in the folder is replaced, as a whole, by the new one.

    Returns
    -------
    ModelFolder
        To pass to :func:`save_checked_model`; leave it (``with``) when done.

    Raises
    ------
    ModelFolderError
        Another hpo evaluate claimed the folder (its lock file exists); the folder already holds a
        saved model and ``overwrite`` is False; it holds a file that is not a saved model's; or it
        cannot be created (a file is in the way, no permission).
    """
    return ModelFolder(Path(directory), replace=overwrite)
