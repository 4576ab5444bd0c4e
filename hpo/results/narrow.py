"""Coarse-to-fine search: a new study file whose log-scale ranges shrink around the best trials.

The book's section 6.5.2 tunes hyperparameters in a loop: sample values from a
wide log-scale range, evaluate them on validation data, narrow the range to where
the good values lie (step 4), and repeat.  :func:`narrow_study_file` is step 4:

1. take the top ``K`` completed trials of the study (by value, respecting the
   study's direction);
2. for every searched ``log = true`` range (learning rate and weight decay, and
   any other), take the span of those trials' values, ``[min, max]``;
3. widen it by the margin factor ``m`` on a log scale: ``[min / m, max * m]``
   (the default ``m = 2`` adds about 0.3 decade at each end), round the ends
   outward to 3 significant digits, and clip to the original range;
4. write the study file again with those ranges and a new ``name``, editing the
   TOML with tomlkit so comments and layout survive; everything else stays.

Example::

    result = narrow_study_file("studies/digits.toml", study, top=5)
    result.path    # Path('studies/digits-narrow-1.toml'), validated by hpo.config.spec.load_spec
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import optuna
import tomlkit
from optuna.trial import FrozenTrial, TrialState

from hpo.config.names import check_study_name
from hpo.config.spec import FloatRange, IntRange, SpecError, StudySpec, load_spec
from hpo.errors import HpoError
from hpo.store import record

DEFAULT_MARGIN = 2.0
_NARROWED = re.compile(r"^(?P<base>.*)-narrow-(?P<round>\d+)$")


class NarrowError(HpoError):
    """The study file or study cannot be narrowed; the message is one line."""


@dataclass(frozen=True)
class NarrowedRange:
    """One log-scale range before and after narrowing, and the span of the top trials in it."""

    parameter: str
    old: tuple[float, float]
    new: tuple[float, float]
    top_span: tuple[float, float]

    @property
    def narrower(self) -> bool:
        """True if the new range is strictly inside the old one (it moved at least one end)."""
        return self.new != self.old


@dataclass(frozen=True)
class NarrowResult:
    """What :func:`narrow_study_file` wrote."""

    path: Path
    name: str
    ranges: list[NarrowedRange]
    top: int
    completed: int


def next_name(name: str) -> str:
    """``digits`` -> ``digits-narrow-1``; ``digits-narrow-1`` -> ``digits-narrow-2``."""
    match = _NARROWED.match(name)
    if match:
        return f"{match['base']}-narrow-{int(match['round']) + 1}"
    return f"{name}-narrow-1"


def default_output(study_file: str | Path) -> Path:
    """The new file next to the input: ``studies/digits.toml`` -> ``studies/digits-narrow-1.toml``."""
    path = Path(study_file)
    return path.with_name(next_name(path.stem) + (path.suffix or ".toml"))


def log_ranges(spec: StudySpec) -> dict[str, FloatRange | IntRange]:
    """The searched ``log = true`` ranges of a study file, name -> range, in file order."""
    return {name: value for name, value in spec.parameters.searched().items()
            if isinstance(value, (FloatRange, IntRange)) and value.log}


def check_matches(spec: StudySpec, study: optuna.Study) -> None:
    """Refuse a study file that is not the one the stored study was created from.

    The comparison is the resume check of :mod:`hpo.tuning.study`: direction, metric,
    dataset and parameters (:meth:`hpo.config.spec.StudySpec.identity`).

    Raises
    ------
    NarrowError
        The study was not created by hpo, or the file differs (the fields are named).
    """
    stored = record.stored_study_file(study)
    if stored is None:
        raise NarrowError(f"study {study.study_name!r} was not created by hpo (no study file record)")
    # The resume check's comparison, named to the study file's field ("parameters.learning_rate").
    differing = sorted({".".join(path.split(".")[:2]) for path, _, _ in record.differences(stored, spec.identity())})
    if differing:
        raise NarrowError(f"the study file does not match study {study.study_name!r} "
                          f"(differs in {', '.join(differing)}); give the file the study was run from")


def top_trials(study: optuna.Study, top: int) -> list[FrozenTrial]:
    """The ``top`` best completed trials, best first (respecting the study's direction).

    Raises
    ------
    NarrowError
        ``top`` < 1, several objectives, or fewer than ``top`` completed trials.
    """
    if top < 1:
        raise NarrowError(f"--top must be at least 1 (got {top})")
    if len(study.directions) != 1:
        raise NarrowError(f"study {study.study_name!r} has {len(study.directions)} objectives; "
                          "narrowing reads single-objective studies")
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(completed) < top:
        raise NarrowError(f"study {study.study_name!r} has {len(completed)} completed trial(s); "
                          f"--top {top} needs at least {top}")
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(completed, key=lambda trial: (sign * trial.value, trial.number))[:top]


def narrow_range(values: list[float], low: float, high: float, margin: float, *,
                 integer: bool = False) -> tuple[float, float]:
    """The log-scale span of ``values`` widened by ``margin``, rounded outward, clipped to [low, high].

    Parameters
    ----------
    values : list of float > 0
        The top trials' values of one parameter.
    low, high : float > 0
        The original range.
    margin : float >= 1
        Multiplicative: the span ``[min, max]`` becomes ``[min / margin, max * margin]``
        (``log10(margin)`` decades at each end).
    integer : bool
        Round the ends to integers (an integer log range) instead of 3 significant digits.

    Returns
    -------
    (new_low, new_high) : tuple of float (int if ``integer``)
        ``low <= new_low <= min(values)`` and ``max(values) <= new_high <= high``.
    """
    wide_low, wide_high = min(values) / margin, max(values) * margin
    if integer:
        return max(int(low), math.floor(wide_low)), min(int(high), math.ceil(wide_high))
    return max(low, _significant(wide_low, ROUND_FLOOR)), min(high, _significant(wide_high, ROUND_CEILING))


def _significant(value: float, rounding: str, digits: int = 3) -> float:
    number = Decimal(repr(value))
    return float(number.quantize(Decimal(1).scaleb(number.adjusted() - digits + 1), rounding=rounding))


def narrow_study_file(
    study_file: str | Path,
    study: optuna.Study,
    top: int,
    *,
    margin: float = DEFAULT_MARGIN,
    name: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
) -> NarrowResult:
    """Write the narrowed copy of ``study_file`` (book section 6.5.2, step 4).

    Parameters
    ----------
    study_file : str or Path
        The study file ``study`` was run from.
    study : optuna.Study
        Its stored study, with at least ``top`` completed trials.
    top : int >= 1
        How many of the best completed trials set the new ranges.
    margin : float >= 1
        See :func:`narrow_range`; default 2.
    name : str, optional
        The new study's name [default: :func:`next_name` of the file's name].
    out : str or Path, optional
        Where to write [default: :func:`default_output` of ``study_file``].
    force : bool
        Overwrite ``out`` if it exists.

    Returns
    -------
    NarrowResult

    Raises
    ------
    NarrowError
        The file has no searched log-scale range, does not match the study, the
        study has fewer than ``top`` completed trials, ``margin`` < 1, the new name
        equals the old one or breaks the rule of :func:`hpo.config.names.check_study_name`,
        or ``out`` exists (without ``force``).
    SpecError
        ``study_file`` is not a valid study file.
    OSError
        ``out`` cannot be written.
    """
    if not 1 <= margin < math.inf:
        raise NarrowError(f"--margin must be a finite number of at least 1 (got {margin:g}); 1 means no margin")
    spec = load_spec(study_file)
    ranges = log_ranges(spec)
    if not ranges:
        raise NarrowError(f"{study_file}: no searched range has log = true; nothing to narrow "
                          "(learning_rate and weight_decay ranges are log-scale)")
    check_matches(spec, study)
    best = top_trials(study, top)
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    new_name = name or next_name(spec.name)
    if new_name == spec.name:
        raise NarrowError(f"the new study needs a name other than {spec.name!r}")
    try:
        check_study_name(new_name)  # the default adds "-narrow-N", which can make a name too long
    except ValueError as error:
        raise NarrowError(f"the new study's name: {error}; choose one with --name") from None
    path = Path(out) if out is not None else default_output(study_file)
    if path.exists() and not force:
        raise NarrowError(f"{path} exists; use --force to overwrite it or --out to write elsewhere")

    document = tomlkit.parse(Path(study_file).read_text(encoding="utf-8"))
    document["name"] = new_name
    parameters = document["parameters"]
    narrowed = []
    for parameter, old in ranges.items():
        values = [trial.params[parameter] for trial in best]
        new = narrow_range(values, old.low, old.high, margin, integer=isinstance(old, IntRange))
        for key, before, after in (("low", old.low, new[0]), ("high", old.high, new[1])):
            if after != before:  # an unchanged end keeps its spelling (1e-1 stays 1e-1)
                parameters[parameter][key] = after
        narrowed.append(NarrowedRange(parameter, (old.low, old.high), new, (min(values), max(values))))
    header = [f"# Narrowed by `hpo narrow` from {Path(study_file).name} (study {spec.name!r}): the top {top} of",
              f"# {completed} completed trials, margin x{margin:g} in log space (book section 6.5.2, step 4)."]
    header += [f"#   {item.parameter}: {item.old[0]:g} .. {item.old[1]:g} -> {item.new[0]:g} .. {item.new[1]:g}"
               for item in narrowed]
    _write_valid("\n".join(header) + "\n" + tomlkit.dumps(document), path)
    return NarrowResult(path, new_name, narrowed, top, completed)


def _write_valid(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` only if it loads as a study file (validated beside its target,
    so a relative dataset directory resolves the same way)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".toml", prefix=".narrow-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        try:
            load_spec(temporary)
        except SpecError as error:  # a bug here, not the user's: say what went wrong
            raise NarrowError(f"the narrowed file would not be valid: {error}") from None
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
