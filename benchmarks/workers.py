"""Benchmark of parallel workers on Fashion-MNIST: trials per hour, service overhead, connections.

    python benchmarks/workers.py [--trials 12] [--epochs 2] [--overhead-trials 60] [--postgres URL] [--shared] [--out FILE]

Runs the same study (fixed 784-256-256-10 ReLU network, Adam, batch 128, random
sampler over learning rate and weight decay, no pruning) three ways with
`hpo run`: 1 worker with 1 BLAS thread, 1 worker with the BLAS library's default
threads, and `--jobs 2` (two workers, one BLAS thread each).  It reports

- trials per hour of each, two ways: over the trials' span (from the first trial's
  start to the last trial's end, as the stored trial datetimes say) and over the
  process's wall clock (``hpo run`` from start to exit, so including Python and
  library imports, data loading, study creation and the workers' own start-up),
  and the speed-up of two workers over one by each;
- service overhead per trial: the part of a trial's duration that is not
  training or validation (study storage, sampling, pruning checks, heartbeats),
  from the trials' stored per-epoch compute seconds;
- with --postgres: the same two-worker run against PostgreSQL, sampling
  pg_stat_activity for the connections each process holds (application_name 'hpo host:pid');
- the per-trial service overhead of hpo's worker loop against Optuna's own
  ``study.optimize`` doing the same storage work, side by side on the same storage
  (SQLite, and PostgreSQL with --postgres): two workers each, trials of 2 epochs of a
  tiny network (digits, 300 images, 64-8-10), so that the overhead dominates.  The
  Optuna loop (:func:`optuna_loop`) runs the same training and writes what an hpo trial
  writes: the 2 sampled parameters, the user attributes (worker, seed, train seconds,
  epochs run, best epoch, learning curves, weights artifact id), one report per epoch,
  a pruning question after each epoch but the last, the weights artifact, trial
  heartbeats with the stale-trial retry, and a budget of finished trials
  (``MaxTrialsCallback``).  Overhead of a trial = its duration - its training and
  validation seconds, plus the gap to the same worker's next trial.

The JSON also records the machine (cores, platform), the versions of Python and of
the libraries a worker loads, and every thread pool threadpoolctl finds (BLAS,
OpenMP: library, version, threads) as a worker of each case has it: a fresh process
with the case's environment that imports what ``hpo worker`` imports and applies the
same BLAS limit.

Timings are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from importlib import metadata
from pathlib import Path

import optuna
import sqlalchemy

HPO = str(Path(sys.executable).parent / "hpo")

STUDY = """
name = "{name}"
[budget]
trials = {trials}
[dataset]
name = "fashion_mnist"
[sampler]
type = "random"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = {{ low = 1e-4, high = 1e-2, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-4, log = true }}
optimizer = "adam"
hidden_layers = 2
hidden_size = 256
batch_size = 128
epochs = {epochs}
"""


def run_case(label: str, folder: Path, storage: str, arguments: list[str], trials: int, epochs: int,
             threads: str, postgres: str | None = None) -> dict:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    study_file = folder / f"{name}.toml"
    study_file.write_text(STUDY.format(name=name, trials=trials, epochs=epochs))
    environment = {key: value for key, value in os.environ.items() if key != "HPO_BLAS_THREADS"}
    samples: list[int] = []
    stop = threading.Event()

    def sample_connections() -> None:
        # Autocommit: pg_stat_activity is a snapshot per transaction.
        engine = sqlalchemy.create_engine(postgres, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            while not stop.wait(0.25):
                rows = connection.execute(sqlalchemy.text(
                    "SELECT application_name, count(*) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'hpo %' GROUP BY application_name")).all()
                samples.append({name: count for name, count in rows})
        engine.dispose()

    sampler = threading.Thread(target=sample_connections) if postgres else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    result = subprocess.run([HPO, "run", str(study_file), "--storage", storage, "--no-progress", *arguments],
                            env=environment, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    stop.set()
    if sampler:
        sampler.join()
    if result.returncode != 0:
        raise SystemExit(f"{label}: hpo run failed:\n{result.stderr[-2000:]}")
    study = optuna.load_study(study_name=name, storage=storage)
    finished = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    first_start = min(t.datetime_start for t in finished)
    last_end = max(t.datetime_complete for t in finished)
    trial_span = (last_end - first_start).total_seconds()
    overheads = []
    for trial in finished:
        compute = sum(trial.user_attrs["learning_curves"]["seconds"])
        overheads.append(1 - compute / trial.duration.total_seconds())
    row = {
        "case": label,
        "thread_pools": threads,
        "trials": len(finished),
        "wall_seconds": round(wall, 2),
        "trial_span_seconds": round(trial_span, 2),
        "startup_seconds": round(wall - trial_span, 2),
        "trial_seconds_median": round(statistics.median(t.duration.total_seconds() for t in finished), 3),
        "trials_per_hour_trial_span": round(len(finished) / trial_span * 3600, 1),
        "trials_per_hour_wall_clock": round(len(finished) / wall * 3600, 1),
        "overhead_fraction_median": round(statistics.median(overheads), 4),
        "overhead_fraction_max": round(max(overheads), 4),
    }
    if postgres:
        # Per process: the parent `hpo run` and each worker hold their own engine.
        per_process = [count for sample in samples for count in sample.values()]
        row["connections_total_max"] = max((sum(sample.values()) for sample in samples), default=0)
        row["connections_per_process_max"] = max(per_process, default=0)
        row["processes_seen"] = len({name for sample in samples for name in sample})
    optuna.delete_study(study_name=name, storage=storage)
    print(json.dumps(row), flush=True)
    return row


PROBE = """
import json, sys
import threadpoolctl
import hpo.cli  # what `hpo run` and `hpo worker` import: NumPy, Optuna, SQLAlchemy, the trainer
import models.trainer
limit = json.loads(sys.argv[1])
if limit is not None:  # as `hpo run --blas-threads N` and `hpo worker --blas-threads N` do
    threadpoolctl.threadpool_limits(limits=limit, user_api="blas")
print(json.dumps(threadpoolctl.threadpool_info()))
"""

_POOL_KEYS = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "architecture", "filepath")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "HPO_BLAS_THREADS")


def thread_pools(environment: dict[str, str], blas_threads: int | None) -> dict:
    """Every thread pool (threadpoolctl) of a fresh process like a worker: its environment, imports and BLAS limit.

    Returns
    -------
    dict
        ``blas_limit`` (None: the library's default), the thread variables set in the
        environment, and ``pools``: per library its API, implementation, version, threads
        and file name.
    """
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(blas_threads)], env=environment,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"threadpoolctl probe failed:\n{result.stderr[-2000:]}")
    pools = [{key: Path(pool[key]).name if key == "filepath" else pool.get(key) for key in _POOL_KEYS}
             for pool in json.loads(result.stdout)]
    return {"blas_limit": blas_threads,
            "environment": {name: environment[name] for name in THREAD_VARIABLES if name in environment},
            "pools": pools}


def versions(postgres: bool) -> dict:
    """Python's and the libraries' versions, and the project's commit (``-dirty``: with uncommitted changes)."""
    names = ["numpy", "optuna", "sqlalchemy", "threadpoolctl", "pydantic", "scikit-learn"]
    if postgres:
        names.append("psycopg2-binary" if _installed("psycopg2-binary") else "psycopg2")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False,
                            cwd=Path(__file__).resolve().parent)
    return {"python": platform.python_version(), **{name: _version(name) for name in names},
            "hpo_commit": commit.stdout.strip() or None}


def _installed(name: str) -> bool:
    return _version(name) is not None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


OVERHEAD_STUDY = """
name = "{name}"
[budget]
trials = {trials}
[dataset]
name = "digits"
train_images = 300
[sampler]
type = "random"
[pruner]
type = "median"
n_startup_trials = 100000
[parameters]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-4, log = true }}
hidden_layers = 1
hidden_size = 8
batch_size = 100
epochs = 2
"""


def optuna_loop(study_file: str, storage_url: str, artifact_dir: str) -> None:
    """One worker of Optuna's own ``study.optimize`` doing the storage work of an hpo trial (see the module)."""
    import warnings

    import numpy as np
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    from hpo.config.spec import load_spec
    from hpo.tuning.data import prepare_data
    from hpo.tuning.objective import build_network, trial_seed
    from models.network import save_weights
    from models.optimizers import make_optimizer
    from models.trainer import train

    warnings.simplefilter("ignore")  # experimental-feature notes of heartbeats
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(study_file)
    data = prepare_data(spec.dataset)
    fixed = spec.parameters.fixed()
    worker = f"{platform.node()}:{os.getpid()}"
    storage = optuna.storages.RDBStorage(
        storage_url, heartbeat_interval=spec.workers.heartbeat_interval_seconds,
        grace_period=spec.workers.grace_period_seconds,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(spec.workers.max_retry),
        engine_kwargs={"pool_pre_ping": True})
    study = optuna.load_study(study_name=spec.name, storage=storage, sampler=optuna.samplers.RandomSampler(),
                              pruner=optuna.pruners.MedianPruner(n_startup_trials=100_000))
    store = FileSystemArtifactStore(artifact_dir)
    epochs = fixed["epochs"]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)
        values = {**fixed, "learning_rate": trial.suggest_float("learning_rate", 1e-3, 1e-1, log=True),
                  "weight_decay": trial.suggest_float("weight_decay", 1e-8, 1e-4, log=True)}
        seed = trial_seed(values["seed"], trial.number)
        trial.set_user_attr("seed", seed)
        rng = np.random.default_rng(seed)
        network = build_network(values, data.n_features, data.n_classes, seed=rng)
        history = []

        def report(metrics):
            history.append(metrics)
            trial.report(metrics.validation_accuracy, metrics.epoch)
            if metrics.epoch < epochs and trial.should_prune():
                raise optuna.TrialPruned()

        started = time.perf_counter()
        train(network, make_optimizer(values["optimizer"], values["learning_rate"]), data.x_train, data.t_train,
              data.x_validation, data.t_validation, epochs=epochs, batch_size=values["batch_size"], rng=rng,
              callback=report)
        accuracies = [metrics.validation_accuracy for metrics in history]
        trial.set_user_attr("train_seconds", round(time.perf_counter() - started, 3))
        trial.set_user_attr("epochs_run", len(history))
        trial.set_user_attr("best_epoch", int(np.argmax(accuracies)) + 1)
        trial.set_user_attr("learning_curves", {
            name: [round(getattr(metrics, name), 5) for metrics in history]
            for name in ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "seconds")})
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"trial-{trial.number}-weights.npz"
            save_weights(network, path)
            artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
        trial.set_user_attr("weights_artifact_id", artifact_id)
        return max(accuracies)

    budget = optuna.study.MaxTrialsCallback(spec.budget.trials,
                                            states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    study.optimize(objective, callbacks=[budget])


def overhead_per_trial(study: optuna.Study) -> dict:
    """Median in-trial overhead and gap between a worker's trials, in milliseconds."""
    by_worker: dict[str, list] = {}
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    inside, gaps = [], []
    for trials in by_worker.values():
        trials.sort(key=lambda trial: trial.datetime_start)
        for trial in trials:
            compute = sum(trial.user_attrs["learning_curves"]["seconds"])
            inside.append(trial.duration.total_seconds() - compute)
        gaps.extend((after.datetime_start - before.datetime_complete).total_seconds()
                    for before, after in itertools.pairwise(trials))
    inside_ms, gap_ms = 1000 * statistics.median(inside), 1000 * statistics.median(gaps)
    compute_ms = 1000 * statistics.median(sum(trial.user_attrs["learning_curves"]["seconds"])
                                          for trials in by_worker.values() for trial in trials)
    return {"trials": sum(len(trials) for trials in by_worker.values()), "workers": len(by_worker),
            "in_trial_overhead_ms": round(inside_ms, 1), "gap_ms": round(gap_ms, 1),
            "overhead_ms": round(inside_ms + gap_ms, 1), "compute_ms": round(compute_ms, 1)}


def overhead_comparison(label: str, folder: Path, storage: str, trials: int) -> dict:
    """hpo's worker loop and Optuna's ``study.optimize``, two workers each, on the same storage, one after the other."""
    environment = {key: value for key, value in os.environ.items() if key not in ("HPO_STORAGE", "HPO_BLAS_THREADS")}
    rows = {}
    for loop in ("optuna", "hpo"):
        name = f"overhead_{loop}_{uuid.uuid4().hex[:8]}"
        study_file = folder / f"{name}.toml"
        study_file.write_text(OVERHEAD_STUDY.format(name=name, trials=trials))
        artifacts = folder / f"{name}-artifacts"
        if loop == "hpo":
            result = subprocess.run([HPO, "run", str(study_file), "--storage", storage, "--jobs", "2", "--no-progress",
                                     "--artifact-dir", str(artifacts)], env=environment, capture_output=True, text=True,
                                    check=False)
            failed = [result] if result.returncode else []
        else:
            created = subprocess.run([HPO, "create", str(study_file), "--storage", storage], env=environment,
                                     capture_output=True, text=True, check=False)
            if created.returncode:
                raise SystemExit(f"{label}: hpo create failed:\n{created.stderr[-2000:]}")
            artifacts.mkdir()
            workers = [subprocess.Popen([sys.executable, __file__, "--optuna-loop", str(study_file), storage,
                                         str(artifacts)], env={**environment, "OMP_NUM_THREADS": "1",
                                                               "OPENBLAS_NUM_THREADS": "1"},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for _ in range(2)]
            failed = [worker for worker in workers if worker.wait() != 0]
            for worker in failed:
                raise SystemExit(f"{label}: Optuna's loop failed:\n{worker.stderr.read()[-2000:]}")
        for run in failed:
            raise SystemExit(f"{label}: hpo run failed:\n{run.stderr[-2000:]}")
        study = optuna.load_study(study_name=name, storage=storage)
        rows[loop] = overhead_per_trial(study)
        optuna.delete_study(study_name=name, storage=storage)
    rows["hpo"]["thread_pools"] = "hpo, 1 BLAS thread"
    rows["optuna"]["thread_pools"] = "Optuna loop, OMP/OPENBLAS_NUM_THREADS=1"
    row = {"case": label, "hpo": rows["hpo"], "optuna": rows["optuna"],
           "overhead_ratio_hpo_over_optuna": round(rows["hpo"]["overhead_ms"] / rows["optuna"]["overhead_ms"], 2)}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("HPO_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL for the connection count [default: $HPO_TEST_POSTGRES_URL]")
    parser.add_argument("--overhead-trials", type=int, default=60,
                        help="Trials of the overhead comparison with Optuna's own loop (0 skips it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/workers.json"))
    parser.add_argument("--shared", action="store_true",
                        help="Record that other jobs shared the machine during the run (timings are then noisy)")
    parser.add_argument("--optuna-loop", nargs=3, metavar=("STUDY_FILE", "STORAGE", "ARTIFACT_DIR"),
                        help=argparse.SUPPRESS)  # one worker of the comparison, started by this script
    options = parser.parse_args()
    if options.optuna_loop:
        optuna_loop(*options.optuna_loop)
        return
    software = versions(bool(options.postgres))  # before the run: the commit's state is that of the code run
    environment = {key: value for key, value in os.environ.items() if key != "HPO_BLAS_THREADS"}
    threads = {
        "hpo, default BLAS threads": thread_pools(environment, None),
        "hpo, 1 BLAS thread": thread_pools(environment, 1),
    }
    if options.overhead_trials:
        threads["Optuna loop, OMP/OPENBLAS_NUM_THREADS=1"] = thread_pools(
            {**environment, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}, None)
    for name, value in threads.items():
        print(f"{name}: " + "; ".join(f"{pool['internal_api']} {pool['version']} ({pool['user_api']}): "
                                      f"{pool['num_threads']} threads" for pool in value["pools"]), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sqlite = f"sqlite:///{folder / 'bench.db'}"
        rows = [
            run_case("1 worker, 1 BLAS thread", folder, sqlite, ["--blas-threads", "1"], options.trials, options.epochs,
                     "hpo, 1 BLAS thread"),
            run_case("1 worker, default BLAS threads", folder, sqlite, [], options.trials, options.epochs,
                     "hpo, default BLAS threads"),
            run_case("2 workers (--jobs 2), 1 BLAS thread each", folder, sqlite, ["--jobs", "2"], options.trials,
                     options.epochs, "hpo, 1 BLAS thread"),
        ]
        if options.postgres:
            rows.append(run_case("2 workers on PostgreSQL", folder, options.postgres, ["--jobs", "2"],
                                 options.trials, options.epochs, "hpo, 1 BLAS thread", postgres=options.postgres))
        overhead = []
        if options.overhead_trials:
            overhead.append(overhead_comparison("SQLite", folder, f"sqlite:///{folder / 'overhead.db'}",
                                                options.overhead_trials))
            if options.postgres:
                overhead.append(overhead_comparison("PostgreSQL", folder, options.postgres, options.overhead_trials))
    one, two = rows[0], rows[2]
    speedup = {rate: round(two[f"trials_per_hour_{rate}"] / one[f"trials_per_hour_{rate}"], 2)
               for rate in ("trial_span", "wall_clock")}
    summary = {
        "machine": {"cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "shared": options.shared},
        "versions": software,
        "thread_pools": threads,
        "settings": {"trials": options.trials, "epochs": options.epochs, "overhead_trials": options.overhead_trials},
        "cases": rows,
        "speedup_2_workers_over_1": speedup,
        "overhead_against_optuna": overhead,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{'case':45} {'trials/h span':>13} {'trials/h wall':>13} {'trial s':>8} {'overhead':>9} "
          f"{'startup s':>9} {'connections':>11}")
    for row in rows:
        print(f"{row['case']:45} {row['trials_per_hour_trial_span']:13.1f} {row['trials_per_hour_wall_clock']:13.1f} "
              f"{row['trial_seconds_median']:8.2f} {row['overhead_fraction_median']:9.2%} {row['startup_seconds']:9.2f} "
              f"{row.get('connections_total_max', '')!s:>11}")
    print(f"2 workers / 1 worker (1 BLAS thread): {speedup['trial_span']:.2f}x over the trials' span, "
          f"{speedup['wall_clock']:.2f}x by wall clock (start-up included)")
    for row in overhead:
        print(f"{row['case']}: per-trial service overhead hpo {row['hpo']['overhead_ms']:.0f} ms "
              f"(in trial {row['hpo']['in_trial_overhead_ms']:.0f} + gap {row['hpo']['gap_ms']:.0f}), "
              f"Optuna's loop {row['optuna']['overhead_ms']:.0f} ms (in trial {row['optuna']['in_trial_overhead_ms']:.0f} "
              f"+ gap {row['optuna']['gap_ms']:.0f}): ratio {row['overhead_ratio_hpo_over_optuna']:.2f}")
    print(f"written to {options.out}")


if __name__ == "__main__":
    main()
