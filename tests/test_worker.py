"""The worker loop of hpo.tuning.worker, in process: the shared budget when workers race for its last slots.

The races are built by hand, so each test meets the situation every time instead of
by chance: trials finished, another worker's trial RUNNING, and this worker's trial
started in the same moment.
"""

import logging
import re
import subprocess

import optuna
import pytest
from optuna.trial import TrialState

import hpo.tuning.objective
from hpo.config.spec import load_spec
from hpo.store import record
from hpo.store.retrying import RetryingStorage
from hpo.store.storage import HeartbeatStorage, open_storage
from hpo.tuning.data import prepare_data
from hpo.tuning.study import open_study
from hpo.tuning.worker import _ask, run_worker

BUDGET = 3
STUDY = f"""
name = "race"
[budget]
trials = {BUDGET}
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
batch_size = 100
epochs = 2
"""


@pytest.fixture
def study_and_spec(tmp_path):
    (tmp_path / "study.toml").write_text(STUDY)
    spec = load_spec(tmp_path / "study.toml")
    # As the worker runs it (hpo.tuning.study.prepare_study): through the retrying storage, so the loop
    # uses this very Study object (and its patched ask).
    storage = RetryingStorage(open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=spec.heartbeat()))
    study = open_study(spec, storage, spec.name)
    for _ in range(BUDGET - 1):  # finished by workers before
        study.tell(_ask(study), 0.5)
    return study, storage, spec


@pytest.fixture
def trainings(monkeypatch):
    """Counts the networks the objective trains."""
    calls = []
    original = hpo.tuning.objective.train

    def counting(*arguments, **keywords):
        calls.append(keywords["epochs"])
        return original(*arguments, **keywords)

    monkeypatch.setattr(hpo.tuning.objective, "train", counting)
    return calls


def other_worker_claims_a_trial(study: optuna.Study) -> optuna.Trial:
    """Another worker's ``study.ask()`` on its own Study object: the budget's last slot, RUNNING."""
    other = optuna.load_study(study_name=study.study_name, storage=study._storage)
    trial = _ask(other)
    trial.set_user_attr("worker", "other-host:1")
    return trial


def ask_right_after_another_worker(study: optuna.Study, monkeypatch) -> list[optuna.Trial]:
    """This worker's first ``study.ask()`` comes just after another worker's: both read the
    study before either asked, so both saw one free slot."""
    claimed = []
    own_ask = study.ask

    def ask(*arguments, **keywords):
        if not claimed:
            claimed.append(other_worker_claims_a_trial(study))
        return own_ask(*arguments, **keywords)

    monkeypatch.setattr(study, "ask", ask)
    return claimed


def waiting_retry_while_another_worker_runs_the_last_slot(study: optuna.Study, monkeypatch) -> list[optuna.Trial]:
    """Another worker runs the budget's last slot, and a retry (a WAITING trial) is queued after it."""
    claimed = [other_worker_claims_a_trial(study)]
    study.enqueue_trial({"learning_rate": 0.01})
    return claimed


@pytest.mark.parametrize("situation", [ask_right_after_another_worker,
                                       waiting_retry_while_another_worker_runs_the_last_slot])
def test_a_trial_started_after_the_budget_was_claimed_ends_not_run_without_training(
        study_and_spec, trainings, monkeypatch, situation):
    study, storage, spec = study_and_spec
    claimed = situation(study, monkeypatch)
    result = run_worker(study, storage, spec, prepare_data(spec.dataset), timeout_seconds=1.0)
    # Budget - 1 finished, the other worker's trial RUNNING, this worker's trial RUNNING after it:
    # the higher-numbered one gives way, and this worker then waits for the other's trial.
    (other,) = claimed
    trials = study.get_trials()
    assert [trial.number for trial in trials] == list(range(BUDGET + 1))
    assert other.number == BUDGET - 1 and trials[other.number].state == TrialState.RUNNING
    given_way = trials[BUDGET]
    assert given_way.state == TrialState.FAIL
    assert given_way.user_attrs == {record.NOT_RUN: "the budget was claimed by other workers' trials"}
    # Never trained: no network, no epochs, no worker or seed recorded (the objective never ran).
    assert trainings == []
    assert given_way.intermediate_values == {} and given_way.value is None
    assert given_way.params == {}
    assert result.trials_started == 1 and result.reason == "timeout of 1 s reached"

    # The other worker's trial ends; the budget is met exactly, with no trial beyond it.
    study.tell(other, 0.75)
    result = run_worker(study, storage, spec, prepare_data(spec.dataset))
    assert result.trials_started == 0 and result.reason == f"budget of {BUDGET} finished trials reached"
    assert len(study.get_trials(states=record.FINISHED_STATES)) == BUDGET
    assert trainings == []


def test_a_trial_failed_by_hand_while_its_worker_stores_it_stays_failed_and_is_retried_once(
        study_and_spec, monkeypatch, caplog, tmp_path, hpo_command, retried_trial_number):
    study, storage, spec = study_and_spec
    url = f"sqlite:///{tmp_path / 'study.db'}"
    victims = []
    original = HeartbeatStorage.set_trial_state_values

    def failed_by_hand_first(self, trial_id, state, values=None):
        # `hpo stale --trial N` lands after Optuna's tell has seen the trial RUNNING, before its write.
        if state == TrialState.COMPLETE and not victims:
            number = self.get_trial(trial_id).number
            victims.append(number)
            result = subprocess.run([hpo_command, "stale", "--storage", url, "--trial", str(number)],
                                    capture_output=True, text=True, timeout=120, check=False)
            assert result.returncode == 0, result.stderr
            assert f"trial {number}: marked FAIL by hand" in result.stdout
            assert re.search(rf"Trial {number} of worker \S+ failed: marked FAIL by hand \(`hpo stale --trial`\); "
                             r"queued again with the same parameters \(retry 1 of 2\)", result.stderr), result.stderr
        return original(self, trial_id, state, values)

    monkeypatch.setattr(HeartbeatStorage, "set_trial_state_values", failed_by_hand_first)
    with caplog.at_level(logging.INFO, logger="hpo"):
        result = run_worker(study, storage, spec, prepare_data(spec.dataset))  # goes on: no exception
    (victim,) = victims
    assert result.reason == f"budget of {BUDGET} finished trials reached"
    trials = study.get_trials()
    failed = trials[victim]
    assert failed.state == TrialState.FAIL and failed.value is None  # the worker's value did not overwrite it
    assert [record.getMessage() for record in caplog.records if f"Trial {victim} " in record.getMessage()] == [
        (f"Trial {victim} was already marked FAIL elsewhere (by another worker after a late heartbeat, or by hand "
         "with `hpo stale --trial`); going on with the next trial")]
    # Its retry ran once, with its parameters, and completed the budget.
    retries = [trial for trial in trials if retried_trial_number(trial) == victim]
    assert len(retries) == 1
    (retry,) = retries
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert retry.user_attrs["worker"] == failed.user_attrs["worker"] and retry.user_attrs["epochs_run"] == 2
    assert [trial.number for trial in trials] == [0, 1, victim, retry.number] and retry.number == victim + 1
    assert len(study.get_trials(states=record.FINISHED_STATES)) == BUDGET
