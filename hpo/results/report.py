"""Trials as rows, written as a table, JSON or CSV (the formats of Optuna's own CLI).

A table fits the terminal it is printed to: columns that do not fit are left out
(the trial's number, state and value last of all, then its parameters) and a line
under the table says how many and how to see them.  A pipe or a file gets the
whole table unless ``$COLUMNS`` sets a width; JSON and CSV always hold every column.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from typing import IO, Any, Literal

import optuna
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from hpo.store import record

FORMATS = ("table", "json", "csv")
# Columns a narrow table keeps first, in this order; then the parameters, then the rest.
FIRST_COLUMNS = ("study", "number", "state", "value")
# How wide a table may grow when nothing limits it (a pipe or a file without $COLUMNS).
UNLIMITED_WIDTH = 10_000


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial as a flat dict: number, state, value, params, duration (seconds), epochs.

    ``value`` is None for trials that did not complete.  ``epochs_run`` counts the epochs of a
    resumed trial's checkpoint too; ``resumed_from_epoch`` is the checkpoint's epoch it continued
    from (None for a trial that started at epoch 1).
    """
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.values[0] if trial.values and len(trial.values) == 1 else trial.values,
        "datetime_start": trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else None,
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "epochs_run": trial.user_attrs.get(record.EPOCHS_RUN),
        "best_epoch": trial.user_attrs.get(record.BEST_EPOCH),
        "resumed_from_epoch": trial.user_attrs.get(record.RESUMED_FROM_EPOCH),
        "seed": trial.user_attrs.get(record.SEED),
    }
    for name, value in trial.params.items():
        row[f"params_{name}"] = value
    if record.DIVERGED in trial.user_attrs:
        row["diverged"] = trial.user_attrs[record.DIVERGED]
    if record.TOO_LARGE in trial.user_attrs:
        row["too_large"] = trial.user_attrs[record.TOO_LARGE]
    return row


def table_width(stream: IO[str]) -> int | None:
    """The width a table printed to ``stream`` must fit, in characters.

    A terminal's width (as rich reads it; ``$COLUMNS`` overrides it) when ``stream``
    is a terminal; else ``$COLUMNS`` if it is set; else None: a pipe or a file gets
    the whole table.
    """
    console = Console(file=stream)
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console.width
    return None


def write_rows(
    rows: list[dict[str, Any]],
    output_format: str,
    stream: IO[str],
    *,
    title: str = "",
    width: int | None = None,
    fit: Literal["drop", "wrap"] = "drop",
    complete_with: str | None = "-f csv, -f json",
    columns: Sequence[str] = (),
) -> None:
    """Write ``rows`` to ``stream`` as ``table`` (aligned text), ``json`` or ``csv``.

    Parameters
    ----------
    rows : list of dict
        One dict per row; the columns are the keys of all rows, in order of appearance.
    output_format : {"table", "json", "csv"}
        ``json`` and ``csv`` always carry every column.
    stream : file-like
        Where to write.
    title : str
        Title over the table.
    width : int, optional
        Width the table must fit [default: :func:`table_width` of ``stream``].
    fit : {"drop", "wrap"}
        How a table too wide for ``width`` is fitted: ``drop`` leaves out columns, keeping
        :data:`FIRST_COLUMNS`, then parameters (``params_*``), then the others, in that
        order, and prints one line under the table saying how many it left out; ``wrap``
        keeps every column and wraps the cells (for columns of text).
    complete_with : str or None
        The options that show every column, for that line (``N columns left out; see -f csv,
        -f json or a wider terminal``); None: only a wider terminal does.
    columns : sequence of str
        Columns known before the rows, first and in this order (CSV of no rows is then their
        header; without any, CSV of no rows is nothing, as JSON of no rows is ``[]``).

    Raises
    ------
    ValueError
        ``output_format`` is not one of :data:`FORMATS`.
    """
    columns = list(columns)
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    if output_format == "json":
        json.dump(rows, stream, indent=2)
        stream.write("\n")
    elif output_format == "csv":
        if not columns:
            return  # (a header without names would be an empty line)
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif output_format == "table":
        if width is None:
            width = table_width(stream)
        shown = columns if width is None or fit == "wrap" else _columns_that_fit(columns, rows, width)
        console = Console(file=stream, width=width or UNLIMITED_WIDTH)
        console.print(_table(shown, rows, title, wrap=fit == "wrap"), crop=width is not None)
        left_out = len(columns) - len(shown)
        if left_out:
            see = f"see {complete_with} or a wider terminal" if complete_with else "widen the terminal to see them"
            console.print(f"{left_out} column{'s' if left_out > 1 else ''} left out; {see}", markup=False,
                          highlight=False)
    else:
        raise ValueError(f"format {output_format!r} is not one of {', '.join(FORMATS)}")


def write_record(row: dict[str, Any], output_format: str, stream: IO[str], *, title: str = "",
                 width: int | None = None) -> None:
    """Write one row: a two-column ``table`` (field, value), a JSON object, or CSV with a header.

    A table wraps its values to fit ``width`` [default: :func:`table_width` of ``stream``].

    Raises
    ------
    ValueError
        ``output_format`` is not one of :data:`FORMATS`.
    """
    if output_format == "json":
        json.dump(row, stream, indent=2)
        stream.write("\n")
    elif output_format == "table":
        if width is None:
            width = table_width(stream)
        table = Table(title=title or None)
        table.add_column("field", no_wrap=True)
        table.add_column("value", overflow="fold")
        for key, value in row.items():
            table.add_row(key, _cell(value))
        Console(file=stream, width=width or UNLIMITED_WIDTH).print(table, crop=width is not None)
    else:
        write_rows([row], output_format, stream)


def _table(columns: list[str], rows: list[dict[str, Any]], title: str, *, wrap: bool = False) -> Table:
    table = Table(title=title or None)
    for column in columns:
        table.add_column(column.removeprefix("params_"), no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    return table


def _columns_that_fit(columns: list[str], rows: list[dict[str, Any]], width: int) -> list[str]:
    """The most columns, taken in order of importance, whose table is at most ``width`` wide (at least one),
    in their original order.

    A column of rich's table takes its widest cell, a space of padding on either side and one
    border, and the table one more border: ``1 + sum(widest + 3)`` (measured on the cells' text,
    without rendering the table once per candidate set).
    """
    ranked = sorted(columns, key=lambda column: (
        (0, FIRST_COLUMNS.index(column)) if column in FIRST_COLUMNS
        else (1 if column.startswith("params_") else 2, columns.index(column))))
    kept: set[str] = set()
    used = 1
    for column in ranked:
        widest = max(cell_len(column.removeprefix("params_")), *(cell_len(_cell(row.get(column))) for row in rows))
        if kept and used + widest + 3 > width:
            break
        kept.add(column)
        used += widest + 3
    return [column for column in columns if column in kept]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
