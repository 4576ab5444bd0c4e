"""Study files: what validates, and the one-line errors for what does not."""

import errno
import os
import textwrap
from pathlib import Path

import optuna
import pytest

from hpo.config.registry import TrialSeededSampler
from hpo.config.spec import Choices, FloatRange, IntRange, SpecError, load_spec

MINIMAL = 'name = "x"\n[budget]\ntrials = 3\n'


def write(tmp_path, body: str, name: str = "study.toml"):
    path = tmp_path / name
    path.write_text(MINIMAL + textwrap.dedent(body))
    return path


def error_of(path) -> str:
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


def test_shipped_study_files_validate():
    digits = load_spec("studies/digits.toml")
    assert digits.dataset.name == "digits"
    assert digits.parameters.learning_rate == FloatRange(low=1e-4, high=1e-1, log=True)
    book = load_spec("studies/book_6_5.toml")
    # The book's section 6.5.3 experiment, exactly.
    assert book.parameters.learning_rate == FloatRange(low=1e-6, high=1e-2, log=True)
    assert book.parameters.weight_decay == FloatRange(low=1e-8, high=1e-4, log=True)
    assert (book.parameters.hidden_layers, book.parameters.hidden_size) == (6, 100)
    assert (book.parameters.epochs, book.parameters.batch_size, book.budget.trials) == (50, 100, 100)
    assert book.dataset.train_images == 500 and book.dataset.validation_fraction == 0.2
    # A seeded sampler is made anew for each trial with a seed of its own.
    assert isinstance(book.make_sampler(), TrialSeededSampler)
    assert isinstance(book.make_sampler().sampler, optuna.samplers.RandomSampler)
    assert isinstance(book.make_pruner(), optuna.pruners.NopPruner)
    fashion = load_spec("studies/fashion_mnist.toml")
    assert isinstance(fashion.make_pruner(), optuna.pruners.MedianPruner)


def test_fixed_and_searched_parameters(tmp_path):
    spec = load_spec(write(tmp_path, """
        [parameters]
        learning_rate = { low = 1e-4, high = 1e-1, log = true }
        optimizer = { choices = ["sgd", "adam"] }
        hidden_layers = { low = 1, high = 3 }
        weight_init = 0.01
    """))
    searched = spec.parameters.searched()
    assert list(searched) == ["learning_rate", "optimizer", "hidden_layers"]
    assert searched["optimizer"] == Choices(choices=["sgd", "adam"])
    assert searched["hidden_layers"] == IntRange(low=1, high=3)
    fixed = spec.parameters.fixed()
    assert fixed["weight_init"] == 0.01 and fixed["epochs"] == 20 and "learning_rate" not in fixed


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[parameters]\nlearning_rate = { low = 0, high = 1e-1, log = true }",
         "parameters.learning_rate: low must be > 0 on a log scale (got low = 0)"),
        ("[parameters]\nlearning_rate = { low = 1e-1, high = 1e-3, log = true }",
         "parameters.learning_rate: low (0.1) must not exceed high (0.001)"),
        ("[parameters]\nweight_decay = { low = 1e-8, high = 1e-3 }",
         "parameters.weight_decay: a searched weight_decay spans decades; set log = true"),
        ("[parameters]\ndropout = { choices = [0.0, 1.5] }",
         "parameters.dropout: choices[1] = 1.5: Input should be less than 1"),
        ("[parameters]\noptimizer = \"adamw\"",
         "parameters.optimizer: Input should be 'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop' or 'adam' (got 'adamw')"),
        ("[parameters]\nepochs = { low = 1, high = 3 }",
         "parameters.epochs: Input should be a valid integer (got a table; epochs cannot be searched)"),
        ("[parameters]\nactivation = { low = 1, high = 2 }",
         "parameters.activation: this setting cannot be searched over a range; give a value or { choices = [...] }"),
        # Strict types: TOML has real booleans and numbers; no quiet conversions.
        ("[parameters]\nhidden_size = true", "parameters.hidden_size: Input should be a valid integer (got True)"),
        ("[parameters]\nbatch_norm = 1", "parameters.batch_norm: Input should be a valid boolean (got 1)"),
        ("[parameters]\nhidden_size = { choices = [\"32\", 64] }",
         "parameters.hidden_size: choices[0] = '32': Input should be a valid integer"),
        ("[parameters]\noptimizer = { choices = [\"adam\", \"adam\"] }",
         "parameters.optimizer: choices[1] = 'adam' repeats choices[0]; give each value once"),
        ("[parameters]\nbatch_size = { choices = [128, 64, 128] }",
         "parameters.batch_size: choices[2] = 128 repeats choices[0]; give each value once"),
        ("[parameters]\ndropout = { choices = [0, 0.5, 0.0] }",
         "parameters.dropout: choices[2] = 0.0 repeats choices[0]; give each value once"),
        ("[parameters]\nlearning_rate = inf", "parameters.learning_rate: Input should be a finite number (got inf)"),
        ("[parameters]\nseed = -1", "parameters.seed: Input should be greater than or equal to 0 (got -1)"),
        ("[parameters]\nhidden_size = 100000000", "parameters.hidden_size: Input should be less than or equal to 16384"),
        ("[parameters]\ndropout = { low = 0.0, high = 0.5, step = 0.7 }",
         "parameters.dropout: step (0.7) must divide high - low (0.5)"),
        ("[parameters]\nweight_init = 0", "parameters.weight_init: Input should be 'he' or 'xavier' (got 0) or Input should be greater than 0 (got 0)"),
        ("[sampler]\ntype = \"tpe\"\ngamma = \"x\"",
         "sampler.gamma: takes a Python object, which a study file cannot give; remove it"),
        ("[sampler]\ntype = \"tpe\"\nmultivariate = \"yes\"", "sampler.multivariate = 'yes': expected bool"),
        ("[sampler]\ntype = \"bruteforce\"\n[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }",
         "sampler.type = 'bruteforce' enumerates every value; parameters.learning_rate needs choices"),
        ("[parameters]\nlerning_rate = 0.1",
         "parameters.lerning_rate: unknown field; remove it or check its spelling"),
        ("[sampler]\ntype = \"tpe\"\nn_startup = 3",
         "sampler.n_startup: not an argument of optuna.samplers.TPESampler"),
        ("[sampler]\ntype = \"simulated_annealing\"",
         "sampler.type = 'simulated_annealing' is not one of tpe, random"),
        ("[pruner]\ntype = \"hyperband\"\nreduction_factor = \"x\"",
         "pruner.reduction_factor = 'x': expected int"),
        ("[sampler]\ntype = \"grid\"\n[parameters]\nlearning_rate = { low = 1e-3, high = 1e-1, log = true }",
         "sampler.type = 'grid' needs every searched parameter as choices; parameters.learning_rate is a range"),
        ("direction = \"minimize\"\n", "budget.direction: unknown field"),
        ("[dataset]\nname = \"idx\"", "dataset: name = 'idx' needs directory"),
        ("[dataset]\nvalidation_fraction = 1.0", "dataset.validation_fraction: Input should be less than 1 (got 1.0)"),
    ],
)
def test_invalid_files_name_file_field_and_value(tmp_path, body, expected):
    path = write(tmp_path, body)
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert len(message.splitlines()) == 1


def test_direction_must_fit_metric(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\ndirection = "minimize"\n[budget]\ntrials = 3\n')
    assert "direction = 'minimize' does not fit metric = 'validation_accuracy'; use direction = 'maximize'" in error_of(path)


def test_missing_file_and_invalid_toml(tmp_path):
    assert error_of(tmp_path / "nope.toml") == f"{tmp_path / 'nope.toml'}: no such study file (see the studies/ folder for examples)"
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    message = error_of(bad)
    assert message.startswith(f"{bad}: invalid TOML: ") and "line 1" in message


GIVE = "give the path of a study file such as studies/digits.toml"


@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)), f"is not a TOML text file (binary data: a NUL byte at offset 0); {GIVE}"),
        (b'name = "x"\n\x89PNG\x00', f"is not a TOML text file (binary data: a NUL byte at offset 15); {GIVE}"),
        ('name = "café"\n'.encode("latin-1"),
         f"is not a TOML text file (byte 0xe9 at offset 11 is not UTF-8); save it as UTF-8, or {GIVE}"),
        (b"", f"is empty; write the study there (name, [budget], [parameters]) or {GIVE}"),
        (b" \n\n", f"is empty; write the study there (name, [budget], [parameters]) or {GIVE}"),
        (b"# name = 'x'\n", f"holds only comments; write the study there (name, [budget], [parameters]) or {GIVE}"),
        ('\ufeffname = "x"\n'.encode(), ("starts with a byte-order mark, which TOML does not allow; save it as "
                                         "UTF-8 without BOM")),
        (b"hello world\n", ("invalid TOML: Expected '=' after a key in a key/value pair (at line 1, column 7); "
                            f"correct it there, or {GIVE}")),
    ],
)
def test_a_file_that_is_no_toml_study_is_one_line_naming_it_and_what_to_do(tmp_path, content, expected):
    path = tmp_path / "study.toml"
    path.write_bytes(content)
    assert error_of(path) == f"{path}: {expected}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file without read permission")
def test_a_file_without_read_permission_is_one_line(tmp_path):
    path = write(tmp_path, "")
    path.chmod(0o200)
    assert error_of(path) == f"{path}: cannot be read (permission denied); make it readable (chmod u+r) or {GIVE}"


@pytest.mark.parametrize(
    "error, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied"),
         f"cannot be read (permission denied); make it readable (chmod u+r) or {GIVE}"),
        (OSError(errno.EIO, "Input/output error"), f"cannot be read (Input/output error); {GIVE}"),
    ],
)
def test_a_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch, error, expected):
    # (As root, chmod cannot make a file unreadable: the read fails as it would for another user.)
    path = write(tmp_path, "")

    def read_bytes(self):
        raise error

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert error_of(path) == f"{path}: {expected}"


def test_missing_budget_is_named(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "x"\n')
    assert error_of(path) == f"{path}: budget: required field is missing"


def test_relative_dataset_directory_resolves_against_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    spec = load_spec(write(tmp_path, '[dataset]\nname = "idx"\ndirectory = "data"\n'))
    assert spec.dataset.directory == (tmp_path / "data").resolve()


@pytest.mark.parametrize(
    "content, expected",
    [
        ('name = "x"\ndataset = "digits"\n[budget]\ntrials = 3\n', "dataset: must be a table"),
        ('name = "x"\n[budget]\ntrials = true\n', "budget.trials: Input should be a valid integer (got True)"),
        ('name = "x"\n[budget]\ntrials = "3"\n', "budget.trials: Input should be a valid integer (got '3')"),
    ],
)
def test_top_level_type_errors(tmp_path, content, expected):
    path = tmp_path / "s.toml"
    path.write_text(content)
    assert error_of(path) == f"{path}: {expected}"


def test_a_folder_is_not_a_study_file(tmp_path):
    assert error_of(tmp_path) == f"{tmp_path}: is a folder; give a study file (see the studies/ folder for examples)"


def test_a_device_or_pipe_is_not_a_study_file(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe")
    for path in (Path("/dev/null"), tmp_path / "pipe"):
        assert error_of(path) == f"{path}: is not a regular file; give a study file (see the studies/ folder for examples)"


def test_book_options_seed_per_trial_evaluate_train_and_default_learning_rate(tmp_path):
    spec = load_spec(write(tmp_path, """
        [parameters]
        optimizer = { choices = ["sgd", "adam"] }
        learning_rate = "default"
        seed_per_trial = false
        evaluate_train = true
    """))
    assert spec.parameters.learning_rate == "default"
    assert (spec.parameters.seed_per_trial, spec.parameters.evaluate_train) == (False, True)
    identity = spec.identity()["parameters"]
    assert (identity["seed_per_trial"], identity["evaluate_train"]) == (False, True)
    # At their defaults they are left out of the identity, so studies stored before they existed resume.
    plain = load_spec(write(tmp_path, "", name="plain.toml")).identity()["parameters"]
    assert "seed_per_trial" not in plain and "evaluate_train" not in plain


@pytest.mark.parametrize("body, expected", [
    ("[parameters]\nlearning_rate = \"book\"", "parameters.learning_rate: "),
    ("[parameters]\nseed_per_trial = 0", "parameters.seed_per_trial: Input should be a valid boolean (got 0)"),
    ("[sampler]\ntype = \"grid\"\n[parameters]\nbatch_norm = { choices = [false, true] }",
     "budget.trials = 3 exceeds the 2 points of the grid (sampler.type = 'grid'); lower it"),
])
def test_book_options_errors(tmp_path, body, expected):
    assert expected in error_of(write(tmp_path, body))


def test_grid_sampler_takes_its_grid_from_choices(tmp_path):
    spec = load_spec(write(tmp_path, """
        [sampler]
        type = "grid"
        [parameters]
        weight_init = { choices = [0.01, "xavier", "he"] }
    """))
    sampler = spec.make_sampler()
    assert isinstance(sampler, optuna.samplers.GridSampler)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    for _ in range(3):  # ask-and-tell, as the workers do: the last tell must not raise
        trial = study.ask()
        study.tell(trial, 1.0 if trial.suggest_categorical("weight_init", [0.01, "xavier", "he"]) == "he" else 0.0)
    assert sorted(map(str, (trial.params["weight_init"] for trial in study.trials))) == ["0.01", "he", "xavier"]


def test_grid_point_of_a_failed_trial_is_run_again(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('name = "x"\n[budget]\ntrials = 2\n[sampler]\ntype = "grid"\n'
                    '[parameters]\nbatch_norm = { choices = [false, true] }\n')
    spec = load_spec(path)
    study = optuna.create_study(sampler=spec.make_sampler())
    failed = study.ask()
    lost = failed.suggest_categorical("batch_norm", [False, True])
    study.tell(failed, state=optuna.trial.TrialState.FAIL)   # interrupted: measured nothing
    values = []
    for _ in range(2):
        trial = study.ask()
        values.append(trial.suggest_categorical("batch_norm", [False, True]))
        study.tell(trial, 0.0)
    assert sorted(values) == [False, True] and lost in values


RULE = ("use ASCII letters, digits, '.', '_' and '-', starting with a letter or digit, "
        "at most 128 characters")


@pytest.mark.parametrize("name", ["x", "digits_small", "Fashion.MNIST-2", "9lives", "n" * 128])
def test_study_names_that_are_allowed(tmp_path, name):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "{name}"\n[budget]\ntrials = 3\n')
    assert load_spec(path).name == name


@pytest.mark.parametrize(
    "name, shown",
    [
        ("../../escape/x", "'../../escape/x'"),
        ("a/b", "'a/b'"),
        ("", "''"),
        (".hidden", "'.hidden'"),
        ("-rf", "'-rf'"),
        ("a b", "'a b'"),
        ("caf\u00e9", "'caf\u00e9'"),
        ("tab\\there", "'tab\\there'"),               # TOML's escape: the name holds a tab, shown as \t
        ("n" * 129, f"'{'n' * 40}'... (129 characters)"),
        ("n" * 600, f"'{'n' * 40}'... (600 characters)"),
    ],
)
def test_study_names_that_are_refused_name_file_field_value_and_rule(tmp_path, name, shown):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "{name}"\n[budget]\ntrials = 3\n')
    assert error_of(path) == f"{path}: name: {shown} is not a valid study name; {RULE}"


def test_schedule_warmup_and_augmentation_fixed_or_searched(tmp_path):
    spec = load_spec(write(tmp_path, """
        [dataset]
        name = "fashion_mnist"
        [parameters]
        learning_rate_schedule = { choices = ["constant", "step", "cosine"] }
        warmup_epochs = { low = 0, high = 3 }
        augmentation = { choices = ["none", "shift", "shift_flip"] }
        epochs = 4
    """))
    searched = spec.parameters.searched()
    assert searched["learning_rate_schedule"] == Choices(choices=["constant", "step", "cosine"])
    assert searched["warmup_epochs"] == IntRange(low=0, high=3)
    assert searched["augmentation"] == Choices(choices=["none", "shift", "shift_flip"])
    fixed = load_spec(write(tmp_path, """
        [dataset]
        name = "fashion_mnist"
        [parameters]
        learning_rate_schedule = "cosine"
        warmup_epochs = 2
        augmentation = "shift"
    """, name="fixed.toml")).parameters.fixed()
    assert (fixed["learning_rate_schedule"], fixed["warmup_epochs"], fixed["augmentation"]) == ("cosine", 2, "shift")
    # At their defaults they are left out of the identity: studies stored before they existed resume.
    plain = load_spec(write(tmp_path, "", name="plain.toml"))
    assert plain.parameters.fixed()["learning_rate_schedule"] == "constant"
    assert plain.parameters.fixed()["warmup_epochs"] == 0 and plain.parameters.fixed()["augmentation"] == "none"
    assert not {"learning_rate_schedule", "warmup_epochs", "augmentation"} & set(plain.identity()["parameters"])
    assert spec.identity()["parameters"]["augmentation"] == {"choices": ["none", "shift", "shift_flip"]}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[parameters]\naugmentation = "shift_flip"\n',
         "study.toml: parameters.augmentation: shift_flip shifts images by up to 2 pixels and mirrors them, which "
         "changes what a digit means: too much for 8 x 8 digits (dataset.name = 'digits'); use 'none'"),
        ('[parameters]\naugmentation = { choices = ["none", "shift"] }\n',
         "study.toml: parameters.augmentation: shift shifts images by up to 2 pixels: too much for 8 x 8 digits "
         "(dataset.name = 'digits'); use 'none'"),
        ('[parameters]\naugmentation = { choices = ["shift", "shift_flip"] }\n',
         "study.toml: parameters.augmentation: shift, shift_flip shifts images by up to 2 pixels and mirrors them"),
        ('[parameters]\nwarmup_epochs = 20\nepochs = 20\n',
         "study.toml: parameters: warmup_epochs = 20 must be fewer than epochs (20); lower it"),
        ('[parameters]\nwarmup_epochs = { low = 0, high = 5 }\nepochs = 5\n',
         "study.toml: parameters: warmup_epochs (up to 5) must be fewer than epochs (5); lower it"),
        ('[parameters]\nwarmup_epochs = -1\n', "study.toml: parameters.warmup_epochs: Input should be greater than or equal to 0"),
        ('[parameters]\nlearning_rate_schedule = "linear"\n',
         "study.toml: parameters.learning_rate_schedule: Input should be 'constant', 'step' or 'cosine' (got 'linear')"),
        ('[parameters]\naugmentation = { choices = ["rotate"] }\n',
         "study.toml: parameters.augmentation: choices[0] = 'rotate': Input should be 'none', 'shift' or 'shift_flip'"),
    ],
)
def test_schedule_warmup_and_augmentation_errors(tmp_path, body, expected):
    message = error_of(write(tmp_path, body))
    assert expected in message and "\n" not in message


def test_checkpoint_every_epochs_defaults_to_1_and_is_not_part_of_the_identity(tmp_path):
    assert load_spec(write(tmp_path, "")).workers.checkpoint_every_epochs == 1
    spec = load_spec(write(tmp_path, "[workers]\ncheckpoint_every_epochs = 5", name="five.toml"))
    assert spec.workers.checkpoint_every_epochs == 5
    # It changes no result: a study resumes with another value.
    assert spec.identity() == load_spec(write(tmp_path, "", name="plain.toml")).identity()


def test_checkpoint_every_epochs_0_turns_checkpoints_off_and_below_0_is_refused(tmp_path):
    assert load_spec(write(tmp_path, "[workers]\ncheckpoint_every_epochs = 0")).workers.checkpoint_every_epochs == 0
    assert "workers.checkpoint_every_epochs: Input should be greater than or equal to 0" in error_of(
        write(tmp_path, "[workers]\ncheckpoint_every_epochs = -1", name="negative.toml"))


def test_repeated_choices_of_a_study_stored_before_they_were_refused_still_load():
    import json

    from pydantic import ValidationError

    from hpo.config.spec import Parameters

    stored = json.dumps({"optimizer": {"choices": ["adam", "adam"]}, "batch_size": 32})
    with pytest.raises(ValidationError, match=r"choices\[1\] = 'adam' repeats choices\[0\]"):
        Parameters.model_validate_json(stored)
    parameters = Parameters.model_validate_json(stored, context={"stored": True})
    assert parameters.searched()["optimizer"].choices == ["adam", "adam"]
    assert Parameters.model_validate_json(json.dumps({"optimizer": {"choices": ["sgd", "adam"]}})).searched() == {
        "optimizer": Choices(choices=["sgd", "adam"])}


def test_several_problems_are_one_line_naming_each(tmp_path):
    message = error_of(write(tmp_path, '[dataset]\nname = "mnist"\n[parameters]\nepochs = 0\n'))
    assert "\n" not in message
    assert "study.toml: dataset.name: Input should be 'digits', 'fashion_mnist' or 'idx' (got 'mnist')" in message
    assert "; " in message and "study.toml: parameters.epochs: " in message
