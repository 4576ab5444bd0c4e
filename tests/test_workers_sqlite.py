"""Parallel workers on SQLite: `hpo run --jobs 4` on the default file, and `hpo worker` processes."""

import os
import re
import sqlite3
import subprocess
import time

import optuna
from optuna.trial import TrialState

from hpo.config.spec import load_spec
from hpo.store.storage import open_storage
from hpo.tuning.study import open_study


def test_four_local_workers_on_sqlite_meet_the_budget_without_lock_errors(tmp_path, run_hpo):
    (tmp_path / "study.toml").write_text(
        'name = "parallel"\n[budget]\ntrials = 24\n[pruner]\ntype = "none"\n'
        "[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }\n"
        "epochs = 3\nhidden_size = 32\n"
    )
    result = run_hpo("run", "study.toml", "--jobs", "4", "--no-progress", "--artifact-dir", "weights", cwd=tmp_path,
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    assert result.stdout.count("worker done:") == 4
    # 4 workers of one BLAS thread each: more threads than cores is said once, up front.
    oversubscribed = 4 > len(os.sched_getaffinity(0))
    assert ("warning: 4 job(s) x 1 BLAS thread(s) = 4 threads on" in result.stderr) == oversubscribed
    study = optuna.load_study(study_name="parallel", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    trials = study.get_trials()
    completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert len(completed) == 24
    # Anything else is a trial that lost the race for the last slots of the budget, never run,
    # and the summary counts those apart from failed trials.
    not_run = [trial for trial in trials if trial.state != TrialState.COMPLETE]
    assert all(trial.user_attrs.get("not_run") for trial in not_run)
    assert "trials: 24 complete, 0 pruned, 0 failed" + (f", {len(not_run)} not run (budget already met)"
                                                         if not_run else ";") in result.stdout
    assert len({trial.user_attrs["worker"] for trial in completed}) >= 2
    # Each worker's sampler has a seed of its own: no two trials sampled alike.
    assert len({trial.params["learning_rate"] for trial in completed}) == 24
    # --artifact-dir reaches the workers: each completed trial's weights are in that folder.
    assert f"artifacts: {tmp_path / 'weights'}" in result.stdout
    stored = {path.name for path in (tmp_path / "weights").iterdir()}
    assert stored == {trial.user_attrs["weights_artifact_id"] for trial in completed}
    with sqlite3.connect(tmp_path / "hpo.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_racing_creates_on_a_fresh_sqlite_file_make_one_study(tmp_path, hpo_command, hpo_environment):
    # Two terminals starting `hpo run` at once on a new database: both create Optuna's
    # tables; SQLite says "table ... already exists" to the slower one, which must retry.
    (tmp_path / "study.toml").write_text('name = "race"\n[budget]\ntrials = 1\n[parameters]\nepochs = 1\n')
    environment = hpo_environment()
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        creators = [subprocess.Popen([hpo_command, "create", "study.toml", "--storage", storage], cwd=tmp_path,
                                     env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        results = [(creator.wait(timeout=120), creator.stderr.read()) for creator in creators]
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        assert optuna.get_all_study_names(storage) == ["race"]


WORKERS_STUDY = """
name = "workers"
[budget]
trials = {trials}
[sampler]
type = "random"
seed = 0
[pruner]
type = "median"
n_startup_trials = 2
[parameters]
learning_rate = {{ low = 1e-3, high = 0.3, log = true }}
hidden_layers = 2
{network}
epochs = {epochs}
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 30
"""
SMALL = "hidden_size = 16\nbatch_size = 32"


def start_workers(hpo_command, tmp_path, count, *, trials, epochs, network=SMALL, enqueue=()):
    """Create the study, queue ``enqueue`` (parameters of trials to run first), start ``count`` `hpo worker`s
    (``hpo_command``)."""
    (tmp_path / "study.toml").write_text(WORKERS_STUDY.format(trials=trials, epochs=epochs, network=network))
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    study = open_study(load_spec(tmp_path / "study.toml"), open_storage(url), "workers")  # as `hpo create` does
    for parameters in enqueue:
        study.enqueue_trial(parameters)
    workers = [subprocess.Popen([hpo_command, "worker", "study.toml", "--storage", url, "--no-progress"], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(count)]
    return url, workers


def finish(workers, worker_id):
    """Wait for the workers: {HOST:PID (``worker_id(pid)``): (exit code, stdout, stderr)}."""
    results = {}
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=300)
        results[worker_id(worker.pid)] = (worker.returncode, stdout, stderr)
    return results


def started(stdout):
    """Trials a worker says it started ("worker done: K trials started; ...")."""
    return int(re.search(r"^worker done: (\d+) trials started;", stdout, re.MULTILINE)[1])


def test_two_workers_finish_disjoint_sets_of_trials(tmp_path, hpo_command, worker_id,
                                                    assert_each_trial_finished_by_one_worker):
    # Two queued trials first (as retries are queued), then sampled ones, some maybe pruned.
    url, workers = start_workers(hpo_command, tmp_path, 2, trials=10, epochs=6, enqueue=[{"learning_rate": 0.01}] * 2)
    results = finish(workers, worker_id)
    assert [code for code, _, _ in results.values()] == [0, 0], results
    trials = optuna.load_study(study_name="workers", storage=url).get_trials()
    finished_by = assert_each_trial_finished_by_one_worker(trials, {worker: log for worker, (_, _, log) in results.items()})
    assert len(finished_by) == 10 and set(finished_by.values()) == set(results)  # both workers took part
    # Every trial was started by one worker: the trials the workers say they started add up to the study's.
    assert sum(started(stdout) for _, stdout, _ in results.values()) == len(trials)
    assert all(trial.state != TrialState.FAIL or trial.user_attrs.get("not_run") for trial in trials)


def test_a_running_trial_failed_by_hand_stays_failed_its_worker_goes_on_and_the_retry_runs_once(
        tmp_path, hpo_command, worker_id, finished_in_log, retried_trial_number):
    # Trial 0 trains slowly (about 0.1 to 0.3 s an epoch), trial 1 fast. The worker is alone, so it
    # takes trial 1 and then the retry of trial 0 whatever the moment it sees trial 0 failed.
    # (With several workers, one asking in the moment between the FAIL and the retry's creation
    # starts a new trial instead; the retry then waits, and runs if the budget leaves it room.)
    slow, fast = {"hidden_size": 512, "batch_size": 4}, {"hidden_size": 16, "batch_size": 32}
    url, workers = start_workers(hpo_command, tmp_path, 1, trials=2, epochs=20, enqueue=[slow, fast],
                                 network="hidden_size = { choices = [16, 512] }\nbatch_size = { choices = [4, 32] }")
    deadline = time.monotonic() + 120
    while not optuna.load_study(study_name="workers", storage=url).trials[0].intermediate_values:
        assert time.monotonic() < deadline and workers[0].poll() is None
        time.sleep(0.2)
    by_hand = subprocess.run([hpo_command, "stale", "--storage", url, "--trial", "0"], capture_output=True, text=True,
                             timeout=120, check=False)
    assert by_hand.returncode == 0 and "trial 0: marked FAIL by hand" in by_hand.stdout, by_hand.stderr
    assert re.search(r"Trial 0 of worker \S+ failed: marked FAIL by hand \(`hpo stale --trial`\); queued again with "
                     r"the same parameters \(retry 1 of 2\)", by_hand.stderr), by_hand.stderr
    results = finish(workers, worker_id)
    # The worker said so in one line, went on, and exited 0.
    ((code, stdout, log),) = results.values()
    assert code == 0 and "Traceback" not in log, log
    (line,) = [line for line in log.splitlines() if "Trial 0 " in line]
    assert line.endswith("Trial 0 was already marked FAIL elsewhere (by another worker after a late heartbeat, or by "
                         "hand with `hpo stale --trial`); going on with the next trial"), log
    trials = optuna.load_study(study_name="workers", storage=url).get_trials()
    failed = trials[0]
    assert failed.state == TrialState.FAIL and failed.value is None  # not overwritten by its worker
    assert 1 <= len(failed.intermediate_values) < 20
    # The retry ran once, with trial 0's parameters, after the queued trial 1.
    retries = [trial for trial in trials if retried_trial_number(trial) == 0]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.number == 2 and retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert retry.params == {**slow, "learning_rate": failed.params["learning_rate"]}
    assert retry.user_attrs["epochs_run"] == 20
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert finished_in_log.findall(log) == ["1", "2"] and started(stdout) == 3
