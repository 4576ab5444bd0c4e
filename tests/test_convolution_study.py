"""Convolution blocks in study files: the parameters convolution_layers and convolution_channels (fixed, searched,
refused), check_convolution_fits (blocks the data's images can take), build_network, and `hpo run` refusing a
file whose blocks do not fit before any trial."""

import textwrap

import numpy as np
import pytest

from hpo.config.spec import Choices, IntRange, SpecError, load_spec
from hpo.store import record
from hpo.store.storage import open_storage
from hpo.tuning.data import DataError, TuningData, check_convolution_fits, prepare_data
from hpo.tuning.objective import build_network
from hpo.tuning.study import StudyMismatchError, open_study

MINIMAL = 'name = "x"\n[budget]\ntrials = 3\n'


def spec_of(tmp_path, body, name="study.toml"):
    path = tmp_path / name
    path.write_text(MINIMAL + textwrap.dedent(body))
    return load_spec(path)


def error_of(tmp_path, body):
    with pytest.raises(SpecError) as caught:
        spec_of(tmp_path, body)
    return str(caught.value)


def test_fixed_and_default_values(tmp_path):
    fixed = spec_of(tmp_path, "[parameters]\nconvolution_layers = 2\nconvolution_channels = 8\n").parameters.fixed()
    assert (fixed["convolution_layers"], fixed["convolution_channels"]) == (2, 8)
    default = spec_of(tmp_path, "", name="plain.toml").parameters.fixed()
    assert (default["convolution_layers"], default["convolution_channels"]) == (0, 16)   # the book's chapter 6 net


def test_searched_as_a_range_or_choices(tmp_path):
    searched = spec_of(tmp_path, """
        [parameters]
        convolution_layers = { low = 1, high = 3 }
        convolution_channels = { choices = [8, 16, 32] }
    """).parameters.searched()
    assert searched == {"convolution_layers": IntRange(low=1, high=3), "convolution_channels": Choices(choices=[8, 16, 32])}
    stepped = spec_of(tmp_path, """
        [parameters]
        convolution_layers = { choices = [0, 2] }
        convolution_channels = { low = 8, high = 32, step = 8 }
    """, name="stepped.toml").parameters.searched()
    assert stepped == {"convolution_layers": Choices(choices=[0, 2]),
                       "convolution_channels": IntRange(low=8, high=32, step=8)}


@pytest.mark.parametrize("body, expected", [
    ("convolution_layers = 9", "parameters.convolution_layers: Input should be less than or equal to 8 (got 9)"),
    ("convolution_layers = -1", "parameters.convolution_layers: Input should be greater than or equal to 0 (got -1)"),
    ("convolution_channels = 0",
     "parameters.convolution_channels: Input should be greater than or equal to 1 (got 0)"),
    ("convolution_channels = 2000",
     "parameters.convolution_channels: Input should be less than or equal to 1024 (got 2000)"),
    ("convolution_layers = { low = 1, high = 9 }",
     "parameters.convolution_layers: high = 9: Input should be less than or equal to 8"),
    ("convolution_layers = { choices = [1, 9] }",
     "parameters.convolution_layers: choices[1] = 9: Input should be less than or equal to 8"),
    ("convolution_channels = { low = 0, high = 8 }",
     "parameters.convolution_channels: low = 0: Input should be greater than or equal to 1"),
    ("convolution_layers = 1.0", "parameters.convolution_layers: Input should be a valid integer (got 1.0)"),
    ("convolution_layers = true", "parameters.convolution_layers: Input should be a valid integer (got True)"),
    ("convolution_layers = { low = 3, high = 1 }", "parameters.convolution_layers: low (3) must not exceed high (1)"),
])
def test_out_of_range_values_are_one_line_naming_the_field(tmp_path, body, expected):
    message = error_of(tmp_path, f"[parameters]\n{body}\n")
    assert message == f"{tmp_path / 'study.toml'}: {expected}"


def test_the_identity_omits_the_defaults_so_studies_stored_before_convolutions_resume(tmp_path):
    plain = spec_of(tmp_path, "")
    assert not {"convolution_layers", "convolution_channels"} & set(plain.identity()["parameters"])
    conv = spec_of(tmp_path, "[parameters]\nconvolution_layers = 2\n", name="conv.toml").identity()["parameters"]
    assert conv["convolution_layers"] == 2 and "convolution_channels" not in conv
    # A study whose stored identity predates the two parameters resumes with a file that leaves them out.
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = open_study(plain, storage, "x")
    stored = record.stored_study_file(study)
    stored["parameters"] = {name: value for name, value in stored["parameters"].items()
                            if not name.startswith("convolution_")}
    study.set_user_attr(record.STUDY_FILE, stored)
    assert open_study(plain, storage, "x").study_name == "x"
    with pytest.raises(StudyMismatchError, match="parameters.convolution_layers: stored null, file 2"):
        open_study(load_spec(tmp_path / "conv.toml"), storage, "x")


def digits_spec(tmp_path, layers, name="digits.toml"):
    return spec_of(tmp_path, f'[dataset]\nname = "digits"\n[parameters]\nconvolution_layers = {layers}\n', name=name)


def images_spec(tmp_path, layers, name="images.toml"):
    """A study of an IDX folder, whose image shape the study file cannot know: the data check decides."""
    return spec_of(tmp_path, f'[dataset]\nname = "idx"\ndirectory = "{tmp_path}"\n[parameters]\n'
                             f'convolution_layers = {layers}\n', name=name)


@pytest.fixture(scope="module")
def digits_data():
    from hpo.config.spec import DatasetSpec

    return prepare_data(DatasetSpec(name="digits"))


@pytest.mark.parametrize("layers", ["0", "1", "2", "3", "{ low = 1, high = 3 }", "{ choices = [0, 3] }"])
def test_digits_take_up_to_3_blocks(tmp_path, digits_data, layers):
    assert digits_data.image_shape == (8, 8)
    check_convolution_fits(digits_spec(tmp_path, layers), digits_data)    # no error


@pytest.mark.parametrize("layers, most", [("4", 4), ("8", 8), ("{ low = 1, high = 4 }", 4),
                                          ("{ low = 0, high = 6, step = 2 }", 6), ("{ choices = [5, 1] }", 5)])
def test_more_blocks_than_the_digits_can_be_halved_are_refused(tmp_path, digits_data, layers, most):
    with pytest.raises(DataError) as caught:   # images of 8 x 8 pixels, from a folder the study file cannot see into
        check_convolution_fits(images_spec(tmp_path, layers), digits_data)
    assert str(caught.value) == (f"parameters.convolution_layers: {most} blocks halve the 8 x 8 images of dataset "
                                 "'idx' below one pixel; use at most 3")
    # The study file itself refuses them for the bundled digits, whose size it knows (hpo create loads no data).
    with pytest.raises(SpecError) as caught:
        digits_spec(tmp_path, layers)
    assert str(caught.value).endswith(f"parameters.convolution_layers: {most} blocks halve the 8 x 8 images of "
                                      "dataset.name = 'digits' below one pixel; use at most 3")


@pytest.mark.parametrize(("directory", "refused"), [("", True), ('directory = "."', False)])
def test_fashion_mnist_files_take_up_to_4_blocks(tmp_path, directory, refused):
    text = f'[dataset]\nname = "fashion_mnist"\n{directory}\n[parameters]\nconvolution_layers = {{ low = 1, high = 5 }}\n'
    assert spec_of(tmp_path, text.replace("high = 5", "high = 4")).parameters.convolution_layers.high == 4
    if refused:   # Debian's files are 28 x 28; another folder may hold other images (checked with the data)
        with pytest.raises(SpecError, match="5 blocks halve the 28 x 28 images .* use at most 4$"):
            spec_of(tmp_path, text)
    else:
        assert spec_of(tmp_path, text).parameters.convolution_layers.high == 5


def test_larger_or_oblong_images_take_log2_of_their_smaller_side(tmp_path, digits_data):
    data = TuningData(*[np.zeros((4, 4))] * 4, 10, image_shape=(16, 40))
    check_convolution_fits(images_spec(tmp_path, 4), data)
    with pytest.raises(DataError, match="5 blocks halve the 16 x 40 images .* use at most 4$"):
        check_convolution_fits(images_spec(tmp_path, 5), data)
    odd = TuningData(*[np.zeros((4, 4))] * 4, 10, image_shape=(28, 7))    # 7 -> 3 -> 1: two blocks
    check_convolution_fits(images_spec(tmp_path, 2), odd)
    with pytest.raises(DataError, match="use at most 2$"):
        check_convolution_fits(images_spec(tmp_path, 3), odd)
    line = TuningData(*[np.zeros((4, 4))] * 4, 10, image_shape=(1, 784))  # one row of pixels: no block at all
    with pytest.raises(DataError, match="1 block halves the 1 x 784 images .* use at most 0$"):
        check_convolution_fits(images_spec(tmp_path, 1), line)


def test_data_without_an_image_shape_take_no_blocks(tmp_path):
    data = TuningData(*[np.zeros((4, 4))] * 4, 10, image_shape=None)
    check_convolution_fits(digits_spec(tmp_path, 0), data)
    with pytest.raises(DataError) as caught:
        check_convolution_fits(digits_spec(tmp_path, "{ choices = [0, 1] }"), data)
    assert str(caught.value) == ("parameters.convolution_layers: dataset 'digits' has no image shape for "
                                 "convolutions; use convolution_layers = 0")


def test_build_network_doubles_the_channels_of_each_block():
    values = {"hidden_layers": 1, "hidden_size": 16, "activation": "relu", "weight_init": "he", "batch_norm": False,
              "dropout": 0.0, "weight_decay": 0.0, "convolution_layers": 3, "convolution_channels": 4}
    network = build_network(values, 64, 10, seed=0, image_shape=(8, 8))
    assert network.convolution_channels == [4, 8, 16]
    assert [network.params[f"convolution_W{k}"].shape for k in (1, 2, 3)] == [(3, 3, 1, 4), (3, 3, 4, 8), (3, 3, 8, 16)]
    assert network.params["W1"].shape == (16, 16)                            # 1 x 1 pixel x 16 channels
    # No blocks: the image shape is not used; settings saved before convolutions existed lack both keys.
    plain = {name: value for name, value in values.items() if not name.startswith("convolution_")}
    for settings in (plain, {**values, "convolution_layers": 0}):
        assert list(build_network(settings, 64, 10, seed=0, image_shape=(8, 8)).params) == ["W1", "b1", "W2", "b2"]
    with pytest.raises(ValueError, match="^image_shape: "):
        build_network(values, 64, 10, seed=0)
    with pytest.raises(ValueError, match="^convolution_channels: expected at most 3 blocks"):
        build_network({**values, "convolution_layers": 4}, 64, 10, seed=0, image_shape=(8, 8))


STUDY = """
name = "conv"
[budget]
trials = 2
[dataset]
name = "digits"
[pruner]
type = "none"
[parameters]
convolution_layers = {layers}
hidden_size = 16
epochs = 1
"""


@pytest.mark.parametrize("layers", ["4", "{ low = 2, high = 4 }"])
def test_hpo_run_refuses_blocks_that_do_not_fit_before_any_trial(tmp_path, run_hpo, layers):
    (tmp_path / "study.toml").write_text(STUDY.format(layers=layers))
    result = run_hpo("run", "study.toml", "--no-progress", "--storage", f"sqlite:///{tmp_path / 'hpo.db'}",
                     cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines == [("Error: study.toml: parameters.convolution_layers: 4 blocks halve the 8 x 8 images of "
                      "dataset.name = 'digits' below one pixel; use at most 3")]
    assert not (tmp_path / "hpo.db").exists()                                # no study, hence no trial


def test_hpo_create_and_worker_refuse_them_too(tmp_path, run_hpo):
    (tmp_path / "study.toml").write_text(STUDY.format(layers=4))
    url = f"sqlite:///{tmp_path / 'hpo.db'}"
    for command in (["create"], ["worker", "--no-progress"]):  # create loads no data: the file knows the size
        result = run_hpo(*command, "study.toml", "--storage", url, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].endswith("use at most 3")
    assert not (tmp_path / "hpo.db").exists()  # no study stored under a name the corrected file could not reuse
