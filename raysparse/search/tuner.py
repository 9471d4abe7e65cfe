"""The driver: Ray Tune + OptunaSearch (+ ASHA) over a validated Sweep, one MLflow parent run.

Order matters for bad input: the sweep is validated and the tracking server checked before Ray
starts or any run is created.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from raysparse import plots
from raysparse.config import get_dotted, load_config
from raysparse.errors import ConfigError, DiskFull, TrackingServerLost, unknown_choice
from raysparse.imports import add_import_dirs
from raysparse.methods.registry import user_methods
from raysparse.report import report_sweep
from raysparse.search import disk_watch
from raysparse.search.disk_safety import check_name
from raysparse.search.driver_lock import check_not_running, driver_lock
from raysparse.search.evolutionary import EvolutionarySampler
from raysparse.search.grid import GridSearcher
from raysparse.search.layerwise import PARAM_PREFIX, levels_of, searched_levels, suggest_layer_densities
from raysparse.search.local_ray import start_local_ray
from raysparse.search.pbt import pbt_param_space, pbt_scheduler, pbt_searcher
from raysparse.search.pretrain import stage_file, train_dense_stage
from raysparse.search.progress import ProgressView, TrialRunCloser
from raysparse.search.result import SweepResult
from raysparse.search.server_watch import StopWhenServerLost, watch_tracking_server
from raysparse.search.settings import check_local_resources, concurrent_trials, local_cpus, trial_resources
from raysparse.search.shared_start import log_references, put_shared_start
from raysparse.search.signed_state import check_signed_dir, current_key, read_verified, use_key, write_signed
from raysparse.search.spaces import PythonObjects, Sweep, grid_points, load_sweep
from raysparse.search.stage import STAGE, STAGE_KEYS, without_stage
from raysparse.search.storage_fs import sweep_storage
from raysparse.search.trial import TrackingTarget, trial_function
from raysparse.search.worker_path import init_ray
from raysparse.tracking import SweepRun, check_tracking_uri, default_home, ensure_local_server
from raysparse.tracking.naming import redact
from raysparse.tracking.store import check_store
from raysparse.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, load_state_dict_file
from raysparse.train.preflight import check_before_training
from raysparse.waiting import still_waiting
from raysparse.zoo.user_code import check_user_code


class _DefineByRun:
    """Optuna define-by-run space: conditional keys are only sampled when their ``when`` holds.
    A class, not a closure: Tune pickles the searcher into its experiment checkpoint."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def __call__(self, trial) -> None:
        sampled: dict = {}
        for key, domain in self.sweep.space.items():
            if domain.active(sampled, self._base_value):
                sampled[key] = domain.decode(domain.suggest(trial, key))
        if self.sweep.layer_sparsity is not None:
            suggest_layer_densities(trial, self.sweep.layer_sparsity)

    def _base_value(self, key: str):
        return get_dotted(self.sweep.base, key)


def _searcher(sweep: Sweep, starts: list[dict[str, float]] = ()) -> OptunaSearch | GridSearcher:
    """``starts``: a per-layer search's heuristic allocations (OWL's levels) to try first, after
    the uniform one."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line says what matters
    metrics = [m for m, _ in sweep.objectives]
    modes = [m for _, m in sweep.objectives]
    kind = sweep.sampler if sweep.sampler != "auto" else ("tpe" if len(metrics) == 1 else "nsga2")
    budget = sweep.num_samples
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=min(10, max(2, budget // 3)))
    elif kind == "nsga2":  # population sized to the budget
        sampler = optuna.samplers.NSGAIISampler(seed=sweep.seed, population_size=max(2, min(50, budget // 2)))
    elif kind == "evolutionary":  # spaces.py checked: layer_sparsity, no other key, one objective
        sizes, density = searched_levels(sweep.base, sweep.layer_sparsity)
        sampler = EvolutionarySampler(sizes, density, sweep.layer_sparsity.bounds, seed=sweep.seed, starts=starts)
    elif kind == "cmaes":  # its mean starts mid-bounds: equal levels, which a per-layer trial rescales to uniform
        sampler = optuna.samplers.CmaEsSampler(seed=sweep.seed)
    elif kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=sweep.seed)
    else:  # every combination once (a dense reference and a sparsity ladder, for prune potential)
        return GridSearcher(grid_points(sweep.space, sweep.base)[: sweep.num_samples], metrics, modes)
    points = None
    if kind != "evolutionary" and starts and not sweep.space:  # the same first trials the evolutionary one makes
        sizes, density = searched_levels(sweep.base, sweep.layer_sparsity)
        points = [{PARAM_PREFIX + g: density for g in sizes}, *starts]
    if len(metrics) == 1:
        return OptunaSearch(_DefineByRun(sweep), metric=metrics[0], mode=modes[0], sampler=sampler,
                            points_to_evaluate=points)
    return OptunaSearch(_DefineByRun(sweep), metric=metrics, mode=modes, sampler=sampler, points_to_evaluate=points)


def _scheduler(sweep: Sweep):
    if sweep.early_stopping.pbt:
        return pbt_scheduler(sweep)
    epochs = sweep.base.get("epochs", 30)
    grace = sweep.grace_period()
    if not sweep.early_stopping.enabled or grace >= epochs:
        return None
    # max_t past the last epoch: at max_t ASHA stops a trial at its final report, killing it
    # before it logs its final masks and model
    return ASHAScheduler(
        time_attr="epoch", metric=sweep.metric, mode=sweep.mode, max_t=epochs + 1,
        grace_period=grace, reduction_factor=sweep.early_stopping.reduction_factor,
    )


SWEEP_STATE = "raysparse_sweep.json"
SNAPSHOT_ENV = "TUNE_GLOBAL_CHECKPOINT_S"
_USER_SNAPSHOT_S = os.environ.get(SNAPSHOT_ENV)  # a user's own setting wins


def snapshot_seconds(num_samples: int) -> float:
    """How often Tune writes the experiment state (which trials exist, the searcher's study): at
    most 1 s old, so a killed driver's sweep resumes without forgetting trials it had started
    (Tune's default is 10 s); but each write is the whole state, every trial's and the study's, as
    indented JSON encoded in Python: with 200 trials it was a quarter of the driver's CPU. Every
    100 trials add a second, so the cost per second stays that of a 100-trial sweep; trials a
    resumed sweep forgets are run again (their runs are discarded, see TrialRunCloser)."""
    return max(1.0, num_samples / 100)


def _set_snapshot_period(sweep: Sweep) -> None:
    os.environ[SNAPSHOT_ENV] = _USER_SNAPSHOT_S or f"{snapshot_seconds(sweep.num_samples):g}"  # read by Tuner.fit


def _start_ray(address: str | None) -> None:
    # keeping few checkpoints per trial forces an experiment snapshot per checkpoint: cheap on local
    # storage, but Tune warns about it on every report
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Ctrl-C stops the sweep at once, as SIGTERM does, and its runs are closed as KILLED (Tune's
    # own handler would end the run as if it had finished, leaving the trials' runs open)
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    # Tune's TensorBoard logger took most of the driver's time per result (~8 ms), on the trial's
    # path since each report waits for the driver; nothing reads its files. The CSV and JSON
    # logs of the trials' results stay: _launch gives them to the Tuner
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not ray.is_initialized():
        if address is None:  # a local runtime bound to loopback; Ray's token auth stays on
            start_local_ray(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            # the driver's directories reach the trials after the standard library (search/worker_path.py)
            init_ray(address, log_to_driver=False, configure_logging=False)
    _stop_on_sigterm()  # ray.init replaced it


def _stop_on_sigterm() -> None:
    """SIGTERM (``raysparse job stop``, ``kill``) stops the driver as Ctrl-C does: the runs are
    closed as KILLED on the way out, and the process exits 143 (``Terminated``).

    Not Ray's own handler: ray.init sets ``sys.exit(15)`` and then its core worker puts abseil's
    failure handler in front of it, which prints a C++ stack for the signal and sets a 3 s alarm
    that aborts the process (exit 134) while the runs are still being closed.

    Ctrl-C raises KeyboardInterrupt as Python's own handler does, and is remembered: one that
    lands where Ray or Tune swallows it (tuner.fit() was seen returning normally) still stops
    the sweep as KILLED, exit 130 (``_fit`` checks ``interrupted``)."""
    if threading.current_thread() is threading.main_thread():  # signal.signal's rule
        signal.signal(signal.SIGTERM, _terminate)
        signal.signal(signal.SIGINT, _interrupt)


class Terminated(SystemExit):
    """The driver got SIGTERM; as an uncaught SystemExit, the process exits 128 + 15."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def _terminate(signum, frame):
    raise Terminated


_interrupted = threading.Event()


def _interrupt(signum, frame):
    _interrupted.set()
    raise KeyboardInterrupt


def run_sweep(
    source: str | Path | dict | Sweep,
    *,
    address: str | None = None,
    home: Path | None = None,
    verbose: bool = True,
    objects: PythonObjects | None = None,
    announce: Callable[[Sweep], None] | None = None,
    **overrides,
) -> SweepResult:
    """Validate, then run the sweep; returns when every trial has finished or stopped.
    ``announce``: called with the sweep once every check passed, before anything starts."""
    _interrupted.clear()
    _stop_on_sigterm()  # from now on: what it starts is stopped and closed on the way out
    sweep = source if isinstance(source, Sweep) else load_sweep(source, objects=objects, **overrides)
    home = Path(home) if home is not None else default_home()
    check_before_start(sweep, address, home)
    if announce is not None:
        announce(sweep)
    use_key(home)  # signs the state a resume loads (search/signed_state.py)
    storage_path = _storage_path(sweep.storage_path, home)
    with driver_lock(Path(storage_path) / sweep.name, sweep.name):  # the one driver of this sweep
        tracking_uri = _start_services(sweep, address, home)
        # the resume state before the parent run: a driver that dies from here on leaves no run
        # RUNNING, and a sweep that `raysparse sweep --resume NAME` starts again or continues
        _write_state(storage_path, sweep, tracking_uri, parent_run_id=None)
        parent = _start_parent(sweep, tracking_uri)
        return _launch(sweep, parent, storage_path, home, verbose, local=address is None)


def _start_parent(sweep: Sweep, tracking_uri: str) -> SweepRun:
    return SweepRun.start(tracking_uri, sweep.experiment_name or sweep.name, sweep.name,
                          params={"sweep": _sweep_params(sweep)}, sweep_text=sweep.source_text)


def _write_state(storage_path: str, sweep: Sweep, tracking_uri: str, *, parent_run_id: str | None) -> None:
    """What `raysparse sweep --resume NAME` needs, next to Tune's own experiment state; replaced
    whole (a driver killed while writing it leaves the previous one)."""
    state = Path(storage_path) / sweep.name / SWEEP_STATE
    state.parent.mkdir(parents=True, exist_ok=True)
    write_signed(state, json.dumps({"sweep": sweep.raw, "tracking_uri": tracking_uri, "parent_run_id": parent_run_id,
                                    "python_objects": sweep.objects.names()}).encode(), current_key())


def _launch(sweep: Sweep, parent: SweepRun, storage_path: str, home: Path, verbose: bool, *,
            restore: Path | None = None, local: bool = False) -> SweepResult:
    """Tune over the sweep in its parent run (a new Tuner, or Tune's saved one from ``restore``).
    Whatever raises on the driver from here on closes the parent run, FAILED with the reason."""
    with parent.closed_on_error(stopped=f"stopped with the sweep (raysparse sweep --resume {sweep.name})",
                                failed=f"continue it with: raysparse sweep --resume {sweep.name}"):
        _write_state(storage_path, sweep, parent.tracking_uri, parent_run_id=parent.run_id)
        if sweep.pretrain is not None:  # once, before any trial: every trial that needs it reads its file
            sweep = dataclasses.replace(sweep, pretrain_file=str(stage_file(storage_path, sweep.name)))
            train_dense_stage(sweep, parent, verbose=verbose)
        # what Tune pickles into its experiment state (searcher, callbacks) gets the sweep without the
        # user's objects: plain pickle cannot hold a closure; only the trainable carries them (cloudpickle)
        described = sweep.without_objects()
        progress = ProgressView(described, enabled=verbose)
        _set_snapshot_period(sweep)
        # a post-training sweep's dense weights and calibration statistics: once, for every trial
        shared = put_shared_start(sweep, announce=lambda line: print(line, flush=True) if verbose else None)
        starts: list[dict[str, float]] = []
        if shared is not None:
            start = ray.get(shared[0])
            parent.log_metrics({"shared_start_mb": start.nbytes / 2**20, "shared_start_s": start.seconds})
            log_references(parent, start)
            if sweep.layer_sparsity is not None:  # a per-layer search tries OWL's allocation early
                starts = [levels_of(a, sweep.layer_sparsity) for n, a in start.references.items() if n != "uniform"]
            del start
        trainable = _trainable(sweep, TrackingTarget(parent.tracking_uri, parent.experiment_id, parent.run_id),
                               storage_path, shared)
        if restore is not None:
            tuner = tune.Tuner.restore(str(restore), trainable, resume_unfinished=True, resume_errored=True,
                                       storage_filesystem=sweep_storage())
            return _fit(tuner, sweep, parent, progress, home)
        pbt = sweep.early_stopping.pbt  # Tune samples PBT's population: no Optuna (see search/pbt.py)
        tuner = tune.Tuner(
            trainable,
            param_space=pbt_param_space(described) if pbt else None,
            tune_config=tune.TuneConfig(
                search_alg=pbt_searcher(described) if pbt else _searcher(described, starts),
                scheduler=_scheduler(sweep),
                # PBT's population is every trial at once, taking turns on the CPUs (Tune's time-multiplexing)
                num_samples=sweep.num_samples,
                max_concurrent_trials=None if pbt else concurrent_trials(sweep, local_cpus() if local else None),
                reuse_actors=True,  # a new trial process re-imports torch & co: seconds per trial here
            ),
            run_config=tune.RunConfig(
                # whole-or-nothing writes, signed state files (search/storage_fs.py)
                name=sweep.name, storage_path=storage_path, storage_filesystem=sweep_storage(), verbose=0,
                callbacks=[progress, TrialRunCloser(parent, described, Path(storage_path) / sweep.name),
                           StopWhenServerLost(sweep.name), CSVLoggerCallback(), JsonLoggerCallback()],
                # PBT restores a trial from another's checkpoint, perhaps after that one wrote a newer one:
                # every checkpoint is kept then (Tune warns that keeping 1 or 2 breaks exploits). Otherwise
                # 2: a driver killed after a trial's newest checkpoint, before the experiment snapshot
                # naming it, resumes from the snapshot's, which must still exist (with 1 it was deleted:
                # "Could not recover from checkpoint as it does not exist on storage anymore", under load)
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if pbt else 2),
                # a trial whose process dies is retried from its last checkpoint, its MLflow run continued
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            ),
        )
        return _fit(tuner, sweep, parent, progress, home)


def resume_sweep(
    name: str, *, address: str | None = None, home: Path | None = None, storage_path: str | None = None,
    verbose: bool = True, objects: PythonObjects | None = None, announce: Callable[[Sweep], None] | None = None,
) -> SweepResult:
    """Continue a sweep whose driver stopped (killed, machine lost): finished trials stay as they
    are, unfinished and failed ones continue from their last checkpoints, in the same MLflow runs.
    Python objects the sweep started with (``objects``) must be given again: only their names
    are in its files, and a resumed sweep must train what it trained."""
    _interrupted.clear()
    _stop_on_sigterm()
    check_name("--resume", name)  # a directory under the storage path, not a path of its own
    home = Path(home) if home is not None else default_home()
    experiment_dir = Path(_storage_path(storage_path, home)) / name
    # first: a driver that is starting it has no state yet, and reading its files takes seconds
    check_not_running(experiment_dir, name)
    if not (experiment_dir / SWEEP_STATE).is_file():
        found = [p.parent.name for p in experiment_dir.parent.glob(f"*/{SWEEP_STATE}")]
        if not found:
            raise ConfigError("--resume", f"no sweep {name!r} in {experiment_dir.parent}; there is none to resume")
        raise unknown_choice("--resume", f"sweep in {experiment_dir.parent}", name, found)
    state = _sweep_state(experiment_dir / SWEEP_STATE, use_key(home))
    objects = objects or PythonObjects()
    for kind, described in state.get("python_objects", {}).items():
        if getattr(objects, kind) is None:
            raise ConfigError(kind, f"sweep {name!r} was started with a Python {kind} ({described}), which its files "
                              f"cannot give back: pass it again, raysparse.resume_sweep({name!r}, {kind}=...)")
    sweep = load_sweep(state["sweep"], objects=objects)
    check_before_start(sweep, address, home)
    with driver_lock(experiment_dir, name):  # a resume while its driver still runs would delete that one's runs
        if announce is not None:
            announce(sweep)  # a resume while its driver still runs would delete that one's runs
        return _resume(sweep, state, experiment_dir, address, home, verbose)


def _resume(sweep: Sweep, state: dict, experiment_dir: Path, address: str | None, home: Path,
            verbose: bool) -> SweepResult:
    tracking_uri = _start_services(sweep, address, home)
    if tracking_uri != state["tracking_uri"]:
        print(f"raysparse: the MLflow server moved from {redact(state['tracking_uri'])} to {redact(tracking_uri)}",
              file=sys.stderr)
    if state.get("parent_run_id") is None:  # its driver stopped before the parent run was created
        parent = _start_parent(sweep, tracking_uri)
    else:
        parent = SweepRun.attach(tracking_uri, sweep.experiment_name or sweep.name, state["parent_run_id"],
                                 resume=True)
    # a driver that stopped before Tune saved its first state leaves nothing to restore: start afresh
    restore = experiment_dir if tune.Tuner.can_restore(str(experiment_dir), storage_filesystem=sweep_storage()) \
        else None
    return _launch(sweep, parent, str(experiment_dir.parent), home, verbose, restore=restore)


def _sweep_state(path: Path, key: bytes) -> dict:
    """What run_sweep saved for a resume, and every trial checkpoint Tune would restore, checked:
    a truncated or tampered file is one line naming it, before Ray or MLflow start. Every state
    file Tune would unpickle is verified first (its signature: search/signed_state.py)."""
    check_signed_dir(path.parent, key)
    try:
        state = json.loads(read_verified(path, key).decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError("--resume", f"{str(path)!r} is damaged (not the JSON raysparse wrote: {err})") from None
    missing = [key for key in ("sweep", "tracking_uri", "parent_run_id") if key not in state] \
        if isinstance(state, dict) else ["mapping"]
    if missing:
        raise ConfigError("--resume", f"{str(path)!r} is damaged (no {', '.join(missing)})")
    for checkpoint in sorted(path.parent.glob(f"*/checkpoint_*/{CHECKPOINT_FILE}")):
        load_checkpoint(checkpoint, "--resume")
    return state


def check_before_start(sweep: Sweep, address: str | None, home: Path | None = None) -> None:
    """What a valid sweep file can still get wrong on this machine: resources, the MLflow server
    (or the embedded one's store), the user's model and data, imported, built and given one
    batch here on the driver, the state_dict files it names, and a zoo model's memory (on a
    cluster each trial checks its own node when it starts). First, that no driver runs it now."""
    check_not_running(Path(_storage_path(sweep.storage_path, Path(home or default_home()))) / sweep.name, sweep.name)
    # a disk already full: one line now, not a sweep that starts and stops
    disk_watch.check_not_full(Path(_storage_path(sweep.storage_path, Path(home or default_home()))), "storage_path")
    disk_watch.check_not_full(Path(home or default_home()), "RAYSPARSE_HOME")
    if address is None:
        check_local_resources(sweep.resources)
    add_import_dirs(sweep.import_dirs)
    if sweep.objects.loop is None:
        base = load_config(without_stage(sweep.base))  # the stage's file: once the driver has trained it
        # a data factory that hangs (a slow disk, a lock) is said, not a silent terminal
        with still_waiting("checking the model and data before start (building them once here)"):
            try:
                check_user_code(base, model=sweep.objects.model, data=sweep.objects.data,
                                task=sweep.objects.task, searched=tuple(sweep.space))
            except ConfigError as err:  # a factory is the sweep file's base.model.factory; an object is model=
                if not err.field.startswith(("model.", "data.")):
                    raise
                raise ConfigError(f"base.{err.field}", err.message) from None
            check_before_training(base, memory=address is None, data=sweep.objects.data, prefix="base.")
        if sweep.pretrain is not None:  # its model is base's: only a file of its own (init_from) is new
            check_before_training(load_config(sweep.pretrain), memory=False, data=sweep.objects.data,
                                  prefix="pretrain.")
        for key in STAGE_KEYS:
            if key in sweep.space and sweep.space[key].kind == "choice":
                for path in sweep.space[key].values:
                    if path not in (None, STAGE):
                        load_state_dict_file(path, f"space.{key}")
    if sweep.tracking_uri is not None:
        check_tracking_uri(sweep.tracking_uri)
    else:
        check_store(Path(home or default_home()).expanduser().resolve() / "mlflow")


def _start_services(sweep: Sweep, address: str | None, home: Path) -> str:
    """Ray, and the MLflow server the sweep names (checked first) or the embedded one."""
    if sweep.tracking_uri is not None:  # checked reachable before: a clear error, nothing begun
        _start_ray(address)
        return sweep.tracking_uri
    with ThreadPoolExecutor(max_workers=1) as pool:  # each takes ~10 s to start here: together
        server = pool.submit(ensure_local_server, home)
        _start_ray(address)
        return server.result()


def _storage_path(configured: str | None, home: Path) -> str:
    return str(Path(configured or home / "ray_results").resolve())


def _trainable(sweep: Sweep, target: TrackingTarget, storage_path: str, shared: list | None = None):
    # the user's methods this driver knows (register_method, import paths) go with every trial
    trainable = tune.with_parameters(
        trial_function, sweep=sweep, target=target, storage_path=storage_path,
        methods=ray.cloudpickle.dumps(user_methods()),  # unpickled in the trial, once its imports work
        shared=shared,
    )
    return tune.with_resources(trainable, trial_resources(sweep.resources))


def _fit(tuner: tune.Tuner, sweep: Sweep, parent: SweepRun, progress: ProgressView, home: Path) -> SweepResult:
    started = time.monotonic()
    # the report at the end draws with pyplot (~1 s to import here): imported while the driver
    # mostly waits on the trials, not after them
    threading.Thread(target=plots.pyplot, name="raysparse-import-pyplot", daemon=True).start()
    status, lost, full = "FAILED", None, None
    embedded_home = home if sweep.tracking_uri is None else None
    store = embedded_home / "mlflow" if embedded_home is not None else None
    if store is not None:
        disk_watch.keep_reserve(store)
    with watch_tracking_server(sweep.name, parent.tracking_uri, embedded_home) as watchdog, \
            disk_watch.DiskWatch([Path(_storage_path(sweep.storage_path, home)) / sweep.name, store]) as disk:
        try:
            grid = tuner.fit()
            if _interrupted.is_set():  # a Ctrl-C that Ray or Tune caught on its way out
                raise KeyboardInterrupt
            result = SweepResult(sweep, grid, parent.tracking_uri, parent.experiment_name, parent.run_id,
                                 time.monotonic() - started)
            parent.log_metrics({"num_trials": len(grid), "sweep_seconds": result.seconds})  # read after finish
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM (raysparse job stop; Terminated)
            status = "KILLED"  # the trials' processes go with the driver: close their runs for them
            if watchdog.lost is None:
                parent.close_running("KILLED", reason=f"stopped with the sweep (raysparse sweep --resume {sweep.name})")
            raise
        except Exception:  # with the server lost or the disk full, whatever failed failed for that
            if watchdog.lost is None and disk.full is None:
                raise
        finally:
            lost, full = watchdog.lost, disk.full
            if lost is None and full is None:  # a lost server's runs stay open: --resume continues them
                parent.finish(status)
    if lost is not None:
        raise TrackingServerLost(f"sweep {sweep.name!r} stopped: {lost}; once it answers, continue the sweep with: "
                                 f"raysparse sweep --resume {sweep.name}")
    if full is not None:
        _stopped_by_full_disk(sweep, parent, full, store)
    result.report = _write_report(result, home / "reports" / sweep.name)
    progress.summary(result)
    return result


def _stopped_by_full_disk(sweep: Sweep, parent: SweepRun, full: str, store: Path | None) -> None:
    """The one line at once; then the runs closed with it as their reason, in the room the
    embedded store's reserve leaves (a store on another disk has its own)."""
    line = (f"sweep {sweep.name!r} stopped: {full}; free space, then continue it with: "
            f"raysparse sweep --resume {sweep.name}")
    print(f"raysparse: {line}", file=sys.stderr, flush=True)
    if store is not None:
        disk_watch.release_reserve(store)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"  # a store that cannot write says so in seconds, not minutes
    try:
        parent.close_running("KILLED", reason=f"stopped: {full}")  # the parent: as the error leaves _launch
    except Exception as err:  # MLflow's errors are many types; the runs stay open and --resume continues them
        print(f"raysparse: the sweep's runs stay RUNNING (closing them failed: {type(err).__name__}); "
              f"--resume continues them", file=sys.stderr)
    raise DiskFull(line)


def _write_report(result: SweepResult, out: Path) -> dict[str, Path] | None:
    """The sweep's HTML report and plots, logged to its parent run. The results are already in
    MLflow: a report that cannot be drawn is a warning (``raysparse report`` redraws it)."""
    try:
        return report_sweep(result.tracking_uri, result.data(), out)
    except Exception as err:  # plotting and artifact uploads raise many types; the sweep itself is done
        print(f"raysparse: the sweep's report was not written ({type(err).__name__}: {err}); "
              f"run: {result.sweep.report_command}", file=sys.stderr)
        return None


def _sweep_params(sweep: Sweep) -> dict:
    return {
        "name": sweep.name, "objectives": dict(sweep.objectives), "num_samples": sweep.num_samples,
        "max_concurrent": sweep.max_concurrent, "seed": sweep.seed, "sampler": sweep.sampler,
        "space": sorted(sweep.space), "workers": sweep.resources.workers, "grace_period": sweep.grace_period(),
        "python_objects": sweep.objects.names(),  # what the sweep file alone cannot rebuild: model=, data=, loop=
        "log_weights": sweep.log_weights,
        **_pbt_params(sweep),
    }


def _pbt_params(sweep: Sweep) -> dict:
    settings = sweep.early_stopping
    if not settings.pbt:
        return {}
    return {"scheduler": "pbt", "pbt": {"interval": settings.interval, "mutate": list(settings.mutate),
                                        "quantile_fraction": settings.quantile_fraction}}
