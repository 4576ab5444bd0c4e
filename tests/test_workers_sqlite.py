"""Local parallel workers on the default SQLite file: `hpo run --jobs 4`."""

import os
import sqlite3
import subprocess

import optuna
from conftest import HPO
from optuna.trial import TrialState


def test_four_local_workers_on_sqlite_meet_the_budget_without_lock_errors(tmp_path):
    (tmp_path / "study.toml").write_text(
        'name = "parallel"\n[budget]\ntrials = 24\n[pruner]\ntype = "none"\n'
        "[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }\n"
        "epochs = 3\nhidden_size = 32\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "HPO_STORAGE"}
    result = subprocess.run([HPO, "run", "study.toml", "--jobs", "4", "--no-progress", "--artifact-dir", "weights"],
                            cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr
    assert result.stdout.count("worker done:") == 4
    # 4 workers of one BLAS thread each: more threads than cores is said once, up front.
    oversubscribed = 4 > len(os.sched_getaffinity(0))
    assert ("warning: 4 job(s) x 1 BLAS thread(s) = 4 threads on" in result.stderr) == oversubscribed
    study = optuna.load_study(study_name="parallel", storage=f"sqlite:///{tmp_path / 'hpo.db'}")
    trials = study.get_trials()
    completed = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    assert len(completed) == 24
    # Anything else is a trial that lost the race for the last slots of the budget, never run,
    # and the summary counts those apart from failed trials.
    not_run = [trial for trial in trials if trial.state != TrialState.COMPLETE]
    assert all(trial.user_attrs.get("not_run") for trial in not_run)
    assert "trials: 24 complete, 0 pruned, 0 failed" + (f", {len(not_run)} not run (budget already met)"
                                                         if not_run else ";") in result.stdout
    assert len({trial.user_attrs["worker"] for trial in completed}) >= 2
    # Each worker's sampler has a seed of its own: no two trials sampled alike.
    assert len({trial.params["learning_rate"] for trial in completed}) == 24
    # --artifact-dir reaches the workers: each completed trial's weights are in that folder.
    assert f"artifacts: {tmp_path / 'weights'}" in result.stdout
    stored = {path.name for path in (tmp_path / "weights").iterdir()}
    assert stored == {trial.user_attrs["weights_artifact_id"] for trial in completed}
    with sqlite3.connect(tmp_path / "hpo.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_racing_creates_on_a_fresh_sqlite_file_make_one_study(tmp_path):
    # Two terminals starting `hpo run` at once on a new database: both create Optuna's
    # tables; SQLite says "table ... already exists" to the slower one, which must retry.
    (tmp_path / "study.toml").write_text('name = "race"\n[budget]\ntrials = 1\n[parameters]\nepochs = 1\n')
    environment = {key: value for key, value in os.environ.items() if key != "HPO_STORAGE"}
    for attempt in range(3):
        storage = f"sqlite:///{tmp_path / f'race-{attempt}.db'}"
        creators = [subprocess.Popen([HPO, "create", "study.toml", "--storage", storage], cwd=tmp_path,
                                     env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(4)]
        results = [(creator.wait(timeout=120), creator.stderr.read()) for creator in creators]
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        assert optuna.get_all_study_names(storage) == ["race"]
