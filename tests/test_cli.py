"""The `hpo` command: bad inputs give one clear line, a non-zero exit, no traceback, no database."""

import fcntl
import json
import os
import pty
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import click
import optuna
import pytest
from optuna.trial import TrialState

from hpo import cli
from hpo.config.spec import load_spec
from hpo.store import record
from hpo.store.storage import HeartbeatStorage, open_storage
from hpo.tuning.study import open_study
from hpo.tuning.worker import _ask

ROOT = Path(__file__).resolve().parents[1]
VALID = 'name = "x"\n[budget]\ntrials = 2\n[parameters]\nepochs = 1\n'


@pytest.fixture
def hpo(run_hpo):
    """``hpo(*arguments, cwd, env=None)``: runs hpo; neither a storage nor a table width of the caller's shell
    leaks in; ``env`` may set them."""

    def run(*arguments, cwd, env=None):
        return run_hpo(*arguments, cwd=cwd, env=env, unset=("COLUMNS",))

    return run


def assert_user_error(result, *fragments, cwd):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert not list(Path(cwd).glob("*.db")), "a database was created for bad input"


@pytest.mark.parametrize(
    "content, fragments",
    [
        (None, ["missing.toml", "no such study file"]),
        ("name = [\n", ["study.toml", "invalid TOML"]),
        (VALID + "colour = 'red'\n", ["study.toml", "parameters.colour", "unknown field"]),
        (VALID.replace("epochs = 1", "learning_rate = { low = 0.0, high = 0.1, log = true }"),
         ["study.toml", "parameters.learning_rate", "low must be > 0 on a log scale (got low = 0)"]),
        (VALID.replace("epochs = 1", "learning_rate = { low = 0.5, high = 0.1, log = true }"),
         ["study.toml", "parameters.learning_rate", "low (0.5) must not exceed high (0.1)"]),
        (VALID.replace("trials = 2", "trials = -1"),
         ["study.toml", "budget.trials", "greater than or equal to 1 (got -1)"]),
    ],
)
def test_run_refuses_bad_study_files(tmp_path, content, fragments, hpo):
    if content is None:
        result = hpo("run", "missing.toml", cwd=tmp_path)
    else:
        (tmp_path / "study.toml").write_text(content)
        result = hpo("run", "study.toml", cwd=tmp_path)
    assert_user_error(result, *fragments, cwd=tmp_path)


@pytest.mark.parametrize(
    "content, fragments",
    [
        (bytes(range(256)) * 4, [("study.toml: is not a TOML text file (binary data: a NUL byte at offset 0); give "
                                  "the path of a study file such as studies/digits.toml")]),
        ("é = 1\n".encode("latin-1"), ["study.toml: is not a TOML text file (byte 0xe9 at offset 0 is not UTF-8)"]),
        (b"", ["study.toml: is empty; ", "studies/digits.toml"]),
        (None, ["study.toml: is a folder; give a study file"]),
    ],
)
@pytest.mark.parametrize("command", ["run", "worker", "create"])
def test_a_file_that_is_no_toml_study_is_one_error_line(tmp_path, content, fragments, command, hpo):
    if content is None:
        (tmp_path / "study.toml").mkdir()
    else:
        (tmp_path / "study.toml").write_bytes(content)
    assert_user_error(hpo(command, "study.toml", cwd=tmp_path), *fragments, cwd=tmp_path)


@pytest.mark.parametrize(
    "url, fragments",
    [
        ("postgresql+psycopg2://nobody@127.0.0.1:1/nothing",
         ["cannot open storage", "127.0.0.1:1", "; check the URL's host, port, user and database, and that the server "
                                                "is running"]),
        ("not a url", ["'not a url' is not a SQLAlchemy URL"]),
        ("sqlite:////nonexistent-folder/x.db", ["folder /nonexistent-folder does not exist"]),
        ("sqlite:///.", ["is a folder; name the study database file with --storage or $HPO_STORAGE"]),
        ("postgresql+psycopg2://user:secret@127.0.0.1:abc/db", ["is not a SQLAlchemy URL", "user:***@"]),
        ("nosuchdialect://host/db", ["storage nosuchdialect://host/db: SQLAlchemy has no database dialect "
                                     "'nosuchdialect'; use e.g. sqlite:///hpo.db or postgresql+psycopg2://"]),
    ],
)
def test_run_refuses_unusable_storage(tmp_path, url, fragments, hpo):
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("run", "study.toml", "--storage", url, cwd=tmp_path)
    assert_user_error(result, *fragments, cwd=tmp_path)


def test_storage_password_is_not_printed(tmp_path, hpo):
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("run", "study.toml", "--storage", "postgresql+psycopg2://user:secret@127.0.0.1:1/x", cwd=tmp_path)
    assert result.returncode == 1 and "secret" not in result.stderr and "***" in result.stderr


def test_reading_commands_refuse_a_missing_sqlite_file(tmp_path, hpo):
    for command in ("trials", "best"):
        result = hpo(command, cwd=tmp_path)
        assert_user_error(result, "hpo.db", "no such database file", cwd=tmp_path)
    # The URL may come from --storage or the environment: the hint names both.
    result = hpo("trials", cwd=tmp_path, env={"HPO_STORAGE": f"sqlite:///{tmp_path / 'gone.db'}"})
    assert_user_error(result, cwd=tmp_path)
    assert result.stderr == (f"Error: storage sqlite:///{tmp_path / 'gone.db'}: no such database file; create a study "
                             "first (`hpo run` or `hpo create`) or name the database with --storage or $HPO_STORAGE\n")


@pytest.mark.parametrize("command", [["run", "study.toml"], ["trials"]])
def test_storage_errors_give_the_hint_that_fits_them(tmp_path, command, hpo):
    (tmp_path / "study.toml").write_text(VALID)
    (tmp_path / "notes.txt").write_text("These are notes, not a database.\n")
    unknown = ("Error: storage foo://x: SQLAlchemy has no database dialect 'foo'; use e.g. sqlite:///hpo.db or "
               "postgresql+psycopg2://user@host:5432/database")
    text_file = (f"Error: storage sqlite:///{tmp_path / 'notes.txt'}: {tmp_path / 'notes.txt'} is not a SQLite "
                 "database file; name the study database with --storage or $HPO_STORAGE")
    for url, line in (("foo://x", unknown), ("sqlite:///notes.txt", text_file)):
        result = hpo(*command, "--storage", url, cwd=tmp_path)
        assert result.returncode == 1 and result.stderr.splitlines() == [line]
        if command == ["trials"]:
            from_environment = hpo(*command, cwd=tmp_path, env={"HPO_STORAGE": url})
            assert from_environment.returncode == 1 and from_environment.stderr.splitlines() == [line]
    assert (tmp_path / "notes.txt").read_text() == "These are notes, not a database.\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt", "study.toml"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_missing_idx_directory_is_named(tmp_path, jobs, hpo):
    # With --jobs 2 as well: one line from `hpo run` itself before any study exists, not one per worker.
    (tmp_path / "study.toml").write_text(VALID + '[dataset]\nname = "idx"\ndirectory = "no-data"\n')
    result = hpo("run", "study.toml", "--jobs", jobs, cwd=tmp_path)
    assert_user_error(result, "study.toml", "no-data", cwd=tmp_path)


def test_run_then_resume_with_a_different_search_space_is_refused(tmp_path, hpo):
    (tmp_path / "study.toml").write_text(
        VALID + 'learning_rate = { low = 1e-3, high = 1e-1, log = true }\nhidden_size = 16\n'
    )
    first = hpo("run", "study.toml", "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"storage: sqlite:///{tmp_path / 'hpo.db'}" in first.stdout
    assert "best trial:" in first.stdout

    # Same file again: nothing left to run, the budget is met.
    again = hpo("run", "study.toml", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "2 of 2 trials finished" in again.stdout

    (tmp_path / "study.toml").write_text(
        VALID + 'learning_rate = { low = 1e-4, high = 1e-1, log = true }\nhidden_size = 16\n'
    )
    refused = hpo("run", "study.toml", cwd=tmp_path)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "parameters.learning_rate.low: stored 0.001, file 0.0001" in refused.stderr

    listed = hpo("trials", "-f", "json", cwd=tmp_path)
    rows = json.loads(listed.stdout)
    assert [row["number"] for row in rows] == [0, 1]
    assert all(row["state"] == "COMPLETE" and 0 < row["value"] <= 1 for row in rows)
    assert all(1e-3 <= row["params_learning_rate"] <= 1e-1 for row in rows)


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_keeps_the_database_consistent_and_resumes(tmp_path, signal_number, exit_code, hpo_command,
                                                                      hpo_environment, run_hpo):
    (tmp_path / "study.toml").write_text(
        'name = "x"\n[budget]\ntrials = 2\n[pruner]\ntype = "none"\n'
        "[parameters]\nepochs = 300\nhidden_size = 32\nbatch_size = 64\n"
    )
    process = subprocess.Popen([hpo_command, "run", "study.toml", "--no-progress"], cwd=tmp_path, env=hpo_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    deadline = time.monotonic() + 120
    running = None
    while running is None and time.monotonic() < deadline:  # until the first trial has reported an epoch
        time.sleep(0.2)
        try:
            trials = optuna.load_study(study_name="x", storage=storage).get_trials()
        except KeyError:  # the study is not created yet
            continue
        running = next((t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values), None)
    assert running is not None, "no trial started"
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == exit_code, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    # The hint is a command to paste: the program as it was invoked (here its full path).
    assert f"resume with: {hpo_command} run study.toml --study-name x" in stderr

    study = optuna.load_study(study_name="x", storage=storage)
    interrupted = study.get_trials()[running.number]
    assert interrupted.state == TrialState.FAIL and interrupted.intermediate_values

    resumed = run_hpo("run", "study.toml", "--no-progress", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    states = [trial.state for trial in optuna.load_study(study_name="x", storage=storage).get_trials()]
    # The failed trial stays on record and does not count against the budget of 2 finished trials.
    assert states.count(TrialState.COMPLETE) == 2 and states.count(TrialState.FAIL) == 1
    assert TrialState.RUNNING not in states


def test_resuming_a_seeded_study_does_not_replay_its_samples(tmp_path, hpo):
    body = ('name = "x"\n[budget]\ntrials = TRIALS\n[sampler]\ntype = "random"\nseed = 0\n'
            "[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }\nepochs = 1\nhidden_size = 8\n")
    (tmp_path / "study.toml").write_text(body.replace("TRIALS", "2"))
    assert hpo("run", "study.toml", "--no-progress", cwd=tmp_path).returncode == 0
    (tmp_path / "study.toml").write_text(body.replace("TRIALS", "4"))  # a larger budget is allowed
    resumed = hpo("run", "study.toml", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    rates = [row["params_learning_rate"] for row in json.loads(hpo("trials", "-f", "json", cwd=tmp_path).stdout)]
    assert len(rates) == 4 and len(set(rates)) == 4


def test_reading_commands_do_not_write_to_a_foreign_database(tmp_path, hpo):
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE users (id INTEGER)")
    before = database.read_bytes()
    result = hpo("trials", "--storage", f"sqlite:///{database}", cwd=tmp_path)
    assert result.returncode == 1 and "is not an Optuna study database" in result.stderr
    assert database.read_bytes() == before


def test_a_study_not_made_by_hpo_is_not_taken_over(tmp_path, hpo):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    foreign = optuna.create_study(study_name="x", storage=storage, direction="maximize")
    foreign.optimize(lambda trial: trial.suggest_float("a", 0, 1), n_trials=2)
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("run", "study.toml", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "study 'x' was not created by hpo" in result.stderr
    assert len(optuna.load_study(study_name="x", storage=storage).trials) == 2


@pytest.mark.parametrize(
    "dataset, fragments",
    [
        ("train_images = 100000", ["dataset.train_images = 100000: the digits training set has 1437 images"]),
        ("train_images = 15", ["dataset.train_images = 15: class 2 has one training image"]),
        ("validation_fraction = 0.001", ["dataset.validation_fraction = 0.001: of 1437 training images it holds out 2"]),
    ],
)
def test_dataset_sizes_that_cannot_be_split_name_the_field(tmp_path, dataset, fragments, hpo):
    (tmp_path / "study.toml").write_text(VALID + f"[dataset]\n{dataset}\n")
    assert_user_error(hpo("run", "study.toml", cwd=tmp_path), "study.toml", *fragments, cwd=tmp_path)


def test_stale_lists_running_trials_and_fails_them(tmp_path, hpo):
    (tmp_path / "study.toml").write_text(VALID + "[workers]\nheartbeat_interval_seconds = 1\ngrace_period_seconds = 2\n")
    assert hpo("create", "study.toml", cwd=tmp_path).returncode == 0
    # As a worker opens it: heartbeats every 1 s, stale after 2 s.
    storage = open_storage(f"sqlite:///{tmp_path / 'hpo.db'}", heartbeat=load_spec(tmp_path / "study.toml").heartbeat())
    study = optuna.load_study(study_name="x", storage=storage)
    beating = _ask(study)            # a worker that died after one heartbeat
    storage.record_heartbeat(beating._trial_id)
    beating.set_user_attr("worker", "host-a:17")
    silent = _ask(study)             # a worker killed between study.ask() and its first heartbeat
    listed = hpo("stale", cwd=tmp_path)
    assert listed.returncode == 0 and "running trials of x" in listed.stdout
    assert f"│ {beating.number} " in listed.stdout and f"│ {silent.number} " in listed.stdout

    time.sleep(3)  # past the study file's grace period of 2 s
    # A mistyped --trial stops the command before --fail changes anything.
    mistyped = hpo("stale", "--fail", "--trial", "999", cwd=tmp_path)
    assert mistyped.returncode == 1 and mistyped.stdout == ""
    assert mistyped.stderr.strip().splitlines() == ["Error: no trial 999 in study 'x' (trials 0 to 1); nothing failed"]
    assert {trial.state for trial in optuna.load_study(study_name="x", storage=storage).trials} == {TrialState.RUNNING}
    failed = hpo("stale", "--fail", cwd=tmp_path)
    assert failed.returncode == 0, failed.stderr
    # A trial without any heartbeat is stale too once it is older than the grace period.
    assert f"failed 2 trial(s) with no heartbeat for 2 s: {beating.number}, {silent.number} (queued again)" \
        in failed.stdout
    log = failed.stderr
    assert re.search(rf"Trial {beating.number} of worker host-a:17 failed: no heartbeat within the grace period of "
                     r"2 s \(started \d+ s ago\); queued again with the same parameters \(retry 1 of 2\)", log), log
    assert f"Trial {silent.number} (its worker never recorded itself) failed" in log
    trials = optuna.load_study(study_name="x", storage=storage).get_trials()
    assert trials[beating.number].state == TrialState.FAIL and trials[silent.number].state == TrialState.FAIL
    retries = [trial for trial in trials if trial.state == TrialState.WAITING]  # the retries of the stale trials
    assert sorted(trial.system_attrs["failed_trial"] for trial in retries) == [beating.number, silent.number]

    picked_up = _ask(study)          # a worker takes a retry ...
    by_hand = hpo("stale", "--trial", str(picked_up.number), cwd=tmp_path)  # ... and its trial is failed by hand
    assert by_hand.returncode == 0 and f"trial {picked_up.number}: marked FAIL by hand" in by_hand.stdout
    # Retried like a stale trial: the retry of a retry is the second of max_retry = 2. It was failed before its
    # worker recorded itself (a retry does not take over the failed trial's worker, nor its epochs).
    assert re.search(rf"Trial {picked_up.number} \(its worker never recorded itself\) failed: marked FAIL "
                     r"by hand \(`hpo stale --trial`\); queued again with the same parameters \(retry 2 of 2\)",
                     by_hand.stderr), by_hand.stderr
    trials = optuna.load_study(study_name="x", storage=storage).trials
    assert trials[picked_up.number].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == {}
    assert trials[-1].system_attrs["retry_history"] == [beating.number, picked_up.number]
    again = hpo("stale", "--trial", str(picked_up.number), cwd=tmp_path)
    assert again.returncode == 1 and "is not RUNNING" in again.stderr
    missing = hpo("stale", "--trial", "999", cwd=tmp_path)
    assert missing.returncode == 1 and "no trial 999 in study 'x' (trials 0 to 4)" in missing.stderr


def test_stale_removes_the_checkpoint_of_a_trial_it_does_not_queue_again(tmp_path, hpo):
    (tmp_path / "study.toml").write_text(VALID + "[workers]\nheartbeat_interval_seconds = 1\ngrace_period_seconds = 2\n"
                                                 "max_retry = 0\n")
    assert hpo("create", "study.toml", cwd=tmp_path).returncode == 0
    storage = open_storage(f"sqlite:///{tmp_path / 'hpo.db'}", heartbeat=load_spec(tmp_path / "study.toml").heartbeat())
    study = optuna.load_study(study_name="x", storage=storage)
    folders = {"by hand": tmp_path / "elsewhere", "stale": tmp_path / "hpo-artifacts"}  # named, and the default
    trials = {}
    for how, folder in folders.items():
        trials[how] = _ask(study)
        folder.mkdir()
        (folder / f"checkpoint-{how}.npz").write_bytes(b"a checkpoint")
        (folder / "other.npz").write_bytes(b"another trial's")
        trials[how].set_user_attr("checkpoint_artifact_id", f"checkpoint-{how}.npz")
    storage.record_heartbeat(trials["stale"]._trial_id)

    by_hand = hpo("stale", "--trial", str(trials["by hand"].number), cwd=tmp_path,
                  env={"HPO_ARTIFACT_DIR": str(folders["by hand"])})
    assert by_hand.returncode == 0, by_hand.stderr
    assert "not queued again (workers.max_retry = 0)" in by_hand.stderr
    assert sorted(path.name for path in folders["by hand"].iterdir()) == ["other.npz"]
    assert (folders["stale"] / "checkpoint-stale.npz").is_file()  # still running, its checkpoint is kept

    time.sleep(3)  # past the grace period of 2 s
    failed = hpo("stale", "--fail", cwd=tmp_path)
    assert failed.returncode == 0, failed.stderr
    assert f"failed 1 trial(s) with no heartbeat for 2 s: {trials['stale'].number} (not queued again)" in failed.stdout
    assert "not queued again (workers.max_retry = 0)" in failed.stderr
    assert sorted(path.name for path in folders["stale"].iterdir()) == ["other.npz"]


@pytest.mark.parametrize("command", ["run", "worker", "stale", "evaluate", "dashboard"])
def test_every_artifact_dir_option_names_its_default(tmp_path, command, hpo):
    result = hpo(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "--artifact-dir DIRECTORY" in text
    assert "[default: $HPO_ARTIFACT_DIR, else NAME- artifacts beside a SQLite file NAME.db, else ./hpo-artifacts]" \
        in text.replace("NAME-artifacts", "NAME- artifacts")


def test_stale_trial_that_its_worker_finished_meanwhile_is_one_line(tmp_path, monkeypatch, capsys):
    # `hpo stale --trial 0` saw trial 0 RUNNING; its worker stored it COMPLETE just before the FAIL was written.
    (tmp_path / "study.toml").write_text(VALID)
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = open_study(load_spec(tmp_path / "study.toml"), open_storage(url), "x")
    study.ask()
    original = HeartbeatStorage.set_trial_state_values

    def worker_first(storage, trial_id, state, values=None):
        if state == TrialState.FAIL:
            original(storage, trial_id, TrialState.COMPLETE, [0.5])
        return original(storage, trial_id, state, values)

    monkeypatch.setattr(HeartbeatStorage, "set_trial_state_values", worker_first)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hpo", "stale", "--trial", "0"])
    monkeypatch.setattr("hpo.cli.app.configure_logging", lambda: None)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 1
    assert capsys.readouterr().err == "Error: trial 0 of study 'x' finished meanwhile; nothing failed\n"
    (trial,) = optuna.load_study(study_name="x", storage=url).get_trials()  # kept as its worker stored it, no retry
    assert trial.state == TrialState.COMPLETE and trial.value == 0.5


def test_a_worker_for_a_missing_study_creates_nothing(tmp_path, hpo):
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("worker", "study.toml", cwd=tmp_path)
    assert_user_error(result, "hpo.db", "no such database file", cwd=tmp_path)
    assert hpo("create", "study.toml", "--study-name", "other", cwd=tmp_path).returncode == 0
    result = hpo("worker", "study.toml", cwd=tmp_path)
    assert result.returncode == 1 and "no study 'x' in sqlite:///" in result.stderr
    assert "create it first with `hpo create`" in result.stderr


def test_multi_objective_studies_are_listed_but_have_no_single_best(tmp_path, hpo):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name="two", storage=storage, directions=["maximize", "minimize"])
    study.optimize(lambda trial: (trial.suggest_float("a", 0, 1), 1.0), n_trials=2)
    listed = hpo("trials", "-f", "json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [len(row["value"]) for row in json.loads(listed.stdout)] == [2, 2]
    best = hpo("best", cwd=tmp_path)
    assert best.returncode == 1 and "has 2 objectives" in best.stderr and "Traceback" not in best.stderr


def test_studies_lists_every_study_with_counts_and_best(tmp_path, hpo):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    optuna.storages.RDBStorage(storage)  # the tables, no study
    empty = hpo("studies", cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout.strip() == f"storage {storage} holds no study yet; " \
        "start one with `hpo run STUDY_FILE`"
    assert json.loads(hpo("studies", "-f", "json", cwd=tmp_path).stdout) == []
    header = "study,direction,complete,pruned,failed,not_run,running,best_value,best_trial,datetime_start\n"
    assert hpo("studies", "-f", "csv", cwd=tmp_path).stdout == header  # the header only, no empty line

    first = optuna.create_study(study_name="a", storage=storage, direction="minimize")
    first.optimize(lambda trial: trial.suggest_int("k", 0, 0) + 2.0 - trial.number, n_trials=2)
    first.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED))
    first.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    optuna.create_study(study_name="b", storage=storage, direction="maximize")
    rows = json.loads(hpo("studies", "-f", "json", cwd=tmp_path).stdout)
    assert [{key: value for key, value in row.items() if key != "datetime_start"} for row in rows] == [
        {"study": "a", "direction": "minimize", "complete": 2, "pruned": 1, "failed": 1, "not_run": 0, "running": 0,
         "best_value": 1.0, "best_trial": 1},
        {"study": "b", "direction": "maximize", "complete": 0, "pruned": 0, "failed": 0, "not_run": 0, "running": 0,
         "best_value": None, "best_trial": None},
    ]
    assert rows[0]["datetime_start"].startswith(str(first.trials[0].datetime_start.year))
    table = hpo("studies", cwd=tmp_path).stdout
    assert "│ a " in table and "│ b " in table and "best_trial" in table
    csv_lines = hpo("studies", "-f", "csv", cwd=tmp_path).stdout.splitlines()
    assert csv_lines[0] == header.strip()
    assert csv_lines[1].startswith("a,minimize,2,1,1,0,0,1.0,1,")


def test_trials_of_a_storage_with_several_studies_lists_them_all(tmp_path, hpo):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    for name, count in (("a", 2), ("b", 1)):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=count)
    rows = json.loads(hpo("trials", "-f", "json", cwd=tmp_path).stdout)
    assert [(row["study"], row["number"]) for row in rows] == [("a", 0), ("a", 1), ("b", 0)]
    assert all(list(row)[0] == "study" and 0 <= row["params_x"] <= 1 for row in rows)
    assert hpo("trials", "-f", "csv", cwd=tmp_path).stdout.startswith("study,number,state,value,")
    assert "trials of 2 studies" in hpo("trials", cwd=tmp_path).stdout
    # --study-name keeps the single-study listing, without the study column.
    only_b = json.loads(hpo("trials", "--study-name", "b", "-f", "json", cwd=tmp_path).stdout)
    assert len(only_b) == 1 and "study" not in only_b[0]


def test_trials_lists_the_epoch_a_resumed_trial_continued_from(tmp_path, hpo):
    storage = f"sqlite:///{tmp_path / 'hpo.db'}"
    study = optuna.create_study(study_name="r", storage=storage, direction="maximize")
    epochs = {record.EPOCHS_RUN: 6, record.BEST_EPOCH: 5, record.SEED: 1}
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={**epochs, record.EPOCHS_RUN: 4,
                                                                                 record.BEST_EPOCH: 3}))
    study.add_trial(optuna.trial.create_trial(value=0.9, user_attrs={**epochs, record.RESUMED_FROM_EPOCH: 4}))
    study.add_trial(optuna.trial.create_trial(value=0.8, user_attrs=epochs))  # trained from epoch 1
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs={record.SEED: 1}))

    rows = json.loads(hpo("trials", "-f", "json", cwd=tmp_path).stdout)
    assert [(row["epochs_run"], row["best_epoch"], row["resumed_from_epoch"]) for row in rows] == [
        (4, 3, None), (6, 5, 4), (6, 5, None), (None, None, None)]
    lines = hpo("trials", "-f", "csv", cwd=tmp_path).stdout.splitlines()
    column = lines[0].split(",").index("resumed_from_epoch")
    assert lines[0].split(",")[column - 2:column + 1] == ["epochs_run", "best_epoch", "resumed_from_epoch"]
    assert [line.split(",")[column - 2:column + 1] for line in lines[1:]] == [
        ["4", "3", ""], ["6", "5", "4"], ["6", "5", ""], ["", "", ""]]
    table = hpo("trials", cwd=tmp_path).stdout.splitlines()
    header = next(line for line in table if "number" in line).strip("┃").replace("┃", " ").split()
    cells = [[cell.strip() for cell in line.strip("│").split("│")] for line in table if line.startswith("│")]
    at = header.index("resumed_from_epoch")
    assert [row[at] for row in cells] == ["", "4", "", ""]
    assert [row[header.index("epochs_run")] for row in cells] == ["4", "6", "6", ""]


def test_run_summary_counts_this_runs_epochs_and_the_epochs_pruning_saved(tmp_path, hpo):
    # Every trial falls under the threshold after epoch 1 of 3 and is pruned: 2 of 6 epochs trained.
    (tmp_path / "study.toml").write_text(
        'name = "x"\n[budget]\ntrials = 2\n[pruner]\ntype = "threshold"\nlower = 1.5\n'
        "[parameters]\nepochs = 3\nhidden_size = 8\n"
    )
    pruned = hpo("run", "study.toml", "--no-progress", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert "trials: 0 complete, 2 pruned, 0 failed" in pruned.stdout
    assert "epochs trained by this run: 2\n" in pruned.stdout
    assert ("epochs of the study's finished trials: 2 trained of 6 a run without pruning would train (pruning saved "
            "66.7 %)") in pruned.stdout
    assert "no trial completed, so there is no best trial" in pruned.stdout

    (tmp_path / "study.toml").write_text(VALID.replace('"x"', '"y"') + "hidden_size = 8\n[pruner]\ntype = \"none\"\n")
    complete = hpo("run", "study.toml", "--no-progress", cwd=tmp_path)
    assert complete.returncode == 0, complete.stderr
    assert "epochs trained by this run: 2\n" in complete.stdout
    assert ("epochs of the study's finished trials: 2 trained of 2 a run without pruning would train (pruning saved "
            "0.0 %)") in complete.stdout
    assert "best trial: " in complete.stdout

    # The study resumed with a larger budget, by two workers: this run trains 2 trials of 1 epoch; the study holds 4.
    (tmp_path / "study.toml").write_text((tmp_path / "study.toml").read_text().replace("trials = 2", "trials = 4"))
    resumed = hpo("run", "study.toml", "--jobs", "2", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "epochs trained by this run: 2\n" in resumed.stdout
    assert ("epochs of the study's finished trials: 4 trained of 4 a run without pruning would train (pruning saved "
            "0.0 %)") in resumed.stdout
    # Each worker says what it trained itself.
    assert sorted(int(epochs) for epochs in re.findall(r"^worker done: \d+ trials started; (\d+) epochs trained; ",
                                                       resumed.stdout, re.MULTILINE)) in ([1, 1], [0, 2])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["trials", "-f", "xml"], "Error: Invalid value for '-f' / '--format': 'xml' is not one of 'table', 'json', "
                                  "'csv'. (see hpo trials --help)"),
        (["evaluate", "--trial", "abc"], "Error: Invalid value for '--trial': 'abc' is not a valid integer range. "
                                         "(see hpo evaluate --help)"),
        (["plot"], "Error: Missing option '--out'. (see hpo plot --help)"),
        (["nosuch"], "Error: No such command 'nosuch'. (see hpo --help)"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, arguments, message, hpo):
    result = hpo(*arguments, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert result.stdout == ""


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["narrow", "s.toml", "--top", "0"], "Invalid value for '--top': 0 is not in the range x>=1."),
        (["narrow", "s.toml", "--top", "2", "--margin", "0"],
         "Invalid value for '--margin': 0.0 is not in the range x>=1."),
        (["narrow", "s.toml", "--top", "2", "--margin", "0.5"],
         "Invalid value for '--margin': 0.5 is not in the range x>=1."),
        (["narrow", "s.toml", "--top", "2", "--margin", "inf"], "Invalid value for '--margin': inf is not a finite number."),
        (["narrow", "s.toml", "--top", "2", "--margin", "nan"], "Invalid value for '--margin': nan is not a finite number."),
        (["run", "s.toml", "--jobs", "0"], "Invalid value for '--jobs' / '-j': 0 is not in the range 1<=x<=256."),
        (["run", "s.toml", "--jobs", "257"], "Invalid value for '--jobs' / '-j': 257 is not in the range 1<=x<=256."),
        (["run", "s.toml", "--blas-threads", "0"], "Invalid value for '--blas-threads': 0 is not in the range x>=1."),
        (["worker", "s.toml", "--blas-threads", "0"], "Invalid value for '--blas-threads': 0 is not in the range x>=1."),
        (["stale", "--trial", "-1"], "Invalid value for '--trial': -1 is not in the range x>=0."),
        (["stale", "--grace-period", "1"], "Invalid value for '--grace-period': 1 is not in the range 2<=x<=86400."),
        (["evaluate", "--trial", "-1"], "Invalid value for '--trial': -1 is not in the range x>=0."),
        (["dashboard", "--port", "0"], "Invalid value for '--port': 0 is not in the range 1<=x<=65535."),
        (["dashboard", "--port", "65536"], "Invalid value for '--port': 65536 is not in the range 1<=x<=65535."),
        (["book", "--out", "o", "--blas-threads", "0"], "Invalid value for '--blas-threads': 0 is not in the range x>=1."),
    ],
)
def test_out_of_range_options_are_usage_errors(tmp_path, monkeypatch, capsys, arguments, message):
    # In process, through the console script's entry(), for speed; the logging setup of the group would
    # leave a handler on pytest's captured stderr, so it is skipped.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["hpo", *arguments])
    monkeypatch.setattr("hpo.cli.app.configure_logging", lambda: None)
    with pytest.raises(SystemExit) as exited:
        cli.entry()
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == f"Error: {message} (see hpo {arguments[0]} --help)\n"
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_every_numeric_option_has_a_range():
    # The rule behind the test above, for options added later too: a number option gives click its range.
    kinds = {(name, parameter.name): parameter.type for name, command in cli.main.commands.items()
             for parameter in command.params
             if isinstance(parameter.type, (click.types.IntParamType, click.types.FloatParamType))}
    assert {("narrow", "top"), ("narrow", "margin"), ("stale", "trial_numbers"), ("dashboard", "port")} <= set(kinds)
    assert [option for option, kind in kinds.items() if not isinstance(kind, (click.IntRange, click.FloatRange))] == []


def wide_study(folder):
    """A study whose `hpo trials` table has 12 columns (8 of the trial, 4 parameters), 161 characters wide."""
    storage = f"sqlite:///{folder / 'hpo.db'}"
    study = optuna.create_study(study_name="wide", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    names = ("learning_rate", "weight_decay", "dropout_ratio", "momentum")
    study.optimize(lambda trial: sum(trial.suggest_float(name, 1e-6, 1e-1, log=True) for name in names), n_trials=3)
    return storage


def table_header(lines):
    return next(line for line in lines if line.startswith("┃")).strip("┃").replace("┃", " ").split()


@pytest.mark.parametrize("command, width, fields", [("trials", 60, 13), ("studies", 60, 10), ("best", 40, 13)])
def test_tables_fit_columns_and_csv_stays_complete(tmp_path, command, width, fields, hpo):
    wide_study(tmp_path)
    whole = hpo(command, cwd=tmp_path).stdout.splitlines()  # a pipe without $COLUMNS: the whole table
    assert max(map(len, whole)) > width
    narrow = hpo(command, cwd=tmp_path, env={"COLUMNS": str(width)})
    assert narrow.returncode == 0, narrow.stderr
    lines = narrow.stdout.splitlines()
    assert max(map(len, lines)) <= width
    shown = table_header(lines)
    if command == "best":  # a record keeps its two columns and folds the values
        assert table_header(whole) == shown == ["field", "value"] and "left out" not in narrow.stdout
        assert len(lines) > len(whole)
    else:
        assert len(table_header(whole)) == fields and len(shown) < fields
        assert shown[0] == {"trials": "number", "studies": "study"}[command]
        assert lines[-1] == f"{fields - len(shown)} columns left out; see -f csv, -f json or a wider terminal"
    csv_lines = hpo(command, "-f", "csv", cwd=tmp_path, env={"COLUMNS": str(width)}).stdout.splitlines()
    assert len(csv_lines[0].split(",")) == fields
    assert len(csv_lines) == 1 + {"trials": 3, "studies": 1, "best": 1}[command]  # header + rows


def test_a_terminal_gets_a_table_as_wide_as_itself(tmp_path, hpo_command, hpo_environment):
    wide_study(tmp_path)
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 70, 0, 0))  # 24 rows, 70 columns
    process = subprocess.Popen([hpo_command, "trials"], cwd=tmp_path,
                               env=hpo_environment("COLUMNS", "LINES", TERM="xterm"),
                               stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0, process.stderr.read()
    text = re.sub(r"\x1b\[[0-9;]*m", "", output.decode()).replace("\r\n", "\n")  # without colours
    lines = text.splitlines()
    assert max(map(len, lines)) <= 70
    shown = table_header(lines)
    assert shown[:3] == ["number", "state", "value"] and len(shown) < 13
    assert lines[-1] == f"{13 - len(shown)} columns left out; see -f csv, -f json or a wider terminal"
NAME_RULE = ("use ASCII letters, digits, '.', '_' and '-', starting with a letter or digit, "
             "at most 128 characters")


@pytest.mark.parametrize(
    "command, option, name, shown",
    [
        ("run", "--study-name", "../../escape/x", "'../../escape/x'"),
        ("create", "--study-name", "n" * 600, f"'{'n' * 40}'... (600 characters)"),
        ("worker", "--study-name", "a b", "'a b'"),
        ("narrow", "--name", "../x", "'../x'"),
    ],
)
def test_options_that_name_a_new_study_are_checked(tmp_path, command, option, name, shown, hpo):
    (tmp_path / "study.toml").write_text(VALID)
    extra = ["--top", "1"] if command == "narrow" else []
    result = hpo(command, "study.toml", *extra, option, name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"Error: Invalid value for '{option}': {shown} is not a valid study name; "
                                     f"{NAME_RULE} (see hpo {command} --help)")
    assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["study.toml"]  # no database, no folder


def hostile_study(folder, name):
    """A study created directly with Optuna under ``name``, with hpo's stored study file and one completed trial."""
    storage = f"sqlite:///{folder / 'hpo.db'}"
    (folder / "study.toml").write_text(VALID)
    spec = load_spec(folder / "study.toml")
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(record.STUDY_FILE, spec.identity())
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"best_epoch": 1, "seed": 0, "epochs_run": 1}))
    return storage


def test_reading_commands_read_a_study_of_any_name_and_evaluate_writes_inside_hpo_models(tmp_path, hpo):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    name = "../../escape/x"
    storage = hostile_study(work, name)
    result = hpo("trials", "--storage", storage, "--study-name", name, "-f", "json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert [(row["number"], row["value"]) for row in json.loads(result.stdout)] == [(0, 0.5)]
    result = hpo("best", "--storage", storage, "--study-name", name, "-f", "json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["number"], json.loads(result.stdout)["value"]) == (0, 0.5)
    result = hpo("evaluate", "--retrain", "--storage", storage, "--study-name", name, cwd=work)
    assert result.returncode == 0, result.stderr
    model = work / "hpo-models" / "_._.._escape_x-trial-0-retrained"
    assert (model / "weights.npz").is_file() and (model / "model_card.json").is_file()
    assert json.loads((model / "model_card.json").read_text())["study"] == name
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_evaluate_refuses_a_default_folder_that_a_link_leads_outside_hpo_models(tmp_path, hpo):
    storage = hostile_study(tmp_path, "x")
    (tmp_path / "hpo-models").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "hpo-models" / "x-trial-0").symlink_to(tmp_path / "elsewhere")
    result = hpo("evaluate", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"Error: hpo-models/x-trial-0 leads outside hpo-models "
                                     f"(to {tmp_path / 'elsewhere'}); give the model's folder with --out")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_user_error_is_one_line_and_debug_shows_its_traceback(tmp_path, hpo):
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    plain = hpo("trials", "--storage", missing, cwd=tmp_path)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr.startswith(f"Error: storage {missing}: no such database file")
    assert len(plain.stderr.splitlines()) == 1
    for debug in (hpo("--debug", "trials", "--storage", missing, cwd=tmp_path),
                  hpo("trials", "--storage", missing, cwd=tmp_path, env={"HPO_DEBUG": "1"})):
        assert debug.returncode == 1
        assert debug.stderr.startswith("Traceback (most recent call last):")
        assert "hpo.store.storage.StorageError: storage" in debug.stderr
        assert debug.stderr.splitlines()[-1] == plain.stderr.strip()
