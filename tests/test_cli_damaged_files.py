"""Files a config or command names that are unsafe, damaged or already used up, through the CLI:
one line naming the field and the file, exit status 2 (0 for a run already finished), before
anything is printed, trained or started. The CLI runs in-process for speed; the last test runs
representative cases as a user does, in processes of their own, side by side."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from raysparse.train import fit
from raysparse.zoo import build_model
from tests.conftest import small_config


def run_in_process(commands: list[list[str]], home: Path, cwd: Path, monkeypatch, capsys):
    from raysparse.cli import main

    monkeypatch.setenv("RAYSPARSE_HOME", str(home))
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    done = []
    for args in commands:
        code = main(args)
        out, err = capsys.readouterr()
        done.append((code, out, err))
    return done


def run_side_by_side(commands: list[list[str]], home: Path, cwd: Path) -> list[tuple[int, str, str]]:
    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    running = [subprocess.Popen([sys.executable, "-m", "raysparse.cli", *args], env=env, cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for args in commands]
    done = []
    for process in running:
        out, err = process.communicate(timeout=180)
        done.append((process.returncode, out, err))
    return done


def assert_one_line(result, *expected: str, status: int = 2) -> None:
    code, out, err = result
    assert code == status, f"exit status {code}; stderr: {err!r}"
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("raysparse: error: "), err
    assert all(text in err for text in expected), err
    assert out == "", f"printed before the error: {out!r}"


class RunsCode:
    """What a hostile state_dict file carries: unpickling it would call ``touch``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_init_from_files_that_are_unsafe_damaged_or_foreign_are_one_line_before_training(tmp_path, monkeypatch,
                                                                                          capsys):
    model = {"name": "mlp", "hidden": [32]}
    good = build_model(model, (1, 8, 8), 10).state_dict()
    marker = tmp_path / "code_ran"
    torch.save({**good, "payload": RunsCode(marker)}, tmp_path / "hostile.pt")
    whole = _saved_bytes(good, tmp_path / "good.pt")
    (tmp_path / "torn.pt").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "notes.pt").write_text("weights: none\n")
    torch.save(build_model({"name": "mlp", "hidden": [16]}, (1, 8, 8), 10).state_dict(), tmp_path / "other.pt")
    cfg = {**small_config("oneshot"), "model": model, "epochs": 2}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    sweep = {"name": "hostile", "base": {**cfg, "init_from": "hostile.pt"},
             "space": {"sparsity.final_sparsity": {"uniform": [0.5, 0.9]}}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    home = tmp_path / "home"

    results = run_in_process(
        [["train", "run.yaml", "--set", f"init_from={name}.pt"] for name in ("hostile", "torn", "notes", "other")]
        + [["train", "run.yaml", "--set", "robustness={corruptions: [contrast], reference: hostile.pt}"],
           ["sweep", "sweep.yaml"]],
        home, tmp_path, monkeypatch, capsys)

    unsafe = "holds objects other than tensors (os.makedirs); refused for safety"
    assert_one_line(results[0], "init_from: '", "hostile.pt' ", unsafe)
    assert_one_line(results[1], "init_from: '", "torn.pt' is not a torch.save file (truncated")
    assert_one_line(results[2], "init_from: '", "notes.pt' is not a torch.save file")
    assert_one_line(results[3], "init_from: '", "other.pt' does not fit the model: ", "size mismatch")
    assert_one_line(results[4], "robustness.reference: '", unsafe)
    assert_one_line(results[5], "base.init_from: '", unsafe)
    assert not any("weights_only" in err for _, _, err in results)  # PyTorch's advice to turn it off: never
    assert not marker.exists()  # the file's code never ran
    assert not home.exists() or not any(home.iterdir())  # no MLflow store, no Ray results


def _saved_bytes(state, path: Path) -> bytes:
    torch.save(state, path)
    return path.read_bytes()


def test_resume_from_a_torn_tampered_or_finished_checkpoint(tmp_path, monkeypatch, capsys):
    cfg = {**small_config("gmp"), "epochs": 2, "measure_latency": False}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    fit(cfg, checkpoint_dir=tmp_path / "ck")
    saved = tmp_path / "ck" / "checkpoint.pt"
    whole = saved.read_bytes()
    (tmp_path / "torn.pt").write_bytes(whole[: len(whole) - 100])
    state = torch.load(saved, weights_only=True)
    state["model"][next(iter(state["model"]))].view(-1)[0] += 1.0  # the fingerprints are the old ones
    torch.save(state, tmp_path / "tampered.pt")
    more = ["--set", "epochs=3"]

    torn, tampered, foreign, finished = run_in_process(
        [["train", "run.yaml", "--resume", "torn.pt", *more], ["train", "run.yaml", "--resume", "tampered.pt", *more],
         ["train", "run.yaml", "--resume", "run.yaml", *more], ["train", "run.yaml", "--resume", "ck"]],
        tmp_path / "home", tmp_path, monkeypatch, capsys)

    assert_one_line(torn, "--resume: 'torn.pt' is not a torch.save file (truncated")
    assert_one_line(tampered, "--resume: 'tampered.pt': its weights differ from the sha256 fingerprints")
    assert_one_line(foreign, "--resume: 'run.yaml' is not a torch.save file")
    code, out, err = finished  # the run is complete: not a failure, and not a traceback either
    assert (code, err) == (0, "") and out == "raysparse: 'ck' holds epoch 2 of 2: nothing left to train\n"


def test_a_damaged_mlflow_store_is_one_line_naming_it_for_every_command_that_serves_it(tmp_path, monkeypatch,
                                                                                       capsys):
    garbage, torn = tmp_path / "garbage", tmp_path / "torn"
    (garbage / "mlflow").mkdir(parents=True)
    (garbage / "mlflow" / "mlflow.db").write_bytes(os.urandom(50_000))  # overwritten
    (torn / "mlflow").mkdir(parents=True)
    _real_sqlite_file(torn / "mlflow" / "mlflow.db", keep=0.5)
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "s", "base": small_config("gmp"),
                                     "space": {"sparsity.final_sparsity": {"uniform": [0.5, 0.9]}}}))
    commands = [["report", "s"], ["potential", "s"], ["ui"], ["sweep", str(sweep)]]

    results = [*run_in_process(commands, garbage, tmp_path, monkeypatch, capsys),
               *run_in_process(commands[:1], torn, tmp_path, monkeypatch, capsys)]

    for result in results[:4]:
        assert_one_line(result, f"the MLflow store {str(garbage / 'mlflow' / 'mlflow.db')!r} is not an SQLite "
                        "database; move it aside (raysparse then starts an empty store) or restore it from a backup")
    assert_one_line(results[4], f"the MLflow store {str(torn / 'mlflow' / 'mlflow.db')!r} is truncated (")
    assert not (garbage / "mlflow" / "server.json").exists() and not (garbage / "ray_results").exists()


def _real_sqlite_file(path: Path, keep: float) -> None:
    """An SQLite database of some pages, then cut to ``keep`` of its size (a disk that filled up)."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, payload BLOB)")
        connection.executemany("INSERT INTO runs (payload) VALUES (?)", [(os.urandom(2000),) for _ in range(200)])
    whole = path.read_bytes()
    path.write_bytes(whole[: int(len(whole) * keep)])


def test_as_a_user_runs_it_in_processes_of_their_own(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"payload": RunsCode(marker)}, tmp_path / "hostile.pt")
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**small_config("oneshot"), "epochs": 2}))
    (tmp_path / "home" / "mlflow").mkdir(parents=True)
    (tmp_path / "home" / "mlflow" / "mlflow.db").write_bytes(b"\0" * 4096)

    hostile, report = run_side_by_side([["train", "run.yaml", "--set", "init_from=hostile.pt"], ["report", "s"]],
                                       tmp_path / "home", tmp_path)

    assert_one_line(hostile, "init_from: 'hostile.pt' holds objects other than tensors (os.makedirs); refused")
    assert "weights_only" not in hostile[2] and not marker.exists()
    assert_one_line(report, "the MLflow store ", "mlflow.db' is not an SQLite database; move it aside")
