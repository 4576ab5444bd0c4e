"""Signals stop a worker at a safe point: never a trial left RUNNING, never a signal lost.

In-process tests: the worker loop of hpo.tuning.worker with hpo.interrupts installed, and a
SIGTERM or SIGINT sent to this very process at every storage call of two trials (the
moments between ``study.ask()`` and the trial's first heartbeat included) and
before every mini-batch.  The subprocess tests (random moments, the real commands)
are in tests/test_signals.py.
"""

import gc
import inspect
import os
import signal
import threading

import optuna
import pytest
from optuna.trial import TrialState

from hpo import interrupts
from hpo.config.spec import load_spec
from hpo.store import record
from hpo.store.storage import HeartbeatStorage, open_storage
from hpo.tuning.data import prepare_data
from hpo.tuning.study import open_study
from hpo.tuning.worker import _ask, run_worker

STUDY = """
name = "signals"
[budget]
trials = 2
[dataset]
name = "digits"
train_images = 300
[sampler]
type = "random"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = { low = 1e-3, high = 1e-1, log = true }
hidden_layers = 1
hidden_size = 8
batch_size = 100
epochs = 2
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 2
"""

# Every method of Optuna's RDB storage, public and private (Optuna's cache calls the
# private ones); only calls from the main thread count, not the heartbeat thread's.
WATCHED = sorted({name for cls in (optuna.storages.RDBStorage, HeartbeatStorage) for name, value in vars(cls).items()
                  if inspect.isfunction(value) and not name.startswith("__")})


@pytest.fixture
def handlers():
    interrupts.install()
    yield
    interrupts.uninstall()


@pytest.fixture(scope="module")
def spec_and_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("signals") / "study.toml"
    path.write_text(STUDY)
    spec = load_spec(path)
    return spec, prepare_data(spec.dataset)


class SignalAtCall:
    """Patches HeartbeatStorage so that its ``target``-th main-thread call sends ``signal_number`` first."""

    def __init__(self, monkeypatch, target, signal_number):
        self.calls = 0
        self.target = target
        self.signal_number = signal_number
        self.sent_in = None
        main = threading.main_thread()
        for name in WATCHED:
            original = getattr(HeartbeatStorage, name, None)
            if not callable(original):
                continue

            def wrapped(storage, *args, _original=original, _name=name, **kwargs):
                if threading.current_thread() is main:
                    self.calls += 1
                    if self.calls == self.target:
                        self.sent_in = _name
                        os.kill(os.getpid(), self.signal_number)
                return _original(storage, *args, **kwargs)

            monkeypatch.setattr(HeartbeatStorage, name, wrapped)


def open_fresh(spec, tmp_path, index):
    """A new study named after ``index`` in the SQLite file of ``tmp_path``."""
    storage = open_storage(f"sqlite:///{tmp_path / 'studies.db'}", heartbeat=spec.heartbeat())
    return storage, open_study(spec, storage, f"{spec.name}-{index}")


def storage_calls_of_a_whole_run(spec, data, tmp_path, monkeypatch):
    counter = SignalAtCall(monkeypatch, target=-1, signal_number=signal.SIGTERM)
    storage, study = open_fresh(spec, tmp_path, "count")
    counter.calls = 0
    run_worker(study, storage, spec, data)
    monkeypatch.undo()
    return counter.calls


# SIGTERM at every storage call; SIGINT and SIGHUP, which take the same path, at every fourth and seventh.
@pytest.mark.parametrize("signal_number, every", [(signal.SIGTERM, 1), (signal.SIGINT, 4), (signal.SIGHUP, 7)])
def test_a_signal_at_any_storage_call_leaves_no_trial_running(spec_and_data, tmp_path, monkeypatch, handlers,
                                                              signal_number, every):
    spec, data = spec_and_data
    total = storage_calls_of_a_whole_run(spec, data, tmp_path, monkeypatch)
    assert total > 20  # two trials: stale checks, counts, ask, heartbeats, suggestions, reports, tells
    moments = {}
    for target in range(1, total + 1, every):
        storage, study = open_fresh(spec, tmp_path, target)
        injector = SignalAtCall(monkeypatch, target, signal_number)
        try:
            run_worker(study, storage, spec, data)
            outcome = "finished"  # the signal came after the last safe point of the run
        except interrupts.Interrupted as interrupted:
            assert interrupted.signal_number == signal_number
            assert interrupted.exit_code == 128 + signal_number
            outcome = "interrupted"
        monkeypatch.undo()
        interrupts.uninstall()
        interrupts.install()
        moments[target] = (injector.sent_in, outcome)
        states = [trial.state for trial in study.get_trials()]
        assert TrialState.RUNNING not in states, (target, injector.sent_in, states)
        # A following worker finishes the exact budget.
        run_worker(study, storage, spec, data)
        assert len(study.get_trials(states=record.FINISHED_STATES)) == spec.budget.trials, moments[target]
    # The signal reached the worker inside a trial's ask-to-heartbeat window and mid-trial.
    sent_in = [name for name, outcome in moments.values() if outcome == "interrupted"]
    if every == 1:
        assert {"_create_new_trial", "_set_trial_param", "set_trial_intermediate_value",
                "set_trial_state_values"} <= set(sent_in)
    # Only the last calls of a run (after its last safe point) may let it finish.  The count of a
    # whole run varies by a few calls with timing (stale checks are throttled by the clock), so
    # targets beyond the calls a run made are not counted.
    reached = [outcome for name, outcome in moments.values() if name is not None]
    assert sum(outcome == "interrupted" for outcome in reached) >= len(reached) - 3, moments


def test_a_signal_before_any_mini_batch_fails_the_trial_at_once(spec_and_data, tmp_path, handlers, monkeypatch):
    spec, data = spec_and_data
    import models.trainer

    batches = {"count": 0}
    original = models.trainer.train

    def train(*args, before_batch=None, **kwargs):
        def counting():
            batches["count"] += 1
            if batches["count"] == 3:  # the third mini-batch of the first trial
                os.kill(os.getpid(), signal.SIGTERM)
            before_batch()

        return original(*args, before_batch=counting, **kwargs)

    monkeypatch.setattr("hpo.tuning.objective.train", train)
    storage, study = open_fresh(spec, tmp_path, "batch")
    with pytest.raises(interrupts.Interrupted):
        run_worker(study, storage, spec, data)
    assert batches["count"] == 3  # the signal stopped training before the next mini-batch
    trial, retry = study.get_trials()
    assert trial.state == TrialState.FAIL and not trial.intermediate_values
    assert retry.state == TrialState.WAITING and retry.params == trial.params  # queued again at once


def test_a_signal_during_garbage_collection_is_not_lost(handlers):
    # Python ignores an exception raised in __del__ ("Exception ignored in ..."): a handler
    # that raised would lose the signal there. This one records it for the next check().
    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            sum(range(1000))  # the handler runs at a bytecode boundary in here

    Finalized()
    gc.collect()
    assert interrupts.requested() == signal.SIGTERM
    with pytest.raises(interrupts.Interrupted) as raised:
        interrupts.check()
    assert raised.value.exit_code == 143


def test_sleep_ends_early_on_a_signal(handlers):
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(interrupts.Interrupted) as raised:
        interrupts.sleep(30)
    assert raised.value.exit_code == 130


def test_a_trial_that_never_beat_is_stale_after_the_grace_period(spec_and_data, tmp_path):
    # A worker killed (SIGKILL) between study.ask() and its first heartbeat.
    spec, data = spec_and_data
    storage, study = open_fresh(spec, tmp_path, "silent")
    silent = _ask(study)
    assert storage._get_stale_trial_ids(study._study_id) == []  # younger than the grace period (2 s)
    frozen = study.get_trials()[silent.number]
    aged = frozen.datetime_start - __import__("datetime").timedelta(seconds=3)
    with storage.engine.begin() as connection:  # as if it had started 3 s ago
        from optuna.storages._rdb import models
        connection.execute(models.TrialModel.__table__.update()
                           .where(models.TrialModel.__table__.c.trial_id == silent._trial_id)
                           .values(datetime_start=aged))
    assert storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]
    run_worker(study, storage, spec, data)  # fails it, queues its retry, and meets the budget
    trials = study.get_trials()
    assert trials[silent.number].state == TrialState.FAIL
    assert len([t for t in trials if t.state in record.FINISHED_STATES]) == spec.budget.trials
    assert any(t.system_attrs.get("failed_trial") == silent.number for t in trials)
