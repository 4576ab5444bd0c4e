"""Fault injection on the real commands: SIGTERM, SIGINT and SIGHUP at random moments, a
second signal, SIGKILL of `hpo run --jobs`, two `hpo run` of one study at once.

Every test asserts what a user relies on: the worker exits with 143 (SIGTERM), 130
(SIGINT) or 129 (SIGHUP) within seconds, no trial of it is left RUNNING, and a following
worker finishes the exact budget.  SQLite always; PostgreSQL too when HPO_TEST_POSTGRES_URL
is set (CI sets it).
"""

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Seconds a worker may take from the signal to its exit (a mini-batch, a FAIL write, the exit).
EXIT_SECONDS = 10
STUDY = """
name = "{name}"
[budget]
trials = {trials}
[dataset]
name = "digits"
train_images = 300
[sampler]
type = "random"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
hidden_layers = 1
hidden_size = 8
batch_size = 50
epochs = {epochs}
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 3
"""

storages = [pytest.param("sqlite", id="sqlite"),
            pytest.param("postgres", id="postgres",
                         marks=[pytest.mark.skipif(not POSTGRES_URL, reason="set HPO_TEST_POSTGRES_URL to a PostgreSQL "
                                                                           "URL to run the PostgreSQL cases")])]


@pytest.fixture
def study_in(tmp_path, request):
    """``make(kind, trials, epochs)`` -> (study file, name, storage URL); PostgreSQL studies are deleted after.

    A PostgreSQL study holds the server's lock (the postgres_lock fixture) for the rest of the test.
    """
    made = []

    def make(kind, *, trials, epochs):
        if kind == "postgres":
            request.getfixturevalue("postgres_lock")
        name = f"signals_{uuid.uuid4().hex[:10]}"
        path = tmp_path / f"{name}.toml"
        path.write_text(STUDY.format(name=name, trials=trials, epochs=epochs))
        url = POSTGRES_URL if kind == "postgres" else f"sqlite:///{tmp_path / 'hpo.db'}"
        made.append((name, url))
        return path, name, url

    yield make
    for name, url in made:
        if url == POSTGRES_URL:
            try:
                optuna.delete_study(study_name=name, storage=url)
            except KeyError:
                pass


def trials_of(name, url):
    return optuna.load_study(study_name=name, storage=url).get_trials()


class Output:
    """Collects a process's stderr lines in a thread; ``wait_for(pattern)`` blocks until one matches."""

    def __init__(self, process):
        self.lines = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, pattern, timeout=120):
        deadline = time.monotonic() + timeout
        with self._changed:
            while not any(re.search(pattern, line) for line in self.lines):
                if not self._changed.wait(timeout=deadline - time.monotonic()) and time.monotonic() > deadline:
                    raise AssertionError(f"no line matching {pattern!r} in {''.join(self.lines)[-2000:]}")

    def text(self):
        self._thread.join(timeout=10)
        return "".join(self.lines)


@pytest.mark.parametrize("kind", storages)
def test_signals_at_random_moments_leave_no_trial_running(study_in, kind, hpo_command, hpo_environment, run_hpo):
    rounds = 6 if kind == "sqlite" else 4
    study_file, name, url = study_in(kind, trials=10_000, epochs=2)
    environment = hpo_environment(HPO_STORAGE=url)
    assert subprocess.run([hpo_command, "create", str(study_file)], env=environment, capture_output=True,
                          timeout=120).returncode == 0
    generator = random.Random(0)
    for index in range(rounds):
        signal_number = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)[index % 3]
        worker = subprocess.Popen([hpo_command, "worker", str(study_file), "--no-progress"], env=environment,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        output = Output(worker)
        output.wait_for(r"Trial \d+ finished")  # the loop is running: every moment of it is a target now
        time.sleep(generator.uniform(0, 0.6))   # a trial of this study lasts about 0.1 s
        worker.send_signal(signal_number)
        sent = time.monotonic()
        code = worker.wait(timeout=60)
        elapsed = time.monotonic() - sent
        log = output.text()
        assert code == 128 + signal_number, log
        assert elapsed < EXIT_SECONDS
        assert "Traceback" not in log and "Exception" not in log, log
        running = [trial.number for trial in trials_of(name, url) if trial.state == TrialState.RUNNING]
        assert running == [], f"round {index}: {running} left RUNNING\n{log}"
    # A following worker finishes the exact budget (the file's budget may change; set it just above).
    finished = sum(trial.state in FINISHED for trial in trials_of(name, url))
    study_file.write_text(study_file.read_text().replace("trials = 10000", f"trials = {finished + 3}"))
    following = run_hpo("worker", str(study_file), "--no-progress", env={"HPO_STORAGE": url})
    assert following.returncode == 0, following.stderr
    trials = trials_of(name, url)
    assert sum(trial.state in FINISHED for trial in trials) == finished + 3
    assert TrialState.RUNNING not in {trial.state for trial in trials}


def test_a_second_signal_ends_the_process_at_once(tmp_path):
    # The first signal is only recorded; this program never reaches a safe point.
    program = ("import os, signal, time\nfrom hpo import interrupts\ninterrupts.install()\n"
               "os.kill(os.getpid(), signal.SIGTERM)\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\n")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert result.returncode == 143
    assert time.monotonic() - started < 20  # not the 30 s sleep
    assert "SIGTERM again: exiting now" in result.stderr


def test_repeated_hangups_ask_for_an_orderly_stop_only(tmp_path):
    # A dying parent's SIGHUP may come once per thread it had: never "exit at once".
    program = ("import os, signal, sys\nfrom hpo import interrupts\ninterrupts.install()\n"
               "for _ in range(3):\n    os.kill(os.getpid(), signal.SIGHUP)\n"
               "try:\n    interrupts.check()\nexcept interrupts.Interrupted as stop:\n"
               "    print('orderly', stop.exit_code)\n    sys.exit(stop.exit_code)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (129, "orderly 129", "")


def _alive(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux's prctl")
def test_killing_hpo_run_with_jobs_ends_its_workers(study_in, hpo_command, hpo_environment):
    study_file, name, url = study_in("sqlite", trials=4, epochs=5_000)
    parent = subprocess.Popen([hpo_command, "run", str(study_file), "--jobs", "2", "--no-progress"],
                              env=hpo_environment(HPO_STORAGE=url),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers = set()
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            workers = {int(trial.user_attrs["worker"].rsplit(":", 1)[1]) for trial in trials_of(name, url)
                       if trial.state == TrialState.RUNNING and "worker" in trial.user_attrs}
        except KeyError:  # the study is not created yet
            continue
    assert len(workers) == 2, "the two workers did not start their trials"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + EXIT_SECONDS
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphans = [pid for pid in workers if _alive(pid)]
    for pid in orphans:  # do not leave them running after a failure
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "workers went on without their parent"
    states = [trial.state for trial in trials_of(name, url)]
    assert TrialState.RUNNING not in states and states.count(TrialState.FAIL) == 2


def test_two_runs_of_one_study_at_once_never_sample_alike(study_in, hpo_command, hpo_environment):
    study_file, name, url = study_in("sqlite", trials=12, epochs=15)
    environment = hpo_environment(HPO_STORAGE=url)
    runs = [subprocess.Popen([hpo_command, "run", str(study_file), "--no-progress"], env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    trials = trials_of(name, url)
    sampled = [trial.params["learning_rate"] for trial in trials if trial.params]
    assert len({trial.user_attrs["worker"] for trial in trials if "worker" in trial.user_attrs}) == 2
    assert len(sampled) >= 12 and len(set(sampled)) == len(sampled)
