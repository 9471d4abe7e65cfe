"""A trial's child run, written from the trial process (rank 0 only): epochs, mask events, final artifacts."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow import MlflowClient
from mlflow.entities import RunTag

from raysparse import plots
from raysparse.sparsity.lineage import DELTA, FULL, LineageEncoder
from raysparse.sparsity.masks import MaskEvent, unpack_masks
from raysparse.tracking._client import _children, _log_metric_steps, _log_params, _set_failure_reason, _stage_runs
from raysparse.tracking.naming import (
    EXPLOITS,
    FAILURE_TAG,
    LINEAGE,
    PARENT_TAG,
    PBT_EXPLOITS_TAG,
    PBT_PARAM_TAG,
    PRETRAIN,
    ROLE_TAG,
    STAGE_TAG,
    TRIAL_TAG,
    flatten_metrics,
    flatten_params,
)


@dataclass(frozen=True)
class RecordedTrial:
    status: str
    failure_reason: str | None
    metrics: dict[str, float]  # each metric's last value




def _main_metric(config) -> str:
    """The main metric of the trial's task (the curve of plots/training.png): accuracy, perplexity, ..."""
    from raysparse.tasks import build_task
    from raysparse.tasks.registry import PYTHON

    spec = config.get("task", "classification") if isinstance(config, dict) else "classification"
    try:
        return build_task(spec).main_metric if not (isinstance(spec, dict) and PYTHON in spec) else "loss"
    except Exception:  # a task that cannot be imported here: its run still gets its plots
        return "loss"


class TrialRun:
    """A trial's child run, written from the trial process (rank 0 only)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self._client, self.run_id = client, run_id
        # the full lineage lives here and is re-uploaded whole: artifacts cannot be appended to
        self._workdir = tempfile.TemporaryDirectory(prefix="raysparse-trial-")
        self._lineage = Path(self._workdir.name) / LINEAGE
        self._lineage.parent.mkdir(parents=True)
        self._recorded: set[tuple[str, int]] = set()  # (metric, step) pairs an earlier attempt logged
        self._exploit: dict | None = None  # a PBT exploit whose lineage row is not written yet
        # each row's file is a delta on the row before it or a full snapshot (sparsity/lineage.py);
        # a new TrialRun (a retry) knows no parent, so its first row is full
        self._encoder, self._last_row = LineageEncoder(), None

    @classmethod
    def open(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, *,
             run_name: str, params: dict) -> TrialRun:
        """Continue this trial's run under the parent if one exists (a retry), else create it."""
        client = MlflowClient(tracking_uri)
        tags = {PARENT_TAG: parent_run_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial"}
        existing = _children(client, experiment_id, parent_run_id, trial_id)
        return cls._continue_or_create(client, experiment_id, existing, tags, run_name, params)

    @classmethod
    def open_stage(cls, tracking_uri: str, experiment_id: str, parent_run_id: str, *, run_name: str,
                   params: dict) -> TrialRun:
        """The sweep's dense stage (``pretrain``) as a trial-like child run: continued if an earlier
        driver left one (it died while pretraining), else created. Not a trial: no trial id."""
        client = MlflowClient(tracking_uri)
        tags = {PARENT_TAG: parent_run_id, ROLE_TAG: "stage", STAGE_TAG: PRETRAIN}
        existing = _stage_runs(client, experiment_id, parent_run_id, PRETRAIN)
        return cls._continue_or_create(client, experiment_id, existing, tags, run_name, params)

    @staticmethod
    def recorded_stage(tracking_uri: str, experiment_id: str, parent_run_id: str) -> tuple[str, str] | None:
        """``(run_id, status)`` of the sweep's dense-stage run, if one exists."""
        runs = _stage_runs(MlflowClient(tracking_uri), experiment_id, parent_run_id, PRETRAIN)
        return (runs[0].info.run_id, runs[0].info.status) if runs else None

    @classmethod
    def _continue_or_create(cls, client: MlflowClient, experiment_id: str, existing: list, tags: dict,
                            run_name: str, params: dict) -> TrialRun:
        params = flatten_params(params)
        if existing:
            run = existing[0]
            client.update_run(run.info.run_id, status="RUNNING")
            if FAILURE_TAG in run.data.tags:  # the earlier failure no longer describes this run
                client.delete_tag(run.info.run_id, FAILURE_TAG)
            params = {k: v for k, v in params.items() if k not in run.data.params}  # params are write-once
        else:
            run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        trial = cls(client, run.info.run_id)
        _log_params(client, trial.run_id, params)
        if existing and any(f.path == LINEAGE for f in client.list_artifacts(trial.run_id, "masks")):
            # keep the rows logged before the retry: later uploads overwrite the artifact whole
            Path(client.download_artifacts(trial.run_id, LINEAGE, trial._workdir.name)).replace(trial._lineage)
        if existing:
            history = client.get_metric_history
            trial._recorded = {(key, m.step) for key in existing[0].data.metrics for m in history(trial.run_id, key)}
        return trial

    @staticmethod
    def recorded(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> RecordedTrial | None:
        """What MLflow holds of this trial from an earlier attempt, if anything (read before a retry)."""
        runs = _children(MlflowClient(tracking_uri), experiment_id, parent_run_id, trial_id)
        if not runs:
            return None
        run = runs[0]
        return RecordedTrial(run.info.status, run.data.tags.get(FAILURE_TAG), dict(run.data.metrics))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_epoch(self, metrics: dict, step: int) -> None:
        """All numbers of one epoch at ``step`` in one request; a non-number raises TypeError first.

        A retry redoes the epochs its lost attempt trained after the checkpoint it restarts from
        (all of them without one). MLflow cannot delete a metric's points, so those already in the
        run are not logged again: the retry is bit-identical on them (tests/search/test_faults.py),
        and each epoch appears once in the history."""
        self.log_epochs([(metrics, step)])

    def log_epochs(self, epochs: list[tuple[dict, int]]) -> None:
        """Several epochs (metrics, step) as ``log_epoch`` logs one, in one request where they fit."""
        rows = []
        for metrics, step in epochs:
            flat = {k: v for k, v in flatten_metrics(metrics).items() if (k, int(step)) not in self._recorded}
            if flat:
                rows.append((flat, step))
        if rows:
            _log_metric_steps(self._client, self.run_id, rows)

    def log_mask_events(self, events: list[MaskEvent]) -> None:
        """Each event as a lineage row plus its file: ``masks/step_<step>_<hash>.bin`` (a full
        snapshot) or ``masks/step_<step>_<hash>_<base hash>.delta`` (the positions that changed
        against the row before it, ``base``); ``encoding`` says which (sparsity/lineage.py)."""
        if not events:
            return
        upload = Path(self._workdir.name) / "upload"
        upload.mkdir(exist_ok=True)
        for event in events:
            source = {}
            if event.reason.startswith("resume") and self._exploit is not None:
                # the restore of a PBT exploit: its masks are another trial's; this trial's rows stay
                source, self._exploit = self._exploit, None
                event = dataclasses.replace(event, reason=f"exploit of trial {source['source_trial_id']} at epoch "
                                            f"{source['source_epoch']}")
                self._encoder.restart()
            elif event.reason.startswith("resume"):
                self._forget_lineage_after(event.step, event.weights_hash and (event.hash, event.weights_hash))
            encoded = self._encoder.encode(event.packed)
            row = {"step": event.step, "reason": event.reason, "density": event.density, "churn": event.churn,
                   "hash": event.hash, "parent_hash": event.parent_hash,
                   "file": self._upload(upload, event.step, event.hash, encoded), "encoding": encoded.encoding}
            if encoded.encoding == DELTA:
                row["base"] = self._last_row["file"]
            if event.weights_hash:
                row["weights_hash"] = event.weights_hash
            row.update({k: source[k] for k in ("source_trial_id", "source_run_id", "source_epoch",
                                                "source_masks_hash") if k in source})
            with open(self._lineage, "a") as lineage:
                lineage.write(json.dumps(row) + "\n")
            self._last_row = row
        self._client.log_artifact(self.run_id, str(self._lineage), "masks")

    def _upload(self, folder: Path, step: int, masks_hash: str, encoded) -> str:
        # a delta's name holds its base's hash too: a retry that rewrites a file under the same name
        # writes the same bytes (a full snapshot is its masks, a delta the change between two)
        if encoded.encoding == FULL:
            name = f"step_{step:08d}_{masks_hash[:12]}.bin"
        else:
            name = f"step_{step:08d}_{masks_hash[:12]}_{self._last_row['hash'][:12]}.delta"
        (folder / name).write_bytes(encoded.blob)
        self._client.log_artifact(self.run_id, str(folder / name), "masks")
        (folder / name).unlink()
        return f"masks/{name}"

    def _end_lineage(self, packed_masks: bytes) -> None:
        """The run's last row as a full snapshot, if it holds the final masks as a delta: reading
        the end of a run then needs one file. (The delta file stays: artifacts cannot be deleted.)"""
        lines = self._lineage.read_text().splitlines() if self._lineage.exists() else []
        last = json.loads(lines[-1]) if lines else {}
        if last.get("encoding") != DELTA or last["hash"] != hashlib.sha256(packed_masks).hexdigest():
            return  # already full (or an old run's), or not the final masks: nothing to redo
        upload = Path(self._workdir.name) / "upload"
        upload.mkdir(exist_ok=True)
        encoded = self._encoder.encode(packed_masks, full=True)
        last.pop("base")
        last.update(file=self._upload(upload, last["step"], last["hash"], encoded), encoding=FULL)
        self._lineage.write_text("".join(line + "\n" for line in [*lines[:-1], json.dumps(last)]))
        self._client.log_artifact(self.run_id, str(self._lineage), "masks")
        self._last_row = last

    def exploited(self, record: dict, params: dict) -> None:
        """A PBT exploit: this trial goes on from another trial's checkpoint (``record``: source_trial_id,
        source_run_id, source_epoch, source_masks_hash, ...) with the sampled values ``params``.
        MLflow params are write-once, so the run keeps the ones it started with and records each
        exploit in ``pbt/exploits.json`` and tags: ``raysparse.pbt.exploits`` (how many) and
        ``raysparse.pbt.param.<key>`` (the values it trains with now, which reports read instead
        of the params). Epochs after the source's are logged again: the values at a step logged
        last are this trial's history from then on."""
        exploits, entry = self._recorded_exploits(), json.loads(json.dumps({**record, "params": params}, default=str))
        if not exploits or exploits[-1] != entry:  # a retry restored from the same copy records it once
            exploits.append(entry)
        path = Path(self._workdir.name) / EXPLOITS
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(exploits, indent=2, default=str))
        self._client.log_artifact(self.run_id, str(path), Path(EXPLOITS).parent.as_posix())
        self.set_tags({PBT_EXPLOITS_TAG: str(len(exploits)),
                       **{f"{PBT_PARAM_TAG}{key}": str(value) for key, value in params.items()}})
        self._exploit = record
        self._encoder.restart()
        self._recorded = {(key, step) for key, step in self._recorded if step <= record["source_epoch"]}

    def _recorded_exploits(self) -> list[dict]:
        folder = Path(EXPLOITS).parent.as_posix()
        if not any(f.path == EXPLOITS for f in self._client.list_artifacts(self.run_id, folder)):
            return []
        return json.loads(Path(self._client.download_artifacts(self.run_id, EXPLOITS, self._workdir.name)).read_text())

    def start_over(self) -> None:
        """A retry without a checkpoint trains from epoch 0, as if restored from a checkpoint there
        that holds no lineage: every row of the lost attempt leaves the lineage (the retry logs its
        own, from its initial masks on)."""
        self._forget_lineage_after(-1)

    def _forget_lineage_after(self, step: int, checkpoint: tuple[str, str] | None = None) -> None:
        """A retried trial restarts from its checkpoint at ``step``: rows the lost attempt logged
        after it are redone by the retry, so they leave the lineage (their mask files are
        rewritten under the same names: same step, same hashes). ``checkpoint``: the (masks,
        weights) hashes the retry restored; the rows after the checkpoint's own row go, even those
        at its step (an update on the first step of the next epoch)."""
        self._encoder.restart()  # the next row's parent is a kept row, not the last one written
        if self._lineage.exists():
            lines = self._lineage.read_text().splitlines()
            rows = [json.loads(line) for line in lines]
            # rows up to the last PBT exploit are history a retry after it does not redo
            exploits = [i for i, row in enumerate(rows) if row["reason"].startswith("exploit")]
            kept = exploits[-1] + 1 if exploits else 0
            saved = [i for i, row in enumerate(rows) if i >= kept and row["step"] == step and checkpoint
                     and (row["hash"], row.get("weights_hash")) == checkpoint]
            if saved:
                lines = lines[: saved[-1] + 1]
            else:
                lines = lines[:kept] + [line for line, row in zip(lines[kept:], rows[kept:]) if row["step"] <= step]
            self._lineage.write_text("".join(line + "\n" for line in lines))

    def log_final(self, *, packed_masks: bytes, layer_density: dict[str, float], model_state: dict | None,
                  config: dict, write_program=None, build_info: dict | None = None, example_input=None) -> None:
        """Final masks, per-layer density table, state_dict (weights_only-loadable), config and
        ``plots/`` (density per layer, sparsity and the task's metric over training); no
        ``model/state_dict.pt`` where ``model_state`` is None (a sweep's ``log_weights: false``);
        ``write_program(path)`` may add ``model/model.pt2`` (a torch.export program), ``build_info``
        (what the data told the model factory, import directories: what rebuilding the architecture
        needs) ``model/build.json``, ``example_input`` (two real examples the model takes: what
        ``raysparse deploy`` plans on) ``model/example_input.pt``."""
        out = Path(self._workdir.name) / "final"
        for folder in ("masks", "model", "plots"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        self._end_lineage(packed_masks)
        (out / "masks" / "final.bin").write_bytes(packed_masks)
        masks = unpack_masks(packed_masks)
        with open(out / "layer_density.csv", "w", newline="") as table:
            writer = csv.writer(table)
            writer.writerow(["layer", "density", "kept", "total"])
            for layer, density in layer_density.items():
                mask = masks.get(layer)
                writer.writerow([layer, density, *((int(mask.sum()), mask.numel()) if mask is not None else ("", ""))])
        if model_state is not None:
            state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in model_state.items()}
            torch.save(state, out / "model" / "state_dict.pt")
        (out / "model" / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if build_info is not None:
            (out / "model" / "build.json").write_text(json.dumps(build_info, indent=2))
        if example_input is not None:
            torch.save(example_input, out / "model" / "example_input.pt")
        if write_program is not None:
            write_program(out / "model" / "model.pt2")
        plots.layer_density(layer_density, out / "plots" / "layer_density.png")
        plots.allocation_heatmap(layer_density, out / "plots" / "allocation.png")  # a model of numbered blocks
        main = _main_metric(config)
        plots.training_curves(self.metric_history(("density", f"val_{main}", f"test_{main}")),
                              out / "plots" / "training.png", metric=main)
        self._client.log_artifacts(self.run_id, str(out))
        shutil.rmtree(out)

    def metric_history(self, keys) -> dict[str, list[tuple[int, float]]]:
        """``{metric: [(step, value), ...]}`` as the server holds it: a retried trial's plots
        include the epochs logged before the retry; of a step logged twice (after a PBT exploit
        that went back to an earlier epoch), the value logged last."""
        history = self._client.get_metric_history
        curves = {}
        for key in keys:
            last = {m.step: m.value for m in sorted(history(self.run_id, key), key=lambda m: (m.step, m.timestamp))}
            curves[key] = sorted(last.items())
        return curves

    def finish(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status)
        self._workdir.cleanup()

    def fail(self, reason: str) -> None:
        """Mark the run FAILED with ``reason`` in the ``raysparse.failure_reason`` tag."""
        _set_failure_reason(self._client, self.run_id, reason)
        self.finish("FAILED")

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(f"{exc_type.__name__}: {exc}")
