"""The sparse core imports no service stack (ARCHITECTURE.md: dependency direction)."""

import ast
from pathlib import Path

import pytest

CORE = ["sparsity", "methods", "train", "zoo", "structured", "robustness", "deployment"]
FORBIDDEN = {"ray", "mlflow", "optuna", "yaml"}
PACKAGE = Path(__file__).resolve().parents[1] / "raysparse"


@pytest.mark.parametrize("package", CORE)
def test_core_imports_no_service_modules(package):
    offenders = []
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
