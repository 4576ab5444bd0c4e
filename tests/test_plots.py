"""hpo.results.plots and `hpo plot`: real PNGs of the right size and content, and the reasons for skipped ones."""

import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpo.results import plots
from hpo.store import record

STUDY = """\
# A tiny digits study for the plot tests: 8 trials of 4 epochs.
name = "tiny"
[budget]
trials = 8
[sampler]
type = "random"
seed = 3
[pruner]
type = "median"
n_startup_trials = 2
n_warmup_steps = 1
[parameters]
learning_rate = { low = 1e-4, high = 1e-1, log = true }
weight_decay = { low = 1e-8, high = 1e-2, log = true }
hidden_size = 16
batch_size = 64
epochs = 4
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, hpo_command):
    """A finished tiny study, run once per module with `hpo run`: (storage URL, study)."""
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "tiny.toml").write_text(STUDY)
    storage = f"sqlite:///{folder / 'hpo.db'}"
    result = subprocess.run([hpo_command, "run", "tiny.toml", "--storage", storage, "--no-progress"], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return storage, optuna.load_study(study_name="tiny", storage=storage)


def png_pixels(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return matplotlib.image.imread(path)


def assert_drawn(pixels: np.ndarray, size_inches: tuple[float, float]) -> None:
    width, height = size_inches
    assert pixels.shape[:2] == (round(height * plots.DPI), round(width * plots.DPI))
    colors = np.unique(pixels[..., :3].reshape(-1, 3), axis=0)
    assert len(colors) > 50, "the image is (nearly) blank"
    assert pixels[..., :3].std() > 0.05


def curves(epochs: int, level: float) -> dict:
    rising = [round(level * (1 - 0.5 ** (e + 1)), 5) for e in range(epochs)]
    return {"train_loss": [1.0] * epochs, "train_accuracy": rising, "validation_loss": [1.0] * epochs,
            "validation_accuracy": rising, "seconds": [0.1] * epochs}


def fake_study(values: list[float], *, params=("learning_rate", "weight_decay"), pruned: int = 0) -> optuna.Study:
    """An in-memory study of completed trials with the given values (and ``pruned`` pruned ones)."""
    study = optuna.create_study(study_name="fake", direction="maximize")
    distributions = {name: FloatDistribution(1e-8, 1.0, log=True) for name in params}
    for number, value in enumerate(values):
        study.add_trial(create_trial(
            value=value, params={name: 10.0 ** -(1 + number % 5) for name in params}, distributions=distributions,
            user_attrs={record.LEARNING_CURVES: curves(5, value)}, intermediate_values={1: value / 2, 2: value},
        ))
    for _ in range(pruned):
        study.add_trial(create_trial(state=TrialState.PRUNED, params={name: 1e-3 for name in params},
                                     distributions=distributions, intermediate_values={1: 0.1}))
    return study


def failed_study() -> optuna.Study:
    """A study whose only trial failed after reporting an epoch (an interrupted worker)."""
    study = optuna.create_study(study_name="failed", direction="maximize")
    study.add_trial(create_trial(state=TrialState.FAIL, params={"learning_rate": 0.01},
                                 distributions={"learning_rate": FloatDistribution(1e-8, 1.0, log=True)},
                                 intermediate_values={1: 0.5}))
    return study


def test_plot_writes_five_pngs_of_a_real_study(tiny, tmp_path, hpo_command):
    storage, study = tiny
    result = subprocess.run([hpo_command, "plot", "--storage", storage, "--out", str(tmp_path / "figures")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "Traceback" not in result.stderr
    names = ["optimization_history", "intermediate_values", "param_importances", "learning_rate_weight_decay",
             "top_learning_curves"]
    assert result.stdout.splitlines() == [f"wrote {tmp_path / 'figures' / name}.png" for name in names]
    completed = len(study.get_trials(states=(TrialState.COMPLETE,)))
    for name in names:
        size = plots.grid_size(-(-completed // 5)) if name == "top_learning_curves" else plots.FIGURE_SIZES[name]
        assert_drawn(png_pixels(tmp_path / "figures" / f"{name}.png"), size)


def test_the_map_has_one_point_per_finished_trial_on_log_axes(tiny):
    _, study = tiny
    figure = plots.learning_rate_weight_decay_map(study)
    axes = figure.axes[0]
    assert (axes.get_xscale(), axes.get_yscale()) == ("log", "log")
    assert "learning rate" in axes.get_xlabel() and "weight decay" in axes.get_ylabel()
    points = {collection.get_label().split(" ")[0]: collection.get_offsets() for collection in axes.collections}
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == 8
    assert len(points["completed"]) + len(points.get("pruned", [])) == 8
    completed = sorted((t.params["learning_rate"], t.params["weight_decay"]) for t in trials
                       if t.state == TrialState.COMPLETE)
    assert np.allclose(sorted(map(tuple, points["completed"].tolist())), completed, rtol=1e-12)
    best = study.best_trial
    assert points["best:"].tolist() == [[best.params["learning_rate"], best.params["weight_decay"]]]
    assert len(figure.axes) == 2 and "validation accuracy" in figure.axes[1].get_ylabel()  # the colorbar


def test_the_grid_shows_the_best_twenty_best_first():
    values = [0.5 + 0.01 * k for k in range(23)]
    figure = plots.top_learning_curves(fake_study(values, pruned=2))
    assert len(figure.axes) == 20
    titles = [axes.get_title() for axes in figure.axes]
    assert titles[0].startswith("#1 trial 22: 0.7200\nlr 1.00e-03, wd 1.00e-03")
    assert [int(title.split()[2].rstrip(":")) for title in titles] == list(range(22, 2, -1))
    solid, dashed = figure.axes[0].get_lines()
    assert solid.get_linestyle() == "-" and dashed.get_linestyle() == "--"
    assert solid.get_ydata()[-1] == pytest.approx(0.72 * (1 - 0.5 ** 5), abs=1e-5)
    width, height = figure.get_size_inches()
    assert (width, height) == pytest.approx(plots.grid_size(4))


def test_the_grid_has_one_panel_per_completed_trial_when_fewer_than_twenty(tiny):
    _, study = tiny
    completed = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert 0 < completed < 20
    assert len(plots.top_learning_curves(study).axes) == completed


def test_a_minimizing_study_ranks_small_values_first():
    study = optuna.create_study(direction="minimize")
    for value in (0.3, 0.1, 0.2):
        study.add_trial(create_trial(value=value, user_attrs={record.LEARNING_CURVES: curves(2, 0.5)}))
    assert [trial.value for trial in plots.ranked(study)] == [0.1, 0.2, 0.3]


@pytest.mark.parametrize(
    "study, skipped",
    [
        (fake_study([]), {
            "optimization_history.png": "no completed trial yet",
            "intermediate_values.png": "no complete, pruned or running trial has reported an epoch yet",
            "param_importances.png": "no completed trial yet",
            "learning_rate_weight_decay.png": "no completed trial yet",
            "top_learning_curves.png": "no completed trial yet",
        }),
        (fake_study([0.9]), {
            "param_importances.png": "importances need at least 2 completed trials; the study has 1",
        }),
        (fake_study([0.9, 0.8, 0.7], params=("learning_rate",)), {
            "param_importances.png": "importances compare searched parameters; the study searches 1",
            "learning_rate_weight_decay.png": "weight_decay not searched",
        }),
        (failed_study(), {
            "optimization_history.png": "no completed trial yet",
            "intermediate_values.png": "no complete, pruned or running trial has reported an epoch yet",
            "param_importances.png": "no completed trial yet",
            "learning_rate_weight_decay.png": "no completed trial yet",
            "top_learning_curves.png": "no completed trial yet",
        }),
    ],
    ids=["empty", "one-completed", "no-weight-decay", "only-a-failed-trial"],
)
def test_figures_a_study_cannot_give_are_skipped_with_the_reason(tmp_path, study, skipped):
    result = plots.write_plots(study, tmp_path)
    assert result.skipped == skipped
    assert sorted(path.name for path in result.written) == sorted(
        f"{name}.png" for name in plots.FIGURES if f"{name}.png" not in skipped)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(path.name for path in result.written)


def test_a_multi_objective_study_gives_no_figure(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(lambda trial: (trial.suggest_float("a", 0, 1), 1.0), n_trials=3)
    result = plots.write_plots(study, tmp_path)
    assert result.written == []
    assert set(result.skipped.values()) == {"the study has 2 objectives; plots read single-objective studies"}


def test_plot_of_a_missing_study_is_one_error_line(tiny, tmp_path, hpo_command):
    storage, _ = tiny
    result = subprocess.run([hpo_command, "plot", "--storage", storage, "--study-name", "nope", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stderr.startswith("Error: no study 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1
