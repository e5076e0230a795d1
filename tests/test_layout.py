"""The layout the README promises: what imports what, and torch_impl / jax_impl mirroring each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

FRAMEWORKS = ("torch", "jax", "flax", "optax", "tensorflow", "tensorflow_datasets")

# Names one side has and the other has not, each for a reason that is not an accident of history.
MIRROR_DIFFERENCES = {
    "model": {
        # torch builds nn.RNN/LSTM/GRU (all layers in one module); Flax builds one cell in make_cell
        "torch": {"recurrent_layers"},
        "jax": {
            "make_cell",
            "TorchLSTMCell",
            "TorchRNNCell",
            "TorchGRUCell",  # Flax cells given PyTorch's two biases
            "identity_blocks",  # a Flax kernel initialiser; torch sets identity weight_hh in build_model
            "zero_carry",  # Flax passes initial states explicitly; nn.RNN starts from zeros by itself
            "enable_dtype",  # JAX needs x64 switched on for float64; torch has it always
            "RECURRENCES",  # other schedules of the time loop (jax_impl/recurrence.py); torch's is one kernel
            "BACKWARDS",  # the recurrence's gradient by hand (jax_impl/backward.py); torch's is the kernel's own
        },
    },
    "convert": {
        # tutorial checkpoints are torch pickles: reading them needs torch (python -m torch_impl.convert)
        "torch": {
            "TUTORIAL_RECURRENT_NAMES",
            "TUTORIAL_HEAD_NAMES",
            "read_tutorial_checkpoint",
            "canonical_name",
            "tutorial_to_canonical",
            "PROG",
            "build_parser",
            "main",
        },
        # the canonical layout is torch's own state_dict; only Flax needs a table of paths and transposes
        "jax": {"CELL_TABLE", "HEAD_TABLE", "cells", "parameters"},
    },
    "train": {
        "torch": {
            "TorchTrainer",  # each trainer is named for its framework, so logs and tracebacks say which
            "AdamImplementation",  # torch's three Adam implementations; optax has one
            "process_settings",
        },  # torch's thread count and denormal flushing are process-wide
        "jax": {
            "JaxTrainer",
            "make_train_chunk",  # a chunk of train steps in one compiled lax.scan
            "value_and_grad",  # JAX's gradient is a function of the parameters; torch's comes from backward()
            "placements",  # one device, or a mesh of CPU devices (data parallel lever)
            "resolve_backward",  # which gradient of the recurrence the device gets (jax_impl/backward.py)
            # the compiled value_and_grad read out by canonical name; torch's gradients come from backward(),
            # read by the port API's torch runner (parity/port/torch_runner.py), for the suite too
            "loss_and_gradients",
        },
    },
}
# schedules of the time loop and its hand-written gradient; torch's recurrence is one library kernel
ONE_SIDED_MODULES = {
    "jax_impl/recurrence.py",
    "jax_impl/backward.py",
    "jax_impl/cache.py",  # JAX compiles per process and can keep it on disk; torch compiles nothing by default
    "torch_impl/allocator.py",
}


def public_names(path: Path) -> set[str]:
    """Top-level functions, classes and constants a module defines (not what it imports)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def modules(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return sorted(f"{package}.{path.stem}" for path in folder.glob("*.py") if path.stem not in ("__init__", "__main__"))


def loaded_after_import(names: list[str], candidates: tuple[str, ...]) -> list[str]:
    """Which of `candidates` a fresh interpreter has loaded after importing `names`."""
    code = (
        f"import sys\nfor name in {names!r}: __import__(name)\n"
        f"print(','.join(m for m in {candidates!r} if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return [name for name in result.stdout.strip().split(",") if name]


def test_common_imports_no_framework():
    assert loaded_after_import(modules("common"), FRAMEWORKS) == []


@pytest.mark.parametrize(
    "package, forbidden",
    [("torch_impl", ("jax", "flax", "parity", "bench")), ("jax_impl", ("torch", "parity", "bench"))],
)
def test_framework_packages_import_neither_the_other_nor_parity_nor_bench(package, forbidden):
    assert loaded_after_import(modules(package), forbidden) == []


# What only the six presets have: their config, data and sampler, their models, and the suite built on them.
PRESET_MODULES = (
    "common.config",
    "common.presets",
    "common.data",
    "common.sampler",
    "common.weights",
    "torch_impl",
    "jax_impl",
    "parity.oracle",
    "parity.suite_checks",
    "parity.suite",
    "parity.devices",
    "parity.preset_ports",
    "parity.accuracy",
)


def test_the_comparison_core_imports_no_preset_module():
    assert loaded_after_import(["parity.compare"], PRESET_MODULES) == []


def test_the_port_package_imports_no_preset_module():
    port_modules = ["parity.port", *modules("parity.port")]
    assert loaded_after_import(port_modules, PRESET_MODULES) == []


def test_the_suite_judges_with_the_core():
    assert loaded_after_import(["parity.suite"], ("parity.compare",)) == ["parity.compare"]


def test_no_module_in_parity_is_over_300_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "parity").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 300
    }
    assert long == {}


def test_parity_imports_nothing_from_bench():
    assert loaded_after_import([*modules("parity"), "parity.__main__"], ("bench",)) == []


def test_torch_impl_and_jax_impl_have_the_same_modules():
    torch_side = {path.name for path in (ROOT / "torch_impl").glob("*.py")}
    jax_side = {path.name for path in (ROOT / "jax_impl").glob("*.py")}
    one_sided = {f"torch_impl/{name}" for name in torch_side - jax_side} | {
        f"jax_impl/{name}" for name in jax_side - torch_side
    }
    assert one_sided == ONE_SIDED_MODULES


@pytest.mark.parametrize(
    "module",
    sorted(
        path.stem for path in (ROOT / "torch_impl").glob("*.py") if f"torch_impl/{path.name}" not in ONE_SIDED_MODULES
    ),
)
def test_each_module_pair_defines_the_same_public_names(module):
    torch_names = public_names(ROOT / "torch_impl" / f"{module}.py")
    jax_names = public_names(ROOT / "jax_impl" / f"{module}.py")
    allowed = MIRROR_DIFFERENCES.get(module, {})
    assert torch_names - jax_names == allowed.get("torch", set()), f"torch_impl/{module}.py only"
    assert jax_names - torch_names == allowed.get("jax", set()), f"jax_impl/{module}.py only"


def class_methods(path: Path, name: str) -> set[str]:
    """The public methods (and properties) a class defines in its own body."""
    (node,) = [
        node for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef) and node.name == name
    ]
    return {item.name for item in node.body if isinstance(item, ast.FunctionDef) and not item.name.startswith("_")}


@pytest.mark.parametrize(
    "module, torch_class, jax_class, allowed",
    [
        # forward is torch's name for what Flax calls __call__ (a dunder, so not listed); the rest must match
        ("model", "SequenceClassifier", "SequenceClassifier", {"torch": {"forward"}, "jax": set()}),
        # TorchTrainer.model is an attribute (the nn.Module it trains); JaxTrainer.model a property merging its params
        ("train", "TorchTrainer", "JaxTrainer", {"torch": set(), "jax": {"model"}}),
    ],
)
def test_the_model_and_trainer_classes_have_the_same_methods(module, torch_class, jax_class, allowed):
    torch_methods = class_methods(ROOT / "torch_impl" / f"{module}.py", torch_class)
    jax_methods = class_methods(ROOT / "jax_impl" / f"{module}.py", jax_class)
    if module == "model":
        assert "layer_outputs" in torch_methods  # every layer's hidden states, on both sides
    assert torch_methods - jax_methods == allowed["torch"]
    assert jax_methods - torch_methods == allowed["jax"]


def parity_imports() -> dict[str, set[str]]:
    """Each module of parity/ -> the modules of parity/ it imports anywhere (inside a function, or for type
    checking only, too). The two packages' `__init__` files, which gather the API, are left out."""
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in (ROOT / "parity").rglob("*.py")}
    paths = {name: path for name, path in paths.items() if not name.endswith("__init__")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
        graph[name] = {other for other in imported if other in paths and other != name}
    return graph


def first_loop(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop (`a -> b -> a`), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for other in sorted(graph[node]):
            if loop := visit(other, [*path, node]):
                return loop
        done.add(node)
        return None

    return next((loop for node in sorted(graph) if (loop := visit(node, []))), None)


def test_no_two_modules_of_parity_import_each_other_directly_or_round_a_loop():
    graph = parity_imports()
    assert "parity.port.check" in graph and "parity.port.table" in graph["parity.port.check"]
    assert first_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the finder finds one
    loop = first_loop(graph)
    assert loop is None, " -> ".join(loop)
