"""Optuna samplers and pruners by the names a study file uses.

Optuna stores neither the sampler nor the pruner of a study, so every process
that runs trials builds them again from the study file with these functions.
The keyword arguments are the Optuna classes' own; they are checked against the
class signature so a misspelt argument is reported by name.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for ask-and-tell workers.

    Two changes to ``optuna.samplers.GridSampler``:

    - its ``after_trial`` calls ``study.stop()`` once the grid is done, which raises
      outside ``Study.optimize``; our workers (``hpo.tuning.worker``) use ask-and-tell and stop
      at the study's trial budget instead, so that call is left out;
    - a FAIL trial (interrupted, or its worker died) measured nothing and does not
      count against the budget, so its grid point is not visited: a later trial runs it.

    Set ``budget.trials`` to the number of grid points.
    """

    def after_trial(self, study, trial, state, values) -> None:  # noqa: D102 (see the class)
        return None

    def _get_unvisited_grid_ids(self, study: optuna.Study) -> list[int]:
        # Optuna's own version counts every finished state, FAIL included, as visited.
        visited, running = set(), set()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                TrialState.RUNNING)):
            if "grid_id" in trial.system_attrs and self._same_search_space(trial.system_attrs["search_space"]):
                (running if trial.state == TrialState.RUNNING else visited).add(trial.system_attrs["grid_id"])
        every = set(range(self._n_min_trials))
        return list(every - visited - running or every - visited)


class QMCSampler(optuna.samplers.QMCSampler):
    """Optuna's quasi-Monte Carlo sampler in which trial *n* takes point *n* of the sequence.

    Optuna's own counts the points taken in a study attribute that it reads and then
    writes back, without a lock (its source says so): two processes sampling at once
    can read the same count and take the same point (two ``hpo run`` of one file
    repeated parameter sets that way).  Trial numbers are unique in a study, so here
    the trial's number is the point's index: no two trials share a point, whichever
    process runs them, and the study attribute is not written at all.  The trials
    sampled before the search space is known (by the independent sampler) draw from a
    random stream of their own, seeded from (seed, trial number).
    """

    _trial_number = 0

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:  # noqa: D102
        # The first trials (before a search space is known) come from the independent sampler,
        # Optuna's RandomSampler(seed): one stream that every process and every resume would
        # repeat.  Trial n draws from a stream of its own, as TrialSeededSampler does.
        self._independent_sampler = optuna.samplers.RandomSampler(
            seed=TrialSeededSampler.trial_seed(int(self._seed) % 2**32, trial.number))
        super().before_trial(study, trial)

    def sample_relative(self, study, trial, search_space):  # noqa: D102 (see the class)
        self._trial_number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: dict[str, Any]) -> int:
        return self._trial_number


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A seeded sampler made anew for every trial, with a seed derived from (seed, trial number).

    Trial numbers are unique within a study (the storage hands them out), so no two
    trials draw from the same random stream, whichever process runs them: two
    `hpo run` of one study file at once, K workers, or a resumed study never repeat
    each other's samples, and a study run by one process is reproducible.  The
    sampler for trial *n* is built in :meth:`before_trial`, which ``study.ask()``
    calls once the trial exists, so relative samplers (CMA-ES, GP, multivariate TPE)
    and independent ones alike draw from that trial's stream.  Samplers keep what
    they learn in the study (trials, system attributes), not in the object, so a new
    object per trial samples as the old one would, with its own stream.

    Parameters
    ----------
    build : callable
        ``build(seed)`` returns a new sampler with that ``seed`` (an int).
    seed : int >= 0
        The study file's ``sampler.seed``.
    """

    def __init__(self, build: Callable[[int], optuna.samplers.BaseSampler], seed: int) -> None:
        self._build = build
        self._seed = seed
        self._sampler = build(seed)  # until the first trial

    @staticmethod
    def trial_seed(seed: int, trial_number: int) -> int:
        """The sampler seed of trial ``trial_number``: ``numpy.random.SeedSequence([seed, trial_number])``, 32 bits."""
        return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        """The sampler of the current trial."""
        return self._sampler

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:  # noqa: D102
        self._sampler = self._build(self.trial_seed(self._seed, trial.number))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):  # noqa: D102 (delegated)
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # noqa: D102 (delegated)
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):  # noqa: D102 (delegated)
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:  # noqa: D102 (delegated)
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # noqa: D102 (delegated)
        self._sampler.reseed_rng()

    def __str__(self) -> str:
        return f"{type(self).__name__}({self._sampler}, seed={self._seed})"


# Samplers whose seed fixes one sequence of points, indexed by trial number (see build_sampler).
_ONE_SEQUENCE_SAMPLERS = ("qmc", "grid")

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "grid": GridSampler,
    "bruteforce": optuna.samplers.BruteForceSampler,
}

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}


# Annotations of arguments that take Python objects, which a study file cannot give.
_OBJECT_TYPES = ("Callable", "Sampler", "Pruner", "FrozenTrial", "dict", "list", "Sequence", "Mapping", "Mutation", "Crossover")
_SCALARS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,)}


def _accepted_types(parameter: inspect.Parameter) -> list[str]:
    """Scalar types a keyword argument takes, read from its annotation (or default)."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        default = parameter.default
        return [type(default).__name__] if isinstance(default, (bool, int, float, str)) else list(_SCALARS)
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    if any(name in text for name in _OBJECT_TYPES):
        return []
    accepted = [name for name in _SCALARS if re.search(rf"\b{name}\b", text)]
    if "Literal" in text:
        accepted.append("str")
    return accepted


def _check_value(kind: str, key: str, value: Any, accepted: list[str]) -> None:
    if not accepted:
        raise ValueError(f"{kind}.{key}: takes a Python object, which a study file cannot give; remove it")
    if isinstance(value, bool):
        fits = "bool" in accepted
    else:
        fits = any(isinstance(value, _SCALARS[name]) and not isinstance(value, bool) for name in accepted)
    if not fits:
        raise ValueError(f"{kind}.{key} = {value!r}: expected {' or '.join(accepted)}")


def _new(cls: type, arguments: dict[str, Any], built: dict[str, Any] | None = None) -> Any:
    """``cls(**arguments, **built)`` without Optuna's ExperimentalWarning: the study file chose the class
    (``qmc``, ``bruteforce``, ...) and its arguments, experimental ones included."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        return cls(**arguments, **(built or {}))


def _construct(kind: str, name: str, cls: type, arguments: dict[str, Any], built: dict[str, Any] | None = None) -> Any:
    """``cls(**arguments, **built)``: ``arguments`` come from the study file and are checked,
    ``built`` are objects made here (the grid sampler's search space)."""
    signature = {
        parameter.name: parameter
        for parameter in inspect.signature(cls).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }
    for key, value in arguments.items():
        if key not in signature:
            raise ValueError(
                f"{kind}.{key}: not an argument of optuna.{kind}s.{cls.__name__} "
                f"(type = {name!r} takes: {', '.join(signature) or 'no arguments'})"
            )
        # Optuna checks few types itself; a wrong type would fail in the middle of a study.
        _check_value(kind, key, value, _accepted_types(signature[key]))
    try:
        return _new(cls, arguments, built)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{kind}: optuna.{kind}s.{cls.__name__} refused the arguments: {error}") from None


def build_sampler(name: str, arguments: dict[str, Any],
                  searched: dict[str, dict[str, Any]]) -> optuna.samplers.BaseSampler:
    """Build the Optuna sampler ``name`` with ``arguments``.

    Parameters
    ----------
    name : str
        A key of :data:`SAMPLERS`.
    arguments : dict
        Keyword arguments of the Optuna class (``seed``, ``n_startup_trials``, ...).
    searched : dict of str to dict
        The study's searched parameters as plain data, name -> ``{"choices": [...]}`` or
        ``{"low": .., "high": .., "log": .., "step": ..}``; the grid sampler's grid is
        their ``choices``.

    Returns
    -------
    optuna.samplers.BaseSampler
        With a ``seed`` given, a :class:`TrialSeededSampler`: trial *n* samples with the
        seed ``SeedSequence([seed, n])``, so no two trials of the study share a random
        stream.  The QMC and grid samplers are the exceptions: trial *n* takes the
        *n*-th point of one sequence (QMC's scrambled sequence, the grid's shuffled
        order) that the seed fixes, so every process needs the same seed, and the
        points are distinct per trial already.  Without a seed, the Optuna sampler
        itself, seeded from the operating system.

    Raises
    ------
    ValueError
        Unknown argument, a value the class refuses, a grid over a parameter without
        ``choices``, or a sampler whose optional dependency is missing.
    """
    arguments = dict(arguments)
    built: dict[str, Any] = {}
    if name == "grid":
        if "search_space" in arguments:
            raise ValueError("sampler.search_space: the grid is taken from the parameters' choices; remove it")
        grid = {}
        for parameter, search in searched.items():
            choices = search.get("choices")
            if choices is None:
                raise ValueError(
                    f"sampler.type = 'grid' needs every searched parameter as choices; "
                    f"parameters.{parameter} is a range"
                )
            grid[parameter] = choices
        if not grid:
            raise ValueError("sampler.type = 'grid' needs at least one parameter with choices")
        built = {"search_space": grid}
    if name == "tpe":
        # Parallel workers: running trials count as bad guesses, so workers spread out.
        arguments.setdefault("constant_liar", True)
    if name == "bruteforce":
        for parameter, search in searched.items():
            if search.get("log", False) or ("step" in search and search["step"] is None):
                raise ValueError(
                    f"sampler.type = 'bruteforce' enumerates every value; parameters.{parameter} needs "
                    "choices or a range with a step (and no log scale)"
                )
    if name == "gp" and importlib.util.find_spec("torch") is None:
        # Optuna's GPSampler fits its Gaussian process with PyTorch, which it imports only when a trial is sampled.
        raise ValueError("sampler.type = 'gp' needs PyTorch: pip install 'hpo-from-scratch[gp]' (or torch), "
                         "or choose another sampler")
    sampler = _construct("sampler", name, SAMPLERS[name], arguments, built)
    seed = arguments.get("seed")
    if name in _ONE_SEQUENCE_SAMPLERS or not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return sampler
    # Checked once above; each trial's sampler differs only in its seed.
    return TrialSeededSampler(lambda trial_seed: _new(SAMPLERS[name], {**arguments, "seed": trial_seed}, built), seed)


def build_pruner(name: str, arguments: dict[str, Any], *, epochs: int) -> optuna.pruners.BasePruner:
    """Build the Optuna pruner ``name`` with ``arguments``.

    Steps are epochs (1-based). Hyperband's ``max_resource`` defaults to ``epochs``.

    Raises
    ------
    ValueError
        Unknown argument or a value the class refuses.
    """
    arguments = dict(arguments)
    if name == "hyperband":
        arguments.setdefault("max_resource", epochs)
    if name in ("hyperband", "successive_halving"):
        minimum = arguments.get("min_resource")
        if isinstance(minimum, int) and not isinstance(minimum, bool) and minimum > epochs:
            raise ValueError(f"pruner.min_resource = {minimum} exceeds parameters.epochs = {epochs}; "
                             "nothing could be pruned")
    return _construct("pruner", name, PRUNERS[name], arguments)
