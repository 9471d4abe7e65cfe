"""``raysparse sweep --resume NAME`` reads files a crash, a full disk or a hand can damage: the sweep's
saved state and the trials' last checkpoints. A damaged one is one line naming it, before Ray or
MLflow start (Tune would restore the checkpoint in a trial, which then fails with a temp path)."""

import json

import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.search import resume_sweep
from raysparse.search.signed_state import use_key, write_signed
from raysparse.search.tuner import SWEEP_STATE
from raysparse.train import fit
from tests.conftest import small_config
from tests.search.conftest import tiny_sweep


def stopped_sweep(home, name):
    """The files of a sweep whose driver died: its state and one trial's checkpoint (Tune's layout)."""
    experiment = home / "ray_results" / name
    experiment.mkdir(parents=True)
    state = {"sweep": tiny_sweep(name), "tracking_uri": "http://127.0.0.1:9", "parent_run_id": "0" * 32,
             "python_objects": {}}
    write_signed(experiment / SWEEP_STATE, json.dumps(state).encode(), use_key(home))
    checkpoint = experiment / "trial_fn_1a2b3_00000" / "checkpoint_000000"
    fit({**small_config("gmp"), "epochs": 2}, checkpoint_dir=checkpoint)
    return experiment


def test_a_damaged_sweep_state_is_one_line_before_anything_starts(tmp_path):
    experiment = stopped_sweep(tmp_path, "torn")
    text = (experiment / SWEEP_STATE).read_text()
    (experiment / SWEEP_STATE).write_text(text[: len(text) // 2])
    damaged = r"raysparse_sweep\.json' does not match its signature \(changed, torn or not written here\)"
    with pytest.raises(ConfigError, match=damaged) as caught:
        resume_sweep("torn", home=tmp_path)
    assert caught.value.field == "--resume"
    assert not (tmp_path / "mlflow").exists()  # no MLflow server was started


def test_a_tampered_trial_checkpoint_is_one_line_naming_it(tmp_path):
    experiment = stopped_sweep(tmp_path, "tampered")
    path = experiment / "trial_fn_1a2b3_00000" / "checkpoint_000000" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["model"][next(iter(state["model"]))].view(-1)[0] += 1.0
    torch.save(state, path)
    with pytest.raises(ConfigError) as caught:
        resume_sweep("tampered", home=tmp_path)
    assert caught.value.field == "--resume"
    assert caught.value.message == (f"{str(path)!r}: its weights differ from the sha256 fingerprints it was saved with "
                                    "(the file was changed or damaged after it was written); refused")
    assert not (tmp_path / "mlflow").exists()
