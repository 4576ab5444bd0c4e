"""The README's benchmark and book figures are those of the committed result files (no training).

Each check builds the README's wording of a figure from a committed JSON file
(``benchmarks/results/*.json``, ``docs/book/findings*.json``) and looks for it in
README.md, so a result file regenerated with other figures fails here until the
README says the same; the book's chapter is also checked the other way round: every
measured number it quotes is in a findings file.
"""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def load(path):
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def between(start, end):
    """The README's text from ``start`` to the next ``end``."""
    first = README.index(start)
    return README[first:README.index(end, first)]


def flat(text):
    """``text`` with each run of white space (line breaks too) as one space, as a reader sees it."""
    return " ".join(text.split())


# ------------------------------------------------------- search_efficiency.json
DATA = {"book": "book: 500 images (400 / 100)", "full": "all 60,000 images (48,000 / 12,000)"}


def _accuracy(space, value):
    # 100 validation images: steps of 0.01; 12,000: four digits tell trials apart.
    return f"{value:.2f}" if space == "book" else f"{value:.4f}"


def _to_target(reached):
    return "never" if reached is None else f"{reached['seconds']:.0f} s ({reached['epochs']:,})"


def _ratio(value):
    return "-" if value is None else f"{value:.2f}"


def search_rows(results):
    """The README's table rows of benchmarks/results/search_efficiency.json, one per data size and seed."""
    rows = []
    for row in results:
        space, random, tpe = row["space"], row["random"], row["tpe_pruning"]
        rows.append(
            f"| {DATA[space]}, {row['trials']} x {row['epochs']} | {row['seed']} | {_accuracy(space, row['target'])} "
            f"| {_to_target(random['reach_target'])} | {random['wall_seconds']:.0f} s ({random['epochs_trained']:,}) "
            f"| {_accuracy(space, tpe['best_value'])} | {_to_target(tpe['reach_target'])} "
            f"| {tpe['wall_seconds']:.0f} s ({tpe['epochs_trained']:,}), {tpe['pruned']} | "
            f"{_ratio(row['ratio_seconds'])} | {_ratio(row['ratio_epochs'])} |")
    return rows


def test_search_efficiency_table_is_the_committed_result():
    results = load("benchmarks/results/search_efficiency.json")
    text = between("`benchmarks/search_efficiency.py` measures", "### Time to a good model")
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| data")]
    assert table == search_rows(results["results"])
    for space, summary in results["summary"].items():
        assert (f"{summary['reached']} of {summary['seeds']} seeds, median ratio "
                f"{_ratio(summary['median_ratio_seconds'])} in seconds and "
                f"{_ratio(summary['median_ratio_epochs'])} in epochs") in flat(text), space
    at_least = sum(row["tpe_pruning"]["best_value"] >= row["target"] for row in results["results"])
    assert f"at least as high in {at_least} of {len(results['results'])} runs" in flat(text)
    # Every decimal and every "N s" of the prose is a figure of the file.
    figures = _numbers(" ".join(search_rows(results["results"])) + json.dumps(results))
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("|"))
    assert _numbers(prose) <= figures | {"6.5.3"}, sorted(_numbers(prose) - figures)


# ------------------------------------------------------------------ workers.json
def test_workers_figures_are_the_committed_result():
    results = load("benchmarks/results/workers.json")
    text = between("Measure parallel speed, service overhead", "### Trainer speed")
    one, default, two = results["cases"][:3]
    speedup = results["speedup_2_workers_over_1"]
    expected = [
        f"{two['trials_per_hour_trial_span']:,.0f} trials per hour against {one['trials_per_hour_trial_span']:,.0f}",
        f"{speedup['trial_span']:.2f}x",
        f"{two['trials_per_hour_wall_clock']:,.0f} against {one['trials_per_hour_wall_clock']:,.0f}",
        f"{speedup['wall_clock']:.2f}x",
        f"{two['startup_seconds']:.0f} s of start-up against {one['startup_seconds']:.0f} s",
        f"default threads ran at {default['trials_per_hour_trial_span']:,.0f} trials per hour",
        f"Python {results['versions']['python']}",
        f"NumPy {results['versions']['numpy']}",
        f"Optuna {results['versions']['optuna']}",
        f"SQLAlchemy {results['versions']['sqlalchemy']}",
    ]
    for row in results["overhead_against_optuna"]:
        expected.append(f"{row['hpo']['overhead_ms']:.0f} ms for hpo against {row['optuna']['overhead_ms']:.0f} ms "
                        f"for Optuna's loop on {row['case']} ({row['overhead_ratio_hpo_over_optuna']:.2f}x)")
    blas = {name: next(pool for pool in results["thread_pools"][name]["pools"] if pool["user_api"] == "blas")
            for name in ("hpo, default BLAS threads", "hpo, 1 BLAS thread")}
    default_blas, one_blas = blas["hpo, default BLAS threads"], blas["hpo, 1 BLAS thread"]
    expected.append(f"{default_blas['internal_api']} {default_blas['version']}: {default_blas['num_threads']} threads "
                    f"by default, {one_blas['num_threads']} with `--blas-threads 1`")
    missing = [phrase for phrase in expected if phrase not in flat(text)]
    assert not missing, missing


# ------------------------------------------------------------------- docs/book
_MEASURED = re.compile(r"(?<![\w.])\d[\d,]*\.\d+(?![\d.])|(?<![\w.,])\d+(?= s\b)")


def _numbers(text):
    """Decimal numbers, and whole numbers of seconds ("88 s"), as written (commas dropped)."""
    return {match.replace(",", "") for match in _MEASURED.findall(text)}


SETTINGS = {
    # Settings the chapter states, not measurements: step sizes of the optimizer paths and of
    # the optimizers, sigmoid thresholds and the std of the activation study, weight scales,
    # weight decay and dropout ratios.
    "0.95", "0.1", "1.5", "0.3", "0.01", "0.001", "0.9", "0.4", "0.6", "0.54", "0.29", "0.16", "0.05", "0.2",
}


def test_book_chapter_quotes_only_committed_findings():
    rows = load("docs/book/findings.json") + load("docs/book/findings_full.json")
    findings = " ".join(row["finding"] for row in rows)
    sections = {row["section"] for row in rows}  # "(6.4)" names a section
    text = between("![optimizer paths]", "## Many workers")
    unknown = _numbers(text) - _numbers(findings) - SETTINGS - sections
    assert not unknown, f"README numbers in no findings file: {sorted(unknown)}"


def test_book_search_paragraph_quotes_both_sizes():
    text = between("7. Hyperparameter search (6.5.3)", "## Many workers")
    for path in ("docs/book/findings.json", "docs/book/findings_full.json"):
        finding = next(row["finding"] for row in load(path) if row["section"] == "6.5.3")
        assert _numbers(finding) <= _numbers(text) | {"0"}, (path, sorted(_numbers(finding) - _numbers(text)))


# --------------------------------------------------------------- retraining.json
def test_retraining_policy_figures_are_the_committed_result():
    from hpo.results.evaluate import STORED_WEIGHTS_BY_DEFAULT

    results = load("benchmarks/results/retraining.json")
    text = flat(between("**Retraining policy.**", "## Plots and coarse-to-fine search"))
    own, retrained = results["summary"]["own"], results["summary"]["retrained"]
    expected = [
        f"**{own['mean']:.4f} ± {own['std']:.4f}** for the trial's own network",
        f"**{retrained['mean']:.4f} ± {retrained['std']:.4f}** retrained",
        f"best epoch {results['best_epoch']}",
        "seeds " + ", ".join(str(row["seed"]) for row in results["results"][:-1])
        + f", {results['results'][-1]['seed']}: "
        + ", ".join(f"{row['own']:.4f} / {row['retrained']:.4f}" for row in results["results"]),
    ]
    missing = [phrase for phrase in expected if phrase not in text]
    assert not missing, missing
    # Retraining is the default only when it beats the stored weights by more than the seeds' spread (it costs
    # a training run); otherwise the stored weights are.
    assert STORED_WEIGHTS_BY_DEFAULT == (retrained["mean"] - own["mean"] <= max(own["std"], retrained["std"]))
    assert ("The default is the trial's own stored weights" in text) == STORED_WEIGHTS_BY_DEFAULT


# ---------------------------------------------------------- time_to_accuracy*.json
def _seconds(value):
    return f"{value:,.0f}"


def test_time_to_accuracy_figures_are_the_committed_results():
    text = flat(between("Measured on this 2-core machine (2026-12-05, AMD EPYC", "### docker-compose"))
    first = load("benchmarks/results/time_to_accuracy.json")
    service, script = first["service"], first["optuna_torch"]
    assert script["time_to_target_seconds"] is None  # the text below is for a script that never got there
    expected = [
        f"reached {first['target']} after **{_seconds(service['time_to_target_seconds'])} s** "
        f"({service['epochs']} epochs of {sum(service['trials'].values()) - service['trials'].get('waiting', 0)} trials)",
        f"best {script['best_accuracy']:.4f} after {_seconds(script['curve'][-1][0])} s; {script['epochs']} epochs of "
        f"{sum(script['trials'].values())} trials",
        f"below {_seconds(service['time_to_target_seconds'])} / {_seconds(script['wall_seconds'])} = "
        f"{service['time_to_target_seconds'] / script['wall_seconds']:.2f}",
        f"NumPy {first['machine']['numpy']}, PyTorch {first['machine']['torch'].split('+')[0]}",
        f"Optuna {first['machine']['optuna']}",
    ]
    second = load("benchmarks/results/time_to_accuracy_seed1.json")
    expected += [
        f"the service took **{_seconds(second['service']['time_to_target_seconds'])} s** and the script "
        f"**{_seconds(second['optuna_torch']['time_to_target_seconds'])} s**",
        f"ratio of **{second['ratio_service_to_optuna_torch']:.2f}**",
    ]
    missing = [phrase for phrase in expected if phrase not in text]
    assert not missing, missing
    assert second["ratio_service_to_optuna_torch"] <= 0.5


# ------------------------------------------------------------------ main_job.json
def test_main_job_figures_are_the_committed_result():
    results = load("benchmarks/results/main_job.json")
    text = flat(between("## Fashion-MNIST: the main job", "To use another folder, set"))
    best, single, ensemble = results["best_trial"], results["single"], results["ensemble"]
    trials = results["trials"]
    minutes, seconds = divmod(round(results["run_wall_seconds"]), 60)
    members = [member["test_accuracy"] for member in ensemble["members"]]
    expected = [
        f"# {minutes} min {seconds} s: {sum(trials.values())} trials, {trials['complete']} complete, "
        f"{trials['pruned']} pruned",
        f"| best trial ({best['number']}: {best['parameters']['hidden_layers']} x {best['parameters']['hidden_size']} "
        f"units, batch norm, dropout {best['parameters']['dropout']:.2f}, momentum "
        f"{best['parameters']['learning_rate']:.3f} cosine",
        f"| {best['validation_accuracy']:.4f} | **{single['test_accuracy']:.4f}** |",
        "top 5 trials (" + ", ".join(str(member["trial"]) for member in ensemble["members"])
        + f"; members {min(members):.4f} to {max(members):.4f}) | - | **{ensemble['test_accuracy']:.4f}** |",
        f"used {round(results['max_resident_kilobytes'] / 1024)} MiB",
    ]
    missing = [phrase for phrase in expected if phrase not in text]
    assert not missing, missing
    # The goals of issue 13, and the per-class tables quoted from the file.
    assert single["test_accuracy"] >= 0.91 and ensemble["test_accuracy"] >= 0.915
    shirt = [row for row in single["per_class"] if row["name"] == "Shirt"]
    assert f"recall {shirt[0]['recall']:.3f} alone" in text
