"""Reproduce the whole chapter: run its studies, write its figures, summarise its findings.

:func:`reproduce` is what ``hpo book --out DIR [--full] [--storage URL] [--section S ...]``
runs.  Items, in the chapter's order (figure files in ``DIR``), each named by its
section (:data:`hpo.book.SECTIONS`):

1. optimizer paths on f(x, y) = x^2/20 + y^2 (6.1.7): ``1_optimizer_paths.png``
2. optimizers on image data (6.1.8): ``2_optimizers.png``
3. activation histograms per weight init (6.2.2-6.2.3): ``3_activation_histograms.png``
4. weight init in training (6.2.4): ``4_weight_init.png``
5. batch norm at 16 weight scales (6.3.2): ``5_batch_norm.png``
6. overfitting, weight decay and dropout (6.4): ``6_overfitting.png``
7. random search against TPE with median pruning (6.5.3): ``7_search.png`` and the
   top-20 learning curves of each, ``7_top20_random.png`` and ``7_top20_tpe.png``

The studies are resumed when they exist, so a second run only redraws.  Given
``sections``, only those items run and ``findings.json`` holds their rows only.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import optuna

from hpo.book import SECTIONS, figures
from hpo.book import activations as activations_module
from hpo.book.experiments import (
    BOOK_STUDIES,
    STUDIES_DIRECTORY,
    SearchSummary,
    book_spec,
    curves_by,
    iterations_per_epoch,
    run_study,
    search_summary,
)
from hpo.book.findings import (
    activation_findings,
    batch_norm_wins,
    final_values,
    generalization_gaps,
    path_findings,
)
from hpo.book.paths import BOOK_OPTIMIZERS, optimizer_paths
from hpo.config.spec import StudySpec
from hpo.tuning.data import prepare_data

__all__ = ["reproduce"]

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "Momentum", "nesterov": "Nesterov", "adagrad": "AdaGrad",
                    "rmsprop": "RMSprop", "adam": "Adam"}
INIT_LABELS = {"xavier": "Xavier", "he": "He"}


def reproduce(out: str | Path, *, storage_url: str, full: bool = False, studies: str | Path = STUDIES_DIRECTORY,
              echo: Callable[[str], None] = print, progress: bool = True,
              sections: Collection[str] | None = None) -> list[dict[str, str]]:
    """Run every experiment of the chapter and write its figures to ``out``.

    Parameters
    ----------
    out : str or Path
        Folder for the PNG figures and ``findings.json``; created if missing.
    storage_url : str
        SQLAlchemy URL of the study database the studies run in.
    full : bool, default False
        The book's sizes (the study files as they are); False: quick sizes
        (:data:`hpo.book.experiments.BOOK_STUDIES`), studies named ``<name>_quick``.
    studies : str or Path
        Folder of the study files.
    echo : callable
        Receives one line per experiment.
    progress : bool
        A progress bar per study (on a terminal).
    sections : collection of str, optional
        Run only these items of :data:`hpo.book.SECTIONS` (e.g. ``{"6.5.3"}``); None runs all.

    Returns
    -------
    list of dict
        One row per experiment: ``section``, ``experiment``, ``finding`` (text with the
        measured numbers); also written to ``out/findings.json``.

    Raises
    ------
    hpo.errors.HpoError, ValueError
        Bad study files, storage or data (see :func:`hpo.book.experiments.run_study`), or
        a section that is not in :data:`hpo.book.SECTIONS`.
    """
    wanted = set(SECTIONS if sections is None else sections)
    if wanted - set(SECTIONS):
        raise ValueError(f"unknown section(s) {', '.join(sorted(wanted - set(SECTIONS)))}; "
                         f"the sections are {', '.join(SECTIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    specs = {key: book_spec(key, full=full, studies=studies) for key in BOOK_STUDIES}  # all files checked first

    def run(key: str) -> optuna.Study:
        spec = specs[key]
        echo(f"{BOOK_STUDIES[key].section} {key}: study {spec.name}, {spec.budget.trials} trials")
        started = time.perf_counter()
        study = run_study(spec, storage_url, progress=progress)
        echo(f"    done in {time.perf_counter() - started:.0f} s")
        return study

    rows = []
    if "6.1.7" in wanted:
        paths = optimizer_paths()
        figures.save(figures.optimizer_paths_figure(paths, {name: rate for name, (_, rate) in BOOK_OPTIMIZERS.items()}),
                     out / "1_optimizer_paths.png")
        rows.append(_paths_row(paths))
    if "6.1.8" in wanted:
        rows.append(_optimizers(specs["optimizers"], run("optimizers"), out))
    if "6.2.2-6.2.3" in wanted:
        values = activations_module.book_activations()
        figures.save(figures.activation_histograms_figure(values), out / "3_activation_histograms.png")
        rows.append(_activations_row(values))
    if "6.2.4" in wanted:
        rows.append(_weight_init(specs["weight_init"], run("weight_init"), out))
    if "6.3.2" in wanted:
        rows.append(_batch_norm(specs["batch_norm"], run("batch_norm"), out))
    if "6.4" in wanted:
        rows.append(_overfitting(specs, run("overfitting_weight_decay"), run("overfitting_dropout"), out))
    if "6.5.3" in wanted:
        rows.append(_search(run("search_random"), run("search_tpe"), out))

    (out / "findings.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


def _paths_row(paths: dict) -> dict[str, str]:
    found = path_findings(paths)
    distances = ", ".join(f"{name} {value['end_distance']:.2f}" for name, value in found.items())
    start = next(iter(found.values()))["start_distance"]
    return _row("6.1.7", "optimizer paths on x²/20 + y²",
                f"distance to (0, 0) after 30 steps (start {start:.2f}): {distances}; y changes sign "
                f"{found['SGD']['y_sign_changes']} times with SGD, {found['AdaGrad']['y_sign_changes']} with AdaGrad")


def _activations_row(values: dict) -> dict[str, str]:
    found = activation_findings(values)
    return _row("6.2.2-6.2.3", "activation histograms",
                f"std 1 + sigmoid: {found['saturated']:.0%} of outputs below 0.1 or above 0.9; std 0.01 + "
                f"sigmoid: {found['near_half']:.0%} in [0.4, 0.6]; He + ReLU: std of layer 5 / layer 1 = "
                f"{found['he_relu_ratio']:.2f}")


def _optimizers(spec: StudySpec, study: optuna.Study, out: Path) -> dict[str, str]:
    curves = curves_by(study, spec)
    per_epoch = iterations_per_epoch(spec)
    labels = {point: OPTIMIZER_LABELS[point] for point in curves}
    figures.save(figures.training_curves_figure(
        curves, labels=labels, iterations_per_epoch=per_epoch,
        title=f"Optimizers on Fashion-MNIST ({_train_images(spec)} training images, batch 128, same mini-batches; "
              "book, section 6.1.8)"), out / "2_optimizers.png")
    losses = final_values(curves, "train_loss")
    text = ", ".join(f"{labels[point]} {loss:.3f}" for point, loss in losses.items())
    epochs = spec.parameters.epochs
    return _row("6.1.8", "optimizers on image data",
                f"training loss in epoch {epochs} ({per_epoch * epochs} mini-batches): {text}; highest: "
                f"{labels[_highest(losses)]}, of the book's four (SGD, Momentum, AdaGrad, Adam): "
                f"{labels[_highest({point: losses[point] for point in BOOK_FOUR if point in losses})]}")


BOOK_FOUR = ("sgd", "momentum", "adagrad", "adam")
"""The optimizers of the book's figure 6-9."""


def _highest(losses: dict) -> Any:
    """The key of the highest loss; a diverged run (NaN) counts as the highest."""
    return max(losses, key=lambda point: math.inf if math.isnan(losses[point]) else losses[point])


def _weight_init(spec: StudySpec, study: optuna.Study, out: Path) -> dict[str, str]:
    curves = curves_by(study, spec)
    per_epoch = iterations_per_epoch(spec)
    labels = {point: INIT_LABELS[point] if isinstance(point, str) else f"std {point:g}" for point in curves}
    figures.save(figures.training_curves_figure(
        curves, labels=labels, iterations_per_epoch=per_epoch,
        title=f"Initial weights on Fashion-MNIST ({_train_images(spec)} training images, ReLU, SGD 0.01; "
              "book, section 6.2.4)"), out / "4_weight_init.png")
    losses = final_values(curves, "train_loss")
    text = ", ".join(f"{labels[point]} {loss:.3f}" for point, loss in losses.items())
    epochs = spec.parameters.epochs
    return _row("6.2.4", "weight init in training",
                f"training loss in epoch {epochs} ({per_epoch * epochs} mini-batches): {text} (ln 10 = {math.log(10):.3f})")


def _batch_norm(spec: StudySpec, study: optuna.Study, out: Path) -> dict[str, str]:
    curves = curves_by(study, spec)
    figures.save(figures.batch_norm_figure(curves, images=_train_images(spec)), out / "5_batch_norm.png")
    wins, compared, _ = batch_norm_wins(curves)
    return _row("6.3.2", "batch norm at 16 weight scales",
                f"batch norm ends with the higher training accuracy at {wins} of {compared} scales "
                f"({spec.parameters.epochs} epochs)")


def _overfitting(specs: dict[str, StudySpec], decay: optuna.Study, dropout: optuna.Study, out: Path) -> dict[str, str]:
    decay_curves = curves_by(decay, specs["overfitting_weight_decay"])
    dropout_curves = curves_by(dropout, specs["overfitting_dropout"])
    panels = {**{f"weight decay {point:g}": values for point, values in decay_curves.items()},
              **{f"dropout {point:g}": values for point, values in dropout_curves.items()}}
    data = prepare_data(specs["overfitting_dropout"].dataset)
    figures.save(figures.overfitting_figure(panels, train_images=len(data.t_train),
                                            held_out_images=len(data.t_validation)), out / "6_overfitting.png")
    decay_gaps = generalization_gaps(decay_curves)
    dropout_gaps = generalization_gaps(dropout_curves)
    epochs = specs["overfitting_dropout"].parameters.epochs
    return _row("6.4", "overfitting: weight decay, dropout",
                f"training minus held-out accuracy after {epochs} epochs: weight decay 0 "
                f"{decay_gaps.get(0.0, math.nan):.3f} -> 0.1 {decay_gaps.get(0.1, math.nan):.3f}; "
                f"dropout 0 {dropout_gaps.get(0.0, math.nan):.3f} -> 0.2 {dropout_gaps.get(0.2, math.nan):.3f}")


def _search(random_study: optuna.Study, tpe_study: optuna.Study, out: Path) -> dict[str, str]:
    from hpo.results.plots import top_learning_curves  # matplotlib with the Agg backend

    summaries = {"random search": search_summary(random_study), "TPE + median pruning": search_summary(tpe_study)}
    figures.save(figures.search_figure(summaries), out / "7_search.png")
    for name, study in (("random", random_study), ("tpe", tpe_study)):
        figures.save(top_learning_curves(study), out / f"7_top20_{name}.png")
    return _row("6.5.3", "random search vs TPE + pruning", _search_text(summaries))


def _search_text(summaries: dict[str, SearchSummary]) -> str:
    """Both searches' best and time, and the time each first reached random search's best.

    Both times run from the search's first trial start; their ratio compares TPE's time to
    the target with random search's own (not with its whole wall time, which includes the
    trials it ran after finding its best).
    """
    random, tpe = summaries["random search"], summaries["TPE + median pruning"]
    text = (f"best validation accuracy: random {random.best_value:.3f} in {random.wall_seconds:.0f} s, "
            f"TPE + pruning {tpe.best_value:.3f} in {tpe.wall_seconds:.0f} s ({tpe.pruned} of "
            f"{tpe.complete + tpe.pruned} pruned); ")
    if random.best_value is None:
        return text + "random search completed no trial"
    own = random.seconds_to_reach(random.best_value)
    reached = tpe.seconds_to_reach(random.best_value)
    if reached is None:
        return text + (f"random search first reached {random.best_value:.3f} after {own:.0f} s, "
                       "TPE + pruning never did")
    return text + (f"{random.best_value:.3f} first reached after {own:.0f} s by random search, after {reached:.0f} s "
                   f"by TPE + pruning ({reached / own:.2f} times random search's time)")


def _train_images(spec: StudySpec) -> int:
    return len(prepare_data(spec.dataset).t_train)


def _row(section: str, experiment: str, finding: str) -> dict[str, str]:
    return {"section": section, "experiment": experiment, "finding": finding}
