"""The math core uses the namespace of its inputs: it must not import numpy or cupy."""

import ast
from pathlib import Path

import pytest

CORE = ["layers.py", "losses.py", "regularizers.py", "optimizers.py", "schedules.py", "network.py", "augment.py"]
ROOT = Path(__file__).resolve().parents[1] / "fastnn"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_neither_numpy_nor_cupy(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"numpy", "cupy"}, f"{module} imports {imported & {'numpy', 'cupy'}}"
