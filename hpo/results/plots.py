"""Pictures of a study, as PNG files: where good values lie and how trials learned.

Five figures, one function each, every one taking an :class:`optuna.Study` and
returning a :class:`matplotlib.figure.Figure` (or raising :class:`PlotUnavailable`
with the reason when the study cannot give that picture):

- :func:`optimization_history` -- Optuna's value-per-trial plot with the best so far;
- :func:`intermediate_values` -- Optuna's per-epoch validation metric of every trial
  (the learning curves the pruner judged);
- :func:`param_importances` -- Optuna's hyperparameter importances (PED-ANOVA);
- :func:`learning_rate_weight_decay_map` -- the book's view (section 6.5.3) of where
  good learning rates and weight decays lie: a log-log scatter of the trials colored
  by their validation metric;
- :func:`top_learning_curves` -- the book's grid of the best trials' learning curves
  (section 6.5.3): validation accuracy solid, training accuracy dashed.

:func:`write_plots` draws them all and writes the ones that can be drawn (``hpo plot``
selects matplotlib's Agg backend: files only, no display).  Example::

    study = optuna.load_study(study_name="digits", storage="sqlite:///hpo.db")
    result = write_plots(study, "plots")
    result.written    # [Path('plots/optimization_history.png'), ...]
    result.skipped    # {'param_importances.png': 'importances need at least 2 completed trials; ...'}
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import optuna
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from hpo.errors import HpoError
from hpo.store import record

# Pixel size of every PNG: FIGURE_SIZES inches (the grid: grid_size) at DPI dots per inch.
DPI = 100
FIGURE_SIZES: dict[str, tuple[float, float]] = {
    "optimization_history": (9, 5.5),
    "intermediate_values": (9, 5.5),
    "param_importances": (9, 5.5),
    "learning_rate_weight_decay": (8, 6.5),
}
TOP_TRIALS = 20  # panels of the learning-curve grid: 4 rows of 5, as in the book
GRID_COLUMNS = 5
METRIC_LABELS = {"validation_accuracy": "validation accuracy", "validation_loss": "validation loss"}


class PlotUnavailable(HpoError):
    """The study cannot give this figure; the message says why, in one line."""


@dataclass
class PlotResult:
    """What :func:`write_plots` did: the files written and, per skipped file, why."""

    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------- helpers
def _metric_label(study: optuna.Study) -> str:
    """'validation accuracy' or 'validation loss', from the study file stored with the study."""
    metric = record.stored_metric(study)
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _single_objective(study: optuna.Study) -> None:
    if len(study.directions) != 1:
        raise PlotUnavailable(f"the study has {len(study.directions)} objectives; plots read single-objective studies")


def _completed(study: optuna.Study) -> list[FrozenTrial]:
    _single_objective(study)
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise PlotUnavailable("no completed trial yet")
    return completed


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best first (respecting the study's direction); ties keep trial order.

    Raises
    ------
    PlotUnavailable
        The study has no completed trial, or more than one objective.
    """
    completed = _completed(study)
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(completed, key=lambda trial: (sign * trial.value, trial.number))


def _optuna_figure(draw: Callable[[], Any], size: tuple[float, float]) -> Figure:
    """Run one of Optuna's matplotlib plots quietly and hand back its figure at ``size`` inches.

    Optuna's plots are experimental (ExperimentalWarning on every call) and switch
    pyplot to the ggplot style globally; both stay inside this call.
    """
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = draw()
        figure = axes.figure
        figure.set_size_inches(*size)
        figure.set_dpi(DPI)
        return figure


def _constrained(figure: Figure) -> Figure:
    """Lay out title, labels and legend without overlap (matplotlib's constrained layout)."""
    figure.set_layout_engine("constrained")
    return figure


# ----------------------------------------------------------------- Optuna's figures
def optimization_history(study: optuna.Study) -> Figure:
    """Objective value of every completed trial against its number, with the best so far.

    Optuna's :func:`optuna.visualization.matplotlib.plot_optimization_history`, relabelled
    with the study's metric.

    Parameters
    ----------
    study : optuna.Study
        A single-objective study.

    Returns
    -------
    matplotlib.figure.Figure
        ``FIGURE_SIZES["optimization_history"]`` inches at :data:`DPI`.

    Raises
    ------
    PlotUnavailable
        No completed trial, or several objectives.
    """
    _completed(study)
    label = _metric_label(study)
    figure = _optuna_figure(
        lambda: optuna.visualization.matplotlib.plot_optimization_history(study, target_name=label),
        FIGURE_SIZES["optimization_history"],
    )
    axes = figure.axes[0]
    axes.set_title(f"{study.study_name}: {label} per trial (pruned and failed trials not shown)")
    axes.set_xlabel("trial number")
    axes.set_ylabel(label)
    handles, labels = axes.get_legend_handles_labels()
    labels = ["best so far" if text == "Best Value" else f"{text} of a completed trial" for text in labels]
    axes.legend(handles, labels,
                loc="lower right" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "upper right")
    return _constrained(figure)


def intermediate_values(study: optuna.Study) -> Figure:
    """The metric each trial reported after every epoch (``trial.report(value, epoch)``).

    Optuna's :func:`optuna.visualization.matplotlib.plot_intermediate_values`: the
    curves the pruner compared (book section 6.5.2: give up early on bad values).
    Pruned trials' curves are drawn grey and dashed, so the figure shows where the
    pruner stopped them; the per-trial legend is dropped (it outgrows the figure).

    Parameters
    ----------
    study : optuna.Study

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    PlotUnavailable
        No trial reported an epoch, or several objectives.
    """
    _single_objective(study)
    trials = study.get_trials(deepcopy=False)
    # Optuna draws the curves of complete, pruned and running trials only.
    if not any(trial.intermediate_values for trial in trials
               if trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        raise PlotUnavailable("no complete, pruned or running trial has reported an epoch yet")
    label = _metric_label(study)
    figure = _optuna_figure(lambda: optuna.visualization.matplotlib.plot_intermediate_values(study),
                            FIGURE_SIZES["intermediate_values"])
    axes = figure.axes[0]
    states = {f"Trial{trial.number}": trial.state for trial in trials}
    for line in axes.get_lines():
        state = states.get(line.get_label())
        if state == TrialState.PRUNED:
            line.set(color="0.6", linestyle="--", alpha=0.6, zorder=1)
        elif state == TrialState.COMPLETE:
            line.set(zorder=2)
    if axes.get_legend() is not None:
        axes.get_legend().remove()
    axes.legend(handles=[Line2D([], [], color="tab:blue", marker=".", label="completed trial"),
                         Line2D([], [], color="0.6", linestyle="--", label="pruned trial")],
                loc="lower right" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "upper right")
    axes.set_title(f"{study.study_name}: {label} after each epoch (learning curves)")
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(label)
    return _constrained(figure)


def param_importances(study: optuna.Study) -> Figure:
    """How much of the variation of the objective each searched parameter explains.

    Optuna's :func:`optuna.visualization.matplotlib.plot_param_importances` with its
    default evaluator (PED-ANOVA, Watanabe et al., IJCAI 2023).

    Parameters
    ----------
    study : optuna.Study

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    PlotUnavailable
        Fewer than 2 completed trials, fewer than 2 searched parameters, or several objectives.
    """
    completed = _completed(study)
    if len(completed) < 2:
        raise PlotUnavailable(f"importances need at least 2 completed trials; the study has {len(completed)}")
    searched = {name for trial in completed for name in trial.distributions}
    if len(searched) < 2:
        raise PlotUnavailable(f"importances compare searched parameters; the study searches {len(searched)}")
    label = _metric_label(study)
    try:
        figure = _optuna_figure(
            lambda: optuna.visualization.matplotlib.plot_param_importances(study, target_name=label),
            FIGURE_SIZES["param_importances"],
        )
    except (ValueError, RuntimeError) as error:  # e.g. every completed trial has the same value
        raise PlotUnavailable(f"Optuna could not compute importances: {error}") from None
    axes = figure.axes[0]
    axes.set_title(f"{study.study_name}: parameter importances for {label} (PED-ANOVA)", loc="left")
    axes.set_xlabel("importance (fraction of the total)")
    axes.set_ylabel("")
    if axes.get_legend() is not None:
        axes.get_legend().remove()
    return _constrained(figure)


# ----------------------------------------------------------------- the book's figures
def map_points(study: optuna.Study) -> list[FrozenTrial]:
    """The trials of :func:`learning_rate_weight_decay_map`: finished (complete or pruned)
    trials that sampled both ``learning_rate`` and ``weight_decay``, in trial order."""
    return [
        trial for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if "learning_rate" in trial.params and "weight_decay" in trial.params
    ]


def learning_rate_weight_decay_map(study: optuna.Study) -> Figure:
    """Where good values lie: learning rate against weight decay, log-log, colored by the metric.

    The book's section 6.5.3 samples both on a log scale and reads off the region
    of the best results to narrow the search (``hpo narrow``).  Completed trials
    are dots colored by their value (colorbar); pruned trials, which have no final
    value, are grey crosses; the best trial is ringed in red and labelled; the
    searched ranges of the stored study file are a dotted box.

    Parameters
    ----------
    study : optuna.Study
        Single-objective; ``learning_rate`` and ``weight_decay`` searched.

    Returns
    -------
    matplotlib.figure.Figure
        One point per trial of :func:`map_points`.

    Raises
    ------
    PlotUnavailable
        Learning rate or weight decay is not searched, no completed trial, or
        several objectives.
    """
    best = ranked(study)[0]
    points = map_points(study)
    if not points:
        missing = [name for name in ("learning_rate", "weight_decay") if name not in best.params]
        raise PlotUnavailable(f"{' and '.join(missing) or 'learning_rate and weight_decay'} not searched")
    label = _metric_label(study)
    figure = Figure(figsize=FIGURE_SIZES["learning_rate_weight_decay"], dpi=DPI, layout="constrained")
    axes = figure.add_subplot()
    completed = [trial for trial in points if trial.state == TrialState.COMPLETE]
    pruned = [trial for trial in points if trial.state == TrialState.PRUNED]
    if pruned:
        axes.scatter([t.params["learning_rate"] for t in pruned], [t.params["weight_decay"] for t in pruned],
                     marker="x", s=36, color="0.55", linewidths=1.2, label=f"pruned ({len(pruned)})", zorder=2)
    if completed:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        dots = axes.scatter(
            [t.params["learning_rate"] for t in completed], [t.params["weight_decay"] for t in completed],
            c=[t.value for t in completed], cmap="viridis" if maximize else "viridis_r",
            s=60, edgecolors="black", linewidths=0.5, label=f"completed ({len(completed)})", zorder=3,
        )
        colorbar = figure.colorbar(dots, ax=axes)
        colorbar.set_label(f"{label} of the trial")
    if "learning_rate" in best.params and "weight_decay" in best.params:
        x, y = best.params["learning_rate"], best.params["weight_decay"]
        axes.scatter([x], [y], s=260, facecolors="none", edgecolors="red", linewidths=2,
                     label=f"best: trial {best.number}, {best.value:.4f}", zorder=4)
        axes.annotate(f"trial {best.number}", (x, y), xytext=(10, 10), textcoords="offset points",
                      color="red", fontsize=10, fontweight="bold")
    axes.set_xscale("log")
    axes.set_yscale("log")
    xs, ys = [t.params["learning_rate"] for t in points], [t.params["weight_decay"] for t in points]
    searched = _searched_box(study)
    if searched is not None:
        (x_low, x_high), (y_low, y_high) = searched
        axes.add_patch(Rectangle((x_low, y_low), x_high - x_low, y_high - y_low, fill=False, linestyle=":",
                                 edgecolor="0.35", linewidth=1.2, label="searched range", zorder=1))
        xs, ys = xs + [x_low, x_high], ys + [y_low, y_high]
    _pad_log_limits(axes, xs, ys)
    axes.grid(True, which="major", alpha=0.35)
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("weight decay $\\lambda$ (log scale)")
    axes.set_title(f"{study.study_name}: where good values lie ({len(points)} finished trials)")
    axes.legend(loc="best", fontsize=9, framealpha=0.85)
    return figure


def _searched_box(study: optuna.Study) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """(learning rate low, high), (weight decay low, high) of the stored study file, if both are ranges."""
    parameters = record.stored_parameters(study)
    ranges = [parameters.get(name) for name in ("learning_rate", "weight_decay")]
    if all(isinstance(item, dict) and "low" in item and "high" in item for item in ranges):
        return tuple((float(item["low"]), float(item["high"])) for item in ranges)  # type: ignore[return-value]
    return None


def _pad_log_limits(axes: Any, xs: list[float], ys: list[float]) -> None:
    """A quarter decade of room around the points (one point alone gets a decade)."""
    for values, setter in ((xs, axes.set_xlim), (ys, axes.set_ylim)):
        low, high = math.log10(min(values)), math.log10(max(values))
        pad = 0.25 if high > low else 0.5
        setter(10 ** (low - pad), 10 ** (high + pad))


def top_learning_curves(study: optuna.Study, *, top: int = TOP_TRIALS) -> Figure:
    """The book's grid of the best trials' learning curves (section 6.5.3).

    Panels in rows of 5, best trial first (respecting the study's direction), each
    titled with its rank, value, learning rate and weight decay; validation accuracy
    solid, training accuracy dashed, per epoch, from the trial user attribute
    ``learning_curves`` written by :class:`hpo.tuning.objective.Objective`.

    Parameters
    ----------
    study : optuna.Study
    top : int >= 1
        At most this many panels (the book shows 20).

    Returns
    -------
    matplotlib.figure.Figure
        ``min(top, completed trials)`` axes, one per trial; shared y axis (accuracy
        in [0, 1]); :func:`grid_size` inches at :data:`DPI`.

    Raises
    ------
    PlotUnavailable
        No completed trial, or several objectives.
    """
    best = ranked(study)[:top]
    fixed = record.stored_parameters(study)
    columns = GRID_COLUMNS
    rows = math.ceil(len(best) / columns)
    figure = Figure(figsize=grid_size(rows), dpi=DPI, layout="constrained")
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(best):
            axes.remove()
            continue
        trial = best[index]
        curves = trial.user_attrs.get(record.LEARNING_CURVES) or {}
        validation = curves.get("validation_accuracy") or []
        training = curves.get("train_accuracy") or []
        epochs = range(1, max(len(validation), len(training)) + 1)
        axes.plot(epochs[:len(validation)], _nan(validation), color="tab:blue", linewidth=1.6)
        axes.plot(epochs[:len(training)], _nan(training), color="tab:orange", linewidth=1.2, linestyle="--")
        axes.set_ylim(0, 1.02)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        axes.set_title(
            f"#{index + 1} trial {trial.number}: {trial.value:.4f}\n"
            f"lr {_short(trial.params.get('learning_rate', fixed.get('learning_rate')))}, "
            f"wd {_short(trial.params.get('weight_decay', fixed.get('weight_decay')))}",
            fontsize=9,
        )
        if index % columns == 0:
            axes.set_ylabel("accuracy")
        if index + columns >= len(best):
            axes.set_xlabel("epoch")
            axes.xaxis.set_tick_params(labelbottom=True)
    figure.legend(handles=[Line2D([], [], color="tab:blue", linewidth=1.6, label="validation accuracy"),
                           Line2D([], [], color="tab:orange", linestyle="--", label="training accuracy")],
                  loc="outside lower center", ncols=2)
    figure.suptitle(f"{study.study_name}: learning curves of the best {len(best)} trials "
                    f"(book section 6.5.3)", fontsize=14)
    return figure


def grid_size(rows: int) -> tuple[float, float]:
    """Inches of the learning-curve grid with ``rows`` rows of 5 panels (16 x 12.9 for 4 rows)."""
    return (16.0, 2.9 * rows + 1.3)


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if value is None else value for value in values]


def _short(value: Any) -> str:
    if value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.2e}" if value != 0 else "0"
    return str(value)


# ----------------------------------------------------------------- all of them
FIGURES: dict[str, Callable[[optuna.Study], Figure]] = {
    "optimization_history": optimization_history,
    "intermediate_values": intermediate_values,
    "param_importances": param_importances,
    "learning_rate_weight_decay": learning_rate_weight_decay_map,
    "top_learning_curves": top_learning_curves,
}


def write_plots(study: optuna.Study, directory: str | Path) -> PlotResult:
    """Draw every figure of :data:`FIGURES` and write it as ``DIRECTORY/<name>.png``.

    Parameters
    ----------
    study : optuna.Study
    directory : str or Path
        Created (with parents) if missing; existing PNGs of the same names are replaced.

    Returns
    -------
    PlotResult
        ``written``: the PNG paths, in :data:`FIGURES` order; ``skipped``: file name ->
        one-line reason, for figures the study cannot give.

    Raises
    ------
    OSError
        The folder cannot be created or a file cannot be written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result = PlotResult()
    for name, draw in FIGURES.items():
        filename = f"{name}.png"
        try:
            figure = draw(study)
        except PlotUnavailable as reason:
            result.skipped[filename] = str(reason)
            continue
        try:
            path = directory / filename
            figure.savefig(path, dpi=DPI)
            result.written.append(path)
        finally:
            plt.close(figure)  # Optuna's figures are registered with pyplot
    return result
