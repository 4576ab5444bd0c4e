"""`hpo dashboard`: optuna-dashboard on a finished study, read through its HTTP API and in headless Chromium.

One small digits study (4 trials, 3 epochs) is run with `hpo run` for the whole
module; the dashboard runs as a subprocess in a process group of its own on a
free port and is always killed at teardown.
"""

import html
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.config.spec import load_spec
from hpo.store.artifacts import download_weights
from hpo.tuning.data import prepare_data
from hpo.tuning.objective import build_network
from models.network import load_weights

STUDY_NAME = "dashboard-digits"
STUDY = f"""
name = "{STUDY_NAME}"
[budget]
trials = 4
[sampler]
type = "tpe"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
weight_decay = {{ low = 1e-8, high = 1e-3, log = true }}
optimizer = "adam"
hidden_layers = 1
hidden_size = 16
batch_norm = {{ choices = [false, true] }}
batch_size = 32
epochs = 3
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--virtual-time-budget=10000",
]
WINDOW = (1280, 900)
# Besides HPO_STORAGE, an artifact folder of the caller's shell does not leak into hpo's environment.
NOT_INHERITED = ("HPO_ARTIFACT_DIR",)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.headers, response.read()


def get_json(url):
    status, _, body = get(url)
    assert status == 200
    return json.loads(body)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, run_hpo):
    """A finished digits study in hpo.db, its weights in hpo-artifacts/ beside it (the default folder)."""
    folder = tmp_path_factory.mktemp("study")
    (folder / "study.toml").write_text(STUDY)
    result = run_hpo("run", "study.toml", "--no-progress", cwd=folder, unset=NOT_INHERITED)
    assert result.returncode == 0, result.stderr
    assert f"artifacts: {folder / 'hpo-artifacts'} (weights of completed trials)" in result.stdout
    return folder


def start_dashboard(hpo_command, environment, folder, port, *arguments):
    log = open(folder / f"dashboard-{port}.log", "w")
    # SIGINT at its default (a shell may start background jobs with it ignored): the test sends Ctrl-C.
    process = subprocess.Popen(
        [hpo_command, "dashboard", "--port", str(port), *arguments], cwd=folder, env=environment,
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log.close()
    return process


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def dashboard(finished_study, hpo_command, hpo_environment):
    """The base URL of `hpo dashboard` on the finished study (default storage and artifact folder)."""
    port = free_port()
    process = start_dashboard(hpo_command, hpo_environment(*NOT_INHERITED), finished_study, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (finished_study / f"dashboard-{port}.log").read_text()
            try:
                get(f"{base}/api/meta", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        yield base
        # Ctrl-C stops it cleanly.
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=20) == 0
        log = (finished_study / f"dashboard-{port}.log").read_text()
        assert "dashboard stopped" in log and "Traceback" not in log
    finally:
        stop(process)


def study_detail(base):
    summaries = get_json(f"{base}/api/studies")["study_summaries"]
    assert [summary["study_name"] for summary in summaries] == [STUDY_NAME]
    study_id = summaries[0]["study_id"]
    return study_id, get_json(f"{base}/api/studies/{study_id}")


def test_dashboard_serves_the_trials_with_curves_attributes_and_weights(finished_study, dashboard):
    meta = get_json(f"{dashboard}/api/meta")
    assert meta["artifact_is_available"] is True
    study_id, detail = study_detail(dashboard)
    assert detail["name"] == STUDY_NAME and detail["directions"] == ["maximize"]
    assert detail["has_intermediate_values"] is True
    stored = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{finished_study / 'hpo.db'}")
    trials = detail["trials"]
    assert [trial["number"] for trial in trials] == [0, 1, 2, 3]
    assert [trial["state"] for trial in trials] == ["Complete"] * 4
    assert detail["best_trials"][0]["number"] == stored.best_trial.number
    for trial, frozen in zip(trials, stored.trials):
        assert frozen.state == TrialState.COMPLETE
        # Validation accuracy per epoch: the learning-curve plot.
        steps = {point["step"]: point["value"] for point in trial["intermediate_values"]}
        assert steps == pytest.approx({1: frozen.intermediate_values[1], 2: frozen.intermediate_values[2],
                                       3: frozen.intermediate_values[3]})
        assert trial["values"] == [pytest.approx(max(steps.values()))]
        attributes = {attribute["key"]: attribute["value"] for attribute in trial["user_attrs"]}
        assert {"seed", "train_seconds", "epochs_run", "best_epoch", "learning_curves",
                "weights_artifact_id"} <= set(attributes)
        assert int(attributes["epochs_run"]) == 3 and int(attributes["seed"]) == frozen.user_attrs["seed"]
        assert float(attributes["train_seconds"]) > 0
        curves = json.loads(attributes["learning_curves"])
        assert set(curves) == {"train_loss", "train_accuracy", "validation_loss", "validation_accuracy", "seconds",
                                "learning_rate"}
        assert curves["validation_accuracy"] == pytest.approx([steps[1], steps[2], steps[3]], abs=1e-5)
        # The weights artifact: listed with the trial and downloadable through the dashboard.
        [artifact] = trial["artifacts"]
        assert artifact["artifact_id"] == attributes["weights_artifact_id"]
        assert artifact["filename"] == f"trial-{trial['number']}-weights.npz"
        status, headers, body = get(f"{dashboard}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        weights = load_weights(io.BytesIO(body))
        batch_norm = frozen.params["batch_norm"]
        expected = {"W1": (64, 16), "b1": (16,), "W2": (16, 10), "b2": (10,)}
        if batch_norm:
            expected.update({"gamma1": (16,), "beta1": (16,), "running_mean1": (16,), "running_var1": (16,)})
        assert {name: array.shape for name, array in weights.items()} == expected
        assert all(np.isfinite(array).all() for array in weights.values())


def test_stored_weights_give_the_best_epochs_validation_accuracy(finished_study):
    spec = load_spec(finished_study / "study.toml")
    data = prepare_data(spec.dataset)
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{finished_study / 'hpo.db'}")
    for trial in study.trials:
        network = build_network({**spec.parameters.fixed(), **trial.params}, data.n_features, data.n_classes, seed=0)
        network.load_state_dict(download_weights(trial, finished_study / "hpo-artifacts"))
        accuracy = network.accuracy(data.x_validation, data.t_validation)
        best_epoch = trial.user_attrs["best_epoch"]
        assert accuracy == pytest.approx(trial.value, abs=1e-9)
        assert accuracy == pytest.approx(trial.intermediate_values[best_epoch], abs=1e-9)


def chromium(url, profile, *arguments):
    result = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments, url],
        capture_output=True, timeout=180, start_new_session=True,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode()


def page_text(dom):
    """The visible words of a dumped DOM: no tags, scripts or styles."""
    text = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def png_rows(path):
    """(width, height, distinct scanlines) of a PNG file, read with zlib only."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        chunk = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    assert len(raw) == stride * height
    return width, height, len({raw[row * stride:(row + 1) * stride] for row in range(height)})


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason=f"{CHROMIUM} is absent (Debian's chromium package; CI installs it)")
def test_chromium_shows_the_study_and_its_trials(dashboard, tmp_path):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing; .ci/run installs Debian's chromium"
    study_id, _ = study_detail(dashboard)
    study_page = page_text(chromium(f"{dashboard}/dashboard/studies/{study_id}", tmp_path / "profile-1", "--dump-dom"))
    assert f"{STUDY_NAME} (id={study_id})" in study_page
    assert "Intermediate values" in study_page and "Hyperparameter Importance" in study_page
    assert all(f"trial #{number}" in study_page for number in range(4))  # the learning-curve plot's legend
    trials_page = page_text(chromium(f"{dashboard}/dashboard/studies/{study_id}/trials", tmp_path / "profile-2",
                                     "--dump-dom"))
    assert "4 Trials" in trials_page
    assert all(f"Trial {number}" in trials_page for number in range(4))
    assert "trial-0-weights.npz" in trials_page and "weights_artifact_id" in trials_page
    screenshot = tmp_path / "study.png"
    chromium(f"{dashboard}/dashboard/studies/{study_id}", tmp_path / "profile-3", f"--screenshot={screenshot}",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars")
    width, height, distinct_rows = png_rows(screenshot)
    assert (width, height) == WINDOW
    assert distinct_rows > height // 4, "the screenshot is (nearly) blank"


def test_dashboard_refuses_a_missing_sqlite_file(tmp_path, run_hpo):
    result = run_hpo("dashboard", "--storage", f"sqlite:///{tmp_path}/missing.db", cwd=tmp_path, unset=NOT_INHERITED,
                     timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert "missing.db" in lines[0] and "no such database file" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_dashboard_names_a_port_in_use(finished_study, run_hpo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_hpo("dashboard", "--port", str(port), cwd=finished_study, unset=NOT_INHERITED, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"Error: cannot serve on 127.0.0.1:{port}: Address already in use" in result.stderr
