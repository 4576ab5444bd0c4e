"""hpo.results.report: tables fit the width they are given (columns left out by importance); JSON and CSV stay complete."""

import csv
import io
import json

import pytest

from hpo.results.report import table_width, write_record, write_rows

# One trial as `hpo trials` lists it: 8 trial columns and 4 parameters.
ROW = {
    "number": 0, "state": "COMPLETE", "value": 0.953, "datetime_start": "2026-12-02T00:22:06",
    "duration_seconds": 1.234, "epochs_run": 5, "best_epoch": 4, "seed": 12345,
    "params_learning_rate": 0.00123457, "params_weight_decay": 1.23457e-05, "params_optimizer": "momentum",
    "params_hidden_size": 64,
}
ROWS = [ROW, {**ROW, "number": 1, "state": "PRUNED", "value": None}]


def table(rows=ROWS, **options):
    stream = io.StringIO()
    write_rows(rows, "table", stream, title="digits", **options)
    return stream.getvalue().splitlines()


def header(lines):
    """The column names of a rich table's header line."""
    return next(line for line in lines if line.startswith("┃")).strip("┃").replace("┃", " ").split()


def test_a_narrow_table_keeps_number_state_value_then_parameters():
    lines = table(width=80)
    # Each column takes its widest cell + 2 of padding + 1 border: number 9, state 11, value 8, learning_rate 16,
    # weight_decay 15, optimizer 12 and a closing border make 72; hidden_size (14) would make 86.
    assert header(lines) == ["number", "state", "value", "learning_rate", "weight_decay", "optimizer"]
    assert max(len(line) for line in lines) == 72
    assert lines[-1] == "6 columns left out; see -f csv, -f json or a wider terminal"
    assert "│ 1      │ PRUNED   │       │ 0.00123457    │" in lines[-3]


def test_the_trial_columns_go_before_the_parameters_and_the_study_before_all():
    rows = [{"study": "digits", **ROW}]
    assert header(table(rows, width=30)) == ["study", "number", "state"]  # 9 + 9 + 11 + 1
    # Wide enough for all trial columns but two parameters: the others left out are the trial's own.
    kept = header(table(rows, width=130))
    assert kept[:4] == ["study", "number", "state", "value"]
    assert {"learning_rate", "weight_decay", "optimizer", "hidden_size"} <= set(kept)
    assert "seed" not in kept


def test_a_table_that_fits_is_whole_and_has_no_note(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    lines = table()  # a StringIO is no terminal: no limit without $COLUMNS
    assert len(header(lines)) == 12
    assert max(len(line) for line in lines) == 161
    assert not lines[-1].endswith("wider terminal")
    assert header(table(width=161)) == header(lines)
    assert table(width=160)[-1] == "1 column left out; see -f csv, -f json or a wider terminal"


def test_columns_sets_the_width_of_a_pipe_or_file(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    assert table_width(io.StringIO()) == 60
    lines = table()
    assert max(len(line) for line in lines) == 60
    assert header(lines) == ["number", "state", "value", "learning_rate", "weight_decay"]
    assert lines[-1] == "7 columns left out; see -f csv, -f json or a wider terminal"
    monkeypatch.delenv("COLUMNS")
    assert table_width(io.StringIO()) is None


def test_the_note_names_what_shows_every_column():
    assert table(width=60, complete_with=None)[-1] == "7 columns left out; widen the terminal to see them"
    assert table(width=60, complete_with="-f json")[-1] == "7 columns left out; see -f json or a wider terminal"


@pytest.mark.parametrize("width", [60, None])
def test_json_and_csv_carry_every_column_whatever_the_width(monkeypatch, width):
    monkeypatch.setenv("COLUMNS", "40")
    stream = io.StringIO()
    write_rows(ROWS, "json", stream, width=width)
    assert json.loads(stream.getvalue()) == ROWS
    stream = io.StringIO()
    write_rows(ROWS, "csv", stream, width=width)
    read = list(csv.DictReader(io.StringIO(stream.getvalue())))
    assert list(read[0]) == list(ROW)
    assert read[1]["params_hidden_size"] == "64" and read[1]["value"] == ""


def test_wrapped_tables_keep_every_column_within_the_width():
    rows = [{"section": "6.5.3", "experiment": "random search vs TPE + pruning",
             "finding": "best validation accuracy: random 0.750 in 19 s, TPE + pruning 0.740 in 16 s (20 of 40 pruned)"}]
    lines = table(rows, width=50, fit="wrap")
    assert header(lines) == ["section", "experiment", "finding"]
    assert max(len(line) for line in lines) <= 50
    text = " ".join(line.split("│")[3].strip() for line in lines if line.startswith("│"))
    assert text == rows[0]["finding"]


def test_a_record_wraps_its_values_within_the_width():
    stream = io.StringIO()
    write_record(ROW, "table", stream, title="best trial of digits", width=34)
    lines = stream.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 34
    fields = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    values = [line.split("│")[2].strip() for line in lines if line.startswith("│")]
    assert [field for field in fields if field] == list(ROW)
    # Long values are folded over several lines, not cut.
    assert "".join(values) == "0COMPLETE0.9532026-12-02T00:22:061.23454123450.001234571.23457e-05momentum64"
    assert len(values) > len(ROW)


def test_csv_of_no_rows_is_its_known_header_or_nothing():
    stream = io.StringIO()
    write_rows([], "csv", stream)
    assert stream.getvalue() == ""  # not an empty line
    write_rows([], "csv", stream, columns=["study", "direction"])
    assert stream.getvalue() == "study,direction\n"
    stream = io.StringIO()
    write_rows([{"direction": "maximize", "study": "a", "extra": 1}], "csv", stream, columns=["study", "direction"])
    assert stream.getvalue() == "study,direction,extra\na,maximize,1\n"
