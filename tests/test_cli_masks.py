"""``raysparse masks RUN_ID``: a trial's lineage as a table, its masks at a step rebuilt and saved;
bad input exits 2 with one line. In this process (``main``) for speed: a traceback fails the test."""

import re

import pytest
import torch

from raysparse.cli import main
from raysparse.tracking import SweepRun, TrialRun
from tests.tracking.conftest import masked_model


@pytest.fixture(scope="module")
def logged(tracking_uri):
    """A trial's run with a full row (step 10), deltas (20, 30) and a checkpoint row (30); and its masks."""
    sweep = SweepRun.start(tracking_uri, "cli-masks", "cli-masks", params={}, sweep_text="a: 1\n")
    run = TrialRun.open(tracking_uri, sweep.experiment_id, sweep.run_id, "t0", run_name="t0", params={})
    _, masks = masked_model()
    held = {}
    for step in (10, 20, 30):
        new = masks.snapshot()
        new["2"].view(-1)[: step // 10] = False  # a few weights pruned an update
        masks.update(new, step=step, reason=f"prune at {step}")
        held[step] = masks.snapshot()
    masks.mark(step=30, reason="checkpoint at epoch 3")
    run.log_mask_events(masks.drain_events())
    run.finish()
    return tracking_uri, run.run_id, held


def test_without_a_step_it_lists_the_rows(logged, capsys):
    uri, run_id, _ = logged
    assert main(["masks", run_id, "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["step", "encoding", "density", "churn", "hash", "reason"]
    assert [line.split()[:2] for line in lines[1:]] == [["10", "full"], ["20", "delta"], ["30", "delta"],
                                                        ["30", "delta"]]
    assert lines[-1].endswith("checkpoint at epoch 3") and re.search(r" [0-9a-f]{12} ", lines[1])


def test_a_step_is_rebuilt_and_saved_for_torch_load_with_weights_only(logged, tmp_path, capsys):
    uri, run_id, held = logged
    out = tmp_path / "masks_20.pt"
    assert main(["masks", run_id, "--step", "20", "--out", str(out), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert f"run {run_id}, step 20: 2 masks" in printed and str(out) in printed
    saved = torch.load(out, weights_only=True)
    assert saved.keys() == held[20].keys() and all(torch.equal(saved[n], held[20][n]) for n in saved)
    assert all(m.dtype == torch.bool for m in saved.values())


@pytest.mark.parametrize(("args", "expected"), [
    (["--step", "25"], r"^raysparse: error: step: run \w+ logged no masks at step 25; logged steps: 10, 20, 30$"),
    (["--out", "x.pt"], r"^raysparse: error: --out: got 'x\.pt' without --step; allowed: --step N --out FILE$"),
    (["--step", "20", "--out", "{dir}"], r"^raysparse: error: --out: '[^']*' is a directory; allowed: a file path$"),
], ids=["unknown_step", "out_without_step", "out_a_directory"])
def test_bad_input_exits_2_with_one_line(logged, args, expected, tmp_path, capsys):
    uri, run_id, _ = logged
    status = main(["masks", run_id, "--tracking-uri", uri, *[a.format(dir=tmp_path) for a in args]])
    out, err = capsys.readouterr()
    assert status == 2 and len(err.splitlines()) == 1 and re.search(expected, err), err


def test_an_unknown_run_exits_2_naming_it(tracking_uri, capsys):
    assert main(["masks", "0123abcd", "--step", "1", "--tracking-uri", tracking_uri]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "run: no run '0123abcd'" in err
