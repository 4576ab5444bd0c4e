"""The shape of the code: imports point one way, names come from one place."""

import ast
import importlib.util
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "hpo")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere (TYPE_CHECKING blocks and functions included)."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    paths = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    modules = {_module_name(path) for path in paths}
    graph = {_module_name(path): _imports(path, modules) - {_module_name(path)} for path in paths}
    # A package's __init__ is imported with any of its modules; it does not make a circle by itself.
    return {module: {other for other in imports if not module.startswith(other + ".")} for module, imports in graph.items()}


def test_no_import_circle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(other):] + [other]))
            if other not in state:
                visit(other)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_models_knows_nothing_of_the_service():
    graph = _graph()
    assert {module: sorted(i for i in imports if i.startswith("hpo"))
            for module, imports in graph.items() if module.startswith("models") and any(
                i.startswith("hpo") for i in imports)} == {}


def test_reading_a_study_file_imports_no_database_library():
    code = ("import sys; from hpo.config.spec import load_spec; load_spec('studies/fashion_mnist.toml'); "
            "print(sorted(m for m in ('sqlalchemy', 'psycopg2', 'hpo.store.storage') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_importing_the_worker_leaves_the_warning_filters_alone():
    # The libraries first: NumPy adds filters of its own when imported.
    code = ("import warnings, numpy, optuna, sqlalchemy, click, tqdm; before = list(warnings.filters); "
            "import hpo.tuning.worker, hpo.cli; print([f for f in warnings.filters if f not in before])")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------ one source of names
def _literal_values(annotation) -> list:
    values = []
    for argument in typing.get_args(annotation) or ():
        if isinstance(argument, str):
            values.append(argument)
        else:
            values.extend(_literal_values(argument))
    return values


def test_the_study_file_accepts_exactly_the_names_of_the_tables():
    from hpo.config import registry, spec
    from models.datasets import DATASETS
    from models.network import ACTIVATIONS, WEIGHT_INITS
    from models.optimizers import OPTIMIZERS

    assert _literal_values(spec.OptimizerName) == list(OPTIMIZERS)
    assert _literal_values(spec.Activation) == list(ACTIVATIONS)
    assert _literal_values(spec.WeightInit) == list(WEIGHT_INITS)
    assert _literal_values(spec.DatasetSpec.model_fields["name"].annotation) == list(DATASETS)
    assert set(registry.SAMPLERS) >= {"tpe", "random", "grid"} and set(registry.PRUNERS) >= {"median", "none"}


def _study(tmp_path, *, parameters: str = "", sampler: str = 'type = "random"', pruner: str = 'type = "none"',
           dataset: str = 'name = "digits"'):
    from hpo.config.spec import load_spec

    path = tmp_path / "study.toml"
    path.write_text(f'name = "names"\n[budget]\ntrials = 2\n[dataset]\n{dataset}\n[sampler]\n{sampler}\n'
                    f'[pruner]\n{pruner}\n[parameters]\nepochs = 1\n{parameters}\n')
    return load_spec(path)


def test_every_accepted_name_builds(tmp_path):
    """Every name of every table goes through a study file into a built, working object."""
    import numpy as np

    from hpo.config.registry import PRUNERS, SAMPLERS
    from hpo.config.spec import SpecError
    from hpo.tuning.objective import build_network
    from models.datasets import DATASETS
    from models.network import ACTIVATIONS, WEIGHT_INITS
    from models.optimizers import OPTIMIZERS, make_optimizer
    from models.trainer import train

    rng = np.random.default_rng(0)
    x, t = rng.random((40, 8), dtype=np.float32), np.arange(40) % 3
    for optimizer in OPTIMIZERS:
        for activation in ACTIVATIONS:
            for weight_init in WEIGHT_INITS:
                spec = _study(tmp_path, parameters=f'optimizer = "{optimizer}"\nactivation = "{activation}"\n'
                                                   f'weight_init = "{weight_init}"\nhidden_layers = 1')
                values = spec.parameters.fixed()
                network = build_network(values, 8, 3, seed=0)
                assert (network.activation, network.weight_init) == (activation, weight_init)
                trainer = make_optimizer(values["optimizer"], values["learning_rate"])
                assert type(trainer) is OPTIMIZERS[optimizer]
                assert train(network, trainer, x, t, x, t, epochs=1, batch_size=8, rng=0).epochs_run == 1
    for sampler in SAMPLERS:
        arguments = dict(sampler=f'type = "{sampler}"', parameters='optimizer = { choices = ["sgd", "adam"] }')
        if sampler == "gp" and importlib.util.find_spec("torch") is None:
            with pytest.raises(SpecError, match="sampler.type = 'gp' needs PyTorch"):
                _study(tmp_path, **arguments)
            continue
        assert _study(tmp_path, **arguments).make_sampler() is not None
    for pruner in PRUNERS:
        extra = {"threshold": "\nlower = 0.1", "percentile": "\npercentile = 25.0"}.get(pruner, "")
        assert _study(tmp_path, pruner=f'type = "{pruner}"{extra}').make_pruner() is not None
    for name, source in DATASETS.items():
        directory = '\ndirectory = "/nowhere"' if source.directory == "required" else ""
        assert _study(tmp_path, dataset=f'name = "{name}"{directory}').dataset.name == name


def test_reading_results_loads_no_network_code():
    code = ("import sys, hpo.results.report, hpo.results.summary, hpo.results.plots, hpo.store.record; "
            "print(sorted(m for m in sys.modules if m.startswith('models') or m == 'hpo.tuning.objective'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------ layers and sizes
# Each layer may import its own and those below it, never one above (models/ is below them all).
LAYERS = ["models", "hpo.errors", "hpo.interrupts", "hpo.config", "hpo.store", "hpo.tuning", "hpo.results",
          "hpo.book", "hpo.cli", "hpo.console"]


def _layer(module: str) -> int:
    return max(index for index, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + "."))


def test_layers_only_point_down():
    upward = sorted(f"{module} -> {other}" for module, imports in _graph().items() for other in imports
                    if module != "hpo" and other != "hpo" and _layer(other) > _layer(module))
    assert upward == []


def code_lines(path: Path) -> int:
    """Lines of code of a module: not blank, not comments, not docstrings (of the module, classes,
    functions, or attributes)."""
    import io
    import tokenize

    text = path.read_text()
    documentation = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            documentation.update(range(node.lineno, node.end_lineno + 1))
    skipped = (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER)
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type not in skipped:
            lines.update(line for line in range(token.start[0], token.end[0] + 1) if line not in documentation)
    return len(lines)


def test_code_lines_are_counted_without_documentation(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""Module\n\ndoc."""\n\n# comment\nx = 1  # trailing\n\n\ndef f(a,\n      b):\n'
                    '    """Doc."""\n    return """a\nb"""\n')
    assert code_lines(path) == 5  # x = 1; def f(a, / b):; return """a / b"""


def test_no_module_is_longer_than_300_lines_of_code():
    sizes = {str(path.relative_to(ROOT)): code_lines(path) for package in PACKAGES
             for path in (ROOT / package).rglob("*.py")}
    assert {path: size for path, size in sizes.items() if size > 300} == {}
