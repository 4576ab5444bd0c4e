"""Shared test helpers: the installed console scripts, numerical gradients, workers' logs."""

import re
import socket
import sys
from pathlib import Path

import numpy as np
from optuna.trial import TrialState

BIN = Path(sys.executable).parent
HPO = str(BIN / "hpo")
OPTUNA = str(BIN / "optuna")


def numerical_gradient(f, x, h=1e-5):
    """Central differences of the scalar function ``f()`` with respect to ``x``, perturbed in place."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + h
        f_plus = f()
        x[index] = original - h
        f_minus = f()
        x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||), floored so that two ~0 gradients compare by absolute error."""
    return np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-3)


# A worker's log line for a trial it finished (hpo.tuning.worker): "[I <time>] Trial N finished with value: ..."
# or "[I <time>] Trial N pruned. ...".
FINISHED_IN_LOG = re.compile(r"^\[I [^\]]*\] Trial (\d+) (?:finished with value: |pruned\. )", re.MULTILINE)


def worker_id(pid):
    """The ``worker`` user attribute (HOST:PID) of trials run by the worker process ``pid`` on this machine."""
    return f"{socket.gethostname()}:{pid}"


def assert_each_trial_finished_by_one_worker(trials, logs):
    """Each finished trial is in exactly one worker's log, and that worker is the one its record names.

    ``trials``: the study's FrozenTrials; ``logs``: each worker's HOST:PID -> its stderr.
    """
    finished_by = {}
    for worker, log in logs.items():
        numbers = [int(number) for number in FINISHED_IN_LOG.findall(log)]
        assert len(numbers) == len(set(numbers)), f"worker {worker} finished a trial twice: {numbers}"
        for number in numbers:
            assert number not in finished_by, f"trial {number} finished by {finished_by[number]} and by {worker}"
            finished_by[number] = worker
    finished = {trial.number: trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert sorted(finished_by) == sorted(finished)
    assert {number: trial.user_attrs["worker"] for number, trial in finished.items()} == finished_by
    return finished_by
