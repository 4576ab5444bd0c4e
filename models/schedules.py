"""Learning-rate schedules: the rate of each epoch, asked for by the trainer.

The book trains with one constant learning rate. Networks trained longer do
better when the rate falls towards the end; this module gives three standard
shapes, each with an optional linear warmup, as small classes with one method
``rate(epoch)`` (epochs counted from 1, as :class:`models.trainer.EpochMetrics`
counts them). :func:`models.trainer.train` sets the optimizer's ``lr`` to
``schedule.rate(epoch)`` before each epoch.

With ``W`` warmup epochs, ``n = epochs - W`` epochs after it and ``k = epoch - W``
(1..n) the epoch's place after the warmup, all three are::

    warmup (epoch <= W):  rate = learning_rate * epoch / (W + 1)
    constant:             rate = learning_rate
    step:                 rate = learning_rate * 0.1 ** (number of the fractions 1/2 and 3/4
                                                         that (k - 1) / n has reached)
    cosine:               rate = learning_rate * (1 + cos(pi * (k - 1) / n)) / 2

Sources
-------
- Warmup: Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in
  1 Hour", arXiv:1706.02677, section 2.2 ("gradual warmup": the rate grows linearly
  to its full value over the first epochs). Here the ramp's steps are equal and the
  first epoch after the warmup is the first at the full rate.
- Step decay: He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image
  Recognition", section 4.2 (the rate divided by 10 at 32k and 48k of 64k
  iterations, i.e. at 50 % and 75 % of training).
- Cosine annealing: Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient Descent
  with Warm Restarts", equation (5) with ``eta_min = 0`` and no restart. The epoch's
  rate is the curve's value at the epoch's *start* (``T_cur = k - 1``, as PyTorch's
  ``CosineAnnealingLR`` stepped once per epoch), so the first epoch after the warmup
  runs at the full rate and the last one at a small positive rate, never 0.

Examples
--------
>>> schedule = make_schedule("step", 0.1, epochs=10, warmup_epochs=2)
>>> [round(schedule.rate(epoch), 6) for epoch in range(1, 11)]
[0.033333, 0.066667, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
"""

from __future__ import annotations

import math
import numbers

from models.validation import number, positive_int, problem

__all__ = ["SCHEDULES", "ConstantSchedule", "CosineSchedule", "StepSchedule", "make_schedule"]

STEP_FRACTIONS = (0.5, 0.75)
"""Fractions of the epochs after the warmup at which step decay divides the rate by 10 (He et al. 2016)."""

STEP_FACTOR = 0.1
"""What step decay multiplies the rate by at each of :data:`STEP_FRACTIONS`."""


class ConstantSchedule:
    """The same rate every epoch after an optional linear warmup.

    Parameters
    ----------
    learning_rate : float
        The full rate, positive (the optimizer's ``lr`` units).
    epochs : int
        Epochs of the whole run, >= 1.
    warmup_epochs : int, default 0
        Epochs of linear warmup, ``0 <= warmup_epochs < epochs``: epoch ``e <= W``
        runs at ``learning_rate * e / (W + 1)`` (Goyal et al. 2017, section 2.2).

    Raises
    ------
    ValueError
        If ``learning_rate`` is not a positive finite number, ``epochs`` is not an
        integer >= 1 or ``warmup_epochs`` is not an integer in ``0..epochs - 1``.

    Examples
    --------
    >>> [round(ConstantSchedule(0.3, epochs=4, warmup_epochs=2).rate(epoch), 6) for epoch in (1, 2, 3, 4)]
    [0.1, 0.2, 0.3, 0.3]
    """

    def __init__(self, learning_rate: float, epochs: int, warmup_epochs: int = 0) -> None:
        self.learning_rate = number("learning_rate", learning_rate, minimum=0.0, exclusive_minimum=True)
        self.epochs = positive_int("epochs", epochs)
        if (isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, numbers.Integral)
                or not 0 <= warmup_epochs < self.epochs):
            raise problem("warmup_epochs", f"an integer in 0..{self.epochs - 1} (fewer than epochs)", warmup_epochs)
        self.warmup_epochs = int(warmup_epochs)

    def rate(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based), a positive float.

        Raises
        ------
        ValueError
            If ``epoch`` is not an integer in ``1..epochs``.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or not 1 <= epoch <= self.epochs:
            raise problem("epoch", f"an integer in 1..{self.epochs}", epoch)
        if epoch <= self.warmup_epochs:
            return self.learning_rate * epoch / (self.warmup_epochs + 1)
        return self.learning_rate * self.factor(epoch - self.warmup_epochs - 1, self.epochs - self.warmup_epochs)

    def factor(self, done: int, total: int) -> float:
        """The fraction of ``learning_rate`` of an epoch after the warmup: 1 here.

        ``done`` epochs of the ``total`` after the warmup have passed when it starts.
        """
        return 1.0


class StepSchedule(ConstantSchedule):
    """Step decay: the rate divided by 10 at 50 % and at 75 % of the epochs after the warmup.

    An epoch after the warmup whose start, ``done / total`` of the way (``done``
    epochs of the ``total`` after the warmup passed), has reached 1/2 runs at
    ``0.1 * learning_rate``, and from 3/4 on at ``0.01 * learning_rate``
    (He et al. 2016, section 4.2). Parameters as :class:`ConstantSchedule`.

    Examples
    --------
    >>> [round(StepSchedule(1.0, epochs=4).rate(epoch), 6) for epoch in (1, 2, 3, 4)]
    [1.0, 1.0, 0.1, 0.01]
    """

    def factor(self, done: int, total: int) -> float:
        """``0.1 ** (number of STEP_FRACTIONS <= done / total)``."""
        return STEP_FACTOR ** sum(done >= fraction * total for fraction in STEP_FRACTIONS)


class CosineSchedule(ConstantSchedule):
    """Cosine annealing from ``learning_rate`` towards 0 over the epochs after the warmup.

    ``rate = learning_rate * (1 + cos(pi * done / total)) / 2`` at the start of each
    epoch after the warmup (``done`` of its ``total`` epochs passed): Loshchilov &
    Hutter 2017 (SGDR), equation (5), with ``eta_min = 0`` and no restarts. The last
    epoch's rate, ``learning_rate * (1 + cos(pi * (total - 1) / total)) / 2``, is
    small but positive. Parameters as :class:`ConstantSchedule`.

    Examples
    --------
    >>> [round(CosineSchedule(1.0, epochs=4).rate(epoch), 6) for epoch in (1, 2, 3, 4)]
    [1.0, 0.853553, 0.5, 0.146447]
    """

    def factor(self, done: int, total: int) -> float:
        """``(1 + cos(pi * done / total)) / 2``."""
        return 0.5 * (1.0 + math.cos(math.pi * done / total))


Schedule = ConstantSchedule | StepSchedule | CosineSchedule
"""Any schedule of this module (for type hints)."""

SCHEDULES: dict[str, type[Schedule]] = {
    "constant": ConstantSchedule,
    "step": StepSchedule,
    "cosine": CosineSchedule,
}
"""The schedules a study file can name (``learning_rate_schedule``), the one table to add one to."""


def make_schedule(name: str, learning_rate: float, epochs: int, warmup_epochs: int = 0) -> Schedule:
    """Build a schedule by name.

    Parameters
    ----------
    name : str
        One of the keys of :data:`SCHEDULES`: "constant", "step", "cosine".
    learning_rate : float
        The full rate, positive.
    epochs : int
        Epochs of the run, >= 1.
    warmup_epochs : int, default 0
        Epochs of linear warmup, fewer than ``epochs``.

    Returns
    -------
    ConstantSchedule, StepSchedule or CosineSchedule

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the names) or an argument is out of
        range (see :class:`ConstantSchedule`).
    """
    if name not in SCHEDULES:
        raise problem("learning_rate_schedule", f"one of {', '.join(SCHEDULES)}", name)
    return SCHEDULES[name](learning_rate, epochs, warmup_epochs)
