"""Benchmark of parallel workers on Fashion-MNIST: trials per hour, service overhead, connections.

    python benchmarks/workers.py [--trials 12] [--epochs 2] [--postgres URL] [--out FILE]

Runs the same study (fixed 784-256-256-10 ReLU network, Adam, batch 128, random
sampler over learning rate and weight decay, no pruning) three ways with
`hpo run`: 1 worker with 1 BLAS thread, 1 worker with the BLAS library's default
threads, and `--jobs 2` (two workers, one BLAS thread each).  It reports

- trials per hour of each (wall time from the first trial's start to the last
  trial's end, so process start-up and data loading are reported separately);
- service overhead per trial: the part of a trial's duration that is not
  training or validation (study storage, sampling, pruning checks, heartbeats),
  from the trials' stored per-epoch compute seconds;
- with --postgres: the same two-worker run against PostgreSQL, sampling
  pg_stat_activity for the connections each process holds (application_name 'hpo host:pid').

Timings are printed and written as JSON; nothing is asserted.
"""

from __future__ import annotations

import argparse
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
             postgres: str | None = None) -> dict:
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
                            env=environment, capture_output=True, text=True)
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
        "trials": len(finished),
        "wall_seconds": round(wall, 2),
        "startup_seconds": round(wall - trial_span, 2),
        "trial_seconds_median": round(statistics.median(t.duration.total_seconds() for t in finished), 3),
        "trials_per_hour": round(len(finished) / trial_span * 3600, 1),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("HPO_TEST_POSTGRES_URL"),
                        help="PostgreSQL URL for the connection count [default: $HPO_TEST_POSTGRES_URL]")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/workers.json"))
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sqlite = f"sqlite:///{folder / 'bench.db'}"
        rows = [
            run_case("1 worker, 1 BLAS thread", folder, sqlite, ["--blas-threads", "1"], options.trials, options.epochs),
            run_case("1 worker, default BLAS threads", folder, sqlite, [], options.trials, options.epochs),
            run_case("2 workers (--jobs 2), 1 BLAS thread each", folder, sqlite, ["--jobs", "2"], options.trials, options.epochs),
        ]
        if options.postgres:
            rows.append(run_case("2 workers on PostgreSQL", folder, options.postgres, ["--jobs", "2"],
                                 options.trials, options.epochs, postgres=options.postgres))
    speedup = rows[2]["trials_per_hour"] / rows[0]["trials_per_hour"]
    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "optuna": optuna.__version__},
        "settings": {"trials": options.trials, "epochs": options.epochs},
        "cases": rows,
        "speedup_2_workers_over_1": round(speedup, 2),
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{'case':45} {'trials/h':>9} {'trial s':>8} {'overhead':>9} {'startup s':>9} {'connections':>11}")
    for row in rows:
        print(f"{row['case']:45} {row['trials_per_hour']:9.1f} {row['trial_seconds_median']:8.2f} "
              f"{row['overhead_fraction_median']:9.2%} {row['startup_seconds']:9.2f} {str(row.get('connections_total_max', '')):>11}")
    print(f"2 workers / 1 worker (1 BLAS thread): {speedup:.2f}x; written to {options.out}")


if __name__ == "__main__":
    main()
