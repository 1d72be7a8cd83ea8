"""The package's rooms: one-way imports, registries that are the only lists, and old names kept."""

import ast
import importlib
import pathlib

import keras
import numpy as np
import pytest

import tarrl_tf
from tarrl_tf import _aliases, attacks, encoders, training
from tarrl_tf.evaluation import tasks
from tarrl_tf.robustness import divergences, regularizers
from tarrl_tf.ssl import methods

PACKAGE = pathlib.Path(tarrl_tf.__file__).parent
DATA = pathlib.Path(__file__).parent / "data"

# Floors, from the bottom: a module imports only from lower floors or from its own room.
FLOORS = [
    {"registry", "checks", "files", "progress", "_version", "replicas", "precision"},
    {"encoders", "data"},
    {"ssl", "robustness"},
    {"training"},
    {"attacks"},
    {"zoo"},
    {"evaluation"},
    {"pipeline"},
    {"export", "_aliases", "testing"},
    {"__init__"},
]


def _room(module):
    """`tarrl_tf.zoo.card` -> `zoo`; `tarrl_tf` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _floor(room):
    return next(i for i, rooms in enumerate(FLOORS) if room in rooms)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _module_names():
    return {name for name, _ in _modules()}


def _imports(path, module):
    """Every tarrl_tf module `path` imports, at the top or inside a function."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tarrl_tf")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.startswith("tarrl_tf"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if candidate in _module_names() else base)
    return found - {module}


def test_every_module_sits_on_a_floor():
    for module, _ in _modules():
        _floor(_room(module))  # StopIteration names a room without a floor


def test_imports_only_run_down_or_stay_in_the_room():
    upward = []
    for module, path in _modules():
        room = _room(module)
        for target in _imports(path, module):
            target_room = _room(target)
            if target_room != room and _floor(target_room) >= _floor(room):
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_import_circles_between_modules():
    graph = {module: _imports(path, module) for module, path in _modules()}

    def visit(node, stack):
        if node in stack:
            raise AssertionError(f"import circle: {' -> '.join(stack[stack.index(node):] + [node])}")
        for target in graph.get(node, ()):
            # A package's __init__ importing its own rooms is how a package loads; not a circle.
            if target.startswith(node + "."):
                continue
            visit(target, stack + [node])

    for module in graph:
        visit(module, [])


def test_no_module_is_over_400_lines():
    long = {m: n for m, p in _modules() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def _top_level_imports(path):
    """Module names imported at a module's top level (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module)
    return found


def test_the_commands_sit_on_top_and_import_the_library_only_after_parsing():
    """`tarrl_tf_cli` (the console commands) is a package beside `tarrl_tf`: importing any
    `tarrl_tf` module imports TensorFlow, which --help must not wait for."""
    cli = PACKAGE.parent / "tarrl_tf_cli"
    for module, path in _modules():
        assert not any(name.startswith("tarrl_tf_cli")
                       for node in ast.walk(ast.parse(path.read_text()))
                       if isinstance(node, (ast.Import, ast.ImportFrom))
                       for name in ([a.name for a in node.names] if isinstance(node, ast.Import)
                                    else [node.module or ""])), module
    heavy = ("tarrl_tf", "tensorflow", "keras", "numpy")
    for path in sorted(cli.glob("*.py")):
        eager = {m for m in _top_level_imports(path)
                 if m.split(".")[0] in heavy and not m.startswith("tarrl_tf_cli")}
        assert not eager, f"{path.name} imports {eager} before parsing its flags"
        assert len(path.read_text().splitlines()) <= 400, path.name
    tools = PACKAGE.parent / "tools"
    for path in sorted(tools.glob("[!_]*.py")):  # thin wrappers over the commands
        assert _top_level_imports(path) == {f"tarrl_tf_cli.{path.stem}"}, path.name


def test_registries_are_the_lists_tools_use():
    assert regularizers.ESTIMATORS.names() == ("pgd", "fgsm", "power_iteration", "persistent_pgd")
    assert set(divergences.DIVERGENCES) == set(divergences.NAMES) == {
        "squared_l2", "kl", "relative_l2", "normalized_relative_l2"}
    assert set(methods.METHODS) == {"simclr", "barlow_twins"}
    assert set(training.METHODS) == {"simclr", "tarrl", "acl", "deacl", "supervised_at"}
    assert set(tarrl_tf.zoo.METHODS) == set(training.METHODS)
    assert attacks.ATTACK_NAMES == attacks.ATTACKS.names()
    assert set(encoders.ARCHITECTURES) == {"small_cnn", "cifar_resnet"}
    assert "parity" in tasks.available_tasks("mnist")


def test_a_registered_attack_runs_through_the_adapter(monkeypatch):
    def build(spec, model_fn, **_):
        return lambda x, y: x  # the identity: an attack that finds nothing

    attacks.register(attacks.Attack("identity", norms=("inf",), steps=1, build=build,
                                     step_size=lambda epsilon, steps: epsilon))
    try:
        spec = attacks.make_attack("identity", epsilon=0.1)
        assert spec.step_size == 0.1
        x = np.random.default_rng(0).random((4, 4, 4, 1), dtype=np.float32)
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(2)])
        np.testing.assert_array_equal(attacks.run_attack(model, x, np.zeros(4, "int64"), spec), x)
    finally:
        attacks.ATTACKS.unregister("identity")
    with pytest.raises(ValueError, match="Unknown attack 'identity'"):
        attacks.make_attack("identity", epsilon=0.1)


def test_a_registered_estimator_is_built_by_name():
    @regularizers.ESTIMATORS.register("pgd_twice")
    class TwicePGD(regularizers.PGD):
        pass

    try:
        regularizer = regularizers.build("pgd_twice", epsilon=0.1, steps=3)
        assert isinstance(regularizer, TwicePGD) and regularizer.steps == 3
    finally:
        regularizers.ESTIMATORS.unregister("pgd_twice")


@pytest.mark.parametrize("name", sorted(_aliases.MODULES) + ["baselines"])
def test_old_module_names_still_import(name):
    module = importlib.import_module(f"tarrl_tf.{name}")
    assert getattr(tarrl_tf, name) is module


def test_old_deep_imports_give_the_same_classes():
    from tarrl_tf.acl_model import ACLModel
    from tarrl_tf.baselines import BASELINES, build
    from tarrl_tf.regularizers import PGD

    assert ACLModel is tarrl_tf.ACLModel and PGD is regularizers.PGD
    assert BASELINES == ("acl", "deacl", "supervised_at") and build is training.registry.build_baseline


@pytest.mark.parametrize("name, output", [("tarrl_model", "tarrl"), ("deacl_model", "deacl")])
def test_models_saved_before_the_rooms_still_load(name, output):
    """Saved by tarrl_tf 0.1.0 (flat modules); the registered names `tarrl_tf>...` did not change."""
    model = keras.models.load_model(DATA / f"{name}_0_1_0.keras")
    x = np.load(DATA / "model_0_1_0_probe.npy")
    expected = np.load(DATA / "model_0_1_0_outputs.npz")[output]
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, atol=1e-6)
    assert type(model).__module__.startswith("tarrl_tf.training.")
