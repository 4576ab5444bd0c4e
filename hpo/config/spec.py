"""What a study file may say: the pydantic model of a study specification.

A study file is TOML.  Every key is validated once, here, before any storage is
opened or any trial runs; an invalid file raises :class:`SpecError` with a
message that names the file, the field and the reason.  Example::

    name = "digits"
    direction = "maximize"          # the metric is validation accuracy

    [budget]
    trials = 40                     # finished (complete + pruned) trials in the study
    timeout_seconds = 170           # optional wall-time limit of one `hpo run`

    [dataset]
    name = "digits"                 # digits | fashion_mnist | idx
    validation_fraction = 0.2

    [sampler]
    type = "tpe"                    # keyword arguments of the Optuna sampler follow
    seed = 0

    [pruner]
    type = "median"                 # keyword arguments of the Optuna pruner follow
    n_warmup_steps = 2

    [parameters]                    # a value is fixed, a table is searched
    learning_rate = { low = 1e-4, high = 1e-1, log = true }
    weight_decay = { low = 1e-8, high = 1e-3, log = true }
    optimizer = { choices = ["sgd", "momentum", "adam"] }
    hidden_layers = { low = 1, high = 3 }
    epochs = 20

The search space follows the book's section 6.5.2: ranges that span decades
(learning rate, weight decay) are sampled on a log scale.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import optuna
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hpo.config.messages import field_errors, read_study_file
from hpo.config.names import check_study_name
from hpo.config.ranges import Choices, FloatRange, IntRange, StrictModel, largest, range_kind
from hpo.config.registry import PRUNERS, SAMPLERS, build_pruner, build_sampler
from hpo.errors import HpoError
from models.augmentation import AUGMENTATIONS, MAX_SHIFT, MIRRORING
from models.datasets import DATASETS
from models.network import ACTIVATIONS, WEIGHT_INITS, most_convolution_blocks
from models.optimizers import OPTIMIZERS
from models.schedules import SCHEDULES


@dataclass(frozen=True)
class HeartbeatSettings:
    """Optuna trial heartbeats: ``interval_seconds`` between beats, stale after ``grace_period_seconds``.

    ``max_retry``: how many times a trial that went stale is queued again (Optuna's
    ``RetryFailedTrialCallback``).  All in seconds / counts, from ``[workers]``.
    """

    interval_seconds: int
    grace_period_seconds: int
    max_retry: int


class SpecError(HpoError):
    """A study file that cannot be used; the message is one line per problem."""


# The names come from models/ (its tables are the one place to add an optimizer, an activation,
# an initialization, a schedule, an augmentation or a data set); samplers and pruners from hpo.config.registry.
OptimizerName = Literal[tuple(OPTIMIZERS)]
Activation = Literal[tuple(ACTIVATIONS)]
ScheduleName = Literal[tuple(SCHEDULES)]
AugmentationName = Literal[tuple(AUGMENTATIONS)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
WeightInit = Union[Literal[tuple(WEIGHT_INITS)], PositiveFloat]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
# Bounds that keep one network within memory: 64 layers of 16384 units at most.
HiddenLayers = Annotated[int, Field(ge=0, le=64)]
HiddenSize = Annotated[int, Field(ge=1, le=16384)]
ConvolutionLayers = Annotated[int, Field(ge=0, le=8)]       # each halves the image: 8 blocks need 256 px
ConvolutionChannels = Annotated[int, Field(ge=1, le=1024)]
BatchSize = Annotated[int, Field(ge=1, le=65536)]

# What a value of each searchable parameter must be, and how it may be searched.
# "default": the optimizer's own step size, as the book's classes default to (0.01; Adam 0.001).
LearningRate = Union[PositiveFloat, Literal["default"]]
FIXED_TYPES: dict[str, Any] = {
    "learning_rate": LearningRate,
    "weight_decay": NonNegativeFloat,
    "optimizer": OptimizerName,
    "hidden_layers": HiddenLayers,
    "hidden_size": HiddenSize,
    "convolution_layers": ConvolutionLayers,
    "convolution_channels": ConvolutionChannels,
    "activation": Activation,
    "weight_init": WeightInit,
    "batch_norm": bool,
    "dropout": Fraction,
    "batch_size": BatchSize,
    "learning_rate_schedule": ScheduleName,
    "warmup_epochs": NonNegativeInt,
    "augmentation": AugmentationName,
}
RANGE_TYPES: dict[str, type] = {
    "learning_rate": FloatRange,
    "weight_decay": FloatRange,
    "hidden_layers": IntRange,
    "hidden_size": IntRange,
    "convolution_layers": IntRange,
    "convolution_channels": IntRange,
    "dropout": FloatRange,
    "batch_size": IntRange,
    "warmup_epochs": IntRange,
}
# Parameters whose searched range must be log-scaled (book, section 6.5.2).
LOG_SCALE_PARAMETERS = ("learning_rate", "weight_decay")


def _parameter(name: str) -> Any:
    """A parameter that is either a fixed value, a range table or a choices table."""
    members = [Annotated[FIXED_TYPES[name], Tag("fixed")], Annotated[Choices, Tag("choices")]]
    if name in RANGE_TYPES:
        members.append(Annotated[RANGE_TYPES[name], Tag("range")])
    return Annotated[Union[tuple(members)], Discriminator(range_kind)]


class Parameters(StrictModel):
    """Model and training settings; each is fixed (a value) or searched (a table).

    Attributes
    ----------
    learning_rate : float > 0, "default", or a log-scale range
        "default" is the optimizer's own default step size, as in the book's
        ``common/optimizer.py``: 0.01, Adam 0.001.
    weight_decay : float >= 0 (L2 coefficient lambda), or a log-scale range
    optimizer : one of sgd, momentum, nesterov, adagrad, rmsprop, adam
    hidden_layers : int >= 0, number of hidden layers
    hidden_size : int >= 1, units in every hidden layer
    convolution_layers : int in [0, 8], default 0
        Convolution blocks before the hidden layers (3 x 3 filters, the activation,
        2 x 2 max pooling; :class:`models.network.MultiLayerNet`); 0 is the book's
        fully connected network of chapter 6.
    convolution_channels : int >= 1, default 16
        Filters of the first block; every further block has twice as many.
    activation : relu, sigmoid or tanh
    weight_init : "he", "xavier" or a fixed standard deviation > 0
    batch_norm : bool
    dropout : fraction in [0, 1) of hidden units dropped in training
    batch_size : int >= 1, examples per mini-batch
    epochs : int >= 1, fixed (it is the pruners' resource)
    seed : int, base seed; trial *n* trains with a seed derived from (seed, n)
    seed_per_trial : bool, default True
        False: every trial trains with ``seed`` itself, so trials of one architecture
        start from the same weights and see the same mini-batches (the book's
        comparisons of section 6.1.8, for example).
    evaluate_train : bool, default False
        True: after each epoch also evaluate the whole training split in test mode (as
        the book's figures of sections 6.3 and 6.4 do), stored as the learning curves
        ``train_eval_loss`` and ``train_eval_accuracy``; one more forward pass over
        the training data per epoch.
    learning_rate_schedule : constant, step or cosine, default "constant"
        The rate of each epoch (:mod:`models.schedules`): step divides it by 10 at 50 %
        and 75 % of the epochs after the warmup (He et al. 2016), cosine anneals it
        towards 0 (Loshchilov & Hutter 2017, SGDR, without restarts).
    warmup_epochs : int >= 0, fewer than epochs, default 0
        Epochs of linear warmup before the schedule: epoch e <= W runs at
        ``learning_rate * e / (W + 1)`` (Goyal et al. 2017).
    augmentation : none, shift or shift_flip, default "none"
        Random shifts of the training images by up to 2 pixels, and with shift_flip
        mirror images left to right with probability 1/2 (:mod:`models.augmentation`);
        validation and test images are never augmented. Not shift_flip for digits.
    """

    learning_rate: _parameter("learning_rate") = 0.01
    weight_decay: _parameter("weight_decay") = 0.0
    optimizer: _parameter("optimizer") = "sgd"
    hidden_layers: _parameter("hidden_layers") = 1
    hidden_size: _parameter("hidden_size") = 100
    convolution_layers: _parameter("convolution_layers") = 0
    convolution_channels: _parameter("convolution_channels") = 16
    activation: _parameter("activation") = "relu"
    weight_init: _parameter("weight_init") = "he"
    batch_norm: _parameter("batch_norm") = False
    dropout: _parameter("dropout") = 0.0
    batch_size: _parameter("batch_size") = 100
    epochs: Annotated[int, Field(ge=1, le=100_000)] = 20
    seed: NonNegativeInt = 0
    seed_per_trial: bool = True
    evaluate_train: bool = False
    learning_rate_schedule: _parameter("learning_rate_schedule") = "constant"
    warmup_epochs: _parameter("warmup_epochs") = 0
    augmentation: _parameter("augmentation") = "none"

    @model_validator(mode="after")
    def _check_warmup(self) -> Parameters:
        warmup = self.warmup_epochs
        most = largest(warmup)
        if most >= self.epochs:
            given = f"= {most}" if isinstance(warmup, int) else f"(up to {most})"
            raise ValueError(f"warmup_epochs {given} must be fewer than epochs ({self.epochs}); lower it")
        return self

    @field_validator(*FIXED_TYPES, mode="after")
    @classmethod
    def _check_searched(cls, value: Any, info: ValidationInfo) -> Any:
        name = info.field_name
        if isinstance(value, Choices):
            for index, choice in enumerate(value.choices):
                _validate_value(name, choice, f"choices[{index}]")
                first = value.choices.index(choice)  # the first equal one
                if first < index and not (info.context or {}).get("stored"):  # stored studies keep theirs
                    raise ValueError(f"choices[{index}] = {choice!r} repeats choices[{first}]; give each value once")
        elif isinstance(value, (FloatRange, IntRange)):
            _validate_value(name, value.low, "low")
            _validate_value(name, value.high, "high")
            if name in LOG_SCALE_PARAMETERS and not value.log:
                raise ValueError(f"a searched {name} spans decades; set log = true (book, section 6.5.2)")
        return value

    def searched(self) -> dict[str, FloatRange | IntRange | Choices]:
        """The searched parameters, name -> range or choices, in declaration order."""
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), (FloatRange, IntRange, Choices))
        }

    def fixed(self) -> dict[str, Any]:
        """The fixed parameters, name -> value."""
        searched = self.searched()
        return {name: getattr(self, name) for name in type(self).model_fields if name not in searched}


def _validate_value(name: str, value: Any, where: str) -> None:
    try:
        TypeAdapter(FIXED_TYPES[name]).validate_python(value, strict=True)
    except ValidationError as error:
        reason = error.errors()[0]["msg"]
        raise ValueError(f"{where} = {value!r}: {reason}") from None


# --------------------------------------------------------------- other sections
class Budget(StrictModel):
    """How much to run: ``trials`` finished trials in the study, ``timeout_seconds`` per run."""

    trials: Annotated[int, Field(ge=1, le=1_000_000)]
    timeout_seconds: PositiveFloat | None = None


class DatasetSpec(StrictModel):
    """Which data to tune on.

    ``name`` is ``digits`` (scikit-learn's bundled 8x8 digits, no download),
    ``fashion_mnist`` (IDX files, by default /usr/share/datasets/fashion-mnist from
    Debian's ``dataset-fashion-mnist``) or ``idx`` (any MNIST-format directory, given
    in ``directory``).  ``train_images`` keeps only the first N training images (the
    book's 6.5.3 uses 500).  ``validation_fraction`` of the training images is held
    out, stratified and shuffled with ``split_seed``; the test set is not touched.
    """

    name: Literal[tuple(DATASETS)] = "digits"
    directory: Annotated[Path, Field(strict=False)] | None = None
    train_images: PositiveInt | None = None
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    split_seed: NonNegativeInt = 0

    @model_validator(mode="after")
    def _check(self) -> "DatasetSpec":
        if DATASETS[self.name].directory == "required" and self.directory is None:
            raise ValueError(f"name = {self.name!r} needs directory = '<folder with IDX files>'")
        if DATASETS[self.name].directory == "none" and self.directory is not None:
            raise ValueError(f"the bundled {self.name} data set takes no directory")
        return self


class Workers(StrictModel):
    """How workers sharing a study watch each other (Optuna's trial heartbeats).

    A running trial records a heartbeat every ``heartbeat_interval_seconds``; one
    whose last heartbeat is older than ``grace_period_seconds`` belongs to a dead
    worker: any worker marks it FAIL (checked between trials and after every epoch)
    and it is retried, with the same parameters, up to ``max_retry`` times.  A running
    trial keeps a checkpoint of its latest epoch every ``checkpoint_every_epochs``
    epochs (in the artifact folder; 0 turns checkpoints off); its retry continues from
    there instead of epoch 1 (see :mod:`hpo.store.checkpoints`).  None of these change a trial's result, so they
    are not part of the study's identity (:meth:`StudySpec.identity`).
    """

    heartbeat_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 10
    grace_period_seconds: Annotated[int, Field(ge=2, le=86_400)] = 60
    max_retry: NonNegativeInt = 2
    checkpoint_every_epochs: NonNegativeInt = 1  # 0: no checkpoints

    @model_validator(mode="after")
    def _check(self) -> "Workers":
        if self.grace_period_seconds < 2 * self.heartbeat_interval_seconds:
            raise ValueError(
                f"grace_period_seconds ({self.grace_period_seconds}) must be at least twice "
                f"heartbeat_interval_seconds ({self.heartbeat_interval_seconds}), so one late "
                "heartbeat does not fail a live trial"
            )
        return self


class ComponentSpec(BaseModel):
    """An Optuna sampler or pruner: ``type`` plus the class's keyword arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments given besides ``type``."""
        return dict(self.model_extra or {})


class StudySpec(StrictModel):
    """A whole study file. Build it with :func:`load_spec`.

    ``name`` is the study's name: ASCII letters, digits, '.', '_' and '-', starting
    with a letter or digit, at most 128 characters (:func:`hpo.config.names.check_study_name`).
    """

    name: str
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: Literal["validation_accuracy", "validation_loss"] = "validation_accuracy"
    budget: Budget
    dataset: DatasetSpec = DatasetSpec()
    sampler: ComponentSpec = ComponentSpec(type="tpe")
    pruner: ComponentSpec = ComponentSpec(type="median")
    parameters: Parameters = Parameters()
    workers: Workers = Workers()

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_study_name(name)  # it becomes folder and file names (hpo.config.names)

    @model_validator(mode="after")
    def _check(self) -> "StudySpec":
        expected = "maximize" if self.metric == "validation_accuracy" else "minimize"
        if self.direction != expected:
            raise ValueError(f"direction = {self.direction!r} does not fit metric = {self.metric!r}; "
                             f"use direction = {expected!r}")
        augmentation = self.parameters.augmentation
        shifting = set(augmentation.choices if isinstance(augmentation, Choices) else [augmentation]) - {"none"}
        if self.dataset.name == "digits" and shifting:  # here too, not only with the data: `hpo create` loads none
            mirrors = " and mirrors them, which changes what a digit means" if shifting & set(MIRRORING) else ""
            raise ValueError(f"parameters.augmentation: {', '.join(sorted(shifting))} shifts images by up to "
                             f"{MAX_SHIFT} pixels{mirrors}: too much for 8 x 8 digits (dataset.name = 'digits'); "
                             "use 'none'")
        blocks = largest(self.parameters.convolution_layers)
        shape = DATASETS[self.dataset.name].image_shape if self.dataset.directory is None else None
        if shape and blocks > most_convolution_blocks(*shape):  # here too, not only with the data: `hpo create`
            raise ValueError(f"parameters.convolution_layers: {blocks} blocks halve the {shape[0]} x {shape[1]} images "
                             f"of dataset.name = {self.dataset.name!r} below one pixel; use at most "
                             f"{most_convolution_blocks(*shape)}")
        if self.sampler.type not in SAMPLERS:
            raise ValueError(f"sampler.type = {self.sampler.type!r} is not one of {', '.join(SAMPLERS)}")
        if self.pruner.type not in PRUNERS:
            raise ValueError(f"pruner.type = {self.pruner.type!r} is not one of {', '.join(PRUNERS)}")
        # Building them once here turns bad arguments into file errors.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.make_sampler()
            self.make_pruner()
        if self.sampler.type == "grid":
            points = math.prod(len(searched.choices) for searched in self.parameters.searched().values()
                               if isinstance(searched, Choices))
            if self.budget.trials > points:
                raise ValueError(f"budget.trials = {self.budget.trials} exceeds the {points} points of the grid "
                                 "(sampler.type = 'grid'); lower it")
        return self

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """A new Optuna sampler as the file describes (Optuna does not store samplers).

        With a seed, trial *n* samples with a seed derived from (seed, *n*), so no two
        trials repeat each other's samples (see :func:`hpo.config.registry.build_sampler`).
        """
        searched = {name: value.model_dump() for name, value in self.parameters.searched().items()}
        return build_sampler(self.sampler.type, self.sampler.arguments(), searched)

    def heartbeat(self) -> HeartbeatSettings:
        """The heartbeat settings of :func:`hpo.store.storage.open_storage`."""
        return HeartbeatSettings(
            self.workers.heartbeat_interval_seconds, self.workers.grace_period_seconds, self.workers.max_retry
        )

    def make_pruner(self) -> optuna.pruners.BasePruner:
        """A new Optuna pruner as the file describes (Optuna does not store pruners)."""
        return build_pruner(self.pruner.type, self.pruner.arguments(), epochs=self.parameters.epochs)

    def identity(self) -> dict[str, Any]:
        """What a stored study must agree with to be resumed by this file (JSON-able)."""
        identity = self.model_dump(mode="json", include={"direction", "metric", "dataset", "parameters"})
        # Options added later are part of the identity only when set, so studies
        # created before they existed still resume.
        for name, default in _LATER_OPTIONS.items():
            if identity["parameters"][name] == default:
                del identity["parameters"][name]
        return identity


# Parameters added after studies were first stored, with their defaults (see StudySpec.identity).
_LATER_OPTIONS = {"seed_per_trial": True, "evaluate_train": False, "learning_rate_schedule": "constant",
                  "warmup_epochs": 0, "augmentation": "none", "convolution_layers": 0, "convolution_channels": 16}


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file.

    Parameters
    ----------
    path : str or Path
        A TOML study file; relative ``dataset.directory`` entries are resolved
        against the file's folder.

    Returns
    -------
    StudySpec

    Raises
    ------
    SpecError
        The file is missing or unreadable, not valid TOML, or does not validate;
        the message is ``"<file>: <field>: <reason>"``, one line per problem.
    """
    path = Path(path)
    try:
        data = read_study_file(path)
    except ValueError as error:  # a folder, a missing, unreadable, binary or empty file, invalid TOML: one line
        raise SpecError(str(error)) from None
    directory = data.get("dataset", {}).get("directory") if isinstance(data.get("dataset"), dict) else None
    if isinstance(directory, str):
        resolved = Path(directory).expanduser()
        data["dataset"]["directory"] = str(resolved if resolved.is_absolute() else (path.parent / resolved).resolve())
    try:
        return StudySpec.model_validate(data)
    except ValidationError as error:
        problems = format_errors(error)  # one line, however many problems: the first, then the others after "; "
        raise SpecError(f"{path}: {problems[0]}" + "".join(f"; {path}: {line}" for line in problems[1:])) from None


# Location parts that name pydantic's union members, not fields of the file.


def format_errors(error: ValidationError) -> list[str]:
    """One line per field in error: ``field.path: reason (got value)`` (:func:`hpo.config.messages.field_errors`)."""
    return field_errors(error, searchable=FIXED_TYPES)
