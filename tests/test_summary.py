"""hpo.results.summary: trial counts, study rows and the epochs pruning saved, with known numbers."""

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from hpo.results.summary import (
    STUDY_COLUMNS,
    epochs_trained,
    own_epochs,
    pruning_savings,
    state_counts,
    study_rows,
    study_savings,
    taken_trials,
)
from hpo.store import record


def trial(state, epochs_run, *, params=None, diverged=False, too_large=False):
    attributes = ({"epochs_run": epochs_run} | ({"diverged": "loss is nan"} if diverged else {})
                  | ({"too_large": "the network needs 9 GB"} if too_large else {}))
    params = params or {}
    return create_trial(
        state=state, value=0.5 if state == TrialState.COMPLETE else None, params=params,
        distributions={name: IntDistribution(1, 100) for name in params}, user_attrs=attributes,
    )


def test_pruning_savings_counts_finished_trials_against_their_planned_epochs():
    trials = [
        trial(TrialState.COMPLETE, 30), trial(TrialState.COMPLETE, 30),
        trial(TrialState.PRUNED, 5), trial(TrialState.PRUNED, 10),
        trial(TrialState.FAIL, 12),                    # interrupted: on neither side
        trial(TrialState.PRUNED, 3, diverged=True),    # stopped by divergence, not by the pruner: 3 of 3
    ]
    savings = pruning_savings(trials, fixed_epochs=30)
    assert (savings.trained, savings.planned) == (30 + 30 + 5 + 10 + 3, 30 * 4 + 3)
    assert savings.saved_fraction == 1 - 78 / 123


def test_a_searched_epochs_parameter_wins_over_the_fixed_value():
    trials = [trial(TrialState.COMPLETE, 20, params={"epochs": 20}), trial(TrialState.PRUNED, 2, params={"epochs": 40})]
    savings = pruning_savings(trials, fixed_epochs=None)
    assert (savings.trained, savings.planned, savings.saved_fraction) == (22, 60, 1 - 22 / 60)


def test_no_finished_trial_or_unknown_epochs_give_no_savings():
    assert pruning_savings([trial(TrialState.FAIL, 3)], fixed_epochs=10) is None
    assert pruning_savings([trial(TrialState.COMPLETE, 3)], fixed_epochs=None) is None


def test_study_savings_reads_the_fixed_epochs_of_the_stored_study_file():
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(record.STUDY_FILE, {"parameters": {"epochs": 8}})
    for state, run in ((TrialState.COMPLETE, 8), (TrialState.PRUNED, 2), (TrialState.PRUNED, 2)):
        study.add_trial(trial(state, run))
    savings = study_savings(study)
    assert (savings.trained, savings.planned) == (12, 24) and savings.saved_fraction == 0.5


def test_state_counts_and_study_rows():
    not_run = create_trial(state=TrialState.FAIL, user_attrs={"not_run": "the budget was claimed by other "
                                                                         "workers' trials"})
    trials = [trial(TrialState.COMPLETE, 1), trial(TrialState.PRUNED, 1), trial(TrialState.PRUNED, 1),
              trial(TrialState.FAIL, 1), not_run, not_run]
    # A trial that never ran because the budget was met is counted apart from failed ones.
    assert state_counts(trials) == {"complete": 1, "pruned": 2, "failed": 1, "not_run": 2, "running": 0}

    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, study_name="a", direction="minimize")
    for value in (3.0, 1.0, 2.0):
        first.add_trial(create_trial(value=value))
    optuna.create_study(storage=storage, study_name="b", directions=["maximize", "minimize"])
    rows = study_rows(storage)
    assert [row["study"] for row in rows] == ["a", "b"]
    assert all(tuple(row) == STUDY_COLUMNS for row in rows)  # the header of `hpo studies -f csv`, also of no study
    assert {key: rows[0][key] for key in ("direction", "complete", "pruned", "best_value", "best_trial")} == {
        "direction": "minimize", "complete": 3, "pruned": 0, "best_value": 1.0, "best_trial": 1}
    assert rows[1]["direction"] == "maximize,minimize" and rows[1]["best_value"] is None
    assert rows[1]["datetime_start"] is None


def test_a_too_large_trial_counts_like_a_diverged_one():
    trials = [
        trial(TrialState.COMPLETE, 30),
        trial(TrialState.PRUNED, 0, too_large=True),   # refused before training: 0 of 0
        trial(TrialState.PRUNED, 2, too_large=True),   # MemoryError in epoch 3: 2 of 2
        trial(TrialState.PRUNED, 4),                   # pruned: 4 of 30
    ]
    savings = pruning_savings(trials, fixed_epochs=30)
    assert (savings.trained, savings.planned) == (30 + 0 + 2 + 4, 30 + 0 + 2 + 30)
    assert savings.saved_fraction == 1 - 36 / 62


def test_a_run_counts_the_epochs_its_workers_trained_after_its_start():
    def ran(number, state, epochs_run=None, *, worker="host:7", resumed_from=None):
        attributes = {"worker": worker} if worker else {}
        if epochs_run is not None:
            attributes["epochs_run"] = epochs_run
        if resumed_from is not None:
            attributes["resumed_from_epoch"] = resumed_from
        made = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None, user_attrs=attributes)
        made.number = number
        return made

    before = [ran(0, TrialState.COMPLETE, 10, worker="host:7"),  # an earlier run's, by a process of the same pid
              ran(1, TrialState.FAIL, 4, worker="host:3"),       # interrupted at epoch 4, checkpointed at 4
              ran(2, TrialState.WAITING, worker=None),            # its retry, queued
              ran(3, TrialState.RUNNING, 2, worker="host:9")]     # another machine's worker
    taken = taken_trials(before)
    assert taken == {0, 1, 3}
    after = [before[0], before[1],
             ran(2, TrialState.COMPLETE, 10, resumed_from=4),     # 6 epochs of this run
             ran(3, TrialState.COMPLETE, 10, worker="host:9"),    # not this run's worker
             ran(4, TrialState.PRUNED, 3),                        # 3 of this run
             ran(5, TrialState.PRUNED, 2, worker="host:8"),       # 2 of the run's other worker
             ran(6, TrialState.FAIL, worker="host:8")]            # budget already met: never trained
    assert [own_epochs(trial) for trial in after] == [10, 4, 6, 10, 3, 2, 0]
    assert epochs_trained(after, ["host:7", "host:8"], taken) == 6 + 3 + 2
    assert epochs_trained(after, ["host:7"], taken) == 6 + 3
    assert epochs_trained(after, ["host:7"], set()) == 10 + 6 + 3  # without the start's look: the bug it prevents
