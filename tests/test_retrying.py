"""hpo.store.retrying.RetryingStorage: storage calls wait out an outage, and a retried write is done once."""

import logging
import os
import signal
import threading
import time

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpo import interrupts
from hpo.store.retrying import CREATE_TOKEN, RetryingStorage
from hpo.store.storage import HeartbeatStorage, open_storage


def outage(message: str = "server closed the connection unexpectedly") -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))


@pytest.fixture
def storage(tmp_path):
    return RetryingStorage(open_storage(f"sqlite:///{tmp_path / 'r.db'}"), patience_seconds=10)


@pytest.fixture
def study(storage):
    return optuna.create_study(storage=storage, study_name="r")


def fail_first(monkeypatch, name, times=1, *, after=False):
    """HeartbeatStorage.``name`` raises an outage its first ``times`` calls (``after``: once its work is done)."""
    original = getattr(HeartbeatStorage, name)
    calls = {"count": 0}

    def flaky(self, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] <= times and not after:
            raise outage()
        result = original(self, *args, **kwargs)
        if calls["count"] <= times:
            raise outage("connection lost after the commit")
        return result

    monkeypatch.setattr(HeartbeatStorage, name, flaky)
    return calls


def test_a_read_waits_out_an_outage(study, monkeypatch, caplog):
    calls = fail_first(monkeypatch, "get_study_user_attrs", times=2)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="hpo"):
        assert study.user_attrs == {}
    assert calls["count"] == 3
    assert 1.5 <= time.monotonic() - started < 5  # backoff 0.5 s, then 1 s
    assert [record.getMessage() for record in caplog.records] == [
        "reading the study failed (OperationalError); retrying in 0.5 s",
        "reading the study failed (OperationalError); retrying in 1.0 s",
    ]


def test_a_trial_committed_before_the_connection_dropped_is_not_created_twice(study, monkeypatch):
    calls = fail_first(monkeypatch, "_create_new_trial", after=True)
    trial = study.ask()
    assert calls["count"] == 1  # found by its token: not created again
    trials = study.get_trials()
    assert [t.number for t in trials] == [0] and trials[0]._trial_id == trial._trial_id
    assert trials[0].state == TrialState.RUNNING and CREATE_TOKEN in trials[0].system_attrs


def test_a_trial_not_committed_is_created_on_retry(study, monkeypatch):
    calls = fail_first(monkeypatch, "_create_new_trial")
    study.ask()
    assert calls["count"] == 2
    assert len(study.get_trials()) == 1


def test_every_trial_has_its_own_token(study):
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    tokens = {trial.system_attrs[CREATE_TOKEN] for trial in study.get_trials()}
    assert len(tokens) == 3


def test_a_finish_committed_before_the_connection_dropped_counts_as_done(study, monkeypatch):
    trial = study.ask()
    fail_first(monkeypatch, "set_trial_state_values", after=True)
    frozen = study.tell(trial, 0.5)
    assert frozen.state == TrialState.COMPLETE
    stored = study.get_trials()[0]
    assert stored.state == TrialState.COMPLETE and stored.value == 0.5


def test_a_trial_finished_by_someone_else_still_raises(study, storage):
    trial = study.ask()
    storage.backend.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # `hpo stale --trial`, say
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial._trial_id, TrialState.COMPLETE, [0.5])


def test_patience_ends_the_wait(study, storage, monkeypatch):
    fail_first(monkeypatch, "get_study_user_attrs", times=100)
    started = time.monotonic()
    with storage.patience(0), pytest.raises(sqlalchemy.exc.OperationalError):
        study.user_attrs  # noqa: B018
    assert time.monotonic() - started < 0.5


def test_a_signal_ends_the_wait_in_the_main_thread_only(study, storage, monkeypatch):
    fail_first(monkeypatch, "get_study_user_attrs", times=3)
    interrupts.install()
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(interrupts.Interrupted):
            study.user_attrs  # noqa: B018
        interrupts.uninstall()
        interrupts.install()
        # Not in another thread (the heartbeat's): it waits the outage out, whatever was signalled.
        outcome = []
        fail_first(monkeypatch, "get_study_user_attrs", times=2)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        thread = threading.Thread(target=lambda: outcome.append(study.user_attrs))
        thread.start()
        thread.join()
        assert outcome == [{}]
        # Nor inside patience(..., interruptible=False): a FAIL that must be stored.
        fail_first(monkeypatch, "get_study_user_attrs", times=2)
        with storage.patience(10):
            assert study.user_attrs == {}
    finally:
        interrupts.uninstall()
