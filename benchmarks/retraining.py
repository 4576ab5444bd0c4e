"""Retraining policy: the best trial's own network against the same network retrained on all training images.

    python benchmarks/retraining.py --storage URL [--study-name NAME] [--seeds 0 1 2]
                                    [--out benchmarks/results/retraining.json]

For the best completed trial of a study made by hpo, and for each seed s, it trains
the trial's network (its parameters, a generator of seed s for the initial weights
and the mini-batches) under two policies and tests both on the test set:

- ``own``: the trial's own network, as tuning made it: trained on the tuning split
  (the study's training part; ``dataset.train_images``, ``validation_fraction`` and
  ``split_seed`` respected) for the trial's ``epochs``, keeping the weights of the
  epoch that was best on the validation part by the study's metric (what
  ``hpo evaluate --stored-weights`` tests; with the trial's own seed it is exactly
  that stored network);
- ``retrained``: trained on all training images (training + validation part) for the
  trial's best epoch count (``best_epoch``), as ``hpo evaluate`` retrains.

Both go through :mod:`hpo.results.evaluate` (``train_network``, ``evaluate_trial``);
nothing here trains on its own.  It prints a table, the mean and standard deviation
(over seeds, ``statistics.stdev``) of each policy's test accuracy, and writes them as
JSON.  ``hpo evaluate``'s default policy is
``hpo.results.evaluate.STORED_WEIGHTS_BY_DEFAULT``; these numbers are what decides it.
Each process uses one BLAS thread (threadpoolctl), as the service's workers do.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import optuna
import threadpoolctl
from common import checked_out, non_negative_int

from hpo.cli.common import load_study
from hpo.results.evaluate import (
    STORED_WEIGHTS_BY_DEFAULT,
    evaluate_trial,
    load_training_and_test,
    predict,
    select_trial,
    train_network,
    trial_settings,
)
from hpo.store import record
from hpo.tuning.data import prepare_data
from models.network import MultiLayerNet

POLICIES = ("own", "retrained")


def own_network(study: optuna.Study, trial: optuna.trial.FrozenTrial, seed: int) -> MultiLayerNet:
    """The trial's network trained as its trial was, with ``seed``: tuning split, ``epochs``, best epoch's weights.

    Raises
    ------
    hpo.results.evaluate.EvaluationError, hpo.tuning.data.DataError
        As :func:`hpo.results.evaluate.trial_settings` and :func:`hpo.tuning.data.prepare_data`.
    """
    dataset_spec, values = trial_settings(study, trial)
    tuning = prepare_data(dataset_spec)
    network, _ = train_network(values, tuning.n_classes, tuning.x_train, tuning.t_train, tuning.x_validation,
                               tuning.t_validation, epochs=values["epochs"], seed=seed, image_shape=tuning.image_shape,
                               keep_best=record.stored_metric(study))
    return network


def measure(study: optuna.Study, seeds: list[int]) -> dict:
    """Test accuracy of both policies for each seed, for the study's best trial.

    Returns
    -------
    dict
        ``trial``, ``validation_value``, ``epochs``, ``best_epoch``, ``train_images`` of each
        policy, ``results`` (one row per seed: ``seed``, ``own``, ``retrained``, seconds of each)
        and ``summary`` (per policy: ``mean``, ``std``, ``n``).
    """
    trial = select_trial(study, None)
    dataset_spec, values = trial_settings(study, trial)
    dataset = load_training_and_test(dataset_spec)
    results = []
    for seed in seeds:
        started = time.perf_counter()
        own = own_network(study, trial, seed)
        own_seconds = time.perf_counter() - started
        own_accuracy = float(np.mean(predict(own, dataset.x_test) == dataset.t_test))
        started = time.perf_counter()
        _, retrained = evaluate_trial(study, trial, seed=seed)
        results.append({"seed": seed, "own": round(own_accuracy, 6), "retrained": round(retrained.test_accuracy, 6),
                        "own_seconds": round(own_seconds, 2),
                        "retrained_seconds": round(time.perf_counter() - started, 2)})
    summary = {}
    for policy in POLICIES:
        accuracies = [row[policy] for row in results]
        summary[policy] = {"mean": round(statistics.fmean(accuracies), 6),
                           "std": round(statistics.stdev(accuracies), 6) if len(accuracies) > 1 else None,
                           "n": len(accuracies)}
    tuning = prepare_data(dataset_spec)
    return {
        "study": study.study_name, "trial": trial.number, "validation_value": trial.value,
        "epochs": values["epochs"], "best_epoch": trial.user_attrs.get(record.BEST_EPOCH),
        "train_images": {"own": len(tuning.t_train), "retrained": len(dataset.t_train)},
        "test_images": len(dataset.t_test),
        "default_policy_today": "own" if STORED_WEIGHTS_BY_DEFAULT else "retrained",
        "results": results, "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", required=True, help="SQLAlchemy URL of the study database")
    parser.add_argument("--study-name", help="the study [default: the storage's only study]")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/retraining.json")
    arguments = parser.parse_args()
    out = checked_out(arguments.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    study = load_study(arguments.storage, arguments.study_name)
    report = measure(study, arguments.seeds)

    print(f"study {report['study']}, best trial {report['trial']} (validation {report['validation_value']:.4f}): "
          f"own = {report['train_images']['own']} images, {report['epochs']} epochs, best epoch kept; "
          f"retrained = {report['train_images']['retrained']} images, {report['best_epoch']} epochs")
    print(f"{'seed':>6}{'own':>10}{'retrained':>11}{'own s':>8}{'retrain s':>11}")
    for row in report["results"]:
        print(f"{row['seed']:>6}{row['own']:>10.4f}{row['retrained']:>11.4f}{row['own_seconds']:>8.1f}"
              f"{row['retrained_seconds']:>11.1f}")
    for policy in POLICIES:
        values = report["summary"][policy]
        spread = "n/a (one seed)" if values["std"] is None else f"{values['std']:.4f}"
        print(f"{policy:>10}: test accuracy {values['mean']:.4f} +/- {spread} over {values['n']} seeds")
    print(f"hpo evaluate's default today: {report['default_policy_today']} "
          "(hpo.results.evaluate.STORED_WEIGHTS_BY_DEFAULT)")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {arguments.out}")


if __name__ == "__main__":
    main()
