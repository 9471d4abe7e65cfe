"""The sweep's dense stage (``pretrain:``), trained once by the driver before Tune starts.

It trains through the one loop (``raysparse.train.fit``), in the driver's process, and is logged
as a trial is (metrics per epoch, masks, final model and plots) in a child run of the sweep's
parent run with role ``stage`` and ``raysparse.stage: pretrain``. Its state_dict goes to
``<storage_path>/<sweep name>/pretrain/model.pt``, where every trial reads it (on a cluster,
the shared storage). The file is written before the run ends FINISHED, so a FINISHED stage run
with its file there is the mark that the stage is done: a resumed sweep reuses it, and one
whose driver died while pretraining trains it again, in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from raysparse.search.spaces import Sweep
from raysparse.search.trial import _TrialLogger, failure_reason, resolved_config
from raysparse.tracking import SweepRun, TrialRun
from raysparse.train.loop import fit

STAGE_RUN_NAME = "pretrain-dense"


def stage_file(storage_path: str | Path, sweep_name: str) -> Path:
    """Where a sweep's dense stage keeps its trained state_dict."""
    return Path(storage_path) / sweep_name / "pretrain" / "model.pt"


def train_dense_stage(sweep: Sweep, parent: SweepRun, *, verbose: bool = True) -> str:
    """Train the sweep's dense stage into ``sweep.pretrain_file``, unless a finished one is
    there already; returns its run id. Logs ``pretrain_epochs`` on the parent run."""
    path = Path(sweep.pretrain_file)
    recorded = TrialRun.recorded_stage(parent.tracking_uri, parent.experiment_id, parent.run_id)
    if recorded is not None and recorded[1] == "FINISHED" and path.is_file():
        run_id = recorded[0]
        _say(verbose, f"dense stage: reused run {run_id} ({path})")
    else:
        run_id = _train(sweep, parent, path, verbose)
    parent.log_metrics({"pretrain_epochs": sweep.pretrain_epochs})
    return run_id


def _train(sweep: Sweep, parent: SweepRun, path: Path, verbose: bool) -> str:
    config = resolved_config(sweep.pretrain)
    run = TrialRun.open_stage(parent.tracking_uri, parent.experiment_id, parent.run_id, run_name=STAGE_RUN_NAME,
                              params=config)
    run.start_over()  # a stage an earlier driver left unfinished trains again from epoch 0
    logger = _TrialLogger(run, config, sweep.import_dirs)
    _say(verbose, f"dense stage: training {sweep.pretrain_epochs} epochs (run {run.run_id})")
    started = time.monotonic()
    try:
        final = fit(sweep.pretrain, logger.epoch, model=sweep.objects.model, data=sweep.objects.data,
                    task=sweep.objects.task)
        _save_state_dict(logger.last.export_model(), path)
    except (KeyboardInterrupt, SystemExit):  # stopped with the sweep: --resume trains it again
        logger.flush()
        run.finish("KILLED")
        raise
    except Exception as err:
        logger.fail(failure_reason(err))
        raise
    logger.final()  # FINISHED: the file is complete
    metric = sweep.metric  # the sweep's first objective: val_accuracy, val_perplexity, ...
    _say(verbose, f"dense stage: {sweep.pretrain_epochs} epochs in {time.monotonic() - started:.0f}s, "
         f"{metric} {final.get(metric, float('nan')):.4f}, run {run.run_id}")
    return run.run_id


def _save_state_dict(model: torch.nn.Module, path: Path) -> None:
    """Whole or not at all: a driver killed while writing leaves no half file for a trial to load."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = path.with_name(f".{path.name}.tmp")
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, written)
    written.replace(path)


def _say(verbose: bool, line: str) -> None:
    if verbose:
        print(line, flush=True)
