"""hpo.store.requeue.RetryStaleTrial: crashes count against max_retry, interruptions never; Optuna's records stay."""

import logging

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpo.store import record
from hpo.store.requeue import RetryStaleTrial, crashes, interruptions, queued_again

LOG = "hpo.store.requeue"


@pytest.fixture
def study():
    return optuna.create_study(storage=optuna.storages.InMemoryStorage())


def failed(study, *, history=(), interrupted=(), checkpoint=None):
    """A FAIL trial of ``study`` that retries the series ``history`` (``interrupted`` of them by a signal)."""
    for _ in history:  # the earlier trials of the series
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    system_attrs = {"failed_trial": history[0], "retry_history": list(history),
                    record.INTERRUPTIONS: list(interrupted)} if history else {}
    # What the objective stores on a trial that trained 3 epochs after resuming from epoch 2.
    user_attrs = {record.SEED: 11, record.WORKER: "host:1", record.EPOCHS_RUN: 3, record.BEST_EPOCH: 3,
                  record.RESUMED_FROM_EPOCH: 2, record.TRAIN_SECONDS: 1.5,
                  record.LEARNING_CURVES: {"validation_accuracy": [0.5, 0.6, 0.7]}}
    if checkpoint is not None:
        user_attrs[record.CHECKPOINT_ARTIFACT] = checkpoint
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.FAIL, params={"x": 0.25}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs=user_attrs, system_attrs=system_attrs))
    return study.get_trials()[-1]


class Store:
    """An artifact store that records what is removed."""

    def __init__(self):
        self.removed = []

    def remove(self, artifact_id):
        self.removed.append(artifact_id)


def retried_trial_number(trial):
    return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def retry_history(trial):
    return optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(trial)


@pytest.mark.filterwarnings("ignore:.*is experimental:optuna.exceptions.ExperimentalWarning")
def test_interruptions_are_queued_again_every_time_and_keep_optunas_records(study, caplog):
    retry = RetryStaleTrial(max_retry=1, grace_period_seconds=3)
    retry.artifact_store = store = Store()
    trial = failed(study, checkpoint="c-0")
    with caplog.at_level(logging.WARNING, logger=LOG):
        for number in range(5):  # five interruptions of one series, max_retry = 1
            assert retry(study, trial, reason="interrupted by SIGTERM", interrupted=True) is True
            queued = study.get_trials()[-1]
            assert queued.state == TrialState.WAITING and queued.number == number + 1
            assert queued.params == {"x": 0.25}
            # Only what continuing needs: none of the epochs, curves or worker of the trial it retries.
            assert queued.user_attrs == {record.SEED: 11, record.CHECKPOINT_ARTIFACT: "c-0"}
            # Optuna's records: the first trial of the series, and every trial of it.
            assert retried_trial_number(queued) == 0 and retry_history(queued) == list(range(number + 1))
            assert interruptions(queued) == list(range(number + 1)) and crashes(queued) == 0
            study._storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
            study._storage.set_trial_state_values(queued._trial_id, TrialState.FAIL)
            trial = study.get_trials()[-1]
    assert store.removed == []
    # Trial 0's worker recorded itself; the retries failed before a worker took them.
    assert caplog.messages == [
        f"Trial {number} {'of worker host:1' if number == 0 else '(its worker never recorded itself)'} failed: "
        "interrupted by SIGTERM; queued again with the same parameters (an interruption: not counted against "
        "workers.max_retry)" for number in range(5)]

    # Its first crash is retry 1 of 1 still; the second is not queued again and loses the checkpoint.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOG):
        assert retry(study, trial, reason="marked FAIL by hand") is True
        queued = study.get_trials()[-1]
        assert retry_history(queued) == list(range(6)) and interruptions(queued) == list(range(5))
        assert crashes(queued) == 1
        study._storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
        study._storage.set_trial_state_values(queued._trial_id, TrialState.FAIL)
        assert retry(study, study.get_trials()[-1], reason="marked FAIL by hand") is False
    assert len(study.get_trials()) == 7 and store.removed == ["c-0"]
    assert queued_again(study.get_trials()) == {0, 1, 2, 3, 4, 5}  # trial 6 was not
    assert caplog.messages == [
        ("Trial 5 (its worker never recorded itself) failed: marked FAIL by hand; queued again with the same "
         "parameters (retry 1 of 1)"),
        ("Trial 6 (its worker never recorded itself) failed: marked FAIL by hand; not queued again: retried 1 time "
         "already")]


def test_stale_trials_count_against_max_retry_as_before(study):
    retry = RetryStaleTrial(max_retry=2, grace_period_seconds=3)
    retry.artifact_store = store = Store()
    # Two earlier failures, one of them an interruption: one crash spent.
    trial = failed(study, history=[0, 1], interrupted=[1], checkpoint="c-2")
    assert crashes(trial) == 1
    assert retry(study, trial) is True  # the second crash: retry 2 of 2
    queued = study.get_trials()[-1]
    assert queued.system_attrs["retry_history"] == [0, 1, 2] and queued.system_attrs["failed_trial"] == 0
    assert interruptions(queued) == [1] and crashes(queued) == 2
    study._storage.set_trial_state_values(queued._trial_id, TrialState.RUNNING)
    study._storage.set_trial_state_values(queued._trial_id, TrialState.FAIL)
    assert retry(study, study.get_trials()[-1]) is False  # a third crash is not queued
    assert store.removed == ["c-2"]
    # ... but an interruption of the same series still is.
    assert retry(study, study.get_trials()[-1], reason="interrupted by SIGINT", interrupted=True) is True
    assert study.get_trials()[-1].state == TrialState.WAITING and store.removed == ["c-2"]


def test_the_failed_trial_given_is_not_changed(study):
    trial = failed(study, history=[0], interrupted=[0])
    RetryStaleTrial(max_retry=2, grace_period_seconds=3)(study, trial, interrupted=True)
    assert trial.system_attrs == {"failed_trial": 0, "retry_history": [0], record.INTERRUPTIONS: [0]}
    assert study.get_trials()[-1].system_attrs["retry_history"] == [0, 1]
