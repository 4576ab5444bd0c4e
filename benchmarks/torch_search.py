"""What a user would otherwise write: an Optuna search over a PyTorch MLP.

The other side of ``benchmarks/time_to_accuracy.py``. It follows Optuna's own
PyTorch example (optuna/optuna-examples, ``pytorch/pytorch_simple.py``): an
``objective(trial)`` that builds a ``torch.nn.Sequential`` from the trial's
parameters, trains it with ``torch.optim``, evaluates the validation set after every
epoch, calls ``trial.report(accuracy, epoch)`` and raises ``optuna.TrialPruned``
when ``trial.should_prune()``; the study has a ``TPESampler`` and a
``MedianPruner`` with Optuna's default settings, as the example has.

The search space is the study file's ``[parameters]``, sampled with the same
``suggest_*`` calls the service makes (:func:`hpo.tuning.objective.suggest_parameters`),
and each setting means what it means in ``models/``:

- layers: per hidden layer ``Linear -> BatchNorm1d (batch_norm) -> activation ->
  Dropout (dropout)``, then the output ``Linear``; weights Gaussian with the study's
  ``weight_init`` ("he": std sqrt(2 / fan_in), "xavier": std sqrt(1 / fan_in), or a
  number), biases 0; batch norm with running statistics ``0.9 * running + 0.1 * batch``
  (PyTorch's ``momentum=0.1``) and eps 1e-5;
- ``optimizer``: sgd -> ``SGD``, momentum -> ``SGD(momentum=0.9)``, nesterov ->
  ``SGD(momentum=0.9, nesterov=True)``, adagrad -> ``Adagrad``, rmsprop ->
  ``RMSprop(alpha=0.99)``, adam -> ``Adam``; ``learning_rate = "default"`` is the
  book's default (0.001 for Adam, else 0.01);
- ``weight_decay``: PyTorch's ``weight_decay`` (``g += lambda * W``, the gradient of
  ``0.5 * lambda * sum(W**2)``) on the weight matrices only, as ``models/`` applies it
  (not to biases, gamma or beta);
- ``learning_rate_schedule`` and ``warmup_epochs`` (when the study file has them),
  :func:`build_scheduler`; ``augmentation`` (when it has it), :func:`augment`.

torch is imported inside the functions, so this module imports without it.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

STEP_FRACTIONS = (0.5, 0.75)
"""Step decay divides the rate by 10 once (done / total) reaches each (models.schedules)."""
MAX_SHIFT = 2
"""Largest random shift of an augmented image, pixels in each direction (models.augmentation)."""
FLIP_PROBABILITY = 0.5
"""Chance that ``shift_flip`` mirrors an image left to right."""
EVALUATION_CHUNK = 4096
"""Rows per test-mode forward pass of the validation set."""


class Stop(Exception):
    """Raised from inside a trial when the search must end now (target reached or budget spent)."""


def learning_rate(values: dict[str, Any]) -> float:
    """The trial's learning rate; ``"default"`` is the book's: 0.001 for Adam, else 0.01."""
    if values["learning_rate"] == "default":
        return 0.001 if values["optimizer"] == "adam" else 0.01
    return float(values["learning_rate"])


def build_model(values: dict[str, Any], n_features: int, n_classes: int) -> Any:
    """The ``torch.nn.Sequential`` of the trial's settings (hidden layers, batch norm, activation, dropout).

    Initializes weights from torch's global generator (seed it with ``torch.manual_seed``).
    """
    import torch

    activations = {"relu": torch.nn.ReLU, "sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh}
    layers: list[torch.nn.Module] = []
    sizes = [n_features] + [values["hidden_size"]] * values["hidden_layers"] + [n_classes]
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        linear = torch.nn.Linear(fan_in, fan_out)
        init = values["weight_init"]
        std = math.sqrt({"he": 2.0, "xavier": 1.0}[init] / fan_in) if isinstance(init, str) else float(init)
        torch.nn.init.normal_(linear.weight, std=std)
        torch.nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(sizes) - 2:
            if values["batch_norm"]:
                layers.append(torch.nn.BatchNorm1d(fan_out, eps=1e-5, momentum=0.1))
            layers.append(activations[values["activation"]]())
            if values["dropout"] > 0:
                layers.append(torch.nn.Dropout(values["dropout"]))
    return torch.nn.Sequential(*layers)


def build_optimizer(model: Any, values: dict[str, Any]) -> Any:
    """The ``torch.optim`` optimizer of the trial, weight decay on the ``Linear`` weights only."""
    import torch

    decayed = [module.weight for module in model.modules() if isinstance(module, torch.nn.Linear)]
    kept = [parameter for parameter in model.parameters() if all(parameter is not weight for weight in decayed)]
    groups = [{"params": decayed, "weight_decay": float(values["weight_decay"])},
              {"params": kept, "weight_decay": 0.0}]
    rate = learning_rate(values)
    name = values["optimizer"]
    if name in ("sgd", "momentum", "nesterov"):
        momentum = 0.0 if name == "sgd" else 0.9
        return torch.optim.SGD(groups, lr=rate, momentum=momentum, nesterov=name == "nesterov")
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=rate)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=rate, alpha=0.99)
    return torch.optim.Adam(groups, lr=rate)


def build_scheduler(optimizer: Any, schedule: str, epochs: int, warmup_epochs: int) -> Any:
    """The ``torch.optim.lr_scheduler`` of a schedule of ``models.schedules``, stepped once per epoch.

    With ``W = warmup_epochs`` and ``n = epochs - W``: epoch ``e <= W`` runs at
    ``e / (W + 1)`` of the rate (``LinearLR`` from ``1 / (W + 1)`` over W steps, then
    ``SequentialLR`` hands over); after it "constant" keeps the rate (``LambdaLR``),
    "step" multiplies it by 0.1 once ``done / n`` reaches 1/2 and again at 3/4
    (``MultiStepLR`` at ``ceil(n / 2)`` and ``ceil(3 n / 4)``), "cosine" follows
    ``(1 + cos(pi * done / n)) / 2`` (``CosineAnnealingLR(T_max=n, eta_min=0)``), where
    ``done`` is the number of epochs after the warmup already run.
    """
    from torch.optim import lr_scheduler

    after = epochs - warmup_epochs
    if schedule == "constant":
        main = lr_scheduler.LambdaLR(optimizer, lambda done: 1.0)
    elif schedule == "step":
        main = lr_scheduler.MultiStepLR(optimizer, [math.ceil(fraction * after) for fraction in STEP_FRACTIONS],
                                        gamma=0.1)
    elif schedule == "cosine":
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=after, eta_min=0.0)
    else:
        raise ValueError(f"learning_rate_schedule: expected constant, step or cosine, got {schedule!r}")
    if warmup_epochs == 0:
        return main
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup_epochs + 1), end_factor=1.0,
                                   total_iters=warmup_epochs)
    return lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])


def shift_batch(x: Any, side: int, dy: Any, dx: Any, flip: Any | None = None) -> Any:
    """Images of ``x`` (N, side * side) moved by (dy, dx) pixels, 0 where they come from outside, then mirrored.

    ``out[i, r, c] = x[i, r - dy[i], c - dx[i]]`` (0 outside the image), and where ``flip[i]``
    ``out[i, r, c]`` is taken from column ``side - 1 - c`` instead: one gather over the
    zero-padded batch (the definition of ``models.augmentation.shift_images``).
    """
    import torch

    n = x.shape[0]
    padded = torch.nn.functional.pad(x.reshape(n, side, side), (MAX_SHIFT,) * 4)
    places = torch.arange(side) + MAX_SHIFT
    rows = places - dy[:, None]
    columns = places - dx[:, None]
    if flip is not None:
        columns = torch.where(flip[:, None], columns.flip(1), columns)
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], columns[:, None, :]].reshape(n, side * side)


def augment(x: Any, name: str, side: int, generator: Any) -> Any:
    """A training mini-batch augmented as ``models.augmentation`` names it: "none", "shift" or "shift_flip".

    Shifts drawn uniformly from -2..2 per image and axis, flips with probability 0.5.
    """
    import torch

    if name == "none":
        return x
    dy, dx = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2, x.shape[0]), generator=generator)
    flip = torch.rand(x.shape[0], generator=generator) < FLIP_PROBABILITY if name == "shift_flip" else None
    return shift_batch(x, side, dy, dx, flip)


def accuracy(model: Any, x: Any, t: Any) -> float:
    """Fraction of (x, t) the model classifies correctly in test mode."""
    import torch

    model.train(False)  # test mode: batch norm uses its running statistics, dropout is off (same as Module.eval)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(t), EVALUATION_CHUNK):
            scores = model(x[start:start + EVALUATION_CHUNK])
            correct += int((scores.argmax(dim=1) == t[start:start + EVALUATION_CHUNK]).sum())
    return correct / len(t)


class TorchObjective:
    """``objective(trial)``: train the trial's network, report each epoch, prune, return the best accuracy.

    Parameters
    ----------
    spec : hpo.config.spec.StudySpec
        The study file (its ``[parameters]`` are the search space).
    data : hpo.tuning.data.TuningData
        The same split the service tunes on.
    on_epoch : callable
        Called with each epoch's validation accuracy; raises :class:`Stop` to end the search.
    expired : callable
        Returns True when the budget is spent; asked before every mini-batch.
    """

    def __init__(self, spec: Any, data: Any, on_epoch: Callable[[float], None], expired: Callable[[], bool]) -> None:
        import torch

        self.spec = spec
        self.x = torch.from_numpy(data.x_train)
        self.t = torch.from_numpy(data.t_train)
        self.x_validation = torch.from_numpy(data.x_validation)
        self.t_validation = torch.from_numpy(data.t_validation)
        self.n_classes = data.n_classes
        self.side = math.isqrt(data.n_features)
        self.on_epoch = on_epoch
        self.expired = expired

    def __call__(self, trial: Any) -> float:
        import optuna
        import torch

        from hpo.tuning.objective import suggest_parameters

        values = suggest_parameters(trial, self.spec)
        seed = values["seed"] + trial.number
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = build_model(values, self.x.shape[1], self.n_classes)
        optimizer = build_optimizer(model, values)
        epochs = values["epochs"]
        scheduler = build_scheduler(optimizer, values.get("learning_rate_schedule", "constant"), epochs,
                                    values.get("warmup_epochs", 0))
        augmentation = values.get("augmentation", "none")
        if augmentation != "none" and self.side * self.side != self.x.shape[1]:
            raise ValueError(f"augmentation: expected square images, got {self.x.shape[1]} features")
        batch_size = values["batch_size"]
        best = 0.0
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(self.t), generator=generator)
            for start in range(0, len(self.t), batch_size):
                if self.expired():
                    raise Stop
                index = order[start:start + batch_size]
                inputs = augment(self.x[index], augmentation, self.side, generator)
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(inputs), self.t[index])
                if not torch.isfinite(loss):
                    raise optuna.TrialPruned(f"loss {loss.item()} in epoch {epoch}")
                loss.backward()
                optimizer.step()
            scheduler.step()
            value = accuracy(model, self.x_validation, self.t_validation)
            best = max(best, value)
            self.on_epoch(value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best


def run_search(spec: Any, *, launched: float, budget_seconds: float, target: float, full_curve: bool,
               threads: int = 2) -> dict[str, Any]:
    """Run the Optuna + PyTorch search until the target, the budget or the study's trial count.

    Parameters
    ----------
    spec : hpo.config.spec.StudySpec
    launched : float
        ``time.time()`` when this side started (seconds since the epoch); the clock of every point.
    budget_seconds, target, full_curve
        As the benchmark's options.
    threads : int
        ``torch.set_num_threads``.

    Returns
    -------
    dict
        ``events``: [seconds since ``launched``, validation accuracy] of every epoch, in order;
        ``trials`` (counts by state), ``torch`` (version), ``threads``, ``sampler``, ``pruner``.

    Raises
    ------
    ValueError
        The study file has convolution blocks, which this MLP script cannot search.
    """
    blocks = spec.parameters.convolution_layers
    if blocks != 0:   # this script's model is an MLP: it cannot search the same space
        raise ValueError(f"parameters.convolution_layers = {blocks!r}: benchmarks/torch_search.py builds MLPs only; "
                         "use a study file without convolution blocks (studies/fashion_mnist_mlp.toml)")
    import optuna
    import torch

    from hpo.tuning.data import prepare_data

    torch.set_num_threads(threads)
    data = prepare_data(spec.dataset)
    events: list[list[float]] = []

    def expired() -> bool:
        return time.time() - launched >= budget_seconds

    def on_epoch(value: float) -> None:
        events.append([time.time() - launched, value])
        if expired() or (not full_curve and value >= target):
            raise Stop

    sampler_seed = spec.sampler.arguments().get("seed")
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=sampler_seed),
                                pruner=optuna.pruners.MedianPruner())
    objective = TorchObjective(spec, data, on_epoch, expired)
    remaining = budget_seconds - (time.time() - launched)
    try:
        study.optimize(objective, n_trials=spec.budget.trials, timeout=max(remaining, 0.0))
    except Stop:
        pass  # the trial that stopped the search is left FAIL; its epochs are in ``events``
    states = [trial.state.name.lower() for trial in study.get_trials(deepcopy=False)]
    return {"events": events, "trials": {state: states.count(state) for state in sorted(set(states))},
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "sampler": f"TPESampler(seed={sampler_seed})", "pruner": "MedianPruner()"}
