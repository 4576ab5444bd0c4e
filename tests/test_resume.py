"""A worker killed (SIGKILL) mid-trial: the retry continues from the trial's checkpoint and ends as if never
interrupted, on SQLite and on PostgreSQL (HPO_TEST_POSTGRES_URL)."""

import os
import signal
import subprocess
import time
import uuid

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from hpo.store.artifacts import download_weights
from models.checkpoint import Checkpoint

POSTGRES_URL = os.environ.get("HPO_TEST_POSTGRES_URL")
EPOCHS = 24

STUDY = """
name = "{name}"
[budget]
trials = 1
[pruner]
type = "none"
[parameters]
learning_rate = 0.01
optimizer = "adam"
hidden_layers = 2
hidden_size = 128
batch_norm = true
dropout = 0.2
weight_decay = 1e-4
batch_size = 4
epochs = {epochs}
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 3
checkpoint_every_epochs = 2
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request, tmp_path):
    """(storage URL, study name) of a fresh study database; the PostgreSQL study is deleted afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}", "resume"
        return
    if not POSTGRES_URL:
        pytest.skip("set HPO_TEST_POSTGRES_URL to a PostgreSQL URL to run the PostgreSQL resume test")
    request.getfixturevalue("postgres_lock")  # one test at a time on the server (tests/conftest.py)
    name = f"test_resume_{uuid.uuid4().hex[:12]}"
    yield POSTGRES_URL, name
    try:
        optuna.delete_study(study_name=name, storage=POSTGRES_URL)
    except KeyError:
        pass


def worker(hpo_command, hpo_environment, folder, url, artifacts):
    return subprocess.Popen([hpo_command, "worker", "study.toml", "--storage", url, "--artifact-dir", str(artifacts),
                             "--no-progress"], cwd=folder, env=hpo_environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, process, timeout=180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def checkpointed(url, name):
    """Trial 0 once it names a checkpoint, else None."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    return trials[0] if trials and "checkpoint_artifact_id" in trials[0].user_attrs else None


def without_seconds(curves):
    return {name: values for name, values in curves.items() if name != "seconds"}


def test_a_killed_worker_s_trial_is_retried_from_its_checkpoint_and_ends_as_if_never_interrupted(
        storage, tmp_path, hpo_command, hpo_environment, run_hpo, retried_trial_number):
    url, name = storage
    (tmp_path / "study.toml").write_text(STUDY.format(name=name, epochs=EPOCHS))
    artifacts = tmp_path / "artifacts"
    created = run_hpo("create", "study.toml", "--storage", url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr

    # The first worker is killed once its trial holds a checkpoint.
    first = worker(hpo_command, hpo_environment, tmp_path, url, artifacts)
    wait_for(lambda: checkpointed(url, name), first)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    first.stdout.close()
    first.stderr.close()
    victim = optuna.load_study(study_name=name, storage=url).trials[0]
    assert victim.state == TrialState.RUNNING and len(victim.intermediate_values) < EPOCHS
    taken_over = victim.user_attrs["checkpoint_artifact_id"]
    checkpoint = Checkpoint.read((artifacts / taken_over).read_bytes())
    assert checkpoint.epoch % 2 == 0 and checkpoint.epoch >= 2  # every 2 epochs

    # A second worker fails the stale trial (grace period 3 s) and runs its retry.
    second = worker(hpo_command, hpo_environment, tmp_path, url, artifacts)
    out, log = second.communicate(timeout=600)
    assert second.returncode == 0, log
    # The worker counts the epochs it trained itself, after the checkpoint.
    assert f"worker done: 1 trials started; {EPOCHS - checkpoint.epoch} epochs trained; " in out
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    retry = trials[1]
    assert retried_trial_number(retry) == 0 and retry.params == victim.params
    assert retry.user_attrs["seed"] == victim.user_attrs["seed"]
    # It resumed: it trained the epochs after the checkpoint's only. The epochs before are the killed worker's own
    # (their wall times come from the checkpoint; a run of its own would have measured others).
    assert retry.user_attrs["resumed_from_epoch"] == checkpoint.epoch
    curves = retry.user_attrs["learning_curves"]
    assert curves["seconds"][:checkpoint.epoch] == [round(row["seconds"], 5) for row in checkpoint.history]
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))

    # The same trial run without interruption (same study file, trial 0, same seed), on SQLite.
    reference_folder = tmp_path / "reference"
    reference_folder.mkdir()
    (reference_folder / "study.toml").write_text(STUDY.format(name=name, epochs=EPOCHS))
    ran = run_hpo("run", "study.toml", "--storage", "sqlite:///reference.db", "--artifact-dir", "artifacts",
                  "--no-progress", cwd=reference_folder)
    assert ran.returncode == 0, ran.stderr
    (reference,) = optuna.load_study(study_name=name, storage="sqlite:///" + str(reference_folder / "reference.db")
                                     ).get_trials()
    assert reference.state == TrialState.COMPLETE and reference.user_attrs["seed"] == retry.user_attrs["seed"]
    assert "resumed_from_epoch" not in reference.user_attrs
    assert without_seconds(curves) == without_seconds(reference.user_attrs["learning_curves"])
    np.testing.assert_allclose([retry.intermediate_values[epoch] for epoch in range(1, EPOCHS + 1)],
                               [reference.intermediate_values[epoch] for epoch in range(1, EPOCHS + 1)], rtol=1e-6)
    assert retry.value == pytest.approx(reference.value, rel=1e-6)
    assert retry.user_attrs["best_epoch"] == reference.user_attrs["best_epoch"]
    weights = download_weights(retry, artifacts)
    expected = download_weights(reference, reference_folder / "artifacts")
    assert sorted(weights) == sorted(expected) and "running_var2" in weights
    for key in expected:
        np.testing.assert_allclose(weights[key], expected[key], rtol=1e-6, atol=1e-7, err_msg=key)

    # Checkpoints are gone once the trial finished: the one taken over, and the retry's own. A kill between writing
    # a checkpoint and naming it may leave one file no trial names, never more.
    left = sorted(path.name for path in artifacts.iterdir() if "checkpoint" in path.name)
    assert taken_over not in left and not [file for file in left if file.startswith("trial-1-")]
    assert len(left) <= 1, left
    assert not [path for path in (reference_folder / "artifacts").iterdir() if "checkpoint" in path.name]


def sigterm_once_checkpointed(hpo_command, hpo_environment, folder, url, name, artifacts):
    """A worker sent SIGTERM (a pod evicted) once trial 0 holds a checkpoint: (that checkpoint's id, its log)."""
    first = worker(hpo_command, hpo_environment, folder, url, artifacts)
    wait_for(lambda: checkpointed(url, name), first)
    first.send_signal(signal.SIGTERM)
    _, log = first.communicate(timeout=60)
    assert first.returncode == 143, log
    assert "Traceback" not in log
    return optuna.load_study(study_name=name, storage=url).trials[0].user_attrs["checkpoint_artifact_id"], log


def test_a_signalled_worker_s_trial_is_queued_again_at_once_and_resumed_from_its_checkpoint(
        storage, tmp_path, hpo_command, hpo_environment, run_hpo, retried_trial_number):
    url, name = storage
    (tmp_path / "study.toml").write_text(STUDY.format(name=name, epochs=EPOCHS))
    artifacts = tmp_path / "artifacts"
    assert run_hpo("create", "study.toml", "--storage", url, cwd=tmp_path).returncode == 0

    taken_over, log = sigterm_once_checkpointed(hpo_command, hpo_environment, tmp_path, url, name, artifacts)
    # At once, without waiting for a grace period: FAIL, and a WAITING retry that names the kept checkpoint.
    victim, retry = optuna.load_study(study_name=name, storage=url).get_trials()
    assert (victim.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    assert retried_trial_number(retry) == 0 and retry.params == victim.params
    assert retry.user_attrs["checkpoint_artifact_id"] == taken_over and (artifacts / taken_over).is_file()
    assert ("interrupted by SIGTERM; queued again with the same parameters (an interruption: not counted against "
            "workers.max_retry)") in log
    epoch = Checkpoint.read((artifacts / taken_over).read_bytes()).epoch

    second = worker(hpo_command, hpo_environment, tmp_path, url, artifacts)
    _, log = second.communicate(timeout=600)
    assert second.returncode == 0, log
    victim, retry = optuna.load_study(study_name=name, storage=url).get_trials()
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] == epoch >= 2
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))
    assert not [path for path in artifacts.iterdir() if "checkpoint" in path.name]


INTERRUPTED_STUDY = """
name = "{name}"
[budget]
trials = 1
[dataset]
name = "digits"
train_images = 400
[sampler]
type = "random"
seed = 0
[pruner]
type = "none"
[parameters]
learning_rate = {{ low = 1e-3, high = 1e-1, log = true }}
optimizer = "adam"
hidden_size = 32
batch_norm = true
dropout = 0.2
batch_size = 16
epochs = 8
[workers]
heartbeat_interval_seconds = 1
grace_period_seconds = 3
max_retry = 1
"""


def run_in_process(tmp_path, name, store, *, interrupt=None):
    """One worker in this process on the study ``name`` of ``tmp_path``/study.db; with ``interrupt``, it sends
    itself SIGTERM ``interrupt`` mini-batches after its first checkpoint. Returns the study."""
    import models.trainer
    from hpo import interrupts
    from hpo.config.spec import load_spec
    from hpo.tuning.study import prepare_study
    from hpo.tuning.worker import run_study

    (tmp_path / f"{name}.toml").write_text(INTERRUPTED_STUDY.format(name=name))
    prepared = prepare_study(load_spec(tmp_path / f"{name}.toml"), f"sqlite:///{tmp_path / 'study.db'}")
    original = models.trainer.train

    def train(*args, before_batch, on_checkpoint, **kwargs):
        batches_after = []

        def counting():
            if batches_after:
                batches_after.append(1)
                if len(batches_after) == interrupt + 1:
                    os.kill(os.getpid(), signal.SIGTERM)
            before_batch()

        def saving(checkpoint):
            on_checkpoint(checkpoint)
            batches_after.append(0)

        return original(*args, before_batch=counting, on_checkpoint=saving, **kwargs)

    interrupts.install()
    try:
        with pytest.MonkeyPatch.context() as patch:
            if interrupt is not None:
                patch.setattr("hpo.tuning.objective.train", train)
            run_study(prepared, artifact_store=store)
    finally:
        interrupts.uninstall()
    return prepared.study


def test_a_trial_interrupted_more_often_than_max_retry_is_queued_again_each_time_and_ends_as_if_never_interrupted(
        tmp_path, caplog, retried_trial_number):
    from hpo import interrupts
    from hpo.store.artifacts import open_artifact_store

    artifacts = tmp_path / "artifacts"
    store = open_artifact_store(artifacts)
    interruptions = 5  # max_retry = 1
    for index in range(interruptions):
        caplog.clear()
        with caplog.at_level("WARNING", logger="hpo"), pytest.raises(interrupts.Interrupted):
            run_in_process(tmp_path, "interrupted", store, interrupt=3)
        trials = optuna.load_study(study_name="interrupted", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
        assert [trial.state for trial in trials] == [TrialState.FAIL] * (index + 1) + [TrialState.WAITING]
        failed, queued = trials[-2], trials[-1]
        # Each run continued from the last one's checkpoint, trained one epoch and checkpointed it.
        assert failed.user_attrs["epochs_run"] == index + 1
        assert failed.user_attrs.get("resumed_from_epoch") == (index or None)
        assert queued.params == trials[0].params and queued.user_attrs["seed"] == trials[0].user_attrs["seed"]
        checkpoint = queued.user_attrs["checkpoint_artifact_id"]
        # It shows no epochs of the trial it continues: `hpo trials` lists epochs_run and best_epoch empty.
        assert sorted(queued.user_attrs) == ["checkpoint_artifact_id", "seed"]
        assert Checkpoint.read((artifacts / checkpoint).read_bytes()).epoch == index + 1
        assert retried_trial_number(queued) == 0
        assert queued.system_attrs["retry_history"] == queued.system_attrs["hpo:interrupted"] == list(range(index + 1))
        assert [message for message in caplog.messages if "failed" in message] == [
            (f"Trial {index} of worker {failed.user_attrs['worker']} failed: interrupted by SIGTERM; queued again "
             "with the same parameters (an interruption: not counted against workers.max_retry)")]
        # One checkpoint at a time: the one the queued trial names.
        assert [path.name for path in artifacts.iterdir()] == [checkpoint]

    study = run_in_process(tmp_path, "interrupted", store)
    *failed, finished = study.get_trials()
    assert [trial.state for trial in failed] == [TrialState.FAIL] * interruptions
    assert finished.state == TrialState.COMPLETE and finished.user_attrs["resumed_from_epoch"] == interruptions
    assert sorted(finished.intermediate_values) == list(range(1, 9))

    # The same trial run without interruption.
    (tmp_path / "reference").mkdir()
    (reference,) = run_in_process(tmp_path / "reference", "interrupted", store).get_trials()
    assert reference.params == finished.params and reference.user_attrs["seed"] == finished.user_attrs["seed"]
    assert without_seconds(finished.user_attrs["learning_curves"]) == without_seconds(
        reference.user_attrs["learning_curves"])
    assert finished.intermediate_values == reference.intermediate_values and finished.value == reference.value
    assert not [path for path in artifacts.iterdir() if "checkpoint" in path.name]


def test_hpo_run_with_jobs_queues_an_interrupted_trial_again_each_time_with_max_retry_0(
        tmp_path, hpo_command, hpo_environment, run_hpo):
    url, name = f"sqlite:///{tmp_path / 'study.db'}", "jobs"
    (tmp_path / "study.toml").write_text(STUDY.format(name=name, epochs=EPOCHS) + "max_retry = 0\n")
    artifacts = tmp_path / "artifacts"
    command = [hpo_command, "run", "study.toml", "--storage", url, "--artifact-dir", str(artifacts), "--jobs", "2",
               "--no-progress"]
    assert run_hpo("create", "study.toml", "--storage", url, cwd=tmp_path).returncode == 0
    taken = set()
    for index in range(2):
        run = subprocess.Popen(command, cwd=tmp_path, env=hpo_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)

        def checkpointed_anew():
            trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
            return next((trial for trial in trials if trial.state == TrialState.RUNNING
                         and trial.user_attrs.get("checkpoint_artifact_id") not in (None, *taken)), None)

        trial = wait_for(checkpointed_anew, run)
        run.send_signal(signal.SIGINT)  # Ctrl-C: passed on to the workers as SIGTERM
        _, log = run.communicate(timeout=60)
        assert run.returncode == 130, log
        assert f"Trial {trial.number} of worker {trial.user_attrs['worker']} failed: interrupted by SIGTERM; queued " \
               "again with the same parameters (an interruption: not counted against workers.max_retry)" in log
        queued = optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.WAITING,))
        assert len(queued) == 1 and queued[0].params == trial.params
        taken.add(queued[0].user_attrs["checkpoint_artifact_id"])
        assert (artifacts / queued[0].user_attrs["checkpoint_artifact_id"]).is_file()

    finished = run_hpo(*command[1:-3], "--no-progress", cwd=tmp_path)  # the last run with one worker
    assert finished.returncode == 0, finished.stderr
    trials = [trial for trial in optuna.load_study(study_name=name, storage=url).get_trials()
              if "not_run" not in trial.user_attrs]  # (a worker that found the queued trial taken by the other)
    *interrupted, complete = trials
    assert [trial.state for trial in interrupted] == [TrialState.FAIL] * 2 and complete.state == TrialState.COMPLETE
    assert complete.system_attrs["retry_history"] == complete.system_attrs["hpo:interrupted"] == [
        trial.number for trial in interrupted]
    assert complete.user_attrs["resumed_from_epoch"] >= 4 and sorted(complete.intermediate_values) == list(
        range(1, EPOCHS + 1))
    # The summary counts the epochs this run trained, not those of the runs it resumed.
    assert f"epochs trained by this run: {EPOCHS - complete.user_attrs['resumed_from_epoch']}\n" in finished.stdout
    assert f"epochs of the study's finished trials: {EPOCHS} trained of {EPOCHS} " in finished.stdout
    assert not [path for path in artifacts.iterdir() if "checkpoint" in path.name]


def test_a_stale_trial_with_no_retry_left_loses_its_checkpoint(tmp_path, hpo_command, hpo_environment, run_hpo):
    url, name = f"sqlite:///{tmp_path / 'study.db'}", "stale-no-retry"
    (tmp_path / "study.toml").write_text(STUDY.format(name=name, epochs=EPOCHS) + "max_retry = 0\n")
    artifacts = tmp_path / "artifacts"
    assert run_hpo("create", "study.toml", "--storage", url, cwd=tmp_path).returncode == 0
    first = worker(hpo_command, hpo_environment, tmp_path, url, artifacts)
    wait_for(lambda: checkpointed(url, name), first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    taken_over = optuna.load_study(study_name=name, storage=url).trials[0].user_attrs["checkpoint_artifact_id"]
    assert (artifacts / taken_over).is_file()

    # The next worker fails the stale trial (not queued again: max_retry = 0), removes its checkpoint, and runs
    # a new trial of its own from epoch 1.
    second = worker(hpo_command, hpo_environment, tmp_path, url, artifacts)
    _, log = second.communicate(timeout=300)
    assert second.returncode == 0, log
    assert "not queued again (workers.max_retry = 0)" in log
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "resumed_from_epoch" not in trials[1].user_attrs
    assert not [path for path in artifacts.iterdir() if "checkpoint" in path.name]


def test_the_keeper_names_a_new_checkpoint_before_it_removes_the_old_one(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore

    from hpo.store.checkpoints import CheckpointKeeper

    store = FileSystemArtifactStore(tmp_path)
    (tmp_path / "inherited.npz").write_bytes(b"the checkpoint a retry took over")
    named = []

    def store_attribute(artifact_id):
        # When the new id is stored, the new file is complete and the old one still there.
        assert Checkpoint.read((tmp_path / artifact_id).read_bytes()).epoch == 2
        assert (tmp_path / "inherited.npz").exists()
        named.append(artifact_id)

    keeper = CheckpointKeeper(7, store, store_attribute, current="inherited.npz")
    keeper(Checkpoint(epoch=2, network={"W1": np.ones((2, 2), dtype=np.float32)}, optimizer={}, generators={},
                      history=[]))
    assert [path.name for path in tmp_path.iterdir()] == named == [keeper.current]
    assert keeper.current.startswith("trial-7-epoch-2-checkpoint-")

    def finished_elsewhere(artifact_id):
        raise optuna.exceptions.UpdateFinishedTrialError("trial already finished")

    keeper.store_attribute = finished_elsewhere
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        keeper(Checkpoint(epoch=4, network={}, optimizer={}, generators={}, history=[]))
    # The retry owns the named checkpoint: it stays; the unnamed new one is gone.
    assert [path.name for path in tmp_path.iterdir()] == named


def test_pruned_and_completed_trials_leave_no_checkpoint(tmp_path, run_study_file):
    from hpo.store.artifacts import open_artifact_store

    store = open_artifact_store(tmp_path / "artifacts")
    study, _ = run_study_file(tmp_path, """
        name = "cleanup"
        [budget]
        trials = 2
        [pruner]
        type = "threshold"
        lower = 0.2
        n_warmup_steps = 2
        [parameters]
        learning_rate = { choices = [1e-9, 0.05] }
        hidden_size = 16
        batch_size = 64
        epochs = 5
    """, enqueue=[{"learning_rate": 1e-9}, {"learning_rate": 0.05}], artifact_store=store)
    pruned, complete = study.get_trials()
    # Checkpoints were written after epoch 1 (the pruned epoch 2 gets none; the completed trial's after 1 to 4, but
    # not after its last), then removed.
    assert pruned.state == TrialState.PRUNED and len(pruned.intermediate_values) == 2
    assert pruned.user_attrs["checkpoint_artifact_id"].startswith("trial-0-epoch-1-checkpoint-")
    assert complete.state == TrialState.COMPLETE
    assert complete.user_attrs["checkpoint_artifact_id"].startswith("trial-1-epoch-4-checkpoint-")
    assert [path.name for path in (tmp_path / "artifacts").iterdir()] == [complete.user_attrs["weights_artifact_id"]]


def test_checkpoint_every_epochs_0_writes_no_checkpoint(tmp_path, run_study_file):
    from hpo.store.artifacts import open_artifact_store

    store = open_artifact_store(tmp_path / "artifacts")
    study, _ = run_study_file(tmp_path, """
        name = "no-checkpoints"
        [budget]
        trials = 1
        [parameters]
        learning_rate = 0.05
        hidden_size = 16
        batch_size = 64
        epochs = 3
        [workers]
        checkpoint_every_epochs = 0
    """, artifact_store=store)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == 3
    assert "checkpoint_artifact_id" not in trial.user_attrs
    assert [path.name for path in (tmp_path / "artifacts").iterdir()] == [trial.user_attrs["weights_artifact_id"]]


def test_a_retry_whose_checkpoint_does_not_fit_logs_it_and_trains_from_epoch_1(tmp_path, run_study_file, caplog):
    """A checkpoint edited by hand (here: of epoch 99 of a 5-epoch trial) must not crash the worker."""
    import io
    import json

    from hpo.store.artifacts import open_artifact_store
    from hpo.store.checkpoints import save_checkpoint
    from models.network import MultiLayerNet

    store = open_artifact_store(tmp_path / "artifacts")
    network = MultiLayerNet(64, [16], 10, seed=0)
    checkpoint = Checkpoint(epoch=2, network=network.state_dict(), optimizer={}, generators={},
                            history=[], first_loss=None)
    buffer = io.BytesIO(checkpoint.to_bytes())
    with np.load(buffer, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    tree = json.loads(str(arrays["checkpoint.json"]))
    tree["epoch"] = 99
    arrays["checkpoint.json"] = np.array(json.dumps(tree))
    edited = io.BytesIO()
    np.savez(edited, **arrays)
    artifact_id = save_checkpoint(Checkpoint.from_bytes(edited.getvalue()), 0, store)
    study, _ = run_study_file(tmp_path, """
        name = "edited"
        [budget]
        trials = 1
        [pruner]
        type = "none"
        [parameters]
        learning_rate = 0.05
        hidden_size = 16
        batch_size = 64
        epochs = 5
    """, enqueue=[{}], artifact_store=store, user_attrs={"seed": 7, "checkpoint_artifact_id": artifact_id})
    [trial] = study.get_trials()
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5]  # all its own epochs: it started at epoch 1
    assert "resumed_from_epoch" not in trial.user_attrs and trial.user_attrs["seed"] == 7
    assert f"checkpoint {artifact_id}: it does not fit trial 0" in caplog.text
    assert "expected a checkpoint of epoch 0 to 5 (epochs), got epoch 99" in caplog.text
