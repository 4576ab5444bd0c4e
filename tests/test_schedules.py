"""Tests of models.schedules: each rate sequence computed by hand, and the checks."""

from __future__ import annotations

import math

import pytest

from models.schedules import (
    SCHEDULES,
    ConstantSchedule,
    CosineSchedule,
    StepSchedule,
    make_schedule,
)


def rates(name, learning_rate, epochs, warmup_epochs=0):
    schedule = make_schedule(name, learning_rate, epochs, warmup_epochs)
    return [schedule.rate(epoch) for epoch in range(1, epochs + 1)]


def test_table_names_the_three_schedules():
    assert SCHEDULES == {"constant": ConstantSchedule, "step": StepSchedule, "cosine": CosineSchedule}


def test_constant_with_warmup_of_two_in_ten_epochs():
    # Warmup: 0.1 * 1/3, 0.1 * 2/3; then 0.1 for the 8 epochs left.
    assert rates("constant", 0.1, 10, 2) == pytest.approx([0.1 / 3, 0.2 / 3] + [0.1] * 8, rel=1e-12)


def test_constant_without_warmup_is_the_rate_every_epoch():
    assert rates("constant", 0.05, 3) == [0.05, 0.05, 0.05]


def test_step_with_warmup_of_two_in_ten_epochs():
    # 8 epochs after the warmup start 0/8 .. 7/8 of the way: 0, 1/8, 2/8, 3/8 < 1/2 -> 0.1;
    # 4/8, 5/8 -> 0.01; 6/8, 7/8 (>= 3/4) -> 0.001.
    expected = [0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert rates("step", 0.1, 10, 2) == pytest.approx(expected, rel=1e-12)


def test_step_without_warmup_in_ten_epochs():
    # Starts 0.0 .. 0.9: 0.5 reached at epoch 6, 0.75 at epoch 9 (0.8).
    assert rates("step", 1.0, 10) == pytest.approx([1.0] * 5 + [0.1] * 3 + [0.01] * 2, rel=1e-12)


def test_cosine_with_warmup_of_two_in_ten_epochs():
    # After the warmup: (1 + cos(pi * k / 8)) / 2 for k = 0..7, by hand:
    # cos(pi/8) = 0.9238795, cos(pi/4) = 0.7071068, cos(3pi/8) = 0.3826834, cos(pi/2) = 0.
    after = [1.0, 0.9619398, 0.8535534, 0.6913417, 0.5, 0.3086583, 0.1464466, 0.0380602]
    expected = [0.1 / 3, 0.2 / 3] + [0.1 * value for value in after]
    assert rates("cosine", 0.1, 10, 2) == pytest.approx(expected, rel=1e-6)


def test_cosine_last_epoch_is_small_but_not_zero():
    last = rates("cosine", 1.0, 50)[-1]
    assert last == pytest.approx((1 + math.cos(math.pi * 49 / 50)) / 2) and 0 < last < 0.001


def test_one_epoch_runs_at_the_full_rate():
    for name in SCHEDULES:
        assert rates(name, 0.3, 1) == [0.3]


def test_warmup_reaches_the_full_rate_the_epoch_after_it():
    for name in SCHEDULES:
        sequence = rates(name, 1.0, 6, 5)
        assert sequence == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0], rel=1e-12)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("linear", 0.1, 10), "learning_rate_schedule: expected one of constant, step, cosine, got 'linear'"),
        (("step", 0.0, 10), "learning_rate"),
        (("step", 0.1, 0), "epochs"),
        (("cosine", 0.1, 10, 10), "warmup_epochs: expected an integer in 0..9 (fewer than epochs), got 10"),
        (("cosine", 0.1, 10, -1), "warmup_epochs"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(arguments, message):
    with pytest.raises(ValueError, match=r"^" + message.replace("(", r"\(").replace(")", r"\)")):
        make_schedule(*arguments)


def test_epochs_outside_the_run_are_refused():
    schedule = make_schedule("constant", 0.1, 3)
    for epoch in (0, 4, 1.5):
        with pytest.raises(ValueError, match="epoch: expected an integer in 1..3"):
            schedule.rate(epoch)
