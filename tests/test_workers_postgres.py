"""Many workers on one PostgreSQL study, started with the commands of docker-compose.yml.

Needs a PostgreSQL server: set HPO_TEST_POSTGRES_URL (CI sets it to the local
server, postgresql+psycopg2://postgres@127.0.0.1:5432/test).  Each test uses a
study name of its own and deletes it afterwards.  The workers run the very
`command` and `environment` of the `create-study` and `worker` services in
docker-compose.yml, as processes; only HPO_STORAGE points at the local server
instead of the compose network's host `postgres`, and HPO_ARTIFACT_DIR at a
folder beside the study file instead of the compose volume.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL")
pytestmark = [
    # One test at a time uses the server, whichever xdist process runs it: they count its connections.
    pytest.mark.usefixtures("postgres_lock"),
    pytest.mark.skipif(not POSTGRES_URL, reason="set HPO_TEST_POSTGRES_URL to a PostgreSQL URL to run the worker tests"),
]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def compose_service(console_scripts: Path, name: str, study_file: Path,
                    storage_url: str) -> tuple[list[str], dict[str, str]]:
    """The service's command (entrypoint + command) and environment, as docker compose would run them, with the
    console script of ``console_scripts``."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]
    variables = {"HPO_STUDY_FILE": str(study_file), "POSTGRES_PASSWORD": ""}

    def interpolate(text: str) -> str:
        return re.sub(r"\$\{(\w+)(?::[-?][^}]*)?\}", lambda match: variables[match.group(1)], str(text))

    entrypoint = service.get("entrypoint", ["hpo"])
    command = [interpolate(part) for part in [*entrypoint, *service.get("command", [])]]
    command[0] = str(console_scripts / command[0])  # the console script of this environment
    environment = {key: interpolate(value) for key, value in service.get("environment", {}).items()}
    assert environment["HPO_STORAGE"].startswith("postgresql+psycopg2://hpo:@postgres:5432/hpo")
    environment["HPO_STORAGE"] = storage_url
    if "HPO_ARTIFACT_DIR" in environment:  # the compose volume; here a folder beside the study file
        assert environment["HPO_ARTIFACT_DIR"] == "/artifacts" and "artifacts:/artifacts" in service["volumes"]
        environment["HPO_ARTIFACT_DIR"] = str(study_file.parent / "artifacts")
    return command, {**os.environ, **environment}


def start(console_scripts: Path, service: str, study_file: Path, storage_url: str = None) -> subprocess.Popen:
    command, environment = compose_service(console_scripts, service, study_file, storage_url or POSTGRES_URL)
    return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def create(console_scripts: Path, study_file: Path) -> None:
    process = start(console_scripts, "create-study", study_file)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr


def finish(processes, timeout=600) -> list[tuple[int, str]]:
    results = []
    for process in processes:
        _, stderr = process.communicate(timeout=timeout)
        results.append((process.returncode, stderr))
    return results


def load(name: str) -> optuna.Study:
    """The study, read afresh; waits out a server that is restarting (the restart test shares the server)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=POSTGRES_URL)
            study.get_trials(deepcopy=False)
            return study
        except (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def wait_for(condition, timeout=120.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def running_trial_with_epochs(name: str):
    for trial in load(name).get_trials(states=(TrialState.RUNNING,)):
        if trial.intermediate_values and "worker" in trial.user_attrs:
            return trial
    return None


def two_workers_and_a_running_trial(console_scripts: Path, study_file: Path, name: str):
    """Create the study, start two workers, wait for a trial with an epoch done: (workers by pid, trial, its pid)."""
    create(console_scripts, study_file)
    workers = {}
    for _ in range(2):
        process = start(console_scripts, "worker", study_file)
        workers[process.pid] = process
    victim = wait_for(lambda: running_trial_with_epochs(name))
    return workers, victim, int(victim.user_attrs["worker"].rsplit(":", 1)[1])


def started_here(pid: int) -> bool:
    """Whether process ``pid`` descends from this test process (not another session's hpo on the server)."""
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            with open(f"/proc/{pid}/status") as status:
                pid = next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
        except (FileNotFoundError, StopIteration):
            return False
    return False


def hpo_connections() -> dict[str, int]:
    """Connections per hpo process started by this test (application_name 'hpo host:pid')."""
    engine = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'hpo %' GROUP BY application_name")).all()
    engine.dispose()
    host = socket.gethostname()
    # Other hpo processes may use the same server (another test session, a user's workers).
    return {name: count for name, count in rows
            if not name.startswith(f"hpo {host}:") or started_here(int(name.rsplit(":", 1)[1]))}


def test_four_workers_share_one_budget_exactly(study_factory, console_scripts, worker_id,
                                               assert_each_trial_finished_by_one_worker):
    study_file, name = study_factory(trials=40, epochs=3)
    create(console_scripts, study_file)
    workers = [start(console_scripts, "worker", study_file) for _ in range(4)]
    wait_for(lambda: len(load(name).get_trials()) >= 4)
    connections = [hpo_connections() for _ in range(10) if not time.sleep(0.2)]
    results = finish(workers)
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    trials = load(name).get_trials()
    finished = [trial for trial in trials if trial.state in FINISHED]
    assert len(finished) == 40
    assert len({trial.number for trial in trials}) == len(trials)
    assert all(trial.state in (*FINISHED, TrialState.FAIL) for trial in trials)
    for trial in finished:
        assert set(trial.params) == {"learning_rate", "weight_decay"}
        assert sorted(trial.intermediate_values) == [1, 2, 3]
    # The workers share one artifact folder (the compose volume): the weights of every completed trial.
    completed = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    stored = {path.name for path in (study_file.parent / "artifacts").iterdir()}
    assert completed and stored == {trial.user_attrs["weights_artifact_id"] for trial in completed}
    # Every trial was run by one of the four workers; each holds 1 to 3 connections (pool 2 + 1).
    workers_seen = {trial.user_attrs["worker"] for trial in finished}
    assert 2 <= len(workers_seen) <= 4
    # No trial ran on two workers: by their own logs, the workers finished disjoint sets of trials, each
    # trial by the worker its record names.
    assert_each_trial_finished_by_one_worker(trials, {worker_id(process.pid): log
                                                      for process, (_, log) in zip(workers, results)})
    per_process = [count for sample in connections for count in sample.values()]
    assert per_process and max(per_process) <= 3
    # Every hpo connection is one of the four workers' (one may have finished no trial on a busy machine).
    assert {name.split(" ", 1)[1] for sample in connections for name in sample} <= {
        worker_id(process.pid) for process in workers}


def test_a_killed_worker_s_trial_fails_within_the_grace_period_and_is_retried(study_factory, console_scripts,
                                                                              retried_trial_number):
    study_file, name = study_factory(trials=10, epochs=60)
    workers, victim, pid = two_workers_and_a_running_trial(console_scripts, study_file, name)
    workers[pid].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    workers.pop(pid).wait()

    failed = wait_for(lambda: (t := load(name).trials[victim.number]).state == TrialState.FAIL and t, timeout=30)
    # Grace period 3 s; the other worker checks after every epoch and between trials.
    assert time.monotonic() - killed_at <= 3 + 5
    assert failed.state == TrialState.FAIL
    results = finish(workers.values())
    assert [code for code, _ in results] == [0], results
    trials = load(name).get_trials()
    retries = [t for t in trials if retried_trial_number(t) == victim.number]
    assert len(retries) == 1 and retries[0].params == victim.params
    assert len([t for t in trials if t.state in FINISHED]) == 10


def test_sigint_fails_the_worker_s_trial_at_once_and_the_others_finish(study_factory, console_scripts):
    study_file, name = study_factory(trials=8, epochs=60)
    workers, victim, pid = two_workers_and_a_running_trial(console_scripts, study_file, name)
    interrupted = workers.pop(pid)
    interrupted.send_signal(signal.SIGINT)
    _, stderr = interrupted.communicate(timeout=60)
    assert interrupted.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert load(name).trials[victim.number].state == TrialState.FAIL  # at once, not after a grace period
    results = finish(workers.values())
    assert [code for code, _ in results] == [0], results
    assert len(load(name).get_trials(states=FINISHED)) == 8


@pytest.mark.skipif(shutil.which("pg_ctlcluster") is None or os.geteuid() != 0,
                    reason="restarting PostgreSQL needs the local cluster (pg_ctlcluster) and root")
def test_workers_ride_out_a_postgresql_restart(study_factory, console_scripts):
    study_file, name = study_factory(trials=16, epochs=25)
    create(console_scripts, study_file)
    workers = [start(console_scripts, "worker", study_file) for _ in range(2)]
    wait_for(lambda: len(load(name).get_trials(states=FINISHED)) >= 3)
    before = {t.number: t.value for t in load(name).get_trials(states=FINISHED)}
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True, timeout=120)
    results = finish(workers)
    assert [code for code, _ in results] == [0, 0], results
    # The restart reached the workers (the database was touched while down) and they waited.
    assert any("retrying in" in stderr for _, stderr in results)
    after = {t.number: t.value for t in load(name).get_trials(states=FINISHED)}
    assert all(after.get(number) == value for number, value in before.items())  # nothing finished was lost
    assert len(after) == 16


def test_two_racing_creates_on_a_fresh_database_make_one_study(tmp_path, console_scripts, write_worker_study):
    database = f"hpo_race_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    fresh_url = sqlalchemy.engine.make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)
    try:
        study_file, name = write_worker_study(tmp_path, trials=4, epochs=2)
        creators = [start(console_scripts, "create-study", study_file, fresh_url) for _ in range(2)]
        results = finish(creators)
        assert [code for code, _ in results] == [0, 0], results
        assert optuna.get_all_study_names(fresh_url) == [name]
    finally:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}'"))
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{database}"'))
        admin.dispose()
