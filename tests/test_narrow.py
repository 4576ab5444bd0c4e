"""hpo.results.narrow and `hpo narrow`: narrower log ranges around the best trials, in a file that still loads."""

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.spec import load_spec
from hpo.results.narrow import (
    NarrowError,
    default_output,
    narrow_range,
    narrow_study_file,
    next_name,
)

STUDY = """\
# A tiny digits study for the narrowing tests.
name = "tiny"  # the study's name
[budget]
trials = 8
[sampler]
type = "random"
seed = 1
[pruner]
type = "none"
[parameters]
# both searched on a log scale (book section 6.5.2)
learning_rate = { low = 1e-4, high = 1e-1, log = true }   # keep this comment
weight_decay = { low = 1e-8, high = 1e-2, log = true }
hidden_size = { low = 8, high = 16, step = 8 }
batch_size = 64
epochs = 4
"""


def assert_user_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, finish_study):
    """A finished tiny study (8 complete trials, run once per module): its folder and study."""
    folder = finish_study(tmp_path_factory, "tiny.toml", STUDY)
    return folder, optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'hpo.db'}")


def test_narrowed_ranges_contain_the_top_trials_and_are_strictly_narrower(tiny, run_hpo, hpo_command):
    folder, study = tiny
    result = run_hpo("narrow", "tiny.toml", "--top", "3", cwd=folder)
    assert result.returncode == 0, result.stderr
    path = folder / "tiny-narrow-1.toml"
    assert "wrote tiny-narrow-1.toml (study tiny-narrow-1)" in result.stdout
    assert f"next: {hpo_command} run tiny-narrow-1.toml" in result.stdout  # the program as invoked: a command to paste

    old, new = load_spec(folder / "tiny.toml"), load_spec(path)
    assert new.name == "tiny-narrow-1"
    completed = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda trial: -trial.value)
    assert len(completed) == 8
    for name in ("learning_rate", "weight_decay"):
        before, after = getattr(old.parameters, name), getattr(new.parameters, name)
        assert after.log
        assert before.low <= after.low and after.high <= before.high
        assert after.high - after.low < before.high - before.low          # strictly narrower
        assert after.low <= study.best_trial.params[name] <= after.high   # the best trial stays inside
        assert all(after.low <= trial.params[name] <= after.high for trial in completed[:3])
        assert after.low <= min(trial.params[name] for trial in completed[:3]) / 2 * 1.01  # the margin x2
    # Everything but the log ranges and the name is as before.
    assert new.parameters.hidden_size == old.parameters.hidden_size and new.parameters.epochs == 4
    assert new.model_dump(exclude={"name", "parameters"}) == old.model_dump(exclude={"name", "parameters"})

    text = path.read_text()
    for comment in ("# A tiny digits study for the narrowing tests.", "# the study's name",
                    "# both searched on a log scale (book section 6.5.2)", "# keep this comment"):
        assert comment in text
    assert text.startswith("# Narrowed by `hpo narrow` from tiny.toml (study 'tiny'): the top 3 of\n# 8 completed")

    again = run_hpo("narrow", "tiny.toml", "--top", "3", cwd=folder)
    assert_user_error(again, "tiny-narrow-1.toml exists; use --force")
    forced = run_hpo("narrow", "tiny.toml", "--top", "8", "--force", "--margin", "1", "--name", "fine", cwd=folder)
    assert forced.returncode == 0, forced.stderr
    widest = load_spec(path).parameters.learning_rate
    rates = [trial.params["learning_rate"] for trial in completed]
    assert load_spec(path).name == "fine"
    assert widest.low <= min(rates) < min(rates) * 1.01 and max(rates) <= widest.high < max(rates) * 1.01


def test_the_new_study_runs_in_the_same_storage(tiny, run_hpo):
    folder, _ = tiny
    written = run_hpo("narrow", "tiny.toml", "--top", "2", "--out", "second.toml", cwd=folder)
    assert written.returncode == 0, written.stderr
    (folder / "second.toml").write_text((folder / "second.toml").read_text().replace("trials = 8", "trials = 1"))
    run = run_hpo("run", "second.toml", "--no-progress", cwd=folder)
    assert run.returncode == 0, run.stderr
    narrowed = load_spec(folder / "second.toml").parameters.learning_rate
    trial = optuna.load_study(study_name="tiny-narrow-1", storage=f"sqlite:///{folder / 'hpo.db'}").trials[0]
    assert narrowed.low <= trial.params["learning_rate"] <= narrowed.high


FIXED_RATES = [("learning_rate = { low = 1e-4, high = 1e-1, log = true }", "learning_rate = 0.01"),
               ("weight_decay = { low = 1e-8, high = 1e-2, log = true }", "weight_decay = 0.0")]


@pytest.mark.parametrize(
    "arguments, edits, fragments",
    [
        (["--top", "9"], [], ["study 'tiny' has 8 completed trial(s); --top 9 needs at least 9"]),
        (["--top", "2"], [("low = 1e-4, high = 1e-1", "low = 1e-3, high = 1e-1")],
         ["the study file does not match study 'tiny' (differs in parameters.learning_rate)"]),
        (["--top", "2"], FIXED_RATES, ["tiny.toml: no searched range has log = true; nothing to narrow"]),
        (["--top", "2", "--study-name", "other"], [], ["no study 'other'"]),
        # A 125-character name is allowed; "-narrow-1" would make it 134, over the 128 of hpo.config.names.
        (["--top", "2", "--study-name", "tiny"], [('name = "tiny"', f'name = "{"n" * 125}"')],
         [f"the new study's name: '{'n' * 40}'... (134 characters) is not a valid study name; use ASCII letters, "
          "digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters; choose one with --name"]),
    ],
    ids=["too-few-trials", "other-file", "no-log-range", "no-study", "long-default-name"],  # --top 0, --margin 0.5: test_cli
)
def test_bad_requests_are_one_error_line(tiny, tmp_path, arguments, edits, fragments, run_hpo):
    folder, _ = tiny
    text = (folder / "tiny.toml").read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "tiny.toml").write_text(text)
    result = run_hpo("narrow", "tiny.toml", "--storage", f"sqlite:///{folder / 'hpo.db'}", *arguments, cwd=tmp_path)
    assert_user_error(result, *fragments)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.toml"]  # nothing written


def test_narrow_study_file_refuses_a_margin_below_one(tiny, tmp_path):
    # `hpo narrow --margin 0.5` is a usage error of click (test_cli); library callers get this.
    folder, study = tiny
    with pytest.raises(NarrowError, match=r"^--margin must be a finite number of at least 1 \(got 0.5\)"):
        narrow_study_file(folder / "tiny.toml", study, 2, margin=0.5, out=tmp_path / "fine.toml")
    assert not (tmp_path / "fine.toml").exists()


def test_narrow_range_with_known_numbers():
    # Span 1e-3..1e-2 widened x2 each end: 5e-4..2e-2, inside the original 1e-4..1.
    assert narrow_range([1e-3, 3e-3, 1e-2], 1e-4, 1.0, 2.0) == (5e-4, 2e-2)
    # Rounded outward to 3 significant digits, clipped to the original range.
    assert narrow_range([0.0123456, 0.0456789], 1e-4, 0.05, 2.0) == (0.00617, 0.05)
    assert narrow_range([2e-4], 1e-4, 1.0, 3.0) == (1e-4, 6.01e-4)  # 2e-4 * 3 is 0.0006000000000000001
    assert narrow_range([0.0123456], 1e-4, 1.0, 1.0) == (0.0123, 0.0124)
    # An integer log range keeps integers.
    assert narrow_range([16, 40], 1, 1024, 2.0, integer=True) == (8, 80)


def test_names_and_default_paths():
    assert next_name("digits") == "digits-narrow-1"
    assert next_name("digits-narrow-1") == "digits-narrow-2"
    assert next_name("digits-narrow-9") == "digits-narrow-10"
    assert next_name("narrow-1") == "narrow-1-narrow-1"
    assert default_output("studies/digits.toml") == Path("studies/digits-narrow-1.toml")
    assert default_output("studies/digits-narrow-1.toml") == Path("studies/digits-narrow-2.toml")
