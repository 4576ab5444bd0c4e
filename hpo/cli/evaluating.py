"""``hpo evaluate``: the one command that reads the test set."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import optuna

from hpo.cli.app import main
from hpo.cli.common import (
    artifact_dir_option,
    format_option,
    load_study,
    storage_option,
    study_name_option,
)
from hpo.config.names import file_name, path_inside
from hpo.errors import HpoError
from hpo.results.ensemble import evaluate_ensemble, select_top_trials
from hpo.results.evaluate import (
    STORED_WEIGHTS_BY_DEFAULT,
    Evaluation,
    check_made_by_hpo,
    evaluate_trial,
    save_checked_model,
    select_trial,
)
from hpo.results.model_folder import ModelFolder, prepare_model_directory
from hpo.results.report import write_rows
from hpo.store.artifacts import artifact_directory, download_weights
from hpo.store.storage import storage_url

MODELS_DIRECTORY = Path("hpo-models")
"""Parent of the default --out folder of `hpo evaluate`, in the current folder."""


@main.command()
@storage_option
@study_name_option()
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Trial to evaluate [default: the best].")
@click.option("--out", "out_directory",
              help="A new or empty folder for weights.npz and model_card.json [default: "
                   "./hpo-models/STUDY-trial-N, or STUDY-trial-N-retrained with --retrain].")
@click.option("--stored-weights/--retrain", default=STORED_WEIGHTS_BY_DEFAULT, show_default=True,
              help="Test the weights the trial stored (its best epoch), or retrain the trial's network on "
                   "training + validation data.")
@click.option("--ensemble", "ensemble_size", type=click.IntRange(min=1), metavar="K",
              help="Combine the top K completed trials by averaging their softmax outputs [default: 1, one "
                   "network].")
@artifact_dir_option("Folder of the stored weights.")
@click.option("--force", is_flag=True, help="Replace a model already saved in the --out folder (the whole "
                                            "folder; refused if it holds other files).")
@format_option(("table", "json"), help="table: report for people; json: the model card.")
def evaluate(storage: str | None, study_name: str | None, trial_number: int | None, out_directory: str | None,
             stored_weights: bool, ensemble_size: int | None, artifact_dir: str | None, force: bool,
             output_format: str) -> None:
    """Test the best (or --trial N) completed trial on the test set.

    The trial's own weights (its best epoch) are loaded from the artifact folder (or,
    with --retrain, the network is rebuilt with the trial's parameters and seed and
    trained on training + validation data for the epochs at which the trial did best);
    it prints the test accuracy, a per-class table and the confusion matrix, and saves
    the weights with a JSON model card.  With --ensemble K the top K completed trials
    are each made so and their softmax outputs averaged; every member's weights and one
    card are saved.
    """
    if ensemble_size is not None and ensemble_size > 1 and trial_number is not None:
        raise HpoError("--trial and --ensemble exclude each other: --ensemble K takes the top K trials")
    study = load_study(storage, study_name)
    check_made_by_hpo(study)  # before looking for its trials' weights
    if ensemble_size is not None and ensemble_size > 1:
        _evaluate_ensemble(study, ensemble_size, storage, out_directory, stored_weights, artifact_dir, force,
                           output_format)
        return
    trial = select_trial(study, trial_number)
    default = _default_model_directory(study, f"trial-{trial.number}", stored_weights) if not out_directory else None
    with prepare_model_directory(out_directory or default, overwrite=force) as folder:
        _evaluate_one(study, trial, folder, storage, stored_weights, artifact_dir, output_format)


def _evaluate_one(study: optuna.Study, trial: optuna.trial.FrozenTrial, directory: ModelFolder, storage: str | None,
                  stored_weights: bool, artifact_dir: str | None, output_format: str) -> None:
    """``hpo evaluate`` of one trial into the claimed folder ``directory``."""
    weights = None
    if stored_weights:
        weights = download_weights(trial, artifact_directory(storage_url(storage), artifact_dir))
    if output_format == "table":
        how = "its stored weights" if stored_weights else "retraining on training + validation data"
        click.echo(f"evaluating trial {trial.number} of study {study.study_name} "
                   f"(validation accuracy {trial.value:.4f}): {how}")
    network, evaluation = evaluate_trial(study, trial, stored_weights=weights)
    weights_path, card_path = save_checked_model(directory, network, evaluation)
    if output_format == "json":
        click.echo(card_path.read_text(encoding="utf-8"), nl=False)
        return
    _print_evaluation(evaluation)
    click.echo(f"saved: {weights_path} and {card_path}; reloaded, they give the same "
               f"{len(evaluation.predictions)} test predictions")


def _evaluate_ensemble(study: optuna.Study, size: int, storage: str | None, out_directory: str | None,
                       stored_weights: bool, artifact_dir: str | None, force: bool, output_format: str) -> None:
    """``hpo evaluate --ensemble K`` with K >= 2: members, ensemble, one saved folder."""
    trials = select_top_trials(study, size)
    default = _default_model_directory(study, f"ensemble-{size}", stored_weights) if not out_directory else None
    with prepare_model_directory(out_directory or default, overwrite=force) as folder:
        _evaluate_top(study, trials, folder, storage, stored_weights, artifact_dir, output_format)


def _evaluate_top(study: optuna.Study, trials: list[optuna.trial.FrozenTrial], directory: ModelFolder,
                  storage: str | None, stored_weights: bool, artifact_dir: str | None, output_format: str) -> None:
    """The ensemble of ``trials`` into the claimed folder ``directory``."""
    size = len(trials)
    weights = None
    if stored_weights:
        folder = artifact_directory(storage_url(storage), artifact_dir)
        downloaded = {trial.number: download_weights(trial, folder) for trial in trials}  # all, before any work
        weights = lambda trial: downloaded[trial.number]
    if output_format == "table":
        how = "their stored weights" if stored_weights else "retraining each on training + validation data"
        click.echo(f"evaluating an ensemble of the top {size} trials of study {study.study_name} "
                   f"({', '.join(str(trial.number) for trial in trials)}): {how}")
    ensemble, evaluation = evaluate_ensemble(study, trials, stored_weights=weights)
    weights_path, card_path = save_checked_model(directory, ensemble, evaluation)
    if output_format == "json":
        click.echo(card_path.read_text(encoding="utf-8"), nl=False)
        return
    rows = [{"member": str(index), "trial": str(member.trial_number),
             "validation value": f"{member.card['validation_accuracy']:.4f}",
             "test accuracy": f"{member.test_accuracy:.4f}"}
            for index, member in enumerate(evaluation.members, start=1)]
    rows.append({"member": "ensemble", "trial": "mean softmax", "validation value": "-",
                 "test accuracy": f"{evaluation.test_accuracy:.4f}"})
    write_rows(rows, "table", sys.stdout, title="members and ensemble (test set)", complete_with="-f json")
    click.echo(f"ensemble test accuracy: {evaluation.test_accuracy:.4f} on {evaluation.card['test_images']} "
               f"test images (the best trial alone: {evaluation.members[0].test_accuracy:.4f}; the most "
               f"accurate member alone: {max(member.test_accuracy for member in evaluation.members):.4f})")
    _print_tables(evaluation)
    click.echo(f"saved: {len(evaluation.members)} weights files ({weights_path.name}, ...) and {card_path}; "
               f"reloaded, they give the same {len(evaluation.predictions)} test predictions")


def _default_model_directory(study: optuna.Study, what: str, stored_weights: bool) -> Path:
    """``hpo-models/STUDY-WHAT`` (``-retrained`` added when retrained: the two models of a trial differ), inside
    hpo-models/ whatever the stored study's name holds."""
    return _inside_models(f"{file_name(study.study_name)}-{what}{'' if stored_weights else '-retrained'}")


def _inside_models(name: str) -> Path:
    """``hpo-models/NAME``, refused when a symbolic link would lead it elsewhere."""
    try:
        return path_inside(MODELS_DIRECTORY, name)
    except ValueError as error:  # a symbolic link in hpo-models/ that leads elsewhere
        raise HpoError(f"{error}; give the model's folder with --out") from None


def _print_evaluation(evaluation: Evaluation) -> None:
    card = evaluation.card
    training = card["training"]
    images = f" on {training['train_images']} images" if training["train_images"] else ""
    click.echo(f"{training['mode']}: {training['epochs']} epochs{images}")
    click.echo(f"test accuracy: {evaluation.test_accuracy:.4f} on {card['test_images']} test images")
    _print_tables(evaluation)


def _print_tables(evaluation: Evaluation) -> None:
    """The per-class table (recall is the class's accuracy) and the confusion matrix."""
    write_rows(evaluation.per_class, "table", sys.stdout, title="per class (test set)", complete_with="-f json")
    names = [str(k) for k in range(len(evaluation.class_names))]
    rows = [{"true \\ predicted": name if name == str(k) else f"{k} {name}", **dict(zip(names, map(int, row)))}
            for k, (name, row) in enumerate(zip(evaluation.class_names, evaluation.confusion))]
    write_rows(rows, "table", sys.stdout, title="confusion matrix (rows: true class, columns: predicted)",
               complete_with="-f json")
