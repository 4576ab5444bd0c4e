"""The `hpo` command: bad inputs give one clear line, a non-zero exit, no traceback, no database."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HPO, OPTUNA

ROOT = Path(__file__).resolve().parents[1]
VALID = 'name = "x"\n[budget]\ntrials = 2\n[parameters]\nepochs = 1\n'


def hpo(*arguments, cwd, env=None):
    environment = {**os.environ, **(env or {})}
    environment.pop("HPO_STORAGE", None)
    return subprocess.run(
        [HPO, *arguments],
        cwd=cwd, env=environment, capture_output=True, text=True, timeout=300,
    )


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
def test_run_refuses_bad_study_files(tmp_path, content, fragments):
    if content is None:
        result = hpo("run", "missing.toml", cwd=tmp_path)
    else:
        (tmp_path / "study.toml").write_text(content)
        result = hpo("run", "study.toml", cwd=tmp_path)
    assert_user_error(result, *fragments, cwd=tmp_path)


@pytest.mark.parametrize(
    "url, fragments",
    [
        ("postgresql+psycopg2://nobody@127.0.0.1:1/nothing", ["cannot open storage", "127.0.0.1:1"]),
        ("not a url", ["'not a url' is not a SQLAlchemy URL"]),
        ("sqlite:////nonexistent-folder/x.db", ["folder /nonexistent-folder does not exist"]),
        ("nosuchdialect://host/db", ["cannot open storage", "nosuchdialect"]),
    ],
)
def test_run_refuses_unusable_storage(tmp_path, url, fragments):
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("run", "study.toml", "--storage", url, cwd=tmp_path)
    assert_user_error(result, *fragments, cwd=tmp_path)


def test_storage_password_is_not_printed(tmp_path):
    (tmp_path / "study.toml").write_text(VALID)
    result = hpo("run", "study.toml", "--storage", "postgresql+psycopg2://user:secret@127.0.0.1:1/x", cwd=tmp_path)
    assert result.returncode == 1 and "secret" not in result.stderr and "***" in result.stderr


def test_reading_commands_refuse_a_missing_sqlite_file(tmp_path):
    for command in ("trials", "best"):
        result = hpo(command, cwd=tmp_path)
        assert_user_error(result, "hpo.db", "no such database file", cwd=tmp_path)


def test_missing_idx_directory_is_named(tmp_path):
    (tmp_path / "study.toml").write_text(VALID + '[dataset]\nname = "idx"\ndirectory = "no-data"\n')
    result = hpo("run", "study.toml", cwd=tmp_path)
    assert_user_error(result, "study.toml", "no-data", cwd=tmp_path)


def test_run_then_resume_with_a_different_search_space_is_refused(tmp_path):
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
