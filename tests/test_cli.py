"""The CLI as a user runs it: a subprocess, its exit status and what it prints."""

import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import small_config


def raysparse(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "raysparse.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_train_prints_a_line_per_epoch(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(small_config("granet")))
    done = raysparse("train", str(path), "--set", "epochs=3", "--checkpoint-dir", str(tmp_path / "ckpt"))
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1", "2", "3"]
    assert "done: test accuracy" in done.stdout
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()


def test_train_saves_the_model_to_judge_others_against(tmp_path):
    import torch

    from raysparse.zoo import build_model

    dense = small_config("dense")
    dense["epochs"] = 2
    (tmp_path / "dense.yaml").write_text(yaml.safe_dump(dense))
    done = raysparse("train", str(tmp_path / "dense.yaml"), "--save-model", str(tmp_path / "runs" / "dense.pt"))
    assert done.returncode == 0, done.stderr
    state = torch.load(tmp_path / "runs" / "dense.pt", weights_only=True)
    build_model(dense["model"], (1, 8, 8), 10).load_state_dict(state)  # a plain state_dict of the zoo's model
    pruned = small_config("gmp")
    pruned["epochs"] = 2
    pruned["robustness"] = {"corruptions": ["contrast"], "severities": [5], "reference": "runs/dense.pt"}
    (tmp_path / "pruned.yaml").write_text(yaml.safe_dump(pruned))
    judged = raysparse("train", "pruned.yaml", cwd=tmp_path)
    assert judged.returncode == 0, judged.stderr
    line = judged.stdout.splitlines()[-1]
    assert line.startswith("robustness: mean_corrupted_accuracy ") and " mean_excess_error " in line
    assert " noise_agreement " in line


def test_sweep_shows_only_the_keys_the_best_trial_sampled():
    from raysparse.cli import _sampled_lines
    from raysparse.search import load_sweep

    sweep = load_sweep("search_spaces/potential_digits.yaml")
    for method, shown in (("dense", ["  sparsity.method = dense"]),
                          ("gmp", ["  sparsity.final_sparsity = 0.95", "  sparsity.method = gmp"])):
        config = sweep.trial_config({"sparsity.method": method, "sparsity.final_sparsity": 0.95})
        params = {"sparsity.method": method, "sparsity.final_sparsity": 0.95 if method == "gmp" else 0.9}
        assert _sampled_lines(sweep, {"config": config, "params": params}) == shown


def test_bad_config_exits_2_with_one_line_and_no_traceback(tmp_path):
    cfg = small_config("granet")
    cfg["sparsity"]["method"] = "grant"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    done = raysparse("train", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    from raysparse.methods import METHODS

    available = ", ".join(sorted(METHODS))
    assert done.stderr.strip().splitlines() == [
        f"raysparse: error: sparsity.method: unknown method 'grant'; available: {available} (did you mean 'granet'?)"
    ]
    assert done.stdout == ""  # nothing started


def test_missing_file_invalid_yaml_and_bad_override(tmp_path):
    assert "file not found" in raysparse("train", str(tmp_path / "none.yaml")).stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    done = raysparse("train", str(broken))
    assert done.returncode == 2 and "invalid YAML" in done.stderr and "Traceback" not in done.stderr
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(small_config()))
    done = raysparse("train", str(good), "--set", "sparsity.final_sparsity=1.5")
    assert done.returncode == 2 and "sparsity.final_sparsity: got 1.5" in done.stderr


def test_list_shows_every_registry():
    done = raysparse("list")
    assert done.returncode == 0
    for name in ("granet", "rigl", "resnet20", "torchvision:<name>", "digits", "cifar10", "erk", "explicit"):
        assert name in done.stdout


def test_bad_sweep_file_exits_2_and_starts_nothing(tmp_path):
    import os

    sweep = {"name": "x", "base": small_config(), "space": {"optimizer.lr": {"loguniform": [0.2, 0.01]}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    home = tmp_path / "home"
    env = {**os.environ, "RAYSPARSE_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "raysparse.cli", "sweep", str(path)], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2
    expected = "raysparse: error: space.optimizer.lr.loguniform: got [0.2, 0.01]; allowed: low < high"
    assert done.stderr.strip() == expected
    assert not home.exists()  # no MLflow store, no Ray results


BAD_ARGUMENTS = [
    (["train", "{good}", "--set", "model.hidden=[32"],
     r"^raysparse: error: --set model\.hidden: invalid YAML in the value '\[32': .*expected ',' or '\]'"),
    (["train", "{good}", "--set", "...=3"],
     r"^raysparse: error: --set: got key '\.\.\.'; allowed: a dotted config key such as optimizer\.lr$"),
    (["train", "{good}", "--set", "optimizer..lr=0.1"],
     r"^raysparse: error: --set: got key 'optimizer\.\.lr'; allowed: a dotted config key"),
    (["train", "{dir}"], r"^raysparse: error: config: '[^']*' is a directory; allowed: a YAML file$"),
    (["sweep", "{dir}"], r"^raysparse: error: sweep: '[^']*' is a directory; allowed: a YAML file$"),
    (["sweep", "--resume", "../elsewhere"],
     r"^raysparse: error: --resume: got '\.\./elsewhere'; allowed: 1 to 100 ASCII letters, digits, '-' and '_'$"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_ARGUMENTS, ids=["set_unclosed", "set_dots", "set_empty_part",
                                                                  "train_dir", "sweep_dir", "resume_path"])
def test_bad_arguments_exit_2_with_one_line(argv, expected, tmp_path, monkeypatch, capsys):
    """What is not a file of the corpus: --set values and keys, a directory for a file. In this
    process (``main``), for speed: a traceback would fail the test as an exception."""
    from raysparse.cli import main

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(small_config()))
    monkeypatch.setenv("RAYSPARSE_HOME", str(tmp_path / "home"))
    status = main([arg.format(good=good, dir=tmp_path) for arg in argv])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and re.search(expected, err), err
    assert not (tmp_path / "home").exists()
