"""Search efficiency: how soon TPE with pruning reaches what random search finds.

    python benchmarks/search_efficiency.py [--seeds 0 1 2] [--out benchmarks/results/search_efficiency.json]

On the search space of the book's section 6.5.3 (``studies/book_6_5.toml``:
learning rate 1e-6..1e-2 and weight decay 1e-8..1e-4 on a log scale, a 784-100x6-10
ReLU network with He initialization trained by SGD, batch 100), for each seed it runs

- random search without pruning (the book's method), and
- TPE with median pruning (``studies/book/book_6_5_tpe.toml``),

with the same trial count, through the service (one worker, a fresh SQLite study
database each), and measures the wall time TPE with pruning needed until one of its
completed trials reached the best validation accuracy of the whole random search.
The ratio ``time to reach / random search's wall time`` is reported per seed (below
0.25 meets the goal of a quarter of the time; "never" when TPE's best stays below).

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
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
import threadpoolctl
from common import checked_out, non_negative_int, positive_int

from hpo.book.experiments import book_spec, run_study, search_summary


def compare(space: str, seed: int, trials: int, epochs: int, folder: Path) -> dict:
    """Run both searches of one seed on one data size; return their summaries and the ratio."""
    overrides = {"budget": {"trials": trials}, "parameters": {"epochs": epochs, "seed": seed}}
    if space == "full":
        overrides["dataset"] = {"train_images": None}
    storage = f"sqlite:///{folder / f'{space}-seed{seed}.db'}"
    result = {"space": space, "seed": seed, "trials": trials, "epochs": epochs}
    summaries = {}
    # Independent sampler seeds: with one seed, TPE's random start-up trials would repeat
    # random search's first trials exactly and reach its best whenever that came early.
    for method, key, sampler_seed in (("random", "search_random", seed), ("tpe_pruning", "search_tpe", 1000 + seed)):
        spec = book_spec(key, full=True, overrides={**overrides, "sampler": {"seed": sampler_seed},
                                                    "name": f"{space}-{method}-seed{seed}"})
        started = time.perf_counter()
        study = run_study(spec, storage)
        summary = search_summary(study)
        summaries[method] = summary
        result[method] = {"best_value": summary.best_value, "wall_seconds": round(summary.wall_seconds, 1),
                          "run_seconds": round(time.perf_counter() - started, 1),
                          "complete": summary.complete, "pruned": summary.pruned}
        print(f"  {space} seed {seed} {method}: best {summary.best_value:.4f} in {summary.wall_seconds:.0f} s "
              f"({summary.complete} complete, {summary.pruned} pruned)", file=sys.stderr)
    target = summaries["random"].best_value
    reach = summaries["tpe_pruning"].seconds_to_reach(target)
    result["tpe_seconds_to_reach_random_best"] = None if reach is None else round(reach, 1)
    result["ratio"] = None if reach is None else round(reach / summaries["random"].wall_seconds, 3)
    return result


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

    print(f"\n{'data':<6}{'seed':>5}{'random best':>13}{'random s':>10}{'TPE+prune best':>16}{'TPE s':>8}"
          f"{'pruned':>8}{'reach s':>9}{'ratio':>7}")
    for row in results:
        reach, ratio = row["tpe_seconds_to_reach_random_best"], row["ratio"]
        print(f"{row['space']:<6}{row['seed']:>5}{row['random']['best_value']:>13.4f}"
              f"{row['random']['wall_seconds']:>10.0f}{row['tpe_pruning']['best_value']:>16.4f}"
              f"{row['tpe_pruning']['wall_seconds']:>8.0f}{row['tpe_pruning']['pruned']:>8}"
              f"{'never' if reach is None else f'{reach:.0f}':>9}{'-' if ratio is None else f'{ratio:.2f}':>7}")
    summary = {}
    for space in arguments.spaces:
        ratios = [row["ratio"] for row in results if row["space"] == space]
        reached = [ratio for ratio in ratios if ratio is not None]
        summary[space] = {"seeds": len(ratios), "reached": len(reached),
                          "median_ratio": statistics.median(reached) if reached else None,
                          "ratios": ratios}
        median = f"{summary[space]['median_ratio']:.2f}" if reached else "-"
        print(f"{space}: TPE + pruning reached random search's best in {len(reached)} of {len(ratios)} seeds; "
              f"median ratio {median} (goal: <= 0.25)")
    out.write_text(json.dumps({"results": results, "summary": summary}, indent=2) + "\n")
    print(f"written: {arguments.out}")


if __name__ == "__main__":
    main()
