"""Shared test helpers, as fixtures: the installed console scripts, numerical gradients, workers' logs."""

import os
import re
import socket
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

# The PostgreSQL server of the worker tests (CI: postgresql+psycopg2://postgres@127.0.0.1:5432/test), or None.
POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL")

# This environment's console scripts (hpo, optuna, python): the ones of the interpreter running the tests.
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def console_scripts() -> Path:
    """The folder of this environment's console scripts (``hpo``, ``optuna``, ``python``)."""
    return BIN


@pytest.fixture(scope="session")
def hpo_command(console_scripts) -> str:
    """The path of this environment's ``hpo`` script."""
    return str(console_scripts / "hpo")


@pytest.fixture(scope="session")
def optuna_command(console_scripts) -> str:
    """The path of this environment's ``optuna`` script."""
    return str(console_scripts / "optuna")


def _hpo_environment(*unset, **extra):
    """``os.environ`` (as it is now) without HPO_STORAGE and the variables ``unset``, then with ``extra``."""
    return {**{key: value for key, value in os.environ.items() if key not in ("HPO_STORAGE", *unset)}, **extra}


@pytest.fixture(scope="session")
def hpo_environment():
    """``hpo_environment(*unset, **extra)``: an environment for ``hpo`` that no storage of the caller's shell
    leaks into: ``os.environ`` without HPO_STORAGE and the variables ``unset``, then with ``extra``."""
    return _hpo_environment


@pytest.fixture(scope="session")
def run_hpo(hpo_command):
    """``run_hpo(*arguments, cwd=None, env=None, unset=(), timeout=300)``: runs ``hpo`` in
    ``hpo_environment(*unset, **env)`` with its output captured as text, and returns the CompletedProcess."""

    def run(*arguments, cwd=None, env=None, unset=(), timeout=300):
        return subprocess.run([hpo_command, *arguments], cwd=cwd, env=_hpo_environment(*unset, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)

    return run


TINY_STUDY = """
name = "tiny"
[budget]
trials = 6
[dataset]
name = "digits"
[sampler]
type = "tpe"
seed = 3
[pruner]
type = "none"
[parameters]
learning_rate = { low = 1e-3, high = 1e-1, log = true }
weight_decay = { low = 1e-8, high = 1e-3, log = true }
optimizer = "adam"
hidden_layers = 1
hidden_size = 32
batch_norm = true
dropout = { low = 0.0, high = 0.3 }
batch_size = 32
epochs = 5
"""


@pytest.fixture(scope="session")
def finish_study(run_hpo):
    """``finish_study(tmp_path_factory, file_name, text)``: a fresh folder in which ``hpo run file_name`` ran the
    study file ``text`` to its budget (./hpo.db and ./hpo-artifacts); the folder. Fails the test if the run does."""

    def run(tmp_path_factory, file_name, text):
        folder = tmp_path_factory.mktemp(file_name.removesuffix(".toml"))
        (folder / file_name).write_text(text)
        result = run_hpo("run", file_name, "--no-progress", cwd=folder)
        assert result.returncode == 0, result.stderr
        return folder

    return run


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, finish_study):
    """A finished 6-trial digits study "tiny" (with its weights artifacts) in ./hpo.db of a fresh folder: the folder.

    Shared by the evaluate and ensemble tests (one run per test process); tests add trials to it or write
    their models into folders of their own names, never remove what others read.
    """
    return finish_study(tmp_path_factory, "tiny.toml", TINY_STUDY)


@pytest.fixture(scope="session")
def digits_16x16_idx(tmp_path_factory) -> Path:
    """A folder of the four MNIST-format files holding scikit-learn's digits scaled up to 16 x 16 pixels (each pixel
    as 2 x 2, values 0..255 as uint8; the first 1,437 images to train, the other 360 to test): a small data set whose
    images are large enough for shift augmentations (study files refuse shifts of the 8 x 8 digits)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(np.kron(digits.images, np.ones((2, 2))) * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    folder = tmp_path_factory.mktemp("digits-16x16")
    for part, rows in (("train", slice(0, 1437)), ("t10k", slice(1437, None))):
        for kind, array in (("images", images[rows]), ("labels", labels[rows])):
            header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
            (folder / f"{part}-{kind}-idx{array.ndim}-ubyte").write_bytes(header + array.tobytes())
    return folder


def _numerical_gradient(f, x, h=1e-5):
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


def _relative_error(analytic, numeric):
    """||a - n|| / (||a|| + ||n||), floored so that two ~0 gradients compare by absolute error."""
    return np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic) + np.linalg.norm(numeric), 1e-3)


# A worker's log line for a trial it finished (hpo.tuning.worker): "[I <time>] Trial N finished with value: ..."
# or "[I <time>] Trial N pruned. ...".
_FINISHED_IN_LOG = re.compile(r"^\[I [^\]]*\] Trial (\d+) (?:finished with value: |pruned\. )", re.MULTILINE)


def _worker_id(pid):
    """The ``worker`` user attribute (HOST:PID) of trials run by the worker process ``pid`` on this machine."""
    return f"{socket.gethostname()}:{pid}"


def _assert_each_trial_finished_by_one_worker(trials, logs):
    """Each finished trial is in exactly one worker's log, and that worker is the one its record names.

    ``trials``: the study's FrozenTrials; ``logs``: each worker's HOST:PID -> its stderr.
    """
    finished_by = {}
    for worker, log in logs.items():
        numbers = [int(number) for number in _FINISHED_IN_LOG.findall(log)]
        assert len(numbers) == len(set(numbers)), f"worker {worker} finished a trial twice: {numbers}"
        for number in numbers:
            assert number not in finished_by, f"trial {number} finished by {finished_by[number]} and by {worker}"
            finished_by[number] = worker
    finished = {trial.number: trial for trial in trials if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert sorted(finished_by) == sorted(finished)
    assert {number: trial.user_attrs["worker"] for number, trial in finished.items()} == finished_by
    return finished_by


def _retried_trial_number(trial):
    """Optuna's ``RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)``, without its ExperimentalWarning."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*retried_trial_number is experimental",
                                category=ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


@pytest.fixture(scope="session")
def retried_trial_number():
    """``retried_trial_number(trial)``: the number of the trial that ``trial`` retries (Optuna's
    ``RetryHeartbeatStaleTrialCallback.retried_trial_number``, an experimental function), or None."""
    return _retried_trial_number


@pytest.fixture(scope="session")
def numerical_gradient():
    """``numerical_gradient(f, x, h=1e-5)``: central differences of ``f()`` with respect to ``x``."""
    return _numerical_gradient


@pytest.fixture(scope="session")
def relative_error():
    """``relative_error(analytic, numeric)``: ||a - n|| / (||a|| + ||n||), floored at 1e-3 below."""
    return _relative_error


@pytest.fixture(scope="session")
def finished_in_log():
    """The pattern of a worker's log line for a trial it finished; ``findall`` gives the trial numbers."""
    return _FINISHED_IN_LOG


@pytest.fixture(scope="session")
def worker_id():
    """``worker_id(pid)``: the ``worker`` user attribute (HOST:PID) of trials run by the process ``pid``."""
    return _worker_id


@pytest.fixture(scope="session")
def assert_each_trial_finished_by_one_worker():
    """``assert_each_trial_finished_by_one_worker(trials, logs)``: each finished trial is in exactly one worker's
    log (``logs``: HOST:PID -> stderr), the worker its record names; returns trial number -> worker."""
    return _assert_each_trial_finished_by_one_worker


@pytest.fixture
def postgres_lock(tmp_path_factory):
    """Holds one lock shared by every pytest-xdist process while a test uses the PostgreSQL server.

    The PostgreSQL tests count the server's connections and one restarts it, so they run one at
    a time, whatever process runs them (an exclusive ``flock`` on a file beside every process's
    temporary folder).
    """
    import fcntl

    path = tmp_path_factory.getbasetemp().parent / "hpo-postgres.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def run_study_file():
    """``run_study_file(tmp_path, text, enqueue=(), artifact_store=None, user_attrs=None)`` -> (study, spec): the
    study file ``text`` (dedented) run to its budget by one worker in this process, on SQLite in ``tmp_path``;
    ``enqueue`` trials' parameters are queued first, with ``user_attrs`` (as Optuna's retry queues a trial)."""
    import textwrap

    from hpo.config.spec import load_spec
    from hpo.store.storage import open_storage
    from hpo.tuning.data import prepare_data
    from hpo.tuning.study import open_study
    from hpo.tuning.worker import run_worker

    def run(tmp_path, study_file, *, enqueue=(), artifact_store=None, user_attrs=None):
        (tmp_path / "s.toml").write_text(textwrap.dedent(study_file))
        spec = load_spec(tmp_path / "s.toml")
        storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
        study = open_study(spec, storage, spec.name)
        for parameters in enqueue:
            study.enqueue_trial(parameters, user_attrs=user_attrs)
        run_worker(study, storage, spec, prepare_data(spec.dataset), artifact_store=artifact_store)
        return study, spec

    return run


def _write_worker_study(folder: Path, *, trials: int, epochs: int, hidden_size: int = 32) -> tuple[Path, str]:
    """A small study file of its own name in ``folder`` (64-hidden_size-10 on the digits, momentum, no
    pruner, heartbeats every second, stale after 3 s): (its path, the study name)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    path = folder / f"{name}.toml"
    path.write_text(f"""
name = "{name}"
[budget]
trials = {trials}
[sampler]
type = "tpe"
seed = 0
n_startup_trials = 4
[pruner]
type = "none"
[parameters]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-3, log = true }}
optimizer = "momentum"
hidden_layers = 1
hidden_size = {hidden_size}
batch_size = 32
epochs = {epochs}
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 3
max_retry = 2
""")
    return path, name


@pytest.fixture(scope="session")
def write_worker_study():
    """``write_worker_study(folder, *, trials, epochs, hidden_size=32)`` -> (path, name): a small study file
    for worker processes, with a study name of its own."""
    return _write_worker_study


@pytest.fixture
def study_factory(tmp_path):
    """``study_factory(*, trials, epochs, hidden_size=32)`` -> (path, name): a worker study file in
    ``tmp_path`` (see ``write_worker_study``); its study is deleted from the PostgreSQL server of
    HPO_TEST_POSTGRES_URL afterwards."""
    import optuna

    names = []

    def make(**kwargs):
        path, name = _write_worker_study(tmp_path, **kwargs)
        names.append(name)
        return path, name

    yield make
    for name in names:
        try:
            optuna.delete_study(study_name=name, storage=POSTGRES_URL)
        except KeyError:
            pass
