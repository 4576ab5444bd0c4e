"""What this machine can give a trial, and whether a study's networks fit in it.

Training a network of 64 hidden layers of 16,384 units (what a study file may
ask for) takes hundreds of gigabytes.  Before any trial runs, ``hpo run`` and
``hpo worker`` refuse a study whose smallest network (:func:`smallest_settings`)
cannot fit in the memory available (:func:`available_memory`); before each trial
builds its network, the objective ends a sampled network that cannot fit as
PRUNED with the user attribute ``too_large``.  The memory a network needs is
:func:`models.memory.training_memory`::

    needed = trial_memory(values, data)          # bytes
    if needed > available_memory(): ...
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import psutil

from hpo.config.spec import FloatRange, IntRange, Parameters, StudySpec
from hpo.errors import HpoError
from hpo.tuning.data import TuningData
from models.augmentation import augmentation_memory
from models.memory import training_memory

CGROUP_ROOT = Path("/sys/fs/cgroup")
"""Where the kernel shows control groups (cgroup v2 files at the top, v1 under ``memory/``)."""

# A cgroup v1 limit at or above this is "no limit" (the kernel shows 2**63 rounded to pages).
_UNLIMITED = 2**60
# Settings that change a network's memory: chosen by name or count (every convolution block halves
# the image the first Affine layer reads, so more blocks may need less), or the more the larger.
_CATEGORIES = ("optimizer", "activation", "batch_norm", "convolution_layers")
_SIZES = ("hidden_layers", "hidden_size", "batch_size", "dropout", "weight_decay", "convolution_channels")


class TooLargeError(HpoError):
    """The smallest network of a study cannot be trained in the memory available; one line."""


def available_memory() -> int:
    """Bytes this process can still allocate.

    psutil's ``virtual_memory().available`` (free memory plus what the kernel can
    reclaim), lowered inside a container to what the control group's limit leaves
    (:func:`cgroup_available`).

    Returns
    -------
    int
        Bytes.
    """
    available = psutil.virtual_memory().available
    limited = cgroup_available()
    return available if limited is None else min(available, limited)


def cgroup_available(root: Path = CGROUP_ROOT, membership: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes the memory limits of this process's control groups leave, or None without a limit.

    For the process's control group and each parent up to ``root``: the limit
    (cgroup v2 ``memory.max``, v1 ``memory.limit_in_bytes``) minus the usage
    (``memory.current``, ``memory.usage_in_bytes``) without the inactive file
    cache, which the kernel reclaims before it runs out (``inactive_file`` /
    ``total_inactive_file`` of ``memory.stat``, as ``docker stats`` counts it).
    The smallest over the groups that have a limit.

    Parameters
    ----------
    root : Path, default /sys/fs/cgroup
    membership : Path, default /proc/self/cgroup
        Lines ``ID:CONTROLLERS:PATH``; v2 is ``0::PATH``, v1 names ``memory``.

    Returns
    -------
    int or None
        Bytes (0 when a group is at or over its limit), or None when no group has a
        limit or the files cannot be read (not Linux, say).
    """
    try:
        lines = membership.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    groups: list[tuple[Path, str, str, str]] = []
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        relative = Path(path.lstrip("/"))
        if controllers == "":  # cgroup v2
            groups += [(root / folder, "memory.max", "memory.current", "inactive_file")
                       for folder in _with_parents(relative)]
        elif "memory" in controllers.split(","):  # cgroup v1
            groups += [(root / "memory" / folder, "memory.limit_in_bytes", "memory.usage_in_bytes",
                        "total_inactive_file") for folder in _with_parents(relative)]
    if not groups:  # no /proc/self/cgroup: the container's own groups are at the root
        groups = [(root, "memory.max", "memory.current", "inactive_file"),
                  (root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")]
    left = [_left(*group) for group in groups]
    limited = [value for value in left if value is not None]
    return min(limited) if limited else None


def _with_parents(relative: Path) -> list[Path]:
    """``a/b`` -> [a/b, a, .]: a group and every parent up to the root."""
    return [relative, *relative.parents] if relative != Path(".") else [relative]


def _left(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    try:
        limit_text = (folder / limit_file).read_text(encoding="ascii").strip()
        usage = int((folder / usage_file).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= _UNLIMITED:
        return None
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key and value.strip().isdigit():
                inactive = int(value)
    except OSError:
        pass
    return max(0, int(limit_text) - max(0, usage - inactive))


def trial_memory(values: dict[str, Any], data: TuningData, *, keep_best_weights: bool = True) -> int:
    """Bytes that training the network of one trial's settings takes on ``data``.

    Parameters
    ----------
    values : dict
        All settings of a trial (:func:`hpo.tuning.objective.suggest_parameters`).
    data : TuningData
        Its sizes: features, classes, training and validation rows, and the image
        shape the convolution blocks read (``convolution_layers``).
    keep_best_weights : bool, default True
        The objective keeps a copy of the weights at the best epoch (it does when
        it stores weights).

    Returns
    -------
    int
        :func:`models.memory.training_memory` of that network, plus the buffers of
        augmentation (:func:`models.augmentation.augmentation_memory`), in bytes.
    """
    train_rows = len(data.x_train)
    batch_rows = min(values["batch_size"], train_rows)
    augmenting = values.get("augmentation", "none") != "none" and data.image_shape is not None
    channels = convolution_channels(values)
    return (augmentation_memory(batch_rows, data.image_shape) if augmenting else 0) + training_memory(
        data.n_features,
        [values["hidden_size"]] * values["hidden_layers"],
        data.n_classes,
        batch_size=values["batch_size"],
        train_rows=train_rows,
        evaluation_rows=len(data.x_validation) + (train_rows if values["evaluate_train"] else 0),
        optimizer=values["optimizer"],
        activation=values["activation"],
        batch_norm=values["batch_norm"],
        dropout=values["dropout"],
        weight_decay=values["weight_decay"],
        keep_best_weights=keep_best_weights,
        convolution_channels=channels,
        image_shape=data.image_shape if channels else None,
    )


def convolution_channels(values: dict[str, Any]) -> list[int]:
    """Filters of each convolution block of a trial's network: block k has ``convolution_channels * 2 ** (k - 1)``,
    as :func:`hpo.tuning.objective.build_network` builds it (none without ``convolution_layers``)."""
    return [values.get("convolution_channels", 16) * 2**k for k in range(values.get("convolution_layers", 0))]


def smallest_settings(parameters: Parameters, data: TuningData) -> dict[str, Any]:
    """The settings of the study's network that needs the least memory.

    Fixed values as they are; of a searched size (hidden_layers, hidden_size,
    batch_size, dropout, weight_decay, convolution_channels) the smallest value
    its range or choices allow; of the searched optimizer, activation, batch_norm
    and convolution_layers the choices (every count of blocks the range allows)
    whose network needs the least (:func:`trial_memory` on ``data``): more blocks
    may need less, as each halves the image the first Affine layer reads.  Other
    searched settings (learning rate, weight init) do not change the memory.

    Returns
    -------
    dict
        Every setting, as :func:`hpo.tuning.objective.suggest_parameters` gives them.
    """
    values = parameters.fixed()
    categories: dict[str, list[Any]] = {}
    for name, searched in parameters.searched().items():
        if name in _CATEGORIES and isinstance(searched, IntRange):  # convolution_layers: every count
            categories[name] = list(range(searched.low, searched.high + 1, searched.step))
        elif isinstance(searched, (IntRange, FloatRange)):
            values[name] = searched.low
        elif name in _CATEGORIES:
            categories[name] = list(searched.choices)
        elif name in _SIZES:
            values[name] = min(searched.choices)
        else:  # learning rate, weight init: no effect on memory
            values[name] = searched.choices[0]
    candidates = [dict(values, **dict(zip(categories, chosen))) for chosen in itertools.product(*categories.values())]
    return min(candidates, key=lambda candidate: trial_memory(candidate, data))


def describe_network(values: dict[str, Any]) -> str:
    """``64 hidden layers of 16384 units, batch 100, adam`` (and ``, batch norm`` when on); convolution blocks
    first: ``2 convolution blocks of 16, 32 filters, 1 hidden layer of 100 units, ...``."""
    layers = values["hidden_layers"]
    hidden = ("no hidden layer" if layers == 0 else
              f"{layers} hidden layer{'s' if layers != 1 else ''} of {values['hidden_size']} units")
    channels = convolution_channels(values)
    blocks = (f"{len(channels)} convolution block{'s' if len(channels) != 1 else ''} of "
              f"{', '.join(map(str, channels))} filters, " if channels else "")
    return f"{blocks}{hidden}, batch {values['batch_size']}, {values['optimizer']}" + (
        ", batch norm" if values["batch_norm"] else "")


def format_bytes(count: float) -> str:
    """``69.1 GB``, ``512.0 MB``, ``3.2 kB`` (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


LOWER = "lower hidden_layers, hidden_size or batch_size"
"""What to do about a network that does not fit (one without convolution blocks: :func:`lower`)."""


def lower(values: dict[str, Any]) -> str:
    """What to do about the network of ``values`` that does not fit: :data:`LOWER`, and with convolution
    blocks ``lower hidden_layers, hidden_size, batch_size or convolution_channels``."""
    if not values.get("convolution_layers", 0):
        return LOWER
    return "lower hidden_layers, hidden_size, batch_size or convolution_channels"


def check_study_fits(spec: StudySpec, data: TuningData, *, available: int | None = None) -> None:
    """Refuse a study whose smallest network cannot be trained in the memory available.

    Parameters
    ----------
    spec : StudySpec
    data : TuningData
    available : int, optional
        Bytes; default :func:`available_memory`.

    Raises
    ------
    TooLargeError
        One line: ``the smallest network of this study (64 hidden layers of 16384
        units, batch 100, adam) needs 69.1 GB to train; this machine has 21.4 GB
        available; lower hidden_layers, hidden_size or batch_size`` (:func:`lower`).
    """
    smallest = smallest_settings(spec.parameters, data)
    needed = trial_memory(smallest, data)
    available = available_memory() if available is None else available
    if needed > available:
        raise TooLargeError(
            f"the smallest network of this study ({describe_network(smallest)}) needs {format_bytes(needed)} to "
            f"train; this machine has {format_bytes(available)} available; {lower(smallest)}"
        )
