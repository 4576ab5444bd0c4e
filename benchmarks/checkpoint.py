"""Cost of a trial's checkpoint per epoch on the main job's network.

    python benchmarks/checkpoint.py [--epochs 7] [--out benchmarks/results/checkpoint.json]

The network of the main Fashion-MNIST job (784-1024-1024-10, ReLU, He, batch norm,
batch 128, float32) trains on the 48,000 training images of an 80/20 split (12,000
validation images evaluated after every epoch) with Momentum and with Adam.  One
BLAS thread, as a worker runs.  In each training the service's checkpoint
(:class:`hpo.store.checkpoints.CheckpointKeeper`: write an ``.npz`` artifact to a
:class:`optuna.artifacts.FileSystemArtifactStore` on local disk, name it in a user
attribute of a trial in a SQLite study, remove the previous file) is taken after
every odd epoch, so the even epochs run with a checkpoint behind them and the odd
ones (from epoch 3) without one: both measured side by side in one run, on the same
machine load.  The checkpoint holds the best epoch's weights as well (the largest
checkpoint a trial writes: weights twice plus the optimizer's state).

Printed per optimizer: the median wall time of an epoch without and with a checkpoint,
the median time of the checkpoint itself (from the end of the epoch to the return of
``on_checkpoint``: the copies of the state, the file, the database write, the removal),
its size, and the checkpoint's share of an epoch.  Written as JSON; nothing asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
from common import positive_int
from threadpoolctl import threadpool_limits

from hpo.store import record
from hpo.store.checkpoints import CheckpointKeeper
from models.datasets import load_fashion_mnist, train_validation_split
from models.network import MultiLayerNet
from models.optimizers import make_optimizer
from models.trainer import train

HIDDEN = [1024, 1024]
BATCH_SIZE = 128
LEARNING_RATES = {"momentum": 0.01, "adam": 0.001}


def measure(optimizer_name: str, data: tuple, epochs: int, folder: Path) -> dict:
    x, t, xv, tv = data
    rng = np.random.default_rng(0)
    network = MultiLayerNet(784, HIDDEN, 10, batch_norm=True, seed=rng)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{folder / f'{optimizer_name}.db'}")
    trial = study.ask()
    store = optuna.artifacts.FileSystemArtifactStore(folder)
    keeper = CheckpointKeeper(trial.number, store,
                              store_attribute=lambda new: trial.set_user_attr(record.CHECKPOINT_ARTIFACT, new))
    marks = [time.perf_counter()]  # the end of each epoch's callback
    checkpoint_seconds, sizes = [], []

    def ended(metrics) -> None:
        marks.append(time.perf_counter())

    def keep(checkpoint) -> None:
        if checkpoint.epoch % 2 == 1:  # after odd epochs only: even epochs run "with", odd ones "without"
            checkpoint.extras["best"] = network.state_dict()
            keeper(checkpoint)
            checkpoint_seconds.append(time.perf_counter() - marks[-1])
            sizes.append((folder / keeper.current).stat().st_size)

    train(network, make_optimizer(optimizer_name, LEARNING_RATES[optimizer_name]), x, t, xv, tv, epochs=epochs,
          batch_size=BATCH_SIZE, rng=rng, callback=ended, checkpoint_every=1, on_checkpoint=keep)
    walls = {epoch: marks[epoch] - marks[epoch - 1] for epoch in range(1, epochs + 1)}
    with_checkpoint = [walls[epoch] for epoch in range(2, epochs + 1, 2)]
    without = [walls[epoch] for epoch in range(3, epochs + 1, 2)]  # epoch 1 warms up
    result = {
        "optimizer": optimizer_name,
        "epoch_seconds_without_checkpoint": statistics.median(without),
        "epoch_seconds_with_checkpoint": statistics.median(with_checkpoint),
        "checkpoint_seconds": statistics.median(checkpoint_seconds),
        "checkpoint_megabytes": sizes[-1] / 1e6,
        "epochs_without": without,
        "epochs_with": with_checkpoint,
    }
    result["checkpoint_share_of_epoch"] = result["checkpoint_seconds"] / result["epoch_seconds_without_checkpoint"]
    result["ratio_with_to_without"] = result["epoch_seconds_with_checkpoint"] / result["epoch_seconds_without_checkpoint"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive_int, default=7, help="epochs per optimizer (odd, >= 5)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    arguments = parser.parse_args()
    fashion = load_fashion_mnist()
    data = train_validation_split(fashion.x_train, fashion.t_train, 0.2, seed=0)
    print(f"Fashion-MNIST: {data[0].shape[0]} training, {data[2].shape[0]} validation images; "
          f"784-{'-'.join(map(str, HIDDEN))}-10, batch norm, batch {BATCH_SIZE}, 1 BLAS thread")
    results = []
    with (tempfile.TemporaryDirectory(prefix="hpo-checkpoint-benchmark-", dir=Path.cwd()) as folder,
          threadpool_limits(1)):  # one BLAS thread, as `hpo worker` runs
        for name in LEARNING_RATES:
            result = measure(name, data, arguments.epochs, Path(folder))
            results.append(result)
            print(f"{name:9s} epoch without checkpoint {result['epoch_seconds_without_checkpoint']:.2f} s, "
                  f"with {result['epoch_seconds_with_checkpoint']:.2f} s (ratio "
                  f"{result['ratio_with_to_without']:.3f}); checkpoint {result['checkpoint_seconds'] * 1000:.0f} ms, "
                  f"{result['checkpoint_megabytes']:.1f} MB = {100 * result['checkpoint_share_of_epoch']:.2f} % "
                  "of an epoch", flush=True)
    if arguments.out:
        Path(arguments.out).write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(),
                                                   "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
