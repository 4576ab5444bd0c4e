"""Trials as rows, written as a table, JSON or CSV (the formats of Optuna's own CLI)."""

from __future__ import annotations

import csv
import json
from typing import IO, Any

import optuna
from rich.console import Console
from rich.table import Table

from hpo.objective import (
    ATTRIBUTE_BEST_EPOCH, ATTRIBUTE_DIVERGED, ATTRIBUTE_EPOCHS_RUN, ATTRIBUTE_SEED, ATTRIBUTE_TOO_LARGE,
)

FORMATS = ("table", "json", "csv")


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as a flat dict: number, state, value, params, duration (seconds), epochs.

    ``value`` is None for trials that did not complete.
    """
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.values[0] if trial.values and len(trial.values) == 1 else trial.values,
        "datetime_start": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "epochs_run": trial.user_attrs.get(ATTRIBUTE_EPOCHS_RUN),
        "best_epoch": trial.user_attrs.get(ATTRIBUTE_BEST_EPOCH),
        "seed": trial.user_attrs.get(ATTRIBUTE_SEED),
    }
    for name, value in trial.params.items():
        row[f"params_{name}"] = value
    if ATTRIBUTE_DIVERGED in trial.user_attrs:
        row["diverged"] = trial.user_attrs[ATTRIBUTE_DIVERGED]
    if ATTRIBUTE_TOO_LARGE in trial.user_attrs:
        row["too_large"] = trial.user_attrs[ATTRIBUTE_TOO_LARGE]
    return row


def write_rows(rows: list[dict[str, Any]], output_format: str, stream: IO[str], *, title: str = "") -> None:
    """Write ``rows`` to ``stream`` as ``table`` (aligned text), ``json`` or ``csv``.

    Raises
    ------
    ValueError
        ``output_format`` is not one of :data:`FORMATS`.
    """
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if output_format == "json":
        json.dump(rows, stream, indent=2)
        stream.write("\n")
    elif output_format == "csv":
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif output_format == "table":
        table = Table(title=title or None)
        for column in columns:
            table.add_column(column.removeprefix("params_"), no_wrap=True)
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        Console(file=stream, width=10_000).print(table, crop=False)
    else:
        raise ValueError(f"format {output_format!r} is not one of {', '.join(FORMATS)}")


def write_record(row: dict[str, Any], output_format: str, stream: IO[str], *, title: str = "") -> None:
    """Write one row: a two-column ``table`` (field, value), a JSON object, or CSV with a header.

    Raises
    ------
    ValueError
        ``output_format`` is not one of :data:`FORMATS`.
    """
    if output_format == "json":
        json.dump(row, stream, indent=2)
        stream.write("\n")
    elif output_format == "table":
        table = Table("field", "value", title=title or None)
        for key, value in row.items():
            table.add_row(key, _cell(value))
        Console(file=stream, width=10_000).print(table, crop=False)
    else:
        write_rows([row], output_format, stream)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
