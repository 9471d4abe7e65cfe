"""Masks rebuilt from a trial's lineage (deltas on full snapshots) on a real MLflow server: every
step of a GraNet run, a retry's rows, runs logged before deltas existed, and the errors."""

import json

import pytest
import torch
from mlflow import MlflowClient  # tests may read and write MLflow directly to set up old or damaged runs

from raysparse.errors import ConfigError
from raysparse.sparsity.lineage import DELTA, FULL, FULL_EVERY
from raysparse.sparsity.masks import masks_hash, pack_masks, unpack_masks
from raysparse.tracking import download_lineage, masks_at_step
from raysparse.train import fit
from tests.conftest import small_config
from tests.tracking.conftest import CONFIG, masked_model, open_trial, prune


class Recorder:
    """A report callback that logs each epoch's mask events to ``run`` as a trial does, and keeps
    the masks the run held: after each event (by step, the last one there) and at each report."""

    def __init__(self, run, save_at_epoch=None, checkpoint=None, crash_after_epoch=None):
        self.run, self.held, self.at_report = run, {}, []
        self.save_at_epoch, self.checkpoint, self.crash_after_epoch = save_at_epoch, checkpoint, crash_after_epoch

    def __call__(self, metrics, context):
        events = list(context.mask_events)
        if metrics["epoch"] == self.save_at_epoch:
            context.save_checkpoint(self.checkpoint)
            events += context.masks.drain_events()  # the checkpoint's row, as a trial logs it
        self.run.log_mask_events(events)
        for event in events:
            self.held[event.step] = unpack_masks(event.packed)
        if events:
            self.at_report.append((events[-1].step, context.masks.snapshot()))
        if metrics["epoch"] == self.crash_after_epoch:
            raise RuntimeError("node lost")


def granet(**sparsity):
    return small_config("granet", update_frequency=2, **sparsity)  # an update every 2 steps: many rows


def same_masks(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


def lineage_bytes(uri, run_id):
    client, rows = MlflowClient(uri), download_lineage(uri, run_id)
    sizes = {f.path: f.file_size for f in client.list_artifacts(run_id, "masks")}
    return sum(sizes[file] for file in {row["file"] for row in rows}) + sizes["masks/lineage.jsonl"]


def test_every_step_of_a_granet_run_rebuilds_to_the_masks_it_held(sweep):
    run = open_trial(sweep, "t0")
    recorder = Recorder(run)
    fit(granet(), recorder)
    masks = recorder.at_report[-1][1]
    run.log_final(packed_masks=pack_masks(masks), layer_density={}, model_state={}, config=CONFIG)
    run.finish()

    rows = download_lineage(sweep.tracking_uri, run.run_id)
    kinds = [row["encoding"] for row in rows]
    assert len(rows) > FULL_EVERY and kinds[0] == FULL and kinds[-1] == FULL  # the first row and the run's end
    assert DELTA in kinds and "".join("d" if k == DELTA else "f" for k in kinds).find("d" * FULL_EVERY) == -1
    assert all(row["base"] == before["file"] for before, row in zip(rows, rows[1:]) if row["encoding"] == DELTA)
    for step, held in recorder.held.items():
        assert same_masks(masks_at_step(sweep.tracking_uri, run.run_id, step), held), f"step {step}"
    for step, held in recorder.at_report:  # what the run held when it reported, independently of the events
        assert same_masks(masks_at_step(sweep.tracking_uri, run.run_id, step), held)
    # no larger than a full snapshot a row, as every row was logged before deltas
    everything_full = sum(len(pack_masks(m)) for m in recorder.held.values()) * len(rows) / len(recorder.held)
    assert lineage_bytes(sweep.tracking_uri, run.run_id) < everything_full


def test_a_retry_rebuilds_the_rows_it_kept_and_the_ones_it_redid(sweep, tmp_path):
    first = open_trial(sweep, "t0")
    lost = Recorder(first, save_at_epoch=2, checkpoint=tmp_path / "epoch2", crash_after_epoch=3)
    with pytest.raises(RuntimeError, match="node lost"):
        fit(granet(prune_end=4), lost)
    first.fail("node lost")

    again = open_trial(sweep, "t0")  # the retry: a new TrialRun, knowing no parent row
    retried = Recorder(again)
    fit(granet(prune_end=4), retried, resume_from=tmp_path / "epoch2")
    again.finish()

    rows = download_lineage(sweep.tracking_uri, again.run_id)
    resume = next(i for i, row in enumerate(rows) if row["reason"].startswith("resume at epoch 2"))
    assert rows[resume]["encoding"] == FULL and rows[resume - 1]["reason"] == "checkpoint at epoch 2"
    assert all(a["step"] <= b["step"] for a, b in zip(rows, rows[1:]))  # the lost attempt's later rows are gone
    held = {**{s: m for s, m in lost.held.items() if s <= rows[resume]["step"]}, **retried.held}
    assert set(held) == {row["step"] for row in rows}
    for step, masks in held.items():
        assert same_masks(masks_at_step(sweep.tracking_uri, again.run_id, step), masks), f"step {step}"


def test_an_unknown_step_names_it_and_the_logged_steps(sweep):
    _, masks = masked_model()
    run = open_trial(sweep, "t0")
    for step in (5, 9):
        prune(masks, 0.5 - step / 100, step=step, seed=step)
    run.log_mask_events(masks.drain_events())
    with pytest.raises(ConfigError, match=r"^step: run \w+ logged no masks at step 7; logged steps: 5, 9$"):
        masks_at_step(sweep.tracking_uri, run.run_id, 7)
    bare = open_trial(sweep, "t1")
    with pytest.raises(ConfigError, match=f"run {bare.run_id} logged no mask lineage"):
        masks_at_step(sweep.tracking_uri, bare.run_id, 5)
    with pytest.raises(ConfigError, match="no run 'f00d'"):
        masks_at_step(sweep.tracking_uri, "f00d", 5)


def test_a_run_logged_before_deltas_existed_still_rebuilds(sweep, tmp_path):
    """Rows without ``encoding``, every file a bare ``pack_masks`` snapshot: the old format."""
    _, masks = masked_model()
    run = open_trial(sweep, "t0")
    client, rows, held = MlflowClient(sweep.tracking_uri), [], {}
    for step in (3, 6):
        prune(masks, 0.6 - step / 20, step=step, seed=step)
        (event,) = masks.drain_events()
        name = tmp_path / f"step_{step:08d}_{event.hash[:12]}.bin"
        name.write_bytes(event.packed)
        client.log_artifact(run.run_id, str(name), "masks")
        rows.append({"step": step, "reason": event.reason, "density": event.density, "churn": event.churn,
                     "hash": event.hash, "parent_hash": event.parent_hash, "file": f"masks/{name.name}"})
        held[step] = masks.snapshot()
    (tmp_path / "lineage.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    client.log_artifact(run.run_id, str(tmp_path / "lineage.jsonl"), "masks")
    for step, expected in held.items():
        assert same_masks(masks_at_step(sweep.tracking_uri, run.run_id, step), expected)


def test_a_rebuilt_step_whose_hash_differs_from_its_row_is_an_error(sweep, tmp_path):
    _, masks = masked_model()
    run = open_trial(sweep, "t0")
    for step in (1, 2, 3):  # small changes: each a delta on the row before
        new = masks.snapshot()
        new["0"].view(-1)[step] ^= True
        masks.update(new, step=step, reason="nudge")
    run.log_mask_events(masks.drain_events())
    rows = download_lineage(sweep.tracking_uri, run.run_id)
    assert [row["encoding"] for row in rows] == [FULL, DELTA, DELTA]
    rows[1]["hash"] = masks_hash(unpack_masks(pack_masks({"other": torch.ones(3, dtype=torch.bool)})))
    (tmp_path / "lineage.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    MlflowClient(sweep.tracking_uri).log_artifact(run.run_id, str(tmp_path / "lineage.jsonl"), "masks")
    assert masks_at_step(sweep.tracking_uri, run.run_id, 1)  # before the damage: fine
    with pytest.raises(ConfigError, match=r"masks at step 3: .*step 2 .* have hash \w+, not the logged"):
        masks_at_step(sweep.tracking_uri, run.run_id, 3)
