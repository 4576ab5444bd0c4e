"""The chapter's figures, drawn with matplotlib from the numbers of the other modules.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot
(no display, no global state); :func:`save` writes it as a PNG.  Accuracies are
fractions shown as such, losses are mean cross-entropy in nats, times seconds.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from hpo.book.experiments import SearchSummary
from hpo.book.paths import f

__all__ = [
    "activation_histograms_figure", "batch_norm_figure", "optimizer_paths_figure", "overfitting_figure",
    "save", "search_figure", "training_curves_figure",
]

DPI = 110
# Labelled ticks of log-scale loss axes: 1, 2, 3, 5 per decade.
_LOG_TICKS = [mantissa * 10.0**exponent for exponent in range(-3, 4) for mantissa in (1, 2, 3, 5)]


def save(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` (its folder must exist) and return the path."""
    figure.savefig(path, dpi=DPI)
    return Path(path)


def optimizer_paths_figure(paths: dict[str, np.ndarray], rates: dict[str, float]) -> Figure:
    """Figure 6-8: each optimizer's path on the contour lines of f(x, y) = x^2/20 + y^2.

    Parameters
    ----------
    paths : dict of str to ndarray of shape (steps + 1, 2)
        Four paths (:func:`hpo.book.paths.optimizer_paths`), drawn in a 2 x 2 grid.
    rates : dict of str to float
        Learning rate per path, for the titles.
    """
    figure = Figure(figsize=(10, 7), layout="constrained")
    axes = figure.subplots(2, 2, sharex=True, sharey=True)
    x, y = np.meshgrid(np.linspace(-10, 10, 401), np.linspace(-5, 5, 201))
    levels = [0.2, 0.5, 1, 2, 3, 5, 7]
    for ax, (name, path) in zip(axes.flat, paths.items()):
        contours = ax.contour(x, y, f(x, y), levels=levels, colors="0.6", linewidths=0.8)
        ax.clabel(contours, fontsize=7, fmt="%g")
        ax.plot(path[:, 0], path[:, 1], "o-", color="tab:red", markersize=3, linewidth=1)
        ax.plot(0, 0, "+", color="black", markersize=12, markeredgewidth=2)
        end = np.hypot(*path[-1])
        ax.set_title(f"{name} (lr {rates[name]:g}): {len(path) - 1} steps, ends {end:.2f} from (0, 0)")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-5, 5)
    for ax in axes[1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("y")
    figure.suptitle("Optimizer paths on f(x, y) = x²/20 + y² from (-7, 2) (book, section 6.1.7)")
    return figure


def activation_histograms_figure(activations: dict[str, np.ndarray]) -> Figure:
    """Figures 6-10 to 6-14: histograms of each hidden layer's outputs, one row per configuration.

    Parameters
    ----------
    activations : dict of str to ndarray of shape (layers, examples, units)
        :func:`hpo.book.activations.book_activations`; the label names the
        activation ("sigmoid", "tanh" or "ReLU").  ReLU's exact zeros (about half)
        are counted in the panel's text, not drawn, so the rest stays visible.
    """
    rows = len(activations)
    layers = next(iter(activations.values())).shape[0]
    figure = Figure(figsize=(2.4 * layers, 1.9 * rows), layout="constrained")
    axes = figure.subplots(rows, layers, sharey="row", squeeze=False)
    for row, (label, values) in enumerate(activations.items()):
        if "tanh" in label:
            bounds = (-1.0, 1.0)
        elif "ReLU" in label:
            bounds = (0.0, float(np.quantile(values, 0.995)))
        else:
            bounds = (0.0, 1.0)
        for layer in range(layers):
            ax = axes[row, layer]
            data = values[layer].ravel()
            if "ReLU" in label:
                ax.text(0.97, 0.9, f"{np.mean(data == 0):.0%} zeros\nnot drawn", transform=ax.transAxes,
                        ha="right", va="top", fontsize=8)
                data = data[data > 0]
            ax.hist(data, bins=30, range=bounds, color="tab:blue")
            ax.set_xlim(*bounds)
            ax.tick_params(labelsize=8)
            if row == 0:
                ax.set_title(f"layer {layer + 1}")
            if row == rows - 1:
                ax.set_xlabel("activation value", fontsize=8)
        axes[row, 0].set_ylabel(f"{label}\ncount", fontsize=9)
    figure.suptitle("Hidden-layer activations of 1000 standard-normal inputs, 5 layers of 100 units "
                    "(book, sections 6.2.2-6.2.3)")
    return figure


def training_curves_figure(curves: dict[Any, dict[str, list]], *, labels: dict[Any, str], iterations_per_epoch: int,
                           title: str) -> Figure:
    """Figures 6-9 and 6-15: training loss and validation accuracy per epoch, one line per setting.

    Parameters
    ----------
    curves : dict of grid point to learning curves
        :func:`hpo.book.experiments.curves_by` of the optimizers or weight-init study.
    labels : dict of grid point to str
        Legend label per grid point.
    iterations_per_epoch : int
        Mini-batches per epoch: the x axis counts mini-batches (iterations), as the book's.
    title : str
    """
    figure = Figure(figsize=(11, 4.3), layout="constrained")
    loss_ax, accuracy_ax = figure.subplots(1, 2)
    for point, values in curves.items():
        iterations = iterations_per_epoch * np.arange(1, len(values["train_loss"]) + 1)
        label = labels[point] + (" (diverged)" if "diverged" in values else "")
        loss_ax.plot(iterations, _floats(values["train_loss"]), "o-", label=label)
        accuracy_ax.plot(iterations, _floats(values["validation_accuracy"]), "o-", label=label)
    loss_ax.set_yscale("log")
    loss_ax.yaxis.set_major_locator(ticker.FixedLocator(_LOG_TICKS))
    loss_ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    loss_ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    loss_ax.set_xlabel("mini-batches (iterations)")
    loss_ax.set_ylabel("training loss, mean of the epoch (log scale)")
    loss_ax.set_title("training loss")
    accuracy_ax.set_xlabel("mini-batches (iterations)")
    accuracy_ax.set_ylabel("validation accuracy")
    accuracy_ax.set_ylim(0, 1)
    accuracy_ax.set_title("validation accuracy")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(True, alpha=0.3)
    loss_ax.legend()
    figure.suptitle(title)
    return figure


def batch_norm_figure(curves: dict[tuple, dict[str, list]], *, images: int) -> Figure:
    """Figure 6-19: training accuracy per epoch with and without batch norm, one panel per weight std.

    Parameters
    ----------
    curves : dict of (weight std, batch_norm) to learning curves
        :func:`hpo.book.experiments.curves_by` of the batch-norm study (16 scales: a 4 x 4 grid).
    images : int
        Training images, for the title.
    """
    scales = list(dict.fromkeys(scale for scale, _ in curves))
    columns = 4
    rows = math.ceil(len(scales) / columns)
    figure = Figure(figsize=(12, 2.6 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    for ax, scale in zip(axes.flat, scales):
        for batch_norm, style, label in ((True, "-", "batch norm"), (False, "--", "without")):
            values = curves.get((scale, batch_norm))
            if values is not None:
                accuracy = values.get("train_eval_accuracy") or values["train_accuracy"]
                ax.plot(np.arange(1, len(accuracy) + 1), _floats(accuracy), style, label=label,
                        color="tab:blue" if batch_norm else "tab:green")
                if "diverged" in values:
                    ax.text(0.5, 0.5 if batch_norm else 0.4, f"{label}: diverged", transform=ax.transAxes,
                            ha="center", fontsize=9, color="tab:blue" if batch_norm else "tab:green")
        ax.set_title(f"W std = {scale:.4g}", fontsize=10)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(scales):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("training accuracy")
    axes[0, 0].legend(loc="lower right", fontsize=8)
    figure.suptitle(f"Batch normalization against none at 16 initial weight scales, {images} training images, "
                    "accuracy on them in test mode (book, section 6.3.2)")
    return figure


def overfitting_figure(panels: dict[str, dict[str, list]], *, train_images: int, held_out_images: int) -> Figure:
    """Figures 6-20 to 6-23: training and held-out accuracy per epoch, one panel per setting.

    Parameters
    ----------
    panels : dict of str to learning curves
        Panel title -> curves of that trial, e.g. {"weight decay 0": ..., "weight
        decay 0.1": ..., "dropout 0": ..., "dropout 0.2": ...}; drawn 2 per row.
        Training accuracy is ``train_eval_accuracy`` (test mode) when recorded.
    train_images, held_out_images : int
        Sizes of the training and validation splits, for the legends.
    """
    rows = math.ceil(len(panels) / 2)
    figure = Figure(figsize=(11, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, 2, sharex=True, sharey=True, squeeze=False)
    for ax, (title, values) in zip(axes.flat, panels.items()):
        train = _floats(values.get("train_eval_accuracy") or values["train_accuracy"])
        held_out = _floats(values["validation_accuracy"])
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "-", label=f"training ({train_images} images)")
        ax.plot(epochs, held_out, "--", label=f"held out (validation split, {held_out_images} images)")
        ax.set_title(f"{title}: final gap {train[-1] - held_out[-1]:.3f}")
        ax.set_ylim(0, 1.02)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    figure.suptitle(f"Overfitting of 784-100x6-10 on {train_images} images, and its cure (book, sections 6.4.1-6.4.3);\n"
                    "the validation split plays the book's test set, which tuning never touches")
    return figure


def search_figure(summaries: dict[str, SearchSummary]) -> Figure:
    """Best validation accuracy so far against wall time, one line per search (book, section 6.5.3).

    Parameters
    ----------
    summaries : dict of str to SearchSummary
        Label -> summary; the first is the reference (random search): a dotted line
        marks its best, and a marker where each search, the reference too, first reaches it.
    """
    figure = Figure(figsize=(8, 4.8), layout="constrained")
    ax = figure.subplots()
    reference = next(iter(summaries.values())).best_value
    longest = max(summary.wall_seconds for summary in summaries.values())
    for index, (label, summary) in enumerate(summaries.items()):
        if not summary.complete:
            continue  # nothing to draw
        line = f"{label}: best {summary.best_value:.3f}, {summary.wall_seconds:.0f} s, " \
               f"{summary.complete} complete, {summary.pruned} pruned"
        # Held until the search's end: later trials (pruned or worse) did not improve it.
        artist, = ax.step([*summary.finished_seconds, summary.wall_seconds],
                          [*summary.best_so_far, summary.best_so_far[-1]], where="post", label=line)
        if reference is not None:
            reached = summary.seconds_to_reach(reference)
            if reached is not None:
                ax.plot(reached, summary.best_so_far[np.searchsorted(summary.finished_seconds, reached)], "o",
                        color=artist.get_color(), markersize=8)
                right = reached > 0.5 * longest  # the text on the side with room for it
                ax.annotate(f"{label} reaches {'its' if index == 0 else 'that'} best after {reached:.0f} s",
                            (reached, reference), xytext=(-10 if right else 10, -25 - 14 * index),
                            textcoords="offset points", ha="right" if right else "left", fontsize=9,
                            color=artist.get_color(), bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                                                            "ec": "none", "alpha": 0.85})
    if reference is not None:
        ax.axhline(reference, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("wall time since the search began (s)")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_title("Learning rate and weight decay search (book, section 6.5.3)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    return figure


def _floats(values: list[float | None]) -> np.ndarray:
    """A curve as float64, NaN where a value was not finite (stored as None)."""
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)
