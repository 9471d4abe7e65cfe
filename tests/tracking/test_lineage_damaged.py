"""Damaged and forged mask lineages on a real MLflow server: each is one line from
``masks_at_step`` / ``lineage_rows`` and from ``raysparse masks`` (exit 2, no traceback: ``main``
runs in this process, so a traceback fails the test), and no file makes the reader allocate more
than the run's own masks take."""

import hashlib
import json
import re
import tracemalloc
import zlib

import pytest
from mlflow import MlflowClient  # tests write damaged files into a run directly

from raysparse.cli import main
from raysparse.errors import ConfigError
from raysparse.sparsity.lineage import MAGIC, VERSION
from raysparse.sparsity.masks import pack_masks
from raysparse.tracking import SweepRun, TrialRun, download_lineage, download_masks, lineage_rows, masks_at_step
from tests.tracking.conftest import CONFIG, masked_model

WEIGHTS = 8 * 16 + 16 * 4  # masked_model's two Linear layers
# a header claiming 10**16 weights and no bits (10**10 once made `raysparse masks` allocate 9.3 GiB; this many,
# a regression fails on a refused allocation instead of exhausting the machine)
FORGED = json.dumps({"names": ["fc"], "shapes": [[10**8, 10**8]]}).encode() + b"\n"
CLAIM, CLAIM_BITS = f"{10**16:,} weights", f"({10**16 // 8:,} bytes of bits)"


def log_run(uri, name, *, finished):
    """A trial's run with rows at steps 10 (full), 20 and 30 (deltas); ``finished``: with its final
    masks (``masks/final.bin``, the last row made full), as a trial that ended."""
    sweep = SweepRun.start(uri, f"damaged-{name}", name, params={}, sweep_text="a: 1\n")
    run = TrialRun.open(uri, sweep.experiment_id, sweep.run_id, "t0", run_name="t0", params={})
    _, masks = masked_model()
    for step in (10, 20, 30):
        new = masks.snapshot()
        new["2"].view(-1)[: step // 10] = False
        masks.update(new, step=step, reason=f"prune at {step}")
    run.log_mask_events(masks.drain_events())
    if finished:
        run.log_final(packed_masks=pack_masks(masks.snapshot()), layer_density=masks.layer_density(), model_state={},
                      config=CONFIG)
    run.finish()
    return run.run_id


def upload(uri, run_id, path, data, tmp_path):
    local = tmp_path / path.rsplit("/", 1)[-1]
    local.write_bytes(data)
    MlflowClient(uri).log_artifact(run_id, str(local), path.rsplit("/", 1)[0])


def write_rows(uri, run_id, rows, tmp_path):
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    upload(uri, run_id, "masks/lineage.jsonl", "".join(line + "\n" for line in lines).encode(), tmp_path)


def file_bytes(uri, run_id, path, tmp_path):
    return (tmp_path / MlflowClient(uri).download_artifacts(run_id, path, str(tmp_path))).read_bytes()


def one_line_from_cli(capsys, *argv):
    status = main(["masks", *argv])
    out, err = capsys.readouterr()
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("raysparse: error: "), err
    return err.strip()


def test_a_row_that_is_not_json_is_one_line_naming_its_line(tracking_uri, tmp_path, capsys):
    run_id = log_run(tracking_uri, "not-json", finished=False)
    rows = download_lineage(tracking_uri, run_id)
    write_rows(tracking_uri, run_id, [*rows, '{"step": 40, "reason": '], tmp_path)  # a torn last line
    expected = rf"run {run_id}, masks/lineage\.jsonl line 4: not a JSON row: '\{{\"step\": 40"
    with pytest.raises(ConfigError, match=expected):
        lineage_rows(tracking_uri, run_id)
    with pytest.raises(ConfigError, match=expected):
        masks_at_step(tracking_uri, run_id, 10)
    for argv in ([], ["--step", "10"]):
        assert re.search(expected, one_line_from_cli(capsys, run_id, "--tracking-uri", tracking_uri, *argv))


def test_a_row_without_a_step_is_one_line_naming_the_field(tracking_uri, tmp_path, capsys):
    run_id = log_run(tracking_uri, "no-step", finished=False)
    rows = download_lineage(tracking_uri, run_id)
    del rows[1]["step"]
    write_rows(tracking_uri, run_id, rows, tmp_path)
    expected = rf"run {run_id}, masks/lineage\.jsonl line 2: the row has no 'step'; a row holds step, reason, "
    with pytest.raises(ConfigError, match=expected):
        masks_at_step(tracking_uri, run_id, 30)
    for argv in ([], ["--step", "30"]):
        assert re.search(expected, one_line_from_cli(capsys, run_id, "--tracking-uri", tracking_uri, *argv))


@pytest.mark.parametrize(("change", "expected"), [
    ({"step": "20"}, r"line 2: step is '20', not an integer"),
    ({"density": None}, r"line 2: density is None, not a number"),
    ({"file": "../../../../etc/passwd"}, r"line 2: file '\.\./\.\./\.\./\.\./etc/passwd'; allowed: masks/<name>"),
    ({"encoding": "zip"}, r"line 2: encoding 'zip'; allowed: full, delta"),
    ({"base": None}, r"line 2: a delta row names the file it applies to in 'base'; this one does not"),
], ids=["step_text", "density_null", "file_outside_masks", "unknown_encoding", "delta_without_base"])
def test_a_row_of_the_wrong_shape_is_one_line_naming_the_field(tracking_uri, tmp_path, capsys, change, expected):
    run_id = log_run(tracking_uri, f"shape-{next(iter(change))}", finished=False)
    rows = download_lineage(tracking_uri, run_id)
    rows[1].update(change)
    write_rows(tracking_uri, run_id, rows, tmp_path)
    with pytest.raises(ConfigError, match=rf"^run: run {run_id}, masks/lineage\.jsonl {expected}$"):
        lineage_rows(tracking_uri, run_id)
    assert re.search(expected, one_line_from_cli(capsys, run_id, "--step", "30", "--tracking-uri", tracking_uri))


def test_a_deleted_delta_file_is_one_line_naming_it(tracking_uri, home, capsys):
    run_id = log_run(tracking_uri, "deleted", finished=False)
    delta = download_lineage(tracking_uri, run_id)[1]["file"]
    (stored,) = home.rglob(f"{run_id}/artifacts/{delta}")  # the server's own copy, deleted for real
    stored.unlink()
    assert masks_at_step(tracking_uri, run_id, 10)  # the rows before it still rebuild
    expected = rf"masks at step 30: {re.escape(delta)} \(step 20\): not among the run's artifacts"
    with pytest.raises(ConfigError, match=expected):
        masks_at_step(tracking_uri, run_id, 30)
    assert re.search(expected, one_line_from_cli(capsys, run_id, "--step", "30", "--tracking-uri", tracking_uri))


@pytest.mark.parametrize("kept", [4, 20, 40], ids=["inside_the_magic", "inside_the_parent_hash", "inside_zlib"])
def test_a_truncated_delta_is_one_line_that_names_each_hash_once(tracking_uri, tmp_path, capsys, kept):
    run_id = log_run(tracking_uri, f"truncated-{kept}", finished=False)
    rows = download_lineage(tracking_uri, run_id)
    whole = file_bytes(tracking_uri, run_id, rows[1]["file"], tmp_path)
    upload(tracking_uri, run_id, rows[1]["file"], whole[:kept], tmp_path)
    err = one_line_from_cli(capsys, run_id, "--step", "20", "--tracking-uri", tracking_uri)
    assert re.search(rf"masks at step 20: {re.escape(rows[1]['file'])} \(step 20\): truncated", err), err
    parent = rows[0]["hash"][:12]  # in the file's name once; a cut digest once printed it as "masks X, not to X"
    assert err.count(parent) == 1 and err.count(run_id) == 1, err


def forge_row(uri, run_id, index, blob, tmp_path):
    """Row ``index`` made a full snapshot in a new file ``blob`` whose hash it logs: only sizes can stop it."""
    rows = download_lineage(uri, run_id)
    name = f"masks/step_{rows[index]['step']:08d}_forged.bin"
    upload(uri, run_id, name, blob, tmp_path)
    rows[index].pop("base", None)
    rows[index].update(file=name, encoding="full", hash=hashlib.sha256(blob).hexdigest())
    write_rows(uri, run_id, rows, tmp_path)
    return name


def refused_within(limit_bytes, call):
    """``call()``'s ConfigError, with the peak of what Python and numpy allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as raised:
            call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit_bytes, f"{peak:,} bytes allocated"
    return str(raised.value)


@pytest.mark.parametrize("finished", [True, False], ids=["bound_by_final_masks", "bound_by_first_snapshot"])
def test_a_forged_snapshot_claiming_more_weights_than_the_run_has_is_refused_before_allocating(
        tracking_uri, tmp_path, capsys, finished):
    run_id = log_run(tracking_uri, f"forged-{finished}", finished=finished)
    name = forge_row(tracking_uri, run_id, 1, FORGED, tmp_path)
    message = refused_within(32 << 20, lambda: masks_at_step(tracking_uri, run_id, 20))
    assert message.endswith(f"masks at step 20: {name} (step 20): the header claims {CLAIM}, "
                            f"more than the run's masks have ({WEIGHTS})"), message
    assert f"claims {CLAIM}" in one_line_from_cli(capsys, run_id, "--step", "20", "--tracking-uri", tracking_uri)


def test_a_forged_first_snapshot_cannot_claim_more_than_its_own_bytes_hold(tracking_uri, tmp_path):
    run_id = log_run(tracking_uri, "forged-first", finished=False)  # no final masks: the first row is the bound
    name = forge_row(tracking_uri, run_id, 0, FORGED, tmp_path)
    message = refused_within(32 << 20, lambda: masks_at_step(tracking_uri, run_id, 10))
    assert f"{name} (step 10): the header claims {CLAIM} {CLAIM_BITS}, but 0 bytes follow it" in message, message


def test_a_zlib_bomb_is_refused_having_inflated_no_more_than_the_runs_masks_take(tracking_uri, tmp_path):
    run_id = log_run(tracking_uri, "bomb", finished=True)
    header = json.dumps({"names": ["fc"], "shapes": [[512 << 20]]}).encode() + b"\n"
    bomb = MAGIC + bytes([VERSION]) + b"F" + zlib.compress(header + bytes(64 << 20), 9)  # 64 MiB in ~64 KB
    assert len(bomb) < 100_000
    forge_row(tracking_uri, run_id, 1, bomb, tmp_path)
    message = refused_within(16 << 20, lambda: masks_at_step(tracking_uri, run_id, 20))
    assert "its zlib stream inflates past" in message and "more than the run's masks take" in message, message


def test_forged_final_masks_are_one_line_from_every_reader(tracking_uri, tmp_path):
    run_id = log_run(tracking_uri, "forged-final", finished=True)
    upload(tracking_uri, run_id, "masks/final.bin", FORGED, tmp_path)
    message = refused_within(32 << 20, lambda: download_masks(tracking_uri, run_id))
    assert message == (f"artifact: masks/final.bin of run {run_id}: the header claims {CLAIM} {CLAIM_BITS}, "
                       "but 0 bytes follow it: truncated or forged")
    with pytest.raises(ConfigError, match=f"masks at step 20: masks/final.bin: the header claims {CLAIM} "):
        masks_at_step(tracking_uri, run_id, 20)
