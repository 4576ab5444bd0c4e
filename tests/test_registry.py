"""hpo.config.registry: samplers and pruners by name, a random stream per trial, grids from plain data."""

import importlib.util
import tomllib
from pathlib import Path

import numpy as np
import optuna
import pytest

from hpo.config.registry import (
    GridSampler,
    TrialSeededSampler,
    build_pruner,
    build_sampler,
)

SPACE = {"learning_rate": {"low": 1e-4, "high": 1e-1, "log": True, "step": None},
         "optimizer": {"choices": ["sgd", "adam"]}}


def sample(sampler, trials, *, study=None):
    study = study or optuna.create_study(sampler=sampler)
    values = []
    for _ in range(trials):
        trial = study.ask()
        values.append((trial.number, trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)))
        study.tell(trial, 0.0)
    return values


def test_the_seed_of_trial_n_is_the_seed_sequence_of_seed_and_n():
    expected = int(np.random.SeedSequence([7, 3]).generate_state(1)[0])
    assert TrialSeededSampler.trial_seed(7, 3) == expected
    assert len({TrialSeededSampler.trial_seed(7, n) for n in range(100)}) == 100


def test_trial_n_samples_from_its_own_stream_whoever_runs_it():
    # Two processes sharing a study (or two runs at once) hold samplers built from the same seed;
    # what trial n draws depends only on (seed, n), so they never repeat each other.
    first = sample(build_sampler("random", {"seed": 7}, SPACE), 4)
    again = sample(build_sampler("random", {"seed": 7}, SPACE), 4)
    assert first == again  # reproducible
    assert len({value for _, value in first}) == 4
    # Trial 0 of this study draws what trial 0 of every study with seed 7 draws: RandomSampler(seed=s0).
    plain = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=TrialSeededSampler.trial_seed(7, 0)))
    assert sample(None, 1, study=plain) == first[:1]
    other = sample(build_sampler("random", {"seed": 8}, SPACE), 4)
    assert {value for _, value in other}.isdisjoint({value for _, value in first})


def test_grid_and_qmc_keep_one_sequence_and_unseeded_samplers_are_optuna_s_own():
    assert isinstance(build_sampler("grid", {"seed": 1}, SPACE | {"learning_rate": {"choices": [0.1, 0.01]}}),
                      GridSampler)
    assert isinstance(build_sampler("qmc", {"seed": 1}, SPACE), optuna.samplers.QMCSampler)
    assert isinstance(build_sampler("tpe", {}, SPACE), optuna.samplers.TPESampler)
    assert isinstance(build_sampler("tpe", {"seed": 0}, SPACE), TrialSeededSampler)


def test_the_grid_is_the_choices_of_plain_data():
    sampler = build_sampler("grid", {"seed": 0}, {"optimizer": {"choices": ["sgd", "adam"]},
                                                  "batch_size": {"choices": [32, 64, 128]}})
    study = optuna.create_study(sampler=sampler)
    points = set()
    for _ in range(6):
        trial = study.ask()
        points.add((trial.suggest_categorical("optimizer", ["sgd", "adam"]),
                    trial.suggest_categorical("batch_size", [32, 64, 128])))
        study.tell(trial, 0.0)
    assert points == {(o, b) for o in ("sgd", "adam") for b in (32, 64, 128)}


@pytest.mark.parametrize(("name", "space", "message"), [
    ("grid", SPACE, "sampler.type = 'grid' needs every searched parameter as choices; parameters.learning_rate is a range"),
    ("grid", {}, "sampler.type = 'grid' needs at least one parameter with choices"),
    ("bruteforce", SPACE, "parameters.learning_rate needs choices or a range with a step"),
])
def test_samplers_that_cannot_walk_the_space_say_which_parameter(name, space, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_sampler(name, {}, space)


def test_tpe_lies_about_running_trials_unless_told_otherwise():
    assert build_sampler("tpe", {}, SPACE)._constant_liar is True
    assert build_sampler("tpe", {"constant_liar": False}, SPACE)._constant_liar is False


def test_pruners_take_epochs_as_steps():
    assert build_pruner("hyperband", {}, epochs=27)._max_resource == 27
    with pytest.raises(ValueError, match="pruner.min_resource = 9 exceeds parameters.epochs = 8"):
        build_pruner("successive_halving", {"min_resource": 9}, epochs=8)
    with pytest.raises(ValueError, match="n_warmup_steps"):
        build_pruner("median", {"n_warmup_steps": "five"}, epochs=8)


def test_qmc_trial_n_takes_point_n_whatever_the_shared_counter_says():
    # Optuna's QMC sampler counts the points taken in a study attribute that two processes
    # can read at once and both increment to the same value; here the trial number decides.
    def run(lose_updates: bool) -> list[float]:
        study = optuna.create_study(sampler=build_sampler("qmc", {"seed": 3}, SPACE))
        values = []
        for _ in range(8):
            if lose_updates:  # as if another process had written back an old count
                for key in study._storage.get_study_system_attrs(study._study_id):
                    if key.startswith("qmc:"):
                        study._storage.set_study_system_attr(study._study_id, key, 0)
            trial = study.ask()
            values.append(trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True))
            study.tell(trial, 0.0)
        return values

    clean, raced = run(False), run(True)
    assert raced == clean
    assert len(set(clean)) == 8


def test_qmc_first_trials_differ_though_they_come_before_the_search_space():
    # Until a trial completes, QMC samples with its independent sampler; a failed first trial and
    # its successor (a resume, or a second process) drew the same values from RandomSampler(seed).
    study = optuna.create_study(sampler=build_sampler("qmc", {"seed": 3}, SPACE))
    values = []
    for _ in range(3):
        trial = study.ask()
        values.append(trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert len(set(values)) == 3
    again = optuna.create_study(sampler=build_sampler("qmc", {"seed": 3}, SPACE))
    trial = again.ask()
    assert trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True) == values[0]  # still reproducible


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="PyTorch is installed: the gp sampler works")
def test_a_gp_study_without_pytorch_is_one_line_naming_the_extra(tmp_path, run_hpo):
    (tmp_path / "gp.toml").write_text('name = "gp"\n[budget]\ntrials = 2\n[sampler]\ntype = "gp"\n'
                                      '[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }\n')
    result = run_hpo("create", "gp.toml", "--storage", f"sqlite:///{tmp_path / 'gp.db'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [("Error: gp.toml: sampler.type = 'gp' needs PyTorch: pip install "
                                           "'hpo-from-scratch[gp]' (or torch), or choose another sampler")]
    assert not (tmp_path / "gp.db").exists()  # refused before the storage is opened
    # The extra it names brings PyTorch.
    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert extras["gp"] == ["torch==2.13.0"]
