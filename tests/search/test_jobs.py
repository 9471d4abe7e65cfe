"""The command a submitted sweep's job runs, run here as Ray's job supervisor runs it: through a
shell, in the uploaded working directory, this venv's executables first on PATH. Not here: the
PYTHONPATH that Ray's working_dir gives the job, which names that directory first (Ray's doing,
not the command's)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from raysparse.search.jobs import sweep_entrypoint
from tests.test_imports import cli_env, plant_stray_modules, strays_that_ran


def test_the_job_command_itself_puts_no_working_directory_ahead_of_the_standard_library(tmp_path):
    work, log = tmp_path / "uploaded", tmp_path / "stray_modules_that_ran.txt"
    work.mkdir()
    plant_stray_modules(work, log)  # importing raysparse's CLI and loading a sweep imports several
    sweep = {"name": "stray", "base": {"epochs": 1, "model": {"hidden": 8}, "data": {"batch_size": 16}},
             "space": {}, "num_samples": 1}
    (work / "stray.yaml").write_text(yaml.safe_dump(sweep))
    entrypoint = sweep_entrypoint(work / "stray.yaml", work, {"--num-samples": 1, "--name": None})
    env = {**cli_env(tmp_path / "home"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(entrypoint, shell=True, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    # it ran the sweep command on the uploaded file: the file's own mistake (no model name) stops it
    assert "base.model.name: missing" in done.stderr and done.returncode == 2, done.stderr[-3000:]
    assert strays_that_ran(log) == []
