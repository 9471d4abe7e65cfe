"""Heavy imports where used (Optuna's habit): `import raysparse` and `raysparse --help` load no
service stack or torch, so the CLI answers at once; each is checked in a fresh interpreter."""

import subprocess
import sys

HEAVY = ["ray", "mlflow", "optuna", "pandas", "torch_pruning", "torch", "matplotlib", "yaml"]

PROBE = """
import sys
{code}
print(",".join(m for m in {heavy!r} if m in sys.modules))
"""


def loaded_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)], capture_output=True,
                         text=True, check=True).stdout.strip()
    return [m for m in out.split(",") if m]


def test_import_raysparse_loads_no_heavy_module():
    assert loaded_after("import raysparse; raysparse.ConfigError; dir(raysparse)") == []


def test_help_loads_no_heavy_module():
    assert loaded_after("from raysparse.cli import build_parser; build_parser().format_help()") == []


def test_public_names_load_on_first_use():
    assert "torch" in loaded_after("import raysparse; raysparse.MaskSet")
    assert "ray" not in loaded_after("import raysparse; raysparse.fit")  # training needs no Ray


def test_the_train_function_keeps_its_name_whatever_is_imported_first():
    for first in ("import raysparse.train.loop", "from raysparse.train import fit", "import raysparse"):
        code = f"{first}\nimport raysparse\nraysparse.fit\nassert raysparse.train.__module__ == 'raysparse', first"
        subprocess.run([sys.executable, "-c", code], check=True)
