"""Benchmark of the trainer against PyTorch and scikit-learn on Fashion-MNIST.

    python benchmarks/trainer.py [--epochs 5] [--out benchmarks/results/trainer.json]

The book's network of chapter 6 (784-100x5-10, ReLU, He initialization, Adam with
learning rate 0.001, batch 100, float32) is trained on all 60,000 Fashion-MNIST
training images by

- this project's trainer (``models.trainer.train``), without and with batch norm;
- PyTorch CPU eager (``torch.nn.Sequential``; the optional extra ``benchmark``:
  ``pip install -e '.[benchmark]'``, which pins torch==2.13.0), without and with
  ``BatchNorm1d``; reported as missing when torch is not installed;
- scikit-learn's ``MLPClassifier`` (``partial_fit``, one epoch per call; it has
  no batch norm, and its ``alpha`` is set to 0).

One epoch is one shuffled pass over the 60,000 training images plus a test-mode
evaluation of the 10,000 test images, the work one epoch of a trial does; each
implementation runs in a process of its own (fresh memory, its library's default
threads) for ``--epochs`` epochs, and the median epoch is reported.  Besides
seconds per epoch it reports the ratios to PyTorch and to scikit-learn, the
achieved GFLOP/s (matrix-multiply FLOPs of the epoch: forward ``2 N D M`` per
affine layer, backward ``4 N D M``, the first layer's input gradient excluded,
evaluation ``2 N D M``) against the rate of NumPy's float32 matrix multiply
measured here on the same sequence of shapes, and each process's peak resident
memory.  Results are printed as a table and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import checked_out, positive_int

INPUT, HIDDEN, LAYERS, OUTPUT = 784, 100, 5, 10
BATCH_SIZE = 100
LEARNING_RATE = 0.001
SEED = 0
CASES = ("numpy", "numpy-batch-norm", "torch", "torch-batch-norm", "sklearn", "matmul")


def layer_shapes() -> list[tuple[int, int]]:
    sizes = [INPUT] + [HIDDEN] * LAYERS + [OUTPUT]
    return list(zip(sizes[:-1], sizes[1:]))


def epoch_flops(n_train: int, n_test: int) -> float:
    """Matrix-multiply FLOPs of one epoch (training pass + test evaluation)."""
    flops = 0.0
    for index, (d, m) in enumerate(layer_shapes()):
        backward = 2 if index == 0 else 4  # dW always; dx except for the input layer
        flops += (2 + backward) * n_train * d * m + 2 * n_test * d * m
    return flops


def load_data() -> tuple[np.ndarray, ...]:
    from models.datasets import load_fashion_mnist

    data = load_fashion_mnist()
    return data.x_train, data.t_train, data.x_test, data.t_test


def run_numpy(epochs: int, batch_norm: bool) -> list[float]:
    from models.network import MultiLayerNet
    from models.optimizers import make_optimizer
    from models.trainer import train

    x, t, x_test, t_test = load_data()
    network = MultiLayerNet(INPUT, [HIDDEN] * LAYERS, OUTPUT, activation="relu", weight_init="he",
                            batch_norm=batch_norm, seed=SEED)
    result = train(network, make_optimizer("adam", LEARNING_RATE), x, t, x_test, t_test,
                   epochs=epochs, batch_size=BATCH_SIZE, rng=np.random.default_rng(SEED))
    print(f"  numpy{'-batch-norm' if batch_norm else ''}: test accuracy {result.history[-1].validation_accuracy:.4f}",
          file=sys.stderr)
    return [metrics.seconds for metrics in result.history]


def run_torch(epochs: int, batch_norm: bool) -> list[float]:
    import torch

    torch.manual_seed(SEED)
    x, t, x_test, t_test = (torch.from_numpy(array.copy()) for array in load_data())
    layers: list[torch.nn.Module] = []
    for index, (d, m) in enumerate(layer_shapes()):
        linear = torch.nn.Linear(d, m)
        torch.nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < LAYERS:
            if batch_norm:
                layers.append(torch.nn.BatchNorm1d(m))
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    loss_function = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(t), generator=generator)
        for start in range(0, len(t), BATCH_SIZE):
            index = order[start:start + BATCH_SIZE]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(x[index]), t[index])
            loss.backward()
            optimizer.step()
        model.train(False)  # test mode: batch norm's running statistics
        with torch.no_grad():
            accuracy = (model(x_test).argmax(dim=1) == t_test).float().mean().item()
        seconds.append(time.perf_counter() - started)
    print(f"  torch{'-batch-norm' if batch_norm else ''}: test accuracy {accuracy:.4f} ({torch.__version__}, "
          f"{torch.get_num_threads()} threads)", file=sys.stderr)
    return seconds


def run_sklearn(epochs: int) -> list[float]:
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, t, x_test, t_test = load_data()
    model = MLPClassifier(hidden_layer_sizes=(HIDDEN,) * LAYERS, activation="relu", solver="adam",
                          batch_size=BATCH_SIZE, learning_rate_init=LEARNING_RATE, alpha=0.0,
                          shuffle=True, random_state=SEED)
    classes = np.arange(OUTPUT)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.partial_fit(x, t, classes=classes)
        accuracy = float(np.mean(model.predict(x_test) == t_test))
        seconds.append(time.perf_counter() - started)
    print(f"  sklearn: test accuracy {accuracy:.4f}", file=sys.stderr)
    return seconds


def run_matmul(epochs: int) -> list[float]:
    """The epoch's matrix products alone, float32, same shapes and count."""
    rng = np.random.default_rng(SEED)
    n_train, n_test = 60_000, 10_000
    weights = [rng.standard_normal((d, m), dtype=np.float32) for d, m in layer_shapes()]
    activations = [rng.standard_normal((BATCH_SIZE, d), dtype=np.float32) for d, _ in layer_shapes()]
    gradients = [rng.standard_normal((BATCH_SIZE, m), dtype=np.float32) for _, m in layer_shapes()]
    test_inputs = [rng.standard_normal((4096, d), dtype=np.float32) for d, _ in layer_shapes()]
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        for _ in range(n_train // BATCH_SIZE):
            for index, weight in enumerate(weights):
                np.matmul(activations[index], weight)
                np.matmul(activations[index].T, gradients[index])
                if index:
                    np.matmul(gradients[index], weight.T)
        for start in range(0, n_test, 4096):
            rows = min(4096, n_test - start)
            for index, weight in enumerate(weights):
                np.matmul(test_inputs[index][:rows], weight)
        seconds.append(time.perf_counter() - started)
    return seconds


def child(case: str, epochs: int) -> None:
    if case == "numpy":
        seconds = run_numpy(epochs, False)
    elif case == "numpy-batch-norm":
        seconds = run_numpy(epochs, True)
    elif case == "torch":
        seconds = run_torch(epochs, False)
    elif case == "torch-batch-norm":
        seconds = run_torch(epochs, True)
    elif case == "sklearn":
        seconds = run_sklearn(epochs)
    else:
        seconds = run_matmul(epochs)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"case": case, "seconds": seconds, "peak_mb": round(peak_mb, 1)}))


def measure(case: str, epochs: int) -> dict | None:
    print(f"{case} ...", file=sys.stderr)
    result = subprocess.run([sys.executable, __file__, "--child", case, "--epochs", str(epochs)],
                            capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    if result.returncode != 0:
        if "No module named 'torch'" in result.stderr:
            print(f"  {case}: PyTorch is not installed (pip install -e '.[benchmark]'); skipped", file=sys.stderr)
            return None
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"Error: {case} failed (exit code {result.returncode}): {last}")
    sys.stderr.write(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=positive_int, default=5, help="Epochs per implementation (median reported).")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--out", default="benchmarks/results/trainer.json")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.epochs)
        return
    out = checked_out(arguments.out)

    flops = epoch_flops(60_000, 10_000)
    results = {}
    for case in arguments.cases:
        measured = measure(case, arguments.epochs)
        if measured is not None:
            median = statistics.median(measured["seconds"])
            results[case] = {**measured, "median_seconds": round(median, 4),
                             "gflops_per_second": round(flops / median / 1e9, 1)}
    matmul = results.get("matmul")
    rows = []
    for case in CASES[:-1]:
        if case not in results:
            continue
        entry = results[case]
        torch_case = "torch-batch-norm" if case.endswith("batch-norm") else "torch"
        if torch_case in results:
            entry["ratio_to_torch"] = round(entry["median_seconds"] / results[torch_case]["median_seconds"], 3)
        if "sklearn" in results:
            entry["ratio_to_sklearn"] = round(entry["median_seconds"] / results["sklearn"]["median_seconds"], 3)
        if matmul:
            entry["fraction_of_matmul_rate"] = round(matmul["median_seconds"] / entry["median_seconds"], 3)
        rows.append((case, entry))

    print(f"\none epoch: 60,000 training images (batch {BATCH_SIZE}) + evaluation of 10,000; "
          f"{flops / 1e9:.1f} GFLOP of matrix products")
    if matmul:
        print(f"NumPy float32 matmul alone, same shapes: {matmul['median_seconds']:.3f} s per epoch, "
              f"{matmul['gflops_per_second']} GFLOP/s")
    header = f"{'implementation':<18}{'s/epoch':>9}{'vs torch':>10}{'vs sklearn':>12}{'GFLOP/s':>9}" \
             f"{'of matmul':>11}{'peak MB':>9}"
    print(header)
    for case, entry in rows:
        def cell(key: str, width: int, fmt: str) -> str:
            return f"{entry[key]:{width}{fmt}}" if key in entry else " " * (width - 1) + "-"
        print(f"{case:<18}{entry['median_seconds']:>9.3f}{cell('ratio_to_torch', 10, '.2f')}"
              f"{cell('ratio_to_sklearn', 12, '.2f')}{entry['gflops_per_second']:>9.1f}"
              f"{cell('fraction_of_matmul_rate', 11, '.0%')}{entry['peak_mb']:>9.0f}")
    record = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "numpy": np.__version__},
        "epochs": arguments.epochs, "epoch_gflop": round(flops / 1e9, 2), "results": results,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {arguments.out}")


if __name__ == "__main__":
    main()
