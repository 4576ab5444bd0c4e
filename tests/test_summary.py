"""hpo.results.summary: trial counts, study rows and the epochs pruning saved, with known numbers."""

import optuna
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from hpo.results.summary import pruning_savings, state_counts, study_rows, study_savings
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
