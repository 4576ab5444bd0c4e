"""What a user sees in a terminal: the progress bar never shares a line with a log line;
printed commands can be pasted as they are; warnings that explain a slow run."""

import fcntl
import os
import pty
import select
import shlex
import struct
import subprocess
import sys
import termios
import time

import optuna
import pytest

import hpo.cli.common

STUDY = """
name = "terminal"
[budget]
trials = 6
[dataset]
name = "digits"
train_images = 300
[pruner]
type = "none"
[parameters]
learning_rate = { low = 1e-3, high = 1e-1, log = true }
hidden_size = 8
epochs = 10
"""


def screen_rows(raw: str) -> list[str]:
    """The rows a terminal shows for ``raw``: a carriage return moves back to column 0, and
    later characters overwrite earlier ones (escape sequences are dropped)."""
    rows = []
    for line in raw.replace("\r\n", "\n").split("\n"):
        row: list[str] = []
        column = 0
        index = 0
        while index < len(line):
            character = line[index]
            if character == "\x1b":  # skip an escape sequence (cursor moves, colours)
                index += 1
                while index < len(line) and not line[index].isalpha():
                    index += 1
            elif character == "\r":
                column = 0
            else:
                row[column:column + 1] = [character]
                column += 1
            index += 1
        rows.append("".join(row))
    return rows


@pytest.fixture
def run_in_terminal(hpo_command, hpo_environment):
    """``run_in_terminal(arguments, cwd, timeout=300)``: runs hpo with stderr on a pseudo-terminal (so tqdm draws
    its bar); returns (exit code, stderr rows)."""

    def run(arguments, cwd, timeout=300):
        leader, follower = pty.openpty()
        # A new pseudo-terminal is 0 x 0; a real one has a size, which tqdm fits its bar to.
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        process = subprocess.Popen([hpo_command, *arguments], cwd=cwd, env=hpo_environment(),
                                   stdout=subprocess.DEVNULL, stderr=follower, close_fds=True)
        os.close(follower)
        chunks = []
        while True:
            ready, _, _ = select.select([leader], [], [], timeout)
            if not ready:
                process.kill()
                raise AssertionError("no output for too long")
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(leader)
        return process.wait(timeout=60), screen_rows(b"".join(chunks).decode(errors="replace"))

    return run


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_progress_bar_and_log_lines_never_share_a_row(tmp_path, jobs, run_in_terminal):
    (tmp_path / "study.toml").write_text(STUDY)
    code, rows = run_in_terminal(["run", "study.toml", "--jobs", jobs, "--blas-threads", "1"], tmp_path)
    assert code == 0, "\n".join(rows)
    bars = [row for row in rows if "trial/s" in row or "s/trial" in row]
    logs = [row for row in rows if "Trial " in row and " finished with value" in row]
    assert bars, "no progress bar was drawn"
    assert len(logs) == 6
    for row in logs:
        assert row.startswith("[I "), f"a log line shares its row: {row!r}"
        assert "trial/s" not in row and "s/trial" not in row and "|" not in row.split("]", 1)[0]


def test_printed_commands_are_the_program_as_invoked_and_quoted(monkeypatch, tmp_path):
    folder = tmp_path / "my env" / "bin"
    folder.mkdir(parents=True)
    program = folder / "hpo"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    # Not on PATH: the path as typed, quoted for the shell.
    monkeypatch.setattr(sys, "argv", [str(program), "run"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = hpo.cli.common.command_line("run", "studies/my study.toml", "--study-name", "x")
    assert shlex.split(command) == [str(program), "run", "studies/my study.toml", "--study-name", "x"]
    assert command == f"'{program}' run 'studies/my study.toml' --study-name x"
    # On PATH (an activated environment): the short name.
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin")
    assert hpo.cli.common.command_line("trials") == "hpo trials"
    # python -m hpo.cli
    monkeypatch.setattr(sys, "argv", [hpo.cli.__file__, "run"])
    assert hpo.cli.common.command_line("trials") == f"{shlex.quote(sys.executable)} -m hpo.cli trials"


def interrupted_hint(folder, hpo_command, hpo_environment, study_file, *options, ready):
    """Run ``hpo run study_file *options`` in ``folder``; SIGTERM once ``ready(trials)``; its resume hint, split."""
    (folder / study_file).write_text(STUDY.replace("epochs = 30", "epochs = 3000"))
    process = subprocess.Popen([hpo_command, "run", study_file, *options], cwd=folder, env=hpo_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{folder / 'hpo.db'}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            if ready(optuna.load_study(study_name="terminal", storage=storage).get_trials()):
                break
        except KeyError:
            continue
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    return shlex.split(stderr.split("resume with: ", 1)[1].strip())


def test_the_resume_hint_of_a_file_with_a_space_can_be_pasted(tmp_path, hpo_command, hpo_environment):
    hint = interrupted_hint(tmp_path, hpo_command, hpo_environment, "my study.toml", "--no-progress",
                            ready=bool)  # until the worker runs a trial
    assert hint == [hpo_command, "run", "my study.toml", "--study-name", "terminal", "--no-progress"]


def test_the_resume_hint_repeats_the_options_that_matter(tmp_path, hpo_command, hpo_environment):
    # Above all the artifact folder: the interrupted trials' checkpoints are there.
    hint = interrupted_hint(tmp_path, hpo_command, hpo_environment, "study.toml", "--jobs", "2", "--blas-threads",
                            "1", "--artifact-dir", "my artifacts", "--no-progress",
                            ready=lambda trials: any("checkpoint_artifact_id" in trial.user_attrs for trial in trials))
    assert hint[:5] == [hpo_command, "run", "study.toml", "--study-name", "terminal"]
    assert hint[5:9] == ["--jobs", "2", "--blas-threads", "1"] and hint[-1] == "--no-progress"
    assert hint[9] == "--artifact-dir" and (tmp_path / hint[10]).resolve() == (tmp_path / "my artifacts").resolve()


@pytest.mark.parametrize("jobs, threads, cores, warned", [(64, 1, 2, True), (2, 1, 2, False), (1, 4, 2, True),
                                                          (2, 2, 4, False), (3, 2, 4, True)])
def test_more_threads_than_cores_is_warned(monkeypatch, capsys, jobs, threads, cores, warned):
    monkeypatch.setattr(hpo.cli.common, "available_cores", lambda: cores)
    hpo.cli.common.warn_oversubscription(jobs, threads)
    err = capsys.readouterr().err
    if warned:
        advice = f"--jobs {cores} or fewer" if threads == 1 else (
            f"--jobs {max(1, cores // threads)} or fewer, or --blas-threads 1 with --jobs {cores} or fewer")
        assert err == (f"warning: {jobs} job(s) x {threads} BLAS thread(s) = {jobs * threads} threads on {cores} "
                       f"core(s): they slow each other down; use {advice}\n")
    else:
        assert err == ""


def _catches(pid: int, signal_number: int) -> bool:
    """Whether process ``pid`` has a handler of its own for ``signal_number`` (/proc's SigCgt mask)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signal_number - 1) & 1)
    except FileNotFoundError:
        pass
    return False


@pytest.mark.parametrize("signal_number", [2, 15])
def test_a_signal_while_hpo_starts_is_one_line(tmp_path, signal_number, hpo_command):
    # The first handler Python itself installs (SIGINT's KeyboardInterrupt) prints a traceback during
    # the imports; hpo's own takes over before them, so the moment it appears is the earliest one.
    process = subprocess.Popen([hpo_command, "studies", "--storage", f"sqlite:///{tmp_path / 'none.db'}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _catches(process.pid, 15) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(process.pid, signal_number)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal_number, err
    assert err.strip() == f"Interrupted by {'SIGINT' if signal_number == 2 else 'SIGTERM'}", err
    assert out == ""
