"""hpo.store.storage: a SQLite study database on a read-only mount is read by every reading command; writers are told why not.

hpo keeps SQLite in write-ahead-log mode, whose -wal and -shm files a reader normally
creates.  The database is made read-only for one command at a time by a bind mount in a
private mount namespace (root here and in CI; a plain chmod does not stop root), else by
running the command as the unprivileged user nobody; the tests skip, saying why, if the
machine allows neither.
"""

import datetime
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpo.store.storage import open_storage

STUDY = """
name = "ro"
[budget]
trials = 2
[sampler]
type = "random"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = { low = 1e-3, high = 1e-1, log = true }
hidden_size = 8
epochs = 2
"""
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
# Runs "$2..." with the folder "$1" mounted read-only on itself, in a mount namespace of its own.
MOUNT_READ_ONLY = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"', "sh"]


# Besides HPO_STORAGE, a table width of the caller's shell does not leak into hpo's environment.
NOT_INHERITED = ("COLUMNS",)


class ReadOnly:
    """Runs commands that see one folder read-only (see the module docstring)."""

    def __init__(self, way: str, hpo_command: str, hpo_environment):
        self.way = way
        self.hpo_command = hpo_command
        self.hpo_environment = hpo_environment

    def command(self, folder: Path, arguments: list[str]) -> list[str]:
        if self.way == "mount":
            return [*MOUNT_READ_ONLY, str(folder), *arguments]
        return [*NOBODY, *arguments]

    def protect(self, folder: Path) -> None:
        """As nobody, the folder and its files are read-only by their permissions; a mount needs nothing."""
        if self.way == "nobody":
            for path in folder.rglob("*"):
                path.chmod(0o555 if path.is_dir() else 0o444)
            folder.chmod(0o555)

    def run(self, folder: Path, *arguments: str, cwd: Path, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(folder, [self.hpo_command, *arguments]), cwd=cwd,
                              env=self.hpo_environment(*NOT_INHERITED, **extra), capture_output=True, text=True,
                              timeout=300)


def shared_folder(prefix: str) -> Path:
    """A fresh folder that the user nobody may enter (pytest's own folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def read_only(hpo_command, hpo_environment):
    probe = shared_folder("hpo-probe-")
    try:
        reasons = []
        mounted = subprocess.run([*MOUNT_READ_ONLY, str(probe), "sh", "-c", 'touch "$0/x" 2>/dev/null; test ! -e "$0/x"',
                                  str(probe)], capture_output=True, text=True)
        if mounted.returncode == 0:
            return ReadOnly("mount", hpo_command, hpo_environment)
        reasons.append(f"no read-only bind mount ({(mounted.stderr.strip() or 'a write got through')[:120]})")
        if shutil.which("setpriv"):
            as_nobody = subprocess.run([*NOBODY, hpo_command, "--version"], capture_output=True, text=True)
            if as_nobody.returncode == 0:
                return ReadOnly("nobody", hpo_command, hpo_environment)
            reasons.append(f"user nobody cannot run {hpo_command} ({as_nobody.stderr.strip()[:120]})")
        else:
            reasons.append("no setpriv to run as user nobody")
        pytest.skip("cannot make a folder read-only for root: " + "; ".join(reasons))
    finally:
        shutil.rmtree(probe, ignore_errors=True)


@pytest.fixture(scope="module")
def finished(read_only, run_hpo):
    """A finished 2-trial study (hpo.db, its weights in hpo-artifacts/), then made read-only; and a writable
    folder for the outputs of the commands."""
    folder, out = shared_folder("hpo-ro-study-"), shared_folder("hpo-ro-out-")
    out.chmod(0o777)
    (folder / "study.toml").write_text(STUDY)
    result = run_hpo("run", "study.toml", "--no-progress", cwd=folder, unset=NOT_INHERITED)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["hpo-artifacts", "hpo.db", "study.toml"]
    read_only.protect(folder)
    yield folder, out
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755)
    shutil.rmtree(folder)
    shutil.rmtree(out)


def snapshot(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_reading_commands_read_a_database_on_a_read_only_mount(read_only, finished, tmp_path, run_hpo):
    folder, out = finished
    url = f"sqlite:///{folder / 'hpo.db'}"
    before = snapshot(folder)
    for command in (["trials", "-f", "json"], ["studies", "-f", "json"], ["best", "-f", "json"]):
        writable = run_hpo(*command, "--storage", url, cwd=tmp_path, unset=NOT_INHERITED)
        assert writable.returncode == 0, writable.stderr
        result = read_only.run(folder, *command, "--storage", url, cwd=out)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == json.loads(writable.stdout)
    best = json.loads(writable.stdout)
    assert best["state"] == "COMPLETE" and 0 < best["value"] <= 1

    stale = read_only.run(folder, "stale", "--storage", url, cwd=out)
    assert stale.returncode == 0 and stale.stdout.strip() == "study 'ro' has no running trial", stale.stderr
    plots = read_only.run(folder, "plot", "--storage", url, "--out", str(out / "plots"), cwd=out)
    assert plots.returncode == 0, plots.stderr
    assert f"wrote {out / 'plots' / 'optimization_history.png'}" in plots.stdout
    assert (out / "plots" / "optimization_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    evaluated = read_only.run(folder, "evaluate", "--storage", url, "--stored-weights", "--out", str(out / "model"),
                              "-f", "json", cwd=out)
    assert evaluated.returncode == 0, evaluated.stderr
    card = json.loads(evaluated.stdout)
    assert card["trial"] == best["number"] and card["validation_accuracy"] == pytest.approx(best["value"])
    writable = run_hpo("evaluate", "--storage", url, "--stored-weights", "--out", str(tmp_path / "model"), "-f", "json",
                       cwd=tmp_path, unset=NOT_INHERITED)
    assert card["test_accuracy"] == json.loads(writable.stdout)["test_accuracy"] > 0.1  # better than chance
    # Nothing was written beside the database: no -wal or -shm file, the same bytes.
    assert snapshot(folder) == before


def test_optuna_only_reads_a_read_only_database_at_open(read_only, finished, console_scripts, hpo_environment):
    # Every statement SQLAlchemy runs while the storage opens and the trials are listed, in a process that
    # sees the database read-only.
    folder, out = finished
    script = (
        "import json, sqlalchemy\n"
        "from hpo.store.storage import is_read_only, open_storage\n"
        "statements = []\n"
        "sqlalchemy.event.listen(sqlalchemy.engine.Engine, 'before_cursor_execute',\n"
        "                        lambda connection, cursor, statement, *rest: statements.append(statement))\n"
        f"storage = open_storage('sqlite:///{folder / 'hpo.db'}', must_exist=True, read_only_ok=True)\n"
        "import optuna\n"
        "trials = optuna.load_study(study_name='ro', storage=storage).get_trials()\n"
        "url = storage.engine.url\n"
        "print(json.dumps([is_read_only(storage), url.database, dict(url.query), len(trials), statements]))\n"
    )
    python = str(console_scripts / "python")
    result = subprocess.run(read_only.command(folder, [python, "-c", script]), cwd=out,
                            env=hpo_environment(*NOT_INHERITED), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    read_only_flag, database, query, count, statements = json.loads(result.stdout)
    assert read_only_flag is True and count == 2
    # No -wal or -shm file and a folder that cannot hold them: only immutable=1 opens it.
    assert (database, query) == (f"file:{folder / 'hpo.db'}", {"mode": "ro", "uri": "true", "immutable": "1"})
    # Optuna read its version records and alembic stamp (a database it made has them) and wrote nothing.
    assert any("FROM version_info" in statement for statement in statements)
    assert any("FROM alembic_version" in statement for statement in statements)
    assert [statement for statement in statements
            if not statement.startswith(("SELECT ", "PRAGMA main.table_info("))] == []


def test_a_reader_on_a_read_only_mount_sees_what_a_live_writer_commits(read_only, finished, tmp_path):
    # A running study seen read-only (a dashboard container, say): its -wal and -shm files exist, so the
    # reader opens it with mode=ro and reads the writer's latest commits from the -wal file.
    folder = shared_folder("hpo-ro-live-")
    try:
        shutil.copy(finished[0] / "hpo.db", folder / "hpo.db")
        url = f"sqlite:///{folder / 'hpo.db'}"
        writer = open_storage(url)
        study = optuna.load_study(study_name="ro", storage=writer)
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.25))
        assert (folder / "hpo.db-wal").stat().st_size > 0 and (folder / "hpo.db-shm").exists()
        read_only.protect(folder)
        result = read_only.run(folder, "trials", "-f", "json", "--storage", url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert [(row["number"], row["value"]) for row in json.loads(result.stdout)][2:] == [(2, 0.25)]
        writer.engine.dispose()
    finally:
        for path in (folder, *folder.iterdir()):
            path.chmod(0o755)
        shutil.rmtree(folder)


def test_writers_are_told_the_database_is_read_only(read_only, finished):
    folder, out = finished
    url = f"sqlite:///{folder / 'hpo.db'}"
    for command in (["run", str(folder / "study.toml")], ["create", str(folder / "study.toml")],
                    ["worker", str(folder / "study.toml")]):
        result = read_only.run(folder, *command, "--storage", url, cwd=out)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            f"Error: storage {url} is read-only here (the file or its folder cannot be written); hpo trials, studies, "
            "best, plot, evaluate and dashboard can read it, but hpo run, create and worker need a writable copy"]
    created = read_only.run(folder, "run", str(folder / "study.toml"), "--storage", f"sqlite:///{folder / 'new.db'}",
                            cwd=out)
    assert created.returncode == 1
    assert created.stderr.splitlines() == [
        f"Error: storage sqlite:///{folder / 'new.db'}: cannot create the database file, folder {folder} is not "
        "writable; give another path with --storage or $HPO_STORAGE"]


def test_the_dashboard_serves_a_read_only_database(read_only, finished, hpo_command, hpo_environment):
    pytest.importorskip("optuna_dashboard")
    folder, out = finished
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = out / f"dashboard-{port}.log"
    with open(log, "w") as stream:
        process = subprocess.Popen(
            read_only.command(folder, [hpo_command, "dashboard", "--storage", f"sqlite:///{folder / 'hpo.db'}",
                                       "--port", str(port)]),
            cwd=out, env=hpo_environment(*NOT_INHERITED), stdout=stream, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    summaries = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        assert [summary["study_name"] for summary in summaries] == ["ro"]
        study_id = summaries[0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as response:
            detail = json.loads(response.read())
        assert [trial["state"] for trial in detail["trials"]] == ["Complete", "Complete"]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    text = log.read_text()
    assert f"storage: sqlite:///{folder / 'hpo.db'} (read-only: notes and other changes made in the dashboard " \
           "cannot be saved)" in text
    assert "Traceback" not in text


def test_a_write_ahead_log_without_its_index_is_refused_on_a_read_only_folder(read_only, finished):
    # A backup that took the database and its -wal (committed trials not yet checkpointed) but not
    # the -shm index: immutable=1 would read the database without the -wal, silently fewer trials.
    folder, out = finished
    copy, backup = shared_folder("hpo-ro-wal-"), shared_folder("hpo-ro-backup-")
    try:
        source = copy / "live.db"
        shutil.copy(folder / "hpo.db", source)
        holder = sqlite3.connect(source)  # holds the database open: the -wal is not checkpointed away
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("PRAGMA wal_autocheckpoint=0")
        holder.execute("UPDATE studies SET study_name = study_name")
        holder.commit()
        for suffix in ("", "-wal"):
            shutil.copy(f"{source}{suffix}", backup / f"b.db{suffix}")
        holder.close()
        assert (backup / "b.db-wal").stat().st_size > 0 and not (backup / "b.db-shm").exists()
        read_only.protect(backup)
        result = read_only.run(backup, "studies", "--storage", f"sqlite:///{backup / 'b.db'}", cwd=out)
        assert result.returncode == 1 and result.stdout == "", result.stdout
        assert result.stderr.startswith("Error: storage ") and len(result.stderr.strip().splitlines()) == 1
        assert "its write-ahead log b.db-wal holds changes that cannot be read without b.db-shm" in result.stderr
    finally:
        for path in (copy, backup):
            for item in (path, *path.rglob("*")):
                item.chmod(0o755)
            shutil.rmtree(path)


def test_a_queued_trial_is_taken_by_one_worker_only(tmp_path):
    # Workers racing for queued trials (retries, enqueued points), each with its own connection:
    # on SQLite, Optuna's read-then-write let two of them take one trial.
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="race")
    for index in range(40):
        study.enqueue_trial({"x": float(index)})
    waiting = [trial._trial_id for trial in study.get_trials()]
    taken: dict[int, list[int]] = {trial_id: [] for trial_id in waiting}
    barrier = threading.Barrier(4)

    def worker(number: int) -> None:
        storage = open_storage(url)
        barrier.wait()
        for trial_id in waiting:
            if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                taken[trial_id].append(number)

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {trial_id: len(workers) for trial_id, workers in taken.items()} == dict.fromkeys(waiting, 1)
    started = optuna.load_study(study_name="race", storage=url).get_trials()
    assert all(trial.state == TrialState.RUNNING for trial in started)
    assert all(abs((datetime.datetime.now() - trial.datetime_start).total_seconds()) < 60 for trial in started)


def test_opening_waits_for_a_server_that_dropped_the_connection_but_not_for_a_wrong_address(monkeypatch):
    from hpo.store import storage as storage_module

    def operational(message):
        return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))

    assert storage_module._dropped(operational("server closed the connection unexpectedly"))
    assert storage_module._dropped(optuna.exceptions.StorageInternalError("commit failed")) is False
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    wrapped.__cause__ = operational("terminating connection due to administrator command")
    assert storage_module._dropped(wrapped)
    assert not storage_module._dropped(operational('connection to server at "127.0.0.1", port 1 failed: Connection refused'))
    # A server that drops the first two attempts is waited out, then the storage opens.
    calls = []
    real = storage_module.HeartbeatStorage.__init__

    def flaky(self, *arguments, **keywords):
        calls.append(1)
        if len(calls) <= 2:
            raise operational("server closed the connection unexpectedly")
        real(self, *arguments, **keywords)

    monkeypatch.setattr(storage_module.HeartbeatStorage, "__init__", flaky)
    monkeypatch.setattr(storage_module.time, "sleep", lambda seconds: None)
    assert open_storage("sqlite:///:memory:".replace(":memory:", "/tmp/hpo-dropped-test.db")) is not None
    assert len(calls) == 3
