"""Search ranges and choices of a study file's parameters, as pydantic models.

A searched parameter of ``[parameters]`` is a table: ``{ low, high, step, log }``
(a range, Optuna's ``suggest_float`` / ``suggest_int``) or ``{ choices = [...] }``
(Optuna's ``suggest_categorical``); a plain value is fixed.  :mod:`hpo.config.spec`
builds the whole study file from these.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StrictModel(BaseModel):
    """A table of a study file: unknown keys and loosely typed values are errors."""

    # Strict: TOML has real booleans and numbers, so "3", 1 for true or true for 1 are mistakes.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


# ---------------------------------------------------------------- search ranges
class FloatRange(StrictModel):
    """A searched float: Optuna's ``suggest_float(name, low, high, log=..., step=...)``."""

    low: FiniteFloat
    high: FiniteFloat
    log: bool = False
    step: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low:g}) must not exceed high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 on a log scale (got low = {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log = true")
        if self.step is not None and not _divides(self.high - self.low, self.step):
            raise ValueError(f"step ({self.step:g}) must divide high - low ({self.high - self.low:g})")
        return self


def _divides(span: float, step: float) -> bool:
    count = span / step
    return abs(count - round(count)) <= 1e-8 * max(1.0, count)


class IntRange(StrictModel):
    """A searched integer: Optuna's ``suggest_int(name, low, high, step=..., log=...)``."""

    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"low must be > 0 on a log scale (got low = {self.low})")
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log = true")
        if (self.high - self.low) % self.step:
            raise ValueError(f"step ({self.step}) must divide high - low ({self.high - self.low})")
        return self


class Choices(StrictModel):
    """A searched category: Optuna's ``suggest_categorical(name, choices)``."""

    choices: list[Any] = Field(min_length=1)


def largest(value: Any) -> Any:
    """The largest value a parameter can take: a fixed value itself, a range's ``high``, the largest choice."""
    if isinstance(value, Choices):
        return max(value.choices)
    return value.high if isinstance(value, (FloatRange, IntRange)) else value


def range_kind(value: Any) -> str:
    """Which member of a parameter's union ``value`` is (a TOML table or a model)."""
    if isinstance(value, Choices) or (isinstance(value, dict) and "choices" in value):
        return "choices"
    if isinstance(value, (FloatRange, IntRange, dict)):
        return "range"
    return "fixed"
