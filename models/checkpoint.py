"""A checkpoint of a running training: everything :func:`models.trainer.train` needs to continue it.

A training interrupted after epoch *k* (a killed process, a preempted machine) and
continued from the checkpoint of epoch *k* ends with the same parameters and the
same history as one that ran through: the checkpoint holds the network's parameters
and batch-norm running statistics (:meth:`models.network.MultiLayerNet.state_dict`),
the optimizer's state (velocities, moments, step counts: ``state_dict()`` of
:mod:`models.optimizers`), the state of every random generator the training draws
from (the trainer's shuffling, the network's dropout masks), the epoch, the learning
curves so far and the loss that sets the divergence limit.  This is the pattern of
PyTorch's "saving and loading a general checkpoint" (model, optimizer, epoch, loss)
plus the generators, which PyTorch leaves to the user.

Serialized without pickle (:meth:`Checkpoint.write`, :meth:`Checkpoint.read`): one
uncompressed NumPy ``.npz`` archive whose arrays keep their dtype, and one entry
``checkpoint.json`` (a string array) for the scalars, the generator states (NumPy's
``bit_generator.state``, JSON-able for PCG64) and the history.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

__all__ = ["FORMAT", "Checkpoint", "random_generators"]

FORMAT = 1
"""Version of the serialized layout, stored in every checkpoint; :meth:`Checkpoint.read` refuses others."""

_JSON_ENTRY = "checkpoint.json"
_ARRAY = "__array__"  # in the JSON tree, {"__array__": entry} stands for the archive's array ``entry``


@dataclass
class Checkpoint:
    """The state of a training after a completed epoch (see the module docstring).

    Attributes
    ----------
    epoch : int
        Epochs completed, >= 1; training continues with epoch ``epoch + 1``.
    network : dict of str to ndarray
        ``network.state_dict()``: parameters ``W1``, ``b1``, ... (and ``gamma``, ``beta``,
        ``running_mean``, ``running_var`` with batch norm), in the network's dtype.
    optimizer : dict
        ``optimizer.state_dict()``: per-parameter arrays (e.g. ``{"v": {"all": ndarray (P,)}}``)
        and counts (``"updates"``, Adam's ``"t"``).
    generators : dict of str to dict
        Name (see :func:`random_generators`) -> ``numpy.random.Generator.bit_generator.state``.
    history : list of dict
        One ``dataclasses.asdict(EpochMetrics)`` per completed epoch, in order (floats in
        the history's units: losses in nats, accuracies as fractions, seconds).
    first_loss : (float, int) or None
        (first mini-batch loss, number of classes): what sets the divergence limit
        (:func:`models.trainer.divergence_limit`).
    extras : dict of str to ndarray (or to such dicts)
        Arrays a caller keeps with the checkpoint (the service keeps the weights of the
        best epoch so far here); the trainer neither writes nor reads them.

    Notes
    -----
    The arrays of a checkpoint handed out by ``train(..., on_checkpoint=...)`` include the
    optimizer's own state arrays, not copies: write or copy the checkpoint before
    ``on_checkpoint`` returns.
    """

    epoch: int
    network: dict[str, np.ndarray]
    optimizer: dict[str, Any]
    generators: dict[str, dict[str, Any]]
    history: list[dict[str, Any]]
    first_loss: tuple[float, int] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def write(self, stream: IO[bytes]) -> None:
        """Write the checkpoint to a binary stream as an uncompressed ``.npz`` archive (no pickle).

        Parameters
        ----------
        stream : binary file-like
            Open for writing (a file, ``io.BytesIO``); not closed here.

        Raises
        ------
        ValueError
            A name of an array holds ``/`` (the separator of the archive's entries).
        OSError
            The stream cannot be written.
        """
        arrays: dict[str, np.ndarray] = {}
        tree = {
            "format": FORMAT, "epoch": self.epoch, "generators": self.generators, "history": self.history,
            "first_loss": list(self.first_loss) if self.first_loss is not None else None,
            "network": _split(self.network, "network", arrays),
            "optimizer": _split(self.optimizer, "optimizer", arrays),
            "extras": _split(self.extras, "extras", arrays),
        }
        arrays[_JSON_ENTRY] = np.array(json.dumps(tree))
        np.savez(stream, **arrays)

    def to_bytes(self) -> bytes:
        """:meth:`write` into memory: the bytes of the ``.npz`` archive."""
        buffer = io.BytesIO()
        self.write(buffer)
        return buffer.getvalue()

    @classmethod
    def read(cls, source: IO[bytes] | bytes) -> Checkpoint:
        """Read a checkpoint written by :meth:`write`, refusing pickled objects.

        Parameters
        ----------
        source : binary file-like or bytes
            The archive (a file opened ``"rb"``, or the bytes of :meth:`to_bytes`).

        Returns
        -------
        Checkpoint

        Raises
        ------
        ValueError
            Not a checkpoint archive: damaged, not ``.npz``, holding pickled objects, or of
            another :data:`FORMAT`.
        """
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        try:
            archive = np.load(source, allow_pickle=False)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:  # ValueError: pickled data
            raise ValueError(f"not a checkpoint archive ({error})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("not a checkpoint archive (a single .npy array)")  # noqa: TRY004 (a file, not an argument)
        with archive:
            if _JSON_ENTRY not in archive.files:
                raise ValueError(f"not a checkpoint archive (no {_JSON_ENTRY})")
            try:
                arrays = {name: archive[name] for name in archive.files}
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
                raise ValueError(f"damaged checkpoint archive ({error})") from None
        try:
            tree = json.loads(str(arrays.pop(_JSON_ENTRY)))
        except ValueError as error:
            raise ValueError(f"damaged checkpoint archive ({error})") from None
        if not isinstance(tree, dict) or tree.get("format") != FORMAT:
            found = tree.get("format") if isinstance(tree, dict) else None
            raise ValueError(f"checkpoint format {found!r}, expected {FORMAT}")
        try:
            first = tree["first_loss"]
            if not isinstance(tree["generators"], dict) or not isinstance(tree["history"], list) or not all(
                    isinstance(row, dict) for row in tree["history"]):
                raise TypeError("generators must be an object and history a list of objects")
            return cls(
                epoch=int(tree["epoch"]),
                network=_join(tree["network"], arrays),
                optimizer=_join(tree["optimizer"], arrays),
                generators=tree["generators"],
                history=tree["history"],
                first_loss=(float(first[0]), int(first[1])) if first is not None else None,
                extras=_join(tree["extras"], arrays),
            )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise ValueError(f"damaged checkpoint contents ({type(error).__name__}: {error})") from None

    def check(self, epochs: int, network: Any, generators: dict[str, np.random.Generator]) -> None:
        """Raise ValueError unless this checkpoint can continue a training of ``epochs`` epochs of ``network``.

        It must be of epoch 0 to ``epochs`` with one history row per epoch, hold every
        parameter and running statistic of ``network`` in its shape, and a state for every
        generator of ``generators`` (:func:`random_generators`).  :func:`models.trainer.train`
        checks this before it changes anything, so does the service before a retry reports
        the checkpoint's epochs.

        Raises
        ------
        ValueError
            Naming the first thing that does not fit.
        """
        if not 0 <= self.epoch <= epochs:
            raise ValueError(f"resume_from: expected a checkpoint of epoch 0 to {epochs} (epochs), got epoch {self.epoch}")
        if len(self.history) != self.epoch:
            raise ValueError(f"checkpoint of epoch {self.epoch} holds {len(self.history)} history rows")
        for name, array in network.state_dict().items():
            saved = self.network.get(name)
            if saved is None or saved.shape != array.shape:
                found = "nothing" if saved is None else f"shape {saved.shape}"
                raise ValueError(f"checkpoint: {name} of shape {array.shape} expected, found {found}")
        missing = sorted(set(generators) - set(self.generators))
        if missing:
            raise ValueError(f"checkpoint: no generator state for {missing}; it holds {sorted(self.generators)}")

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """:meth:`read` from the bytes of :meth:`to_bytes`."""
        return cls.read(data)

    def restore_generators(self, generators: dict[str, np.random.Generator]) -> None:
        """Set each generator of ``generators`` (see :func:`random_generators`) to its saved state.

        Raises
        ------
        ValueError
            The checkpoint holds no state for one of the names (it was taken from a
            training with other generators, e.g. a network without dropout).
        """
        missing = sorted(set(generators) - set(self.generators))
        if missing:
            raise ValueError(f"checkpoint: no generator state for {missing}; it holds {sorted(self.generators)}")
        for name, generator in generators.items():
            generator.bit_generator.state = self.generators[name]


def random_generators(network: Any, rng: np.random.Generator) -> dict[str, np.random.Generator]:
    """Every random generator a training draws from, by name.

    ``"trainer"`` (``rng``: the order of the mini-batches), ``"network"`` (``network.rng``,
    if it has one: a MultiLayerNet's initial weights and dropout masks) and each layer
    of ``network.layers`` that keeps a generator of its own (``rng`` attribute: Dropout),
    under the layer's name.  The same Generator object may appear under several names
    (the service passes one Generator for all of them); its state is then saved and
    restored once per name, identically.

    Parameters
    ----------
    network : object
        E.g. a :class:`models.network.MultiLayerNet`.
    rng : numpy.random.Generator
        The trainer's generator.

    Returns
    -------
    dict of str to numpy.random.Generator
    """
    generators = {"trainer": rng}
    if isinstance(getattr(network, "rng", None), np.random.Generator):
        generators["network"] = network.rng
    for name, layer in getattr(network, "layers", {}).items():
        if isinstance(getattr(layer, "rng", None), np.random.Generator):
            generators[name] = layer.rng
    return generators


def _split(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """A JSON-able copy of ``tree`` in which each ndarray becomes ``{"__array__": path}``, stored in ``arrays``."""
    if isinstance(tree, np.ndarray):
        arrays[prefix] = tree
        return {_ARRAY: prefix}
    if isinstance(tree, dict):
        for key in tree:
            if not isinstance(key, str) or "/" in key:
                raise ValueError(f"checkpoint: name {key!r} under {prefix!r}: expected a str without '/'")
        return {key: _split(value, f"{prefix}/{key}", arrays) for key, value in tree.items()}
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _join(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The inverse of :func:`_split`."""
    if isinstance(tree, dict):
        if set(tree) == {_ARRAY}:
            return arrays[tree[_ARRAY]]
        return {key: _join(value, arrays) for key, value in tree.items()}
    return tree
