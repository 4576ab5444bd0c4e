"""hpo.tuning.resources: the memory a machine gives, the smallest network of a study, the refusal of one too large."""

import re

import pytest

from hpo.config.spec import load_spec
from hpo.tuning.data import prepare_data
from hpo.tuning.resources import (
    TooLargeError,
    available_memory,
    cgroup_available,
    check_study_fits,
    describe_network,
    format_bytes,
    smallest_settings,
    trial_memory,
)


def write(folder, relative, text):
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_limit_minus_usage_without_inactive_file_cache_smallest_up_the_tree(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path, "self-cgroup", "0::/user.slice/app\n")
    write(root, "user.slice/app/memory.max", "2147483648\n")                    # 2 GiB
    write(root, "user.slice/app/memory.current", "1073741824\n")                # 1 GiB used,
    write(root, "user.slice/app/memory.stat", "anon 5\ninactive_file 268435456\nactive_file 7\n")  # 256 MiB cache
    write(root, "user.slice/memory.max", "max\n")                               # no limit
    write(root, "user.slice/memory.current", "5000000000\n")
    membership = tmp_path / "self-cgroup"
    assert cgroup_available(root, membership) == 2147483648 - (1073741824 - 268435456)
    write(root, "memory.max", "1500000000\n")                                   # the parent's limit is tighter
    write(root, "memory.current", "1400000000\n")
    assert cgroup_available(root, membership) == 100_000_000
    write(root, "memory.current", "1600000000\n")                               # over the limit: nothing left
    assert cgroup_available(root, membership) == 0


def test_cgroup_v1_limit_and_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    write(tmp_path, "self-cgroup", "9:name=systemd:/\n4:memory:/process_api/17d8\n0::/\n")
    write(root, "memory/process_api/17d8/memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    write(root, "memory/process_api/17d8/memory.usage_in_bytes", "621092864\n")
    membership = tmp_path / "self-cgroup"
    assert cgroup_available(root, membership) is None
    write(root, "memory/memory.limit_in_bytes", "4000000000\n")
    write(root, "memory/memory.usage_in_bytes", "1000000000\n")
    write(root, "memory/memory.stat", "cache 9\ntotal_inactive_file 500000000\n")
    assert cgroup_available(root, membership) == 3_500_000_000
    # Without /proc/self/cgroup (a container's own view, say) the groups at the root count.
    assert cgroup_available(root, tmp_path / "no-such-file") == 3_500_000_000
    assert cgroup_available(tmp_path / "empty", tmp_path / "no-such-file") is None


def test_available_memory_is_lowered_to_what_the_cgroup_limit_leaves(monkeypatch):
    import hpo.tuning.resources

    assert 0 < available_memory()
    monkeypatch.setattr(hpo.tuning.resources, "cgroup_available", lambda: 12345)
    assert available_memory() == 12345


def test_format_bytes():
    assert [format_bytes(count) for count in (69_140_000_000, 512e6, 3_200, 12)] == [
        "69.1 GB", "512.0 MB", "3.2 kB", "12 bytes"]


SEARCHED = """
name = "sizes"
[budget]
trials = 4
[parameters]
hidden_layers = { low = 2, high = 8 }
hidden_size = { choices = [512, 64, 256] }
batch_size = { low = 16, high = 256, step = 16 }
optimizer = { choices = ["adam", "momentum", "sgd"] }
batch_norm = { choices = [true, false] }
dropout = { low = 0.0, high = 0.5 }
weight_decay = { low = 1e-6, high = 1e-2, log = true }
learning_rate = { choices = ["default", 0.1] }
activation = "tanh"
"""


@pytest.fixture(scope="module")
def digits():
    return prepare_data(load_spec("studies/digits.toml").dataset)


def test_the_smallest_network_of_a_searched_space(tmp_path, digits):
    (tmp_path / "s.toml").write_text(SEARCHED)
    smallest = smallest_settings(load_spec(tmp_path / "s.toml").parameters, digits)
    assert {name: smallest[name] for name in ("hidden_layers", "hidden_size", "batch_size", "optimizer",
                                               "batch_norm", "dropout", "weight_decay", "activation")} == {
        "hidden_layers": 2, "hidden_size": 64, "batch_size": 16, "optimizer": "sgd", "batch_norm": False,
        "dropout": 0.0, "weight_decay": 1e-6, "activation": "tanh"}


def test_check_study_fits_refuses_exactly_above_the_available_memory(tmp_path, digits):
    (tmp_path / "s.toml").write_text(SEARCHED)
    spec = load_spec(tmp_path / "s.toml")
    needed = trial_memory(smallest_settings(spec.parameters, digits), digits)
    check_study_fits(spec, digits, available=needed)  # fits exactly
    with pytest.raises(TooLargeError) as caught:
        check_study_fits(spec, digits, available=needed - 1)
    assert str(caught.value) == (
        f"the smallest network of this study (2 hidden layers of 64 units, batch 16, sgd) needs "
        f"{format_bytes(needed)} to train; this machine has {format_bytes(needed - 1)} available; "
        "lower hidden_layers, hidden_size or batch_size")


HUGE = """
name = "huge"
[budget]
trials = 2
[parameters]
hidden_layers = 64
hidden_size = 16384
optimizer = { choices = ["adam", "sgd"] }
batch_norm = { choices = [true, false] }
epochs = 1
"""


@pytest.mark.parametrize("command", ["run", "worker"])
def test_a_study_too_large_for_the_machine_is_refused_before_any_trial(tmp_path, digits, command, run_hpo):
    (tmp_path / "study.toml").write_text(HUGE)
    smallest = smallest_settings(load_spec(tmp_path / "study.toml").parameters, digits)
    needed = trial_memory(smallest, digits)  # 272 GB: 17 billion parameters, 4 arrays of them (SGD)
    if available_memory() > needed / 2:
        pytest.skip(f"this machine has {format_bytes(available_memory())} available")
    result = run_hpo(command, "study.toml", cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert re.fullmatch(
        r"Error: study\.toml: parameters: the smallest network of this study \(64 hidden layers of 16384 units, "
        rf"batch 100, sgd\) needs {re.escape(format_bytes(needed))} to train; this machine has [0-9.]+ [kMG]B "
        r"available; lower hidden_layers, hidden_size or batch_size", line), line
    assert format_bytes(needed) == "272.1 GB"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["study.toml"]  # no database, no artifacts


def test_augmentation_adds_its_buffers_to_a_trials_memory(digits):
    values = {**load_spec("studies/digits.toml").parameters.fixed(), "hidden_size": 50, "hidden_layers": 1,
              "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 100, "weight_decay": 0.0, "dropout": 0.0,
              "batch_norm": False, "activation": "relu", "evaluate_train": False}
    plain = trial_memory({**values, "augmentation": "none"}, digits)
    # Per row of an 8 x 8 image: a padded 12 x 12 float32 copy (576 bytes), an int64 index and a float32 result
    # of 64 pixels each (768 bytes); three int64 offsets of one image (3 x 512 bytes).
    assert trial_memory({**values, "augmentation": "shift"}, digits) - plain == 100 * (576 + 768) + 3 * 512


def conv_values(**changes):
    """A trial's settings on digits: 1 hidden layer of 50 units, batch 100, SGD, and ``changes``."""
    return {**load_spec("studies/digits.toml").parameters.fixed(), "hidden_size": 50, "hidden_layers": 1,
            "optimizer": "sgd", "learning_rate": 0.1, "batch_size": 100, "weight_decay": 0.0, "dropout": 0.0,
            "batch_norm": False, "activation": "relu", "evaluate_train": False, "augmentation": "none", **changes}


def test_convolution_blocks_take_the_memory_of_their_im2col_matrices(digits):
    from models.network import TEST_CHUNK

    plain = trial_memory(conv_values(convolution_layers=0), digits)
    convolutional = trial_memory(conv_values(convolution_layers=2, convolution_channels=16), digits)
    # Two blocks of 16 and 32 filters on the 8 x 8 digits: im2col matrices of 9 x 64 x 1 and 9 x 16 x 16 values
    # per row, in test-mode chunks of 256 rows (the 288 validation rows: 256 + 32). The blocks keep them (with
    # ReLU's masks, pooling's argmaxes) while the next chunk's are made: about twice them, 20 x the plain network.
    im2col = TEST_CHUNK * 9 * (64 * 1 + 16 * 16) * 4
    assert 1.5 * im2col < convolutional - plain < 3 * im2col
    assert convolutional > 10 * plain
    # Block k has convolution_channels * 2 ** (k - 1) filters: four times the filters, about four times the memory.
    wider = trial_memory(conv_values(convolution_layers=2, convolution_channels=64), digits)
    assert 3 * (convolutional - plain) < wider - plain < 5 * (convolutional - plain)


def test_the_smallest_number_of_convolution_blocks_may_be_the_largest(tmp_path, digits):
    # Each block halves the image the 16384 units read: 3 blocks of 1, 2, 4 filters leave 1 x 1 x 4 values
    # instead of 8 x 8 pixels, which saves more than the blocks take.
    (tmp_path / "s.toml").write_text('name = "blocks"\n[budget]\ntrials = 2\n[parameters]\nhidden_size = 16384\n'
                                     "convolution_layers = { low = 0, high = 3 }\n"
                                     "convolution_channels = { choices = [4, 1, 2] }\n")
    smallest = smallest_settings(load_spec(tmp_path / "s.toml").parameters, digits)
    assert (smallest["convolution_layers"], smallest["convolution_channels"]) == (3, 1)
    assert trial_memory(smallest, digits) < trial_memory({**smallest, "convolution_layers": 0}, digits)
    assert describe_network(smallest) == ("3 convolution blocks of 1, 2, 4 filters, 1 hidden layer of 16384 units, "
                                          "batch 100, sgd")


CONVOLUTIONAL = """
name = "convolutional"
[budget]
trials = 2
[parameters]
hidden_layers = 1
hidden_size = 50
convolution_layers = 2
convolution_channels = { low = 64, high = 256 }
epochs = 1
"""


def test_a_convolutional_study_too_large_for_the_memory_is_refused_naming_convolution_channels(
        tmp_path, digits, monkeypatch):
    import hpo.tuning.resources

    (tmp_path / "s.toml").write_text(CONVOLUTIONAL)
    spec = load_spec(tmp_path / "s.toml")
    smallest = smallest_settings(spec.parameters, digits)
    needed = trial_memory(smallest, digits)
    assert smallest["convolution_channels"] == 64 and needed > 10 * trial_memory(
        {**smallest, "convolution_layers": 0}, digits)
    monkeypatch.setattr(hpo.tuning.resources, "available_memory", lambda: needed)
    check_study_fits(spec, digits)  # fits exactly
    monkeypatch.setattr(hpo.tuning.resources, "available_memory", lambda: needed - 1)
    with pytest.raises(TooLargeError) as caught:
        check_study_fits(spec, digits)
    assert str(caught.value) == (
        f"the smallest network of this study (2 convolution blocks of 64, 128 filters, 1 hidden layer of 50 units, "
        f"batch 100, sgd) needs {format_bytes(needed)} to train; this machine has {format_bytes(needed - 1)} "
        "available; lower hidden_layers, hidden_size, batch_size or convolution_channels")


def test_a_convolutional_trial_too_large_for_the_memory_is_pruned_naming_convolution_channels(
        tmp_path, digits, monkeypatch, run_study_file):
    import hpo.tuning.resources

    study_file = CONVOLUTIONAL.replace("{ low = 64, high = 256 }", "{ choices = [4, 64] }").replace(
        "[budget]", '[sampler]\ntype = "grid"\n[budget]')
    (tmp_path / "s.toml").write_text(study_file)
    spec = load_spec(tmp_path / "s.toml")
    small = {**smallest_settings(spec.parameters, digits), "convolution_channels": 4}
    available = trial_memory(small, digits)  # the 4-filter network fits, the 64-filter one does not
    monkeypatch.setattr(hpo.tuning.resources, "available_memory", lambda: available)
    study, _ = run_study_file(tmp_path, study_file)
    refused = {trial.params["convolution_channels"]: trial for trial in study.trials}
    assert refused[4].state.name == "COMPLETE" and refused[64].state.name == "PRUNED"
    assert refused[64].user_attrs["too_large"].startswith("the network (2 convolution blocks of 64, 128 filters")
    assert refused[64].user_attrs["too_large"].endswith(
        "available; lower hidden_layers, hidden_size, batch_size or convolution_channels")
