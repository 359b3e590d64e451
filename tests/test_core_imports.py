"""Import layering: the math core uses the namespace of its inputs and must not import numpy or cupy;
the data and the atomic writes sit below the network."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = ["layers.py", "losses.py", "regularizers.py", "optimizers.py", "schedules.py", "network.py", "augment.py"]
SETTINGS = ["config.py"]  # the run settings: above the core, but still free of numpy and cupy
ROOT = Path(__file__).resolve().parents[1] / "fastnn"
# fastnn.fused: the backend's fast kernels as the core calls them (the formula where a backend has none)
CORE_AND_BACKEND = {"fastnn.backend", "fastnn.fused"} | {f"fastnn.{name.removesuffix('.py')}" for name in CORE}


def _fastnn_imports(module: str) -> set[str]:
    """The fastnn modules that ``module`` (a file of fastnn/) imports, at its top or inside functions."""
    tree = ast.parse((ROOT / module).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in imported if name.startswith("fastnn")}


@pytest.mark.parametrize("module", CORE + SETTINGS)
def test_core_module_imports_neither_numpy_nor_cupy(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"numpy", "cupy"}, f"{module} imports {imported & {'numpy', 'cupy'}}"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_only_the_core_and_the_backend(module):
    """Layers: the math core sits below the run settings (config), the training loop, the data and
    the command line, so that it can be read, and used, without them."""
    outside = _fastnn_imports(module) - CORE_AND_BACKEND
    assert not outside, f"{module} imports {outside}"


def test_the_cores_door_to_the_kernels_sits_on_the_backend_alone():
    assert _fastnn_imports("fused.py") == {"fastnn.backend"}


def test_the_run_settings_sit_on_the_core_below_the_training_loop():
    """fastnn.config (TrainConfig) builds from the core's registries and is read by the training loop,
    the experiments, tune and the command line: it imports the core and the backend only, never
    fastnn.train or anything above it."""
    outside = _fastnn_imports("config.py") - CORE_AND_BACKEND
    assert not outside, f"config.py imports {outside}"


def test_moved_names_still_import_from_fastnn_train():
    """TrainConfig and the augmentation moved out of fastnn.train; its old import paths give the same objects."""
    import fastnn.augment
    import fastnn.config
    import fastnn.train

    for name in ("TrainConfig", "NORMS", "ADDED_LATER"):
        assert getattr(fastnn.train, name) is getattr(fastnn.config, name)
    for name in ("augment_images", "check_augmentable"):
        assert getattr(fastnn.train, name) is getattr(fastnn.augment, name)


def test_the_data_and_the_atomic_writes_sit_below_the_network():
    """Reading CIFAR-10 (fastnn.data) and writing files whole (fastnn.atomic) need no network: importing
    them, directly or through what they import, loads neither fastnn.network nor fastnn.checkpoint (which
    imports the network), so that the data code does not sit above the math core in the import order."""
    code = "import sys, fastnn.data, fastnn.atomic; print(' '.join(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    loaded = set(run.stdout.split())
    assert {"fastnn.data", "fastnn.data.cifar10", "fastnn.atomic"} <= loaded
    above = loaded & {"fastnn.network", "fastnn.checkpoint"}
    assert not above, f"importing fastnn.data and fastnn.atomic loads {sorted(above)}"


def test_importing_fastnn_never_imports_cupy():
    """CuPy is imported only once a GPU is asked for (fastnn.backend, fastnn.kernels_cuda): importing any
    module of fastnn asks no finder for it, so that a broken CUDA install cannot break a CPU run."""
    code = """
import importlib, pkgutil, sys
import fastnn

class Watch:
    asked = []
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "cupy":
            Watch.asked.append(name)
        return None

sys.meta_path.insert(0, Watch())
sys.modules.pop("cupy", None)
for module in pkgutil.walk_packages(fastnn.__path__, "fastnn."):
    try:
        importlib.import_module(module.name)
    except ImportError:  # an extra that is not installed here (numba, optuna); CuPy, Watch has seen
        pass
print(" ".join(Watch.asked))
"""
    run = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert run.stdout.split() == [], f"importing fastnn asked for {run.stdout.split()}"
