"""models.checkpoint and train(resume_from=...): a training continued from a checkpoint equals one run through."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest

from models.augmentation import make_augmentation
from models.checkpoint import Checkpoint, random_generators
from models.datasets import load_digits, train_validation_split
from models.network import MultiLayerNet
from models.optimizers import OPTIMIZERS, Adam, Momentum, make_optimizer
from models.schedules import make_schedule
from models.trainer import train


@pytest.fixture(scope="module")
def digits_split():
    data = load_digits()
    return train_validation_split(data.x_train, data.t_train, 0.2, seed=0)


class Stop(Exception):
    """Ends a training after its checkpoint, as a killed process would."""


def network_and_generator(seed):
    """A network with batch norm and dropout, and the Generator it shares with the trainer (as the service does)."""
    rng = np.random.default_rng(seed)
    return MultiLayerNet(64, [32, 32], 10, batch_norm=True, dropout=0.2, weight_decay=1e-3, seed=rng), rng


def without_seconds(history):
    return [dataclasses.replace(metrics, seconds=0.0) for metrics in history]


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_resumed_training_equals_uninterrupted_training_bit_for_bit(digits_split, optimizer):
    x, t, xv, tv = digits_split
    # A cosine schedule after a warmup epoch and shifted, mirrored mini-batches: the rate comes from the
    # epoch and the augmentation draws from the trainer's generator, so both must continue exactly.
    settings = {"epochs": 6, "batch_size": 50, "schedule": make_schedule("cosine", 0.01, 6, 1),
                "augmentation": make_augmentation("shift_flip", (8, 8))}
    # Run through: 6 epochs.
    network, rng = network_and_generator(7)
    whole = train(network, make_optimizer(optimizer, 0.01), x, t, xv, tv, rng=rng, **settings)
    expected = network.state_dict()

    # Interrupted after the checkpoint of epoch 3 (every 3 epochs; none after the last).
    network, rng = network_and_generator(7)
    taken = []

    def keep(checkpoint):
        taken.append(checkpoint.to_bytes())  # through bytes, as the service stores it
        raise Stop

    with pytest.raises(Stop):
        train(network, make_optimizer(optimizer, 0.01), x, t, xv, tv, rng=rng, checkpoint_every=3,
              on_checkpoint=keep, **settings)
    (data,) = taken
    checkpoint = Checkpoint.from_bytes(data)
    assert checkpoint.epoch == 3 and len(checkpoint.history) == 3

    # Resumed by a fresh network, optimizer and generator of another seed: all state comes from the checkpoint.
    network, rng = network_and_generator(12345)
    seen = []
    resumed = train(network, make_optimizer(optimizer, 0.01), x, t, xv, tv, rng=rng, resume_from=checkpoint,
                    callback=lambda metrics: seen.append(metrics.epoch), **settings)
    assert seen == [4, 5, 6]
    assert [metrics.learning_rate for metrics in resumed.history] == pytest.approx(
        [0.005, 0.01, 0.01 * 0.5 * (1 + np.cos(np.pi / 5)), 0.01 * 0.5 * (1 + np.cos(2 * np.pi / 5)),
         0.01 * 0.5 * (1 + np.cos(3 * np.pi / 5)), 0.01 * 0.5 * (1 + np.cos(4 * np.pi / 5))])
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    state = network.state_dict()
    assert sorted(state) == sorted(expected) and "running_mean1" in state
    for name in expected:
        np.testing.assert_array_equal(state[name], expected[name], err_msg=name)
    # The generator went on from where the interrupted run left it: the next draw is the same.
    network, rng_through = network_and_generator(7)
    train(network, make_optimizer(optimizer, 0.01), x, t, xv, tv, rng=rng_through, **settings)
    assert rng.random() == rng_through.random()


def test_a_checkpoint_without_its_state_would_differ(digits_split):
    """The test above can fail: resuming with the optimizer's state or the generator left out changes the result."""
    x, t, xv, tv = digits_split
    network, rng = network_and_generator(7)
    whole = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, epochs=4, batch_size=50)
    taken = []
    network, rng = network_and_generator(7)
    train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, epochs=4, batch_size=50,
          checkpoint_every=2, on_checkpoint=lambda c: taken.append(Checkpoint.from_bytes(c.to_bytes())))
    (checkpoint,) = taken
    fresh = make_optimizer("adam", 0.01).state_dict()
    for broken in (dataclasses.replace(checkpoint, optimizer=fresh),
                   dataclasses.replace(checkpoint, generators={name: np.random.default_rng(1).bit_generator.state
                                                               for name in checkpoint.generators})):
        network, rng = network_and_generator(7)
        resumed = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, epochs=4, batch_size=50,
                        resume_from=broken)
        assert without_seconds(resumed.history[:2]) == without_seconds(whole.history[:2])
        assert resumed.history[3].validation_loss != whole.history[3].validation_loss


def test_checkpoints_come_every_k_epochs_after_the_callback_and_never_after_the_last(digits_split):
    x, t, xv, tv = digits_split
    events = []
    network, rng = network_and_generator(0)
    train(network, make_optimizer("sgd", 0.01), x, t, xv, tv, rng=rng, epochs=7, batch_size=200,
          callback=lambda metrics: events.append(("epoch", metrics.epoch)), checkpoint_every=2,
          on_checkpoint=lambda checkpoint: events.append(("checkpoint", checkpoint.epoch, len(checkpoint.history))))
    assert events == [("epoch", 1), ("epoch", 2), ("checkpoint", 2, 2), ("epoch", 3), ("epoch", 4),
                      ("checkpoint", 4, 4), ("epoch", 5), ("epoch", 6), ("checkpoint", 6, 6), ("epoch", 7)]


def test_the_serialized_checkpoint_is_an_npz_archive_without_pickle_that_keeps_dtypes():
    optimizer = Adam(0.01)
    params = {"all": np.ones(5, dtype=np.float32)}
    optimizer.update(params, {"all": np.full(5, 0.5, dtype=np.float32)})
    checkpoint = Checkpoint(epoch=2, network={"W1": np.arange(6, dtype=np.float32).reshape(2, 3)},
                            optimizer=optimizer.state_dict(),
                            generators={"trainer": np.random.default_rng(3).bit_generator.state},
                            history=[{"epoch": 1, "validation_accuracy": 0.1}], first_loss=(2.3, 10),
                            extras={"best": {"W1": np.zeros((2, 3), dtype=np.float64)}})
    data = checkpoint.to_bytes()
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        assert sorted(archive.files) == ["checkpoint.json", "extras/best/W1", "network/W1", "optimizer/m/all",
                                         "optimizer/v/all"]
    back = Checkpoint.from_bytes(data)
    assert back.optimizer["t"] == {"all": 1} and back.optimizer["updates"] == 1
    assert back.optimizer["m"]["all"].dtype == np.float32 and back.extras["best"]["W1"].dtype == np.float64
    # m after one step from 0 is (1 - beta1) * g = 0.1 * 0.5 (float32).
    np.testing.assert_array_equal(back.optimizer["m"]["all"], np.float32(0.1) * np.float32(0.5))
    np.testing.assert_array_equal(back.network["W1"], checkpoint.network["W1"])
    assert back.first_loss == (2.3, 10) and back.history == checkpoint.history
    generator = np.random.default_rng(0)
    back.restore_generators({"trainer": generator})
    assert generator.random() == np.random.default_rng(3).random()


@pytest.mark.parametrize("data, match", [(b"not a zip", "not a checkpoint archive"),
                                         (lambda: _archive(x=np.zeros(2)), "not a checkpoint"),
                                         (lambda: _archive(**{"checkpoint.json": np.array('{"format": 99}')}),
                                          "format 99, expected 1")])
def test_other_files_are_refused_with_a_reason(data, match):
    with pytest.raises(ValueError, match=match):
        Checkpoint.from_bytes(data() if callable(data) else data)


def _archive(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_optimizer_state_round_trip_gives_the_same_next_step():
    rng = np.random.default_rng(0)
    grads = [{"all": rng.standard_normal(4).astype(np.float32)} for _ in range(3)]
    for name in OPTIMIZERS:
        first, second = make_optimizer(name, 0.1), make_optimizer(name, 0.1)
        a, b = {"all": np.ones(4, dtype=np.float32)}, None
        first.update(a, grads[0])
        first.update(a, grads[1])
        b = {"all": a["all"].copy()}
        second.load_state_dict(Checkpoint.from_bytes(Checkpoint(
            epoch=1, network={}, optimizer=first.state_dict(), generators={}, history=[]).to_bytes()).optimizer)
        first.update(a, grads[2])
        second.update(b, grads[2])
        np.testing.assert_array_equal(a["all"], b["all"], err_msg=name)


def test_an_optimizer_refuses_the_state_of_another():
    with pytest.raises(ValueError, match=r"expected keys \['updates', 'v'\] of Momentum, got \['h'\]"):
        Momentum().load_state_dict({"h": {}})


def test_random_generators_names_the_trainer_s_the_network_s_and_the_dropout_layers():
    rng = np.random.default_rng(0)
    network = MultiLayerNet(4, [3, 3], 2, dropout=0.5, seed=rng)
    generators = random_generators(network, rng)
    assert sorted(generators) == ["Dropout1", "Dropout2", "network", "trainer"]
    assert all(generator is rng for generator in generators.values())


def test_resume_from_a_checkpoint_past_the_epochs_is_refused(digits_split):
    x, t, xv, tv = digits_split
    network, rng = network_and_generator(0)
    checkpoint = Checkpoint(epoch=5, network=network.state_dict(), optimizer={}, generators={}, history=[])
    with pytest.raises(ValueError, match="resume_from: expected a checkpoint of epoch 0 to 3"):
        train(network, make_optimizer("sgd"), x, t, xv, tv, rng=rng, epochs=3, batch_size=50, resume_from=checkpoint)


def checkpoint_of_epoch_2(digits_split):
    """The checkpoint after epoch 2 of a 4-epoch training of :func:`network_and_generator`'s network."""
    x, t, xv, tv = digits_split
    network, rng = network_and_generator(5)
    taken = []

    def keep(checkpoint):
        taken.append(checkpoint.to_bytes())
        raise Stop

    with pytest.raises(Stop):
        train(network, make_optimizer("momentum", 0.01), x, t, xv, tv, rng=rng, epochs=4, batch_size=100,
              checkpoint_every=2, on_checkpoint=keep)
    return taken[0]


def rewritten(data, change):
    """The checkpoint archive ``data`` with its JSON entry changed by ``change(tree)`` (a file edited by hand)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    tree = json.loads(str(arrays["checkpoint.json"]))
    change(tree)
    arrays["checkpoint.json"] = np.array(json.dumps(tree))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("change", [
    lambda tree: tree.pop("first_loss"),
    lambda tree: tree.update(history="x"),
    lambda tree: tree.update(generators=[1, 2]),
    lambda tree: tree.update(epoch="two"),
])
def test_a_checkpoint_whose_contents_were_changed_is_refused_with_a_reason(digits_split, change):
    data = checkpoint_of_epoch_2(digits_split)
    assert Checkpoint.from_bytes(data).epoch == 2  # the untouched archive reads
    with pytest.raises(ValueError, match=r"^damaged checkpoint contents \("):
        Checkpoint.from_bytes(rewritten(data, change))


def test_check_refuses_a_checkpoint_that_does_not_fit_the_training_before_anything_changes(digits_split):
    x, t, xv, tv = digits_split
    data = checkpoint_of_epoch_2(digits_split)
    network, rng = network_and_generator(5)
    generators = random_generators(network, rng)
    Checkpoint.from_bytes(data).check(4, network, generators)  # fits: no error
    cases = [
        (rewritten(data, lambda tree: tree.update(epoch=99)), network, generators,
         r"expected a checkpoint of epoch 0 to 4 \(epochs\), got epoch 99"),
        (rewritten(data, lambda tree: tree.update(history=tree["history"][:1])), network, generators,
         "checkpoint of epoch 2 holds 1 history rows"),
        (rewritten(data, lambda tree: tree.update(generators={})), network, generators, "no generator state for"),
    ]
    other = MultiLayerNet(64, [16, 32], 10, batch_norm=True, dropout=0.2, seed=0)
    cases.append((data, other, random_generators(other, rng), r"W1 of shape \(64, 16\) expected, found shape \(64, 32\)"))
    for archive, target, its_generators, reason in cases:
        checkpoint = Checkpoint.from_bytes(archive)
        with pytest.raises(ValueError, match=reason):
            checkpoint.check(4, target, its_generators)
    # train() checks first: a refused checkpoint leaves the network as it was.
    before = network.state_dict()
    with pytest.raises(ValueError, match="got epoch 99"):
        train(network, make_optimizer("momentum", 0.01), x, t, xv, tv, rng=rng, epochs=4, batch_size=100,
              resume_from=Checkpoint.from_bytes(cases[0][0]))
    for name, array in network.state_dict().items():
        np.testing.assert_array_equal(array, before[name])


def conv_network_and_generator(seed):
    """Two convolution blocks (8 -> 4 -> 2 pixels), batch norm, dropout and weight decay on the digits."""
    rng = np.random.default_rng(seed)
    return MultiLayerNet(64, [16], 10, batch_norm=True, dropout=0.2, weight_decay=1e-3, seed=rng,
                         convolution_channels=[4, 8], image_shape=(8, 8)), rng


def test_a_convolutional_network_resumed_from_its_checkpoint_equals_the_uninterrupted_run(digits_split):
    x, t, xv, tv = digits_split
    settings = {"epochs": 4, "batch_size": 64, "schedule": make_schedule("cosine", 0.01, 4, 0)}
    network, rng = conv_network_and_generator(3)
    whole = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, **settings)
    expected = network.state_dict()
    assert {"convolution_W1", "convolution_b2", "running_var1"} <= set(expected)

    network, rng = conv_network_and_generator(3)
    taken = []

    def keep(checkpoint):
        taken.append(checkpoint.to_bytes())
        raise Stop

    with pytest.raises(Stop):
        train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, checkpoint_every=2, on_checkpoint=keep,
              **settings)
    checkpoint = Checkpoint.from_bytes(taken[0])
    assert checkpoint.epoch == 2 and checkpoint.network["convolution_W2"].shape == (3, 3, 4, 8)
    assert not np.array_equal(checkpoint.network["convolution_W1"], expected["convolution_W1"])  # mid-training

    network, rng = conv_network_and_generator(999)              # everything comes from the checkpoint
    resumed = train(network, make_optimizer("adam", 0.01), x, t, xv, tv, rng=rng, resume_from=checkpoint, **settings)
    assert without_seconds(resumed.history) == without_seconds(whole.history)
    assert [metrics.epoch for metrics in resumed.history] == [1, 2, 3, 4]
    state = network.state_dict()
    assert sorted(state) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(state[name], expected[name], err_msg=name)
