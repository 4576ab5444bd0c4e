"""Search efficiency: how soon TPE with pruning reaches what random search finds.

    python benchmarks/search_efficiency.py [--seeds 0 1 2] [--out benchmarks/results/search_efficiency.json]

On the search space of the book's section 6.5.3 (``studies/book_6_5.toml``:
learning rate 1e-6..1e-2 and weight decay 1e-8..1e-4 on a log scale, a 784-100x6-10
ReLU network with He initialization trained by SGD, batch 100), for each seed it runs

- random search without pruning (the book's method), and
- TPE with median pruning (``studies/book/book_6_5_tpe.toml``),

with the same trial count, through the service (one worker, a fresh SQLite study
database each).  The target is the best validation accuracy of the whole random
search.  For each method it reports when a completed trial first reached that
target, measured from the study's first trial start with the stored trial
datetimes: seconds, trials finished by then (complete or pruned) and epochs
trained by then (their ``epochs_run``, which no other load on the machine
changes).  The ratio is TPE's time to the target over random search's time to
its own best (below 0.25 would be a quarter of the time; "never" when TPE's best
stays below the target), in seconds and in epochs trained.

Two data sizes:

- ``book``: the book's 500 training images (400 to train, 100 to validate),
  ``--trials`` trials of ``--epochs`` epochs (default 100 of 50, the book's sizes);
- ``full``: all 60,000 Fashion-MNIST training images (48,000 / 12,000),
  ``--full-trials`` of ``--full-epochs`` (default 30 of 8: a full-size search of
  100 x 50 epochs would take hours on 2 cores).

The seed sets the trials' base seed (weights, mini-batches) and random search's
sampler seed; TPE's sampler gets ``1000 + seed``, so its random start-up trials are
not a copy of random search's first trials.
Each process uses one BLAS thread (threadpoolctl), as the service's parallel workers
do.  Results are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import threadpoolctl
from common import checked_out, non_negative_int, positive_int
from optuna.trial import TrialState

from hpo.book.experiments import book_spec, run_study, search_summary
from hpo.store import record


def first_reach(study: optuna.Study, target: float) -> dict | None:
    """When a completed trial of ``study`` first reached ``target``, from the stored trial datetimes.

    Returns
    -------
    dict or None
        ``seconds`` from the study's first trial start to that trial's end, ``trials``
        finished by then (complete or pruned, that one included) and ``epochs`` they
        trained (their ``epochs_run``); None when no completed trial reached it.
    """
    finished = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                      key=lambda trial: trial.datetime_complete)
    began = min(trial.datetime_start for trial in finished)
    epochs = 0
    for count, trial in enumerate(finished, start=1):
        epochs += trial.user_attrs[record.EPOCHS_RUN]
        if trial.state == TrialState.COMPLETE and trial.value >= target:
            return {"seconds": (trial.datetime_complete - began).total_seconds(), "trials": count, "epochs": epochs}
    return None


def _ratio(tpe: dict | None, random: dict, key: str) -> float | None:
    return None if tpe is None else round(tpe[key] / random[key], 3)


def compare(space: str, seed: int, trials: int, epochs: int, folder: Path) -> dict:
    """Run both searches of one seed on one data size; return their summaries, times to the target and ratios."""
    overrides = {"budget": {"trials": trials}, "parameters": {"epochs": epochs, "seed": seed}}
    if space == "full":
        overrides["dataset"] = {"train_images": None}
    storage = f"sqlite:///{folder / f'{space}-seed{seed}.db'}"
    result = {"space": space, "seed": seed, "trials": trials, "epochs": epochs}
    studies = {}
    # Independent sampler seeds: with one seed, TPE's random start-up trials would repeat
    # random search's first trials exactly and reach its best whenever that came early.
    for method, key, sampler_seed in (("random", "search_random", seed), ("tpe_pruning", "search_tpe", 1000 + seed)):
        spec = book_spec(key, full=True, overrides={**overrides, "sampler": {"seed": sampler_seed},
                                                    "name": f"{space}-{method}-seed{seed}"})
        started = time.perf_counter()
        study = run_study(spec, storage)
        summary = search_summary(study)
        studies[method] = study
        epochs_trained = sum(trial.user_attrs[record.EPOCHS_RUN] for trial in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        result[method] = {"sampler_seed": sampler_seed, "best_value": summary.best_value,
                          "wall_seconds": round(summary.wall_seconds, 1),
                          "run_seconds": round(time.perf_counter() - started, 1),
                          "complete": summary.complete, "pruned": summary.pruned, "epochs_trained": epochs_trained}
        print(f"  {space} seed {seed} {method}: best {summary.best_value:.4f} in {summary.wall_seconds:.0f} s "
              f"({summary.complete} complete, {summary.pruned} pruned)", file=sys.stderr)
    target = result["random"]["best_value"]
    result["target"] = target
    for method, study in studies.items():
        result[method]["reach_target"] = first_reach(study, target)
    random, tpe = result["random"]["reach_target"], result["tpe_pruning"]["reach_target"]
    result["ratio_seconds"] = _ratio(tpe, random, "seconds")
    result["ratio_epochs"] = _ratio(tpe, random, "epochs")
    result["tpe_short_of_target"] = None if tpe is not None else round(target - result["tpe_pruning"]["best_value"], 4)
    for reached in (random, tpe):
        if reached is not None:
            reached["seconds"] = round(reached["seconds"], 1)
    return result


def _median(values: list[float | None]) -> float | None:
    """Median ratio, a seed that never reached the target counted as the slowest; None: the median is "never"."""
    ranked = sorted(values, key=lambda value: math.inf if value is None else value)
    middle = ranked[(len(ranked) - 1) // 2: len(ranked) // 2 + 1]
    return None if None in middle else round(statistics.fmean(middle), 3)


def summarize(results: list[dict]) -> dict:
    """Per data size: seeds, how many reached the target, the ratios per seed and their medians."""
    summary = {}
    for space in dict.fromkeys(row["space"] for row in results):
        rows = [row for row in results if row["space"] == space]
        seconds, epochs = [row["ratio_seconds"] for row in rows], [row["ratio_epochs"] for row in rows]
        summary[space] = {"seeds": len(rows), "reached": sum(ratio is not None for ratio in seconds),
                          "median_ratio_seconds": _median(seconds), "ratios_seconds": seconds,
                          "median_ratio_epochs": _median(epochs), "ratios_epochs": epochs}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--spaces", nargs="+", choices=("book", "full"), default=["book", "full"])
    parser.add_argument("--trials", type=positive_int, default=100)
    parser.add_argument("--epochs", type=positive_int, default=50)
    parser.add_argument("--full-trials", type=positive_int, default=30)
    parser.add_argument("--full-epochs", type=positive_int, default=8)
    parser.add_argument("--out", default="benchmarks/results/search_efficiency.json")
    arguments = parser.parse_args()
    out = checked_out(arguments.out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")

    results = []
    with tempfile.TemporaryDirectory(prefix="hpo-search-") as folder:
        for space in arguments.spaces:
            trials, epochs = ((arguments.trials, arguments.epochs) if space == "book"
                              else (arguments.full_trials, arguments.full_epochs))
            for seed in arguments.seeds:
                results.append(compare(space, seed, trials, epochs, Path(folder)))

    print(f"\n{'data':<6}{'seed':>5}{'target':>8}{'random s':>10}{'to target':>11}"
          f"{'TPE+prune best':>16}{'TPE s':>7}{'pruned':>8}{'to target':>11}{'ratio s':>9}{'ratio ep':>10}")
    for row in results:
        random, tpe = row["random"], row["tpe_pruning"]
        reached = "never" if tpe["reach_target"] is None else f"{tpe['reach_target']['seconds']:.0f}"
        print(f"{row['space']:<6}{row['seed']:>5}{row['target']:>8.4f}{random['wall_seconds']:>10.0f}"
              f"{random['reach_target']['seconds']:>11.0f}{tpe['best_value']:>16.4f}{tpe['wall_seconds']:>7.0f}"
              f"{tpe['pruned']:>8}{reached:>11}"
              f"{_shown(row['ratio_seconds']):>9}{_shown(row['ratio_epochs']):>10}")
    summary = summarize(results)
    for space, values in summary.items():
        print(f"{space}: TPE + pruning reached random search's best in {values['reached']} of {values['seeds']} seeds; "
              f"its time to it over random search's: median {_shown(values['median_ratio_seconds'])} in seconds, "
              f"{_shown(values['median_ratio_epochs'])} in epochs trained (a seed that never reached it counts as slowest)")
    out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    print(f"written: {arguments.out}")


def _shown(ratio: float | None) -> str:
    return "never" if ratio is None else f"{ratio:.2f}"


if __name__ == "__main__":
    main()
