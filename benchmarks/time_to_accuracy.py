"""Time to a good model: this service's main job against an Optuna + PyTorch script.

    python benchmarks/time_to_accuracy.py [--study-file studies/fashion_mnist_mlp.toml] [--target 0.89]
        [--budget-minutes 20] [--full-curve] [--out benchmarks/results/time_to_accuracy.json]
        [--figure docs/time_to_accuracy.png]

Two searches over the same study file's search space, on the same training /
validation split (the service's own :func:`hpo.tuning.data.prepare_data`: for
``studies/fashion_mnist_mlp.toml``, the fully connected main job, all 60,000 Fashion-MNIST training images, 48,000 to
train and 12,000 to validate, stratified and shuffled with the file's ``split_seed``),
each in a process of its own on the machine's cores, one after the other:

- ``service``: ``hpo run STUDY_FILE --jobs 2`` (``--jobs``; the main job's command: one
  worker process per core, one BLAS thread each) as a subprocess with a fresh SQLite
  storage in a temporary folder;
- ``optuna_torch``: what a user would otherwise write, an Optuna script in the style of
  Optuna's PyTorch example (``benchmarks/torch_search.py``: TPE, median pruner with
  Optuna's defaults, ``trial.report`` and ``should_prune`` after every epoch) training a
  PyTorch MLP over the same space with ``torch.optim`` and its schedulers,
  ``torch.set_num_threads(2)``, in-memory storage (torch from the ``benchmark`` extra).

Each side's clock starts when its process is started (imports and data loading
count). Its curve is the best validation accuracy against wall time, where an
accuracy counts from the moment the epoch that measured it ended, whatever became of
its trial afterwards. For the service that moment is rebuilt from the stored trials:
the trial's ``datetime_start`` plus the stored seconds of its epochs so far (user
attribute ``learning_curves``), at most its ``datetime_complete`` (this leaves out the
few milliseconds per epoch of reporting to the storage, so it errs early, in the
service's favour by at most that). The PyTorch script records the moment directly.

Each side stops when its best reaches ``--target`` (unless ``--full-curve``), when
``--budget-minutes`` have passed, or when the study file's trial budget is spent; the
service is stopped by SIGTERM, which ends its running trial at the next mini-batch.
Writes the JSON (both curves as [seconds, best accuracy] points, the time to the
target or null, the ratio service / optuna_torch, the machine) and one PNG of both
curves. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from common import checked_out

from hpo.config.spec import load_spec
from hpo.errors import HpoError
from hpo.store import record

ROOT = Path(__file__).resolve().parents[1]
STUDY_NAME = "time-to-accuracy"
POLL_SECONDS = 2.0


# ------------------------------------------------------------------ curves
def epoch_events(trials: list[optuna.trial.FrozenTrial], launched: datetime.datetime) -> list[list[float]]:
    """[seconds since ``launched``, validation accuracy] of every epoch the stored trials ran, in time order.

    An epoch's moment is the trial's ``datetime_start`` plus the stored seconds
    (``learning_curves["seconds"]``) of its epochs up to and including it, never later
    than the trial's ``datetime_complete``. Trials without learning curves (none ran
    an epoch) add nothing.

    Parameters
    ----------
    trials : list of optuna.trial.FrozenTrial
        Any states; datetimes are Optuna's (naive, local time).
    launched : datetime.datetime
        When the run started, in the same clock (naive, local time).
    """
    events = []
    for trial in trials:
        curves = trial.user_attrs.get(record.LEARNING_CURVES)
        if not curves or trial.datetime_start is None:
            continue
        elapsed = 0.0
        for seconds, value in zip(curves["seconds"], curves["validation_accuracy"]):
            elapsed += seconds
            moment = trial.datetime_start + datetime.timedelta(seconds=elapsed)
            if trial.datetime_complete is not None:
                moment = min(moment, trial.datetime_complete)
            if value is not None:
                events.append([(moment - launched).total_seconds(), value])
    return sorted(events)


def best_curve(events: list[list[float]], budget_seconds: float) -> list[list[float]]:
    """The running best of ``events`` ([seconds, accuracy]): one [seconds, best] point per improvement.

    Events after ``budget_seconds`` are left out.
    """
    curve: list[list[float]] = []
    for seconds, value in sorted(events):
        if seconds <= budget_seconds and (not curve or value > curve[-1][1]):
            curve.append([round(seconds, 2), value])
    return curve


def time_to_target(curve: list[list[float]], target: float) -> float | None:
    """Seconds of the first point of ``curve`` at or above ``target``; None if it never gets there."""
    return next((seconds for seconds, best in curve if best >= target), None)


# ------------------------------------------------------------------ the service
def _best_so_far(storage: optuna.storages.BaseStorage) -> float | None:
    """The highest validation accuracy any trial has reported, or None before the study exists."""
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        values = [value for trial in study.get_trials(deepcopy=False) for value in trial.intermediate_values.values()]
    except Exception:  # noqa: BLE001 - the child may not have created the database or study yet
        return None
    return max(values, default=None)


def run_service(study_file: Path, folder: Path, *, budget_seconds: float, target: float,
                full_curve: bool, jobs: int = 2) -> dict[str, Any]:
    """``hpo run`` as a subprocess until the target (polled in the storage every 2 s) or the budget."""
    hpo = Path(sys.executable).with_name("hpo")
    command = [str(hpo), "run", str(study_file), "--storage", f"sqlite:///{folder / 'study.db'}",
               "--study-name", STUDY_NAME, "--artifact-dir", str(folder / "artifacts"), "--no-progress", "--jobs", str(jobs)]
    storage = None
    launched, started = datetime.datetime.now(), time.time()
    with open(folder / "hpo-run.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while process.poll() is None:
            time.sleep(POLL_SECONDS)
            if time.time() - started >= budget_seconds:
                break
            if storage is None and (folder / "study.db").exists():
                storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'study.db'}", skip_table_creation=True,
                                                     skip_compatibility_check=True)
            best = _best_so_far(storage) if storage is not None else None
            if not full_curve and best is not None and best >= target:
                break
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # ends the running trial at its next mini-batch
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    wall = time.time() - started
    output = (folder / "hpo-run.log").read_text()
    if process.returncode not in (0, 128 + signal.SIGTERM):
        raise SystemExit(f"Error: hpo run failed (exit code {process.returncode}):\n{output[-2000:]}")
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{folder / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    states = [trial.state.name.lower() for trial in trials]
    return {"command": ["hpo", "run", str(study_file), "--storage", "sqlite:///TEMPORARY/study.db",
                        "--study-name", STUDY_NAME, "--artifact-dir", "TEMPORARY/artifacts", "--no-progress", "--jobs", str(jobs)],
            "events": epoch_events(trials, launched), "wall_seconds": round(wall, 1),
            "trials": {state: states.count(state) for state in sorted(set(states))},
            "epochs": sum(trial.user_attrs.get(record.EPOCHS_RUN, 0) for trial in trials)}


# ------------------------------------------------------------------ the PyTorch script
def run_torch(study_file: Path, *, budget_seconds: float, target: float, full_curve: bool) -> dict[str, Any]:
    """``benchmarks/torch_search.py``'s search in a process of its own; its result as a dict."""
    started = time.time()
    command = [sys.executable, __file__, "--child-torch", "--study-file", str(study_file),
               "--budget-minutes", str(budget_seconds / 60), "--target", str(target), "--launched", repr(started)]
    if full_curve:
        command.append("--full-curve")
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        if "No module named 'torch'" in result.stderr:
            raise SystemExit("Error: PyTorch is not installed; pip install -e '.[benchmark]' (torch==2.13.0)")
        raise SystemExit(f"Error: the PyTorch search failed (exit code {result.returncode}):\n{result.stderr[-2000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["wall_seconds"] = round(time.time() - started, 1)
    return measured


def child_torch(arguments: argparse.Namespace) -> None:
    from torch_search import run_search

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    measured = run_search(load_spec(arguments.study_file), launched=arguments.launched,
                          budget_seconds=arguments.budget_minutes * 60, target=arguments.target,
                          full_curve=arguments.full_curve)
    measured["epochs"] = len(measured["events"])
    print(json.dumps(measured))


# ------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    """CPU model, cores, and the versions that set the speed."""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:  # the installed version, without importing torch into this process
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {"cpu_model": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch_version, "optuna": optuna.__version__}


def plot(result: dict[str, Any], path: Path) -> None:
    """Both curves (best validation accuracy against minutes), the target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for key, label in (("service", "this service: hpo run"), ("optuna_torch", "Optuna + PyTorch script")):
        side = result.get(key)
        if side is None:
            continue
        curve = side["curve"]
        if not curve:
            continue
        minutes = [seconds / 60 for seconds, _ in curve] + [side["wall_seconds"] / 60]
        best = [value for _, value in curve] + [curve[-1][1]]
        reached = side["time_to_target_seconds"]
        text = f"{label} ({'never' if reached is None else f'{reached / 60:.1f} min'} to {result['target']})"
        axes.step(minutes, best, where="post", label=text)
    axes.axhline(result["target"], color="grey", linestyle="--", linewidth=1, label=f"target {result['target']}")
    axes.set_xlim(left=0)
    axes.set_xlabel("wall time (minutes)")
    axes.set_ylabel("best validation accuracy")
    axes.set_title(f"Time to accuracy: {Path(result['study_file']).name}, "
                   f"{result['machine']['usable_cores']} cores")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study-file", default="studies/fashion_mnist_mlp.toml")
    parser.add_argument("--target", type=float, default=0.89, help="Validation accuracy to reach.")
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="Wall-time budget of each side.")
    parser.add_argument("--jobs", type=int, default=2,
                        help="Worker processes of hpo run (the main job's --jobs 2: one per core).")
    parser.add_argument("--full-curve", action="store_true", help="Run the whole budget even after the target.")
    parser.add_argument("--sides", nargs="+", choices=("service", "optuna_torch"), default=["service", "optuna_torch"])
    parser.add_argument("--out", default="benchmarks/results/time_to_accuracy.json")
    parser.add_argument("--figure", default="docs/time_to_accuracy.png")
    parser.add_argument("--child-torch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--launched", type=float, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be positive, got {arguments.budget_minutes}")
    if arguments.child_torch:
        child_torch(arguments)
        return
    out = checked_out(arguments.out)
    study_file = Path(arguments.study_file).resolve()
    try:
        spec = load_spec(study_file)  # a bad file fails here, before any side runs
    except HpoError as error:
        raise SystemExit(f"Error: {error}") from None
    budget = arguments.budget_minutes * 60
    options = {"budget_seconds": budget, "target": arguments.target, "full_curve": arguments.full_curve}

    from hpo.tuning.data import prepare_data
    data = prepare_data(spec.dataset)
    result: dict[str, Any] = {
        "study_file": os.path.relpath(study_file, ROOT) if study_file.is_relative_to(ROOT) else str(study_file),
        "target": arguments.target, "budget_minutes": arguments.budget_minutes, "full_curve": arguments.full_curve,
        "split": {"train": len(data.t_train), "validation": len(data.t_validation),
                  "split_seed": spec.dataset.split_seed},
        "machine": machine(),
    }
    del data
    prepare_data.cache_clear()  # the sides load their own copies
    for side in arguments.sides:
        print(f"{side} ...", file=sys.stderr)
        if side == "service":
            with tempfile.TemporaryDirectory(prefix="hpo-tta-") as folder:
                measured = run_service(study_file, Path(folder), jobs=arguments.jobs, **options)
        else:
            measured = run_torch(study_file, **options)
        events = measured.pop("events")
        measured["curve"] = best_curve(events, budget)
        measured["best_accuracy"] = measured["curve"][-1][1] if measured["curve"] else None
        measured["time_to_target_seconds"] = time_to_target(measured["curve"], arguments.target)
        result[side] = measured
        reached = measured["time_to_target_seconds"]
        print(f"  {side}: best {measured['best_accuracy']} after {measured['wall_seconds']:.0f} s, "
              f"{'never reached' if reached is None else f'reached {arguments.target} at {reached:.0f} s'}; "
              f"trials {measured['trials']}", file=sys.stderr)
    times = [result.get(side, {}).get("time_to_target_seconds") for side in ("service", "optuna_torch")]
    result["ratio_service_to_optuna_torch"] = None if None in times else round(times[0] / times[1], 3)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio service / optuna_torch (time to {arguments.target}): {result['ratio_service_to_optuna_torch']}")
    print(f"written: {arguments.out}")
    plot(result, Path(arguments.figure))
    print(f"written: {arguments.figure}")


if __name__ == "__main__":
    main()
