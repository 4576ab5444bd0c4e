"""What data augmentation costs per training epoch on Fashion-MNIST.

    python benchmarks/augmentation.py [--epochs 2]

The network of the main job's size (784-1024-1024-10, ReLU, He initialization, batch
norm, momentum SGD at 0.01, batch 128, float32) trains on 48,000 Fashion-MNIST
training images (the 80 % training split of the 60,000) and evaluates the 12,000
validation images each epoch, once with each augmentation of
:data:`models.augmentation.AUGMENTATIONS` ("none", "shift", "shift_flip"). The runs
take turns epoch by epoch in one process (none, shift, shift_flip, none, ...), so a
machine busy with other work slows them alike; the median epoch of each is printed
with its ratio to "none". Besides, the augmentation alone is timed over one epoch's
375 mini-batches, the part of the epoch it adds. Nothing is asserted; the goal is
augmentation under 10 % of the epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from models.augmentation import AUGMENTATIONS, make_augmentation
from models.datasets import load_fashion_mnist, train_validation_split
from models.network import MultiLayerNet
from models.optimizers import make_optimizer
from models.trainer import train

BATCH_SIZE = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per augmentation (default 2)")
    arguments = parser.parse_args()
    data = load_fashion_mnist()
    x, t, xv, tv = train_validation_split(data.x_train, data.t_train, 0.2, seed=0)
    runs = {}
    for name in AUGMENTATIONS:
        network = MultiLayerNet(784, [1024, 1024], 10, batch_norm=True, seed=0)
        runs[name] = (network, make_optimizer("momentum", 0.01), make_augmentation(name, data.image_shape),
                      np.random.default_rng(0))
    seconds = {name: [] for name in runs}
    for _ in range(arguments.epochs):
        for name, (network, optimizer, augmentation, rng) in runs.items():
            result = train(network, optimizer, x, t, xv, tv, epochs=1, batch_size=BATCH_SIZE, rng=rng,
                           augmentation=augmentation)
            seconds[name].append(result.history[0].seconds)
            print(f"  {name:<10} epoch {len(seconds[name])}: {seconds[name][-1]:.2f} s, "
                  f"validation accuracy {result.history[0].validation_accuracy:.4f}", flush=True)
    base = statistics.median(seconds["none"])
    print(f"\n{len(t)} training images, 784-1024-1024-10 with batch norm, batch {BATCH_SIZE}, median of "
          f"{arguments.epochs} epochs:")
    for name, times in seconds.items():
        print(f"  {name:<10} {statistics.median(times):7.2f} s per epoch  ratio to none {statistics.median(times) / base:.3f}")
    batch = x[:BATCH_SIZE]
    for name in ("shift", "shift_flip"):
        augmentation, rng = make_augmentation(name, data.image_shape), np.random.default_rng(0)
        started = time.perf_counter()
        for _ in range(0, len(t), BATCH_SIZE):
            augmentation(batch, rng)
        alone = time.perf_counter() - started
        print(f"  {name:<10} augmentation alone {alone:.3f} s per epoch = {100 * alone / base:.1f} % of the plain epoch")


if __name__ == "__main__":
    main()
