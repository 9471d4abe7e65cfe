"""Import paths of user code: found, or one error naming the field; the directories they are
found in never shadow the standard library."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs, import_object, is_import_path


def test_an_import_path_names_a_module_and_an_attribute():
    assert is_import_path("pkg.module:factory") and is_import_path("m:Outer.inner")
    assert not any(map(is_import_path, ["mlp", "pkg.module", "a:b:c", "pkg.mo dule:x", "torchvision:", 3]))


def test_user_module_is_imported_from_an_added_directory(tmp_path):
    (tmp_path / "user_pkg_for_imports").mkdir()
    (tmp_path / "user_pkg_for_imports" / "__init__.py").write_text("class Outer:\n    class inner:\n        pass\n")
    add_import_dirs([tmp_path])
    assert import_object("user_pkg_for_imports:Outer.inner", "model.factory").__name__ == "inner"


def test_bad_paths_name_the_field_and_what_went_wrong(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.factory: got 'nope'; allowed: an import path"):
        import_object("nope", "model.factory")
    with pytest.raises(ConfigError, match=r"^data\.factory: cannot import 'no_such_module_x' \(ModuleNotFoundError"):
        import_object("no_such_module_x:make", "data.factory")
    with pytest.raises(ConfigError, match=r"^sparsity\.method: module 'json' has no 'nothing'"):
        import_object("json:nothing", "sparsity.method")
    (tmp_path / "broken_user_module.py").write_text("raise RuntimeError('boom at import')\n")
    add_import_dirs([tmp_path])
    with pytest.raises(ConfigError, match=r"cannot import 'broken_user_module' \(RuntimeError: boom at import\)"):
        import_object("broken_user_module:x", "model.factory")



def on_path(directory) -> int:
    return [os.path.realpath(p) if p else p for p in sys.path].index(os.path.realpath(directory))


def test_directories_go_after_the_standard_library_and_one_put_ahead_of_it_is_moved(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    ahead, chosen, beside = tmp_path / "ahead", tmp_path / "chosen", tmp_path / "beside"
    for directory in (ahead, chosen, beside):
        directory.mkdir()
    sys.path[:0] = [str(chosen), str(ahead)]  # as PYTHONPATH, and as Ray puts the working directory in a worker
    monkeypatch.setenv("PYTHONPATH", str(chosen))
    add_import_dirs([beside, ahead, chosen])
    stdlib, site = on_path(sysconfig.get_path("stdlib")), on_path(sysconfig.get_path("purelib"))
    assert on_path(beside) > site and on_path(ahead) > site and sys.path.count(str(ahead)) == 1
    assert on_path(chosen) == 0 < stdlib  # PYTHONPATH names it: that order is the user's own
    add_import_dirs([beside])
    assert sys.path.count(str(beside)) == 1


def test_a_module_of_yours_named_like_a_standard_one_is_said_to_be_shadowed(tmp_path):
    (tmp_path / "colorsys.py").write_text("def make_net():\n    pass\n")
    add_import_dirs([tmp_path])
    with pytest.raises(ConfigError, match=r"^model\.factory: module 'colorsys' has no 'make_net' \(it was imported "
                                          r"from .*python3\.\d+/colorsys\.py: an installed or standard module of "
                                          r"that name comes before .*; rename your module\)$"):
        import_object("colorsys:make_net", "model.factory")

# modules of the standard library that a process imports late (after the user's code is imported):
# a stray file of that name beside a config or in the working directory must never run (json, say,
# proves nothing: every process has imported it before any user directory is added)
STRAY = ("netrc", "colorsys", "shlex", "getpass", "secrets", "hmac", "string")

USER_MODELS = '''
import sys

from torch import nn


def mlp(input_shape, num_classes, width=16):
    print("userpkg.models:mlp called", file=sys.stderr, flush=True)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
'''

USER_DATA = '''
import torch
from torch.utils.data import TensorDataset


def blobs():
    generator = torch.Generator().manual_seed(0)
    y = torch.arange(240) % 4
    x = torch.randn(240, 1, 8, 8, generator=generator) + y.view(-1, 1, 1, 1)
    return {"train": TensorDataset(x[:200], y[:200]), "test": TensorDataset(x[200:], y[200:])}
'''


def plant_stray_modules(directory: Path, log: Path) -> None:
    """``<name>.py`` for each STRAY name: importing one appends a line to ``log`` (its name, its
    directory and the command line of the process it ran in, tab-separated), then runs the real
    module's code in its place, so that every process it ran in goes on and is found."""
    stdlib = Path(sysconfig.get_path("stdlib"))
    for name in STRAY:
        (directory / f"{name}.py").write_text(
            f"import sys\nopen({str(log)!r}, 'a').write('\\t'.join([{name!r}, {str(directory)!r}, "
            "' '.join(sys.argv)]) + '\\n')\n"
            f"exec(compile(open({str(stdlib / f'{name}.py')!r}).read(), {name!r}, 'exec'))\n")


def strays_that_ran(log: Path) -> list[list[str]]:
    """[name, directory, command line] of each stray module that ran."""
    return [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []


def write_user_package(directory: Path) -> None:
    (directory / "userpkg").mkdir(parents=True)
    (directory / "userpkg" / "__init__.py").write_text("")
    (directory / "userpkg" / "models.py").write_text(USER_MODELS)
    (directory / "userpkg" / "data.py").write_text(USER_DATA)


def cli_env(home: Path) -> dict:
    # absolute: the CLI runs elsewhere, and must still import this raysparse
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    pythonpath = os.pathsep.join(str(Path(p).resolve()) for p in entries if p)
    return {**os.environ, "RAYSPARSE_HOME": str(home), "RAY_ADDRESS": "local", "PYTHONPATH": pythonpath}


def imported_after(stderr: str, marker: str) -> set[str]:
    """Modules that ``-X importtime`` reports as imported after the line ``marker`` on stderr."""
    lines = stderr.splitlines()
    return {line.rsplit("|", 1)[-1].strip() for line in lines[lines.index(marker):] if line.startswith("import time:")}


def test_modules_beside_a_config_or_in_the_working_directory_do_not_replace_the_standard_library(tmp_path):
    project, work, log = tmp_path / "project", tmp_path / "work", tmp_path / "stray_modules_that_ran.txt"
    write_user_package(project)
    work.mkdir()
    for directory in (project, work):
        plant_stray_modules(directory, log)
    config = {"epochs": 1, "measure_latency": False, "model": {"factory": "userpkg.models:mlp"},
              "data": {"factory": "userpkg.data:blobs", "batch_size": 32},
              "sparsity": {"method": "gmp", "final_sparsity": 0.5, "prune_end": 1, "update_frequency": 2}}
    (project / "train.yaml").write_text(yaml.safe_dump(config))
    cli = Path(sys.executable).parent / "raysparse"
    # the console script as users run it (its own directory first on sys.path, not the working directory)
    done = subprocess.run([sys.executable, "-X", "importtime", str(cli), "train", str(project / "train.yaml")],
                          cwd=work, env=cli_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert strays_that_ran(log) == []
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: test accuracy" in done.stdout  # the user's package beside the config still imports
    # proof that the stray files had their chance: the process imported these after the user's code ran
    late = imported_after(done.stderr, "userpkg.models:mlp called") & set(STRAY)
    assert late, "none of the STRAY modules is imported late any more: pick others (see -X importtime)"
