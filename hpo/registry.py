"""Optuna samplers and pruners by the names a study file uses.

Optuna stores neither the sampler nor the pruner of a study, so every process
that runs trials builds them again from the study file with these functions.
The keyword arguments are the Optuna classes' own; they are checked against the
class signature so a misspelt argument is reported by name.
"""

from __future__ import annotations

import importlib.util
import inspect
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from hpo.spec import Parameters

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
    "gp": optuna.samplers.GPSampler,
    "nsgaii": optuna.samplers.NSGAIISampler,
    "grid": optuna.samplers.GridSampler,
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


def _construct(kind: str, name: str, cls: type, arguments: dict[str, Any]) -> Any:
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
        # Optuna checks few types itself; a number given as text would fail mid-study.
        default = signature[key].default
        if isinstance(default, (bool, int, float)) and not isinstance(value, (bool, int, float)):
            raise ValueError(f"{kind}.{key} = {value!r}: expected a {type(default).__name__}")
    try:
        return cls(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{kind}: optuna.{kind}s.{cls.__name__} refused the arguments: {error}") from None


def build_sampler(
    name: str, arguments: dict[str, Any], parameters: "Parameters", *, seed_offset: int = 0
) -> optuna.samplers.BaseSampler:
    """Build the Optuna sampler ``name`` with ``arguments``.

    Parameters
    ----------
    name : str
        A key of :data:`SAMPLERS`.
    arguments : dict
        Keyword arguments of the Optuna class (``seed``, ``n_startup_trials``, ...).
    parameters : Parameters
        The study's parameters; the grid sampler's grid is their ``choices``.
    seed_offset : int
        Added to ``seed`` when one is given, so parallel workers draw different samples.

    Raises
    ------
    ValueError
        Unknown argument, a value the class refuses, a grid over a parameter without
        ``choices``, or a sampler whose optional dependency is missing.
    """
    arguments = dict(arguments)
    if seed_offset and arguments.get("seed") is not None:
        arguments["seed"] = int(arguments["seed"]) + seed_offset
    if name == "grid":
        if "search_space" in arguments:
            raise ValueError("sampler.search_space: the grid is taken from the parameters' choices; remove it")
        grid = {}
        for parameter, searched in parameters.searched().items():
            choices = getattr(searched, "choices", None)
            if choices is None:
                raise ValueError(
                    f"sampler.type = 'grid' needs every searched parameter as choices; "
                    f"parameters.{parameter} is a range"
                )
            grid[parameter] = choices
        if not grid:
            raise ValueError("sampler.type = 'grid' needs at least one parameter with choices")
        arguments["search_space"] = grid
    if name == "tpe":
        # Parallel workers: running trials count as bad guesses, so workers spread out.
        arguments.setdefault("constant_liar", True)
    if name == "gp" and importlib.util.find_spec("torch") is None:
        raise ValueError("sampler.type = 'gp' needs PyTorch: pip install torch, or choose another sampler")
    return _construct("sampler", name, SAMPLERS[name], arguments)


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
    return _construct("pruner", name, PRUNERS[name], arguments)
