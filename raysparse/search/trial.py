"""One trial: the Tune function that trains one configuration.

With one worker the training loop runs in the trial's own process (a TorchTrainer would cost
~30 s per trial here). With more, the trial builds a Ray Train TorchTrainer whose workers run
the same loop under DDP (Train V2: a Tune function builds the trainer). Rank 0 logs to MLflow;
every rank reports its mask hash, and the trial fails loudly if two ranks ever disagree.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ray.exceptions
import ray.train
import torch
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from raysparse.config import get_dotted, load_config
from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs
from raysparse.methods.registry import add_user_methods, user_methods
from raysparse.robustness.evaluate import FINAL_METRICS
from raysparse.search.shared_start import get_shared_start
from raysparse.search.spaces import Sweep
from raysparse.search.trial_times import TrialTimes
from raysparse.search.user_loop import run_loop
from raysparse.search.worker_group import WorkerGroupNotPlaced, not_placed, start_timeout_s
from raysparse.tracking import TrialRun
from raysparse.tracking.naming import FINAL_UPLOAD_TAG, PROCESS_TAG, trial_run_name
from raysparse.train.checkpoint import CHECKPOINT_FILE
from raysparse.train.export import export_program
from raysparse.train.latency import DEPLOYED_METRICS
from raysparse.train.loop import EpochContext, TrainingDiverged, fit
from raysparse.train.memory import release_freed_memory

# failures a retry cannot change: their reasons start so, and a retry fails again at once
DIVERGED, BAD_CONFIG = "diverged: ", "bad config: "
OUT_OF_MEMORY = "out of memory: "
NOT_PLACED = "workers not placed: "  # a DDP trial's, within the bound (see search/worker_group.py)
NOT_RETRIED = (DIVERGED, BAD_CONFIG, NOT_PLACED)
NODE_TAG = "raysparse.node_id"
SHARED_START_TAG = "raysparse.shared_start"  # the object id of the sweep's shared start the trial read
SHARED_READ_ONLY_TAG = "raysparse.shared_start_read_only"  # true: read in place from the object store
ORIGIN_FILE = "origin.json"  # next to CHECKPOINT_FILE: which trial (and run) wrote the checkpoint, at which epoch
# with no scheduler judging trials by their epochs, a trial reports to Tune at most this often
# (and at its last epoch, and with each checkpoint): each report waits for the driver's answer,
# ~30 ms here, a second per 30-epoch digits trial; every epoch still goes to MLflow
REPORT_EVERY_S = 1.0
# a trial's queued epochs go to MLflow together at most this often (see _TrialLogger): on a
# 16-trial digits sweep it cut the server's CPU from 14 to 9 s; read where trials start
LOG_EVERY_S = float(os.environ.get("RAYSPARSE_LOG_EVERY_S", "0.5"))
# A trial's final masks, model and plots upload from its process after it returns, while Tune
# starts the next trial there (its actor is reused): ~0.5 s a digits trial (plots, torch.export,
# HTTP). One at a time, in order; a process that Tune stops finishes them first (_UploadsFirst),
# and the driver waits for them before the sweep returns (progress.TrialRunCloser).
_FINAL_UPLOADS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raysparse-final")


@dataclass(frozen=True)
class TrackingTarget:
    """Where trials log: the parent run of the sweep on a tracking server."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def tune_metrics(metrics: dict, context: EpochContext) -> dict:
    """What Tune sees: the scalar metrics plus the mask hash (per-layer densities go to MLflow)."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    flat["mask_hash"] = context.masks.content_hash()
    # Tune refuses a result without each objective, but the deployed latency and the robustness
    # suite are measured once, on the trained network: NaN until then (Optuna ranks a trial by its
    # last result; MLflow never sees these)
    for name in DEPLOYED_METRICS + FINAL_METRICS:
        flat.setdefault(name, math.nan)
    return flat


class _TrialLogger:
    """Logs one trial's epochs, mask lineage and final artifacts to its MLflow child run.

    Epochs are logged by one background thread, in order, so training never waits for HTTP
    round trips (about 40 ms an epoch here); a logging error surfaces at the next epoch. Epochs
    queued within LOG_EVERY_S go in one request, their mask updates with one lineage upload:
    each request costs the tracking server CPU that the trials beside it would train with.
    """

    def __init__(self, run: TrialRun, config: dict, import_dirs: tuple[str, ...] = (), process: str = "",
                 log_weights: bool = True):
        self.run, self.config, self.import_dirs = run, config, import_dirs
        self.log_weights = log_weights  # false: masks and densities only (a sweep over a pretrained LM)
        self.process = process  # node id and pid: whose death leaves its final uploads undone
        self.last: EpochContext | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raysparse-mlflow")
        self._pending: list[Future] = []
        self._queue: list[tuple[dict | None, list]] = []  # (an epoch's metrics or None, its mask events)
        self._lock, self._hurry = threading.Lock(), threading.Event()
        self._drain_queued, self._last_drain = False, 0.0

    @classmethod
    def open(cls, target: TrackingTarget, trial_id: str, trial_name: str, config: dict,
             import_dirs: tuple[str, ...] = (), *, workers: int = 1, log_weights: bool = True) -> _TrialLogger:
        """The logger of a trial's run (continued on a retry), its config resolved as params; a
        DDP trial's also ``resources.workers``, the number of ranks it trains on."""
        config = resolved_config(config)
        params = config if workers == 1 else {**config, "resources": {"workers": workers}}
        run = TrialRun.open(target.tracking_uri, target.experiment_id, target.parent_run_id, trial_id,
                            run_name=trial_name, params=params)
        context = ray.get_runtime_context()  # where it ran (a retry may land on another node)
        process = f"{context.get_node_id()}:{os.getpid()}"
        run.set_tags({NODE_TAG: context.get_node_id(), "raysparse.host": socket.gethostname(), PROCESS_TAG: process})
        return cls(run, config, import_dirs, process, log_weights)

    def epoch(self, metrics: dict, context: EpochContext) -> None:
        self._collect(wait=False)
        self._enqueue(metrics, context.mask_events)
        self.last = context

    def log_events(self, events: list) -> None:
        """Mask-lineage rows now (in order after the queued epochs), e.g. a checkpoint's."""
        self._enqueue(None, events)
        self.flush()

    def _enqueue(self, metrics: dict | None, events: list) -> None:
        with self._lock:
            self._queue.append((metrics, events))
            if self._drain_queued:  # the queued drain takes this one too
                return
            self._drain_queued = True
        self._pending.append(self._worker.submit(self._drain))

    def _drain(self) -> None:
        """Everything queued by now, in one request for the metrics and one lineage upload."""
        wait = self._last_drain + LOG_EVERY_S - time.monotonic()
        if wait > 0:
            self._hurry.wait(wait)  # flush() does not wait for the interval
        with self._lock:
            queued, self._queue, self._drain_queued = self._queue, [], False
        self._last_drain = time.monotonic()
        self.run.log_epochs([(metrics, metrics["epoch"]) for metrics, _ in queued if metrics is not None])
        self.run.log_mask_events([event for _, events in queued for event in events])

    def _collect(self, wait: bool) -> None:
        """Re-raise the first logging error; with ``wait``, after everything queued is done."""
        if wait:
            futures.wait(self._pending)
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for future in done:
            future.result()

    def flush(self) -> None:
        """Wait until everything queued is in MLflow."""
        self._hurry.set()
        try:
            self._collect(wait=True)
        finally:
            self._hurry.clear()

    def final(self, *, background: bool = False) -> None:
        """The final masks, model and plots, then the run's end. ``background``: uploaded after
        the trial returns; the run, tagged so, stays RUNNING until they are in MLflow (or ends
        FAILED). What runs the network (the export, the output probe) runs here, before: torch.fx
        and torch.export patch every module's call while they trace, beside the next trial's."""
        events = self.last.masks.drain_events()  # updates after the last report (a loop of yours) end the lineage
        plain, example = self.last.export_model(), self.last.example_input
        # what load_model needs to build the architecture again: what the data told the factory
        build = {"import_dirs": list(self.import_dirs), "data_info": _plain(self.last.data_info)}
        program = Path(tempfile.mkdtemp(prefix="raysparse-program-")) / "model.pt2"
        if example is not None and self.log_weights:  # a loop of yours that never ran its model on a batch has none
            _export_or_skip(plain, example, program)
        final = {"events": events, "state": plain.state_dict() if self.log_weights else None, "build": build,
                 "program": program,
                 "example": example}
        self.flush()  # an epoch that could not be logged fails the trial, as it always did
        if not background:
            self._finish(**final)
            return
        # at most one trial's final upload waits in a process: when the server is slower than the
        # trials (a thousand short ones), their models and masks must not pile up in memory
        wait_for_final_uploads()
        self.run.set_tags({FINAL_UPLOAD_TAG: self.process})
        _FINAL_UPLOADS.submit(self._finish_or_fail, final)

    def _finish_or_fail(self, final: dict) -> None:
        try:
            self._finish_and_collect(final)
        except Exception as err:  # uploads raise many types; the run says which, and so does the trial's log
            reason = f"its final artifacts were not all uploaded: {failure_reason(err)}"
            print(f"raysparse: trial run {self.run.run_id}: {reason}", file=sys.stderr, flush=True)
            try:
                self.run.fail(reason)
            except Exception as again:  # the server is gone: the driver finds the run RUNNING and closes it
                print(f"raysparse: trial run {self.run.run_id} could not be marked FAILED ({again})", file=sys.stderr)
            self._worker.shutdown()

    def _finish_and_collect(self, final: dict) -> None:
        self._finish(**final)
        final.clear()
        self.last = None  # the trial's network, masks and run: nothing of it is needed any more
        release_freed_memory()

    def _finish(self, *, events: list, state: dict, build: dict, program: Path, example) -> None:
        masks = self.last.masks
        try:
            self.log_events(events)
            self.run.log_final(
                packed_masks=masks.pack(), layer_density=masks.layer_density(), model_state=state,
                config=self.config, build_info=build, example_input=example,
                write_program=lambda path: shutil.move(program, path) if program.exists() else None,
            )
        finally:
            shutil.rmtree(program.parent, ignore_errors=True)
        self.run.finish()
        self._worker.shutdown()  # actors are reused across trials: leave no idle thread behind

    def fail(self, reason: str) -> None:
        self.flush()
        self.run.fail(reason)
        self._worker.shutdown()

    def abandon(self) -> None:
        """Tune ended this attempt at a report (ASHA stopped it, PBT paused it or made it copy
        another trial): what is queued reaches MLflow before the next attempt reopens the run."""
        try:
            self.flush()
        except Exception as err:  # the attempt is over either way; its next one logs again
            print(f"raysparse: logging of an ended attempt failed ({type(err).__name__}: {err})", flush=True)
        self._worker.shutdown()


def wait_for_final_uploads() -> None:
    """Until every final upload this process queued is done (or failed: its run says so)."""
    _FINAL_UPLOADS.submit(lambda: None).result()


class _UploadsFirst:
    """Mixed into the trial's Tune trainable: a process that Tune stops (the sweep ends, or no
    trial is left for it) first finishes its final uploads."""

    def cleanup(self):
        wait_for_final_uploads()
        super().cleanup()


def resolved_config(config: dict) -> dict:
    """The config with every default filled in, as params and ``model/config.json`` record it: a
    later change of a default cannot silently change a reproduction. A bad one is kept as given."""
    try:
        return load_config(config).to_dict()
    except ConfigError:
        return config


def _plain(info: dict) -> dict:
    """``info`` as JSON (shapes as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in info.items()}


def _export_or_skip(model, example, path) -> None:
    """The program file is a convenience: a model torch.export cannot trace still gets its
    state_dict logged, and the trial says why the program is missing."""
    try:
        export_program(copy.deepcopy(model), example, path)
    except Exception as err:  # torch.export raises many types for untraceable models
        print(f"raysparse: model not exported as a program ({type(err).__name__}: {err})", flush=True)


def _restore_checkpoint(checkpoint, into: str) -> Path | None:
    """The trial's last checkpoint (a retried or resumed trial), copied to ``into``."""
    if checkpoint is None:
        return None
    path = Path(checkpoint.to_directory(into)) / CHECKPOINT_FILE
    return path if path.exists() else None


def _train(config: dict, logger: _TrialLogger | None, report_to, checkpoint, checkpoint_interval: float,
           sweep: Sweep, *, trial_id: str, every_epoch: bool = True, times: TrialTimes | None = None,
           background_uploads: bool = False, shared_start=None) -> None:
    """The loop (the built-in one, or the user's) with a report that logs (rank 0) every epoch
    and reports it to Tune (``every_epoch``; else at most every REPORT_EVERY_S seconds and at
    the last epoch), and checkpoints once ``checkpoint_interval`` seconds have passed since the
    last checkpoint (0: every epoch), under PBT every ``interval`` epochs (its perturbations copy
    those); a loop of yours checkpoints when it passes a state.
    Every checkpoint makes Tune persist it and snapshot the experiment: per epoch, that cost
    more than training a digits trial."""
    objects = sweep.objects
    last_saved, epochs = time.monotonic(), load_config(config).epochs
    every = sweep.early_stopping.interval if sweep.early_stopping.pbt else None
    last_reported = -math.inf

    def report(metrics: dict, context: EpochContext, checkpoint_now: bool | None = None) -> None:
        nonlocal last_saved, last_reported
        ranks = _ranks_with_rank0_masks(context.masks)  # DDP: every rank reports, so every rank takes part
        if ranks is not None:  # the evidence in the trial's run too, not only in Tune's result.json
            metrics = {**metrics, "ranks_with_same_masks": ranks}
        if logger is not None:
            logger.epoch(metrics, context)
        # no checkpoint after the last epoch: a retry then redoes that epoch and the final logging
        due = metrics["epoch"] % every == 0 if every else time.monotonic() - last_saved >= checkpoint_interval
        due = due and metrics["epoch"] < epochs
        if not (due if checkpoint_now is None else checkpoint_now):
            now = time.monotonic()
            if every_epoch or metrics["epoch"] >= epochs or now - last_reported >= REPORT_EVERY_S:
                report_to(tune_metrics(metrics, context), checkpoint=None)
                last_reported = now
            return
        with tempfile.TemporaryDirectory() as directory:
            context.save_checkpoint(directory)
            events = context.masks.drain_events()
            _write_origin(directory, trial_id, logger, metrics["epoch"], events, context)
            # everything queued, then the checkpoint's lineage row (its masks and weights hashes), is
            # in MLflow before Tune persists the checkpoint: a retry's lineage then has no gap
            if logger is not None:
                logger.log_events(events)
            report_to(tune_metrics(metrics, context), checkpoint=ray.train.Checkpoint.from_directory(directory))
        last_saved = last_reported = time.monotonic()

    if times is not None:
        report = times.timed_report(report)

    try:
        with tempfile.TemporaryDirectory() as restored:
            resume_from = _restore_checkpoint(checkpoint, restored)
            if logger is not None and resume_from is None:
                logger.run.start_over()  # no checkpoint is one at epoch 0: a retry's lost rows go
            origin = _read_origin(resume_from)
            if logger is not None and origin is not None and origin["source_trial_id"] != trial_id:
                # a PBT exploit: this trial goes on from another one's weights, optimizer and masks
                values = {k: get_dotted(config, k) for k in sweep.space if get_dotted(config, k) is not None}
                logger.run.exploited(origin, values)
            if objects.loop is not None:
                def train() -> None:
                    run_loop(objects.loop, config, [m for m, _ in sweep.objectives], report, resume_from)
            else:
                def train() -> None:
                    fit(config, report, model=objects.model, data=objects.data, task=objects.task,
                        resume_from=resume_from, shared_start=shared_start)
            if times is None:
                train()
            else:
                times.timed_loop(train)
    except Exception as err:  # the run ends FAILED with the reason; Tune retries what a retry can change
        if logger is not None:
            logger.fail(failure_reason(err))
        raise
    except SystemExit:  # how Tune ends an attempt at a report (see _TrialLogger.abandon)
        if logger is not None:
            logger.abandon()
        raise
    if logger is not None:
        logger.final(background=background_uploads)


def _ranks_with_rank0_masks(masks) -> int | None:
    """Under DDP, how many ranks hold the masks rank 0 holds (two collectives every rank makes, on
    the masks' device, as NCCL needs); None in a trial of one process."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return None
    device = next(iter(masks.masks.values()), torch.empty(0)).device
    mine = torch.tensor(list(bytes.fromhex(masks.content_hash())), dtype=torch.uint8, device=device)
    rank0 = mine.clone()
    dist.broadcast(rank0, src=0)
    same = torch.tensor([int(torch.equal(mine, rank0))], dtype=torch.int64, device=device)
    dist.all_reduce(same)
    return int(same.item())


def _write_origin(directory: str, trial_id: str, logger: _TrialLogger | None, epoch: int, events: list,
                  context: EpochContext) -> None:
    """Who wrote this checkpoint: a trial restored from it that is not its writer was made to copy
    it by PBT (an exploit), and its lineage says where its masks came from."""
    saved = [e for e in events if e.reason.startswith("checkpoint")]
    origin = {
        "source_trial_id": trial_id, "source_run_id": logger.run.run_id if logger is not None else None,
        "source_epoch": int(epoch),
        "source_masks_hash": saved[-1].hash if saved else context.masks.content_hash(),
        "source_weights_hash": saved[-1].weights_hash if saved else "",
    }
    (Path(directory) / ORIGIN_FILE).write_text(json.dumps(origin))


def _read_origin(checkpoint_file: Path | None) -> dict | None:
    """The origin next to a restored checkpoint (none in those written before it existed)."""
    if checkpoint_file is None or not (checkpoint_file.parent / ORIGIN_FILE).is_file():
        return None
    return json.loads((checkpoint_file.parent / ORIGIN_FILE).read_text())


def failure_reason(err: BaseException) -> str:
    """One line for the run's failure reason; it starts with a NOT_RETRIED prefix when a retry
    would fail the same way."""
    if isinstance(err, TrainingDiverged):
        return DIVERGED + str(err)
    if isinstance(err, ConfigError):
        return BAD_CONFIG + str(err)
    if isinstance(err, WorkerGroupNotPlaced):
        return NOT_PLACED + str(err)
    return _memory_reason(err) or f"{type(err).__name__}: {err}"


def _memory_reason(err: BaseException) -> str | None:
    """A trial that ran out of memory, said in words (Ray's own text points into its logs)."""
    text = str(err)
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in text:
        return (f"{OUT_OF_MEMORY}the trial's process could not allocate memory ({type(err).__name__}); "
                "train a smaller model or batch, or run fewer trials at once (max_concurrent)")
    if isinstance(err, ray.exceptions.OutOfMemoryError) or "low on memory" in text:
        return (f"{OUT_OF_MEMORY}Ray killed the trial's process because its node ran low on memory; train a "
                "smaller model or batch, or run fewer trials at once (max_concurrent)")
    if isinstance(err, (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)) and "OOM" in text:
        return ("the trial's process died without a Python error (killed by a signal: most often the kernel's "
                "OOM killer, when the node runs out of memory; its kernel log, dmesg, says)")
    return None


def is_retryable(err: BaseException) -> bool:
    return not isinstance(err, (TrainingDiverged, ConfigError, WorkerGroupNotPlaced))


def run_name_for(trial_id: str, config: dict) -> str:
    """The run's name from the config as given: a bad config still gets its run, to fail in."""
    sparsity = config.get("sparsity") if isinstance(config.get("sparsity"), dict) else {}
    final = sparsity.get("final_sparsity", 0.0)
    final = final if isinstance(final, (int, float)) else 0.0
    return trial_run_name(trial_id, str(sparsity.get("method", "dense")), final)


def trial_function(
    params: dict, *, sweep: Sweep, target: TrackingTarget, storage_path: str, methods: bytes | None = None,
    shared: list | None = None,
) -> None:
    """The Tune trainable (function API); ``methods``: the user's methods the driver knew (pickled);
    ``shared``: ``[ref]`` to a post-training sweep's shared start (``search/shared_start.py``)."""
    add_import_dirs(sweep.import_dirs)  # first: the user's modules import here as on the driver
    # a reused actor's previous trial left its network in reference cycles (a method's callbacks
    # into its run) that only the cyclic collector frees: a 135M LM held ~0.5 GB per dead trial
    release_freed_memory()
    if methods is not None:
        add_user_methods(methods)
    context = tune.get_context()
    config = sweep.trial_config(params)
    trial_id = context.get_trial_id()
    if _already_done(target, trial_id):
        return
    trial_name = run_name_for(trial_id, config)
    if sweep.resources.workers == 1:
        times = TrialTimes(trial_id)
        logger = _TrialLogger.open(target, trial_id, trial_name, config, sweep.import_dirs,
                                   log_weights=sweep.log_weights)
        start, start_id = get_shared_start(shared)
        if start is not None:  # which object it read, and whether in place: the evidence of one copy
            logger.run.set_tags({SHARED_START_TAG: start_id, SHARED_READ_ONLY_TAG: str(start.read_only).lower()})
        # a scheduler (ASHA, PBT) judges a trial at its epochs: it gets them all
        _train(config, logger, tune.report, tune.get_checkpoint(), sweep.checkpoint_interval, sweep,
               trial_id=trial_id, every_epoch=sweep.early_stopping.enabled, times=times, background_uploads=True,
               shared_start=start)
        times.write(torch.get_num_threads())
        return
    _run_data_parallel(config, sweep, target, trial_id, trial_name, storage_path)


trial_function.__mixins__ = (_UploadsFirst,)  # tune.with_parameters and wrap_function carry it


def _already_done(target: TrackingTarget, trial_id: str) -> bool:
    """Settle a trial that an earlier attempt already ended: a finished one (its driver died
    before Tune recorded the end) reports its recorded metrics again; a diverged one fails again
    at once, since retraining from its checkpoint would diverge the same way."""
    recorded = TrialRun.recorded(target.tracking_uri, target.experiment_id, target.parent_run_id, trial_id)
    if recorded is None:
        return False
    reason = recorded.failure_reason or ""
    if reason.startswith(DIVERGED):
        raise TrainingDiverged(f"{reason.removeprefix(DIVERGED)} (not retrained: it would diverge again)")
    if reason.startswith(BAD_CONFIG):
        raise RuntimeError(f"{reason} (not retried: it would fail again)")
    if reason.startswith(NOT_PLACED):  # Tune requeued it already (progress.TrialRunCloser)
        raise WorkerGroupNotPlaced(f"{reason.removeprefix(NOT_PLACED)} (not retried: it would wait as long again)")
    if recorded.status == "FINISHED":
        tune.report(recorded.metrics)
        return True
    return False


def _worker_loop(loop_config: dict) -> None:
    """Runs in each Ray Train worker (torch.distributed is already set up, gloo or nccl)."""
    train_context = ray.train.get_context()
    rank = train_context.get_world_rank()
    target, config, sweep = loop_config["target"], loop_config["config"], loop_config["sweep"]
    add_import_dirs(sweep.import_dirs)
    add_user_methods(loop_config["methods"])
    logger = _TrialLogger.open(target, loop_config["trial_id"], loop_config["trial_name"], config,
                               sweep.import_dirs, workers=train_context.get_world_size(),
                               log_weights=sweep.log_weights) if rank == 0 else None

    def report_to(metrics, checkpoint):  # every rank reports (a barrier); only rank 0 uploads
        ray.train.report(metrics, checkpoint=checkpoint if rank == 0 else None)

    _train(config, logger, report_to, ray.train.get_checkpoint(), sweep.checkpoint_interval, sweep,
           trial_id=loop_config["trial_id"])


class _SameMasksOnAllRanks(TuneReportCallback):
    """Forwards rank 0's metrics to Tune after checking that every rank holds the same masks."""

    def after_report(self, run_context, metrics, checkpoint):
        hashes = {m["mask_hash"] for m in metrics}
        if len(hashes) != 1:
            raise RuntimeError(f"DDP ranks hold different masks: {sorted(hashes)}")
        metrics = [{**metrics[0], "ranks_with_same_masks": len(metrics)}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)


def _run_data_parallel(
    config: dict, sweep: Sweep, target: TrackingTarget, trial_id: str, trial_name: str, storage_path: str
) -> None:
    from ray.train.torch import TorchConfig, TorchTrainer

    res = sweep.resources
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if res.gpus_per_worker else {})}
    start_timeout_s()  # Ray Train's wait for the workers' placement, bounded before fit() hands it on
    scaling = ray.train.ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0,
                                      resources_per_worker=per_worker)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={
            "config": config, "target": target, "trial_id": trial_id, "trial_name": trial_name, "sweep": sweep,
            "methods": ray.cloudpickle.dumps(user_methods()),
        },
        torch_config=TorchConfig(backend="nccl" if res.gpus_per_worker else "gloo"),
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=f"{sweep.name}-{trial_id}-ddp",
            storage_path=storage_path,
            callbacks=[_SameMasksOnAllRanks()],
            # a lost worker restarts the group from the trial's last checkpoint; workers that find no
            # room within the bound end the trial (Ray Train's default is to wait again, forever)
            failure_config=ray.train.FailureConfig(max_failures=sweep.max_failures, controller_failure_limit=0),
        ),
    )
    started = time.monotonic()
    try:
        trainer.fit()
    except Exception as err:  # Ray Train's errors come as ControllerError / WorkerGroupError
        unplaced = not_placed(err, workers=res.workers, per_worker=per_worker, strategy=scaling.placement_strategy,
                              waited_s=time.monotonic() - started)
        if unplaced is None:
            raise
        # no rank 0 ever ran to open the trial's run: the reason goes to it from here
        logger = _TrialLogger.open(target, trial_id, trial_name, config, sweep.import_dirs, workers=res.workers)
        logger.fail(failure_reason(unplaced))
        raise unplaced from None
