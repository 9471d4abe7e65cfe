"""raysparse command line: train, sweep, submit, job, report, potential, deploy, masks, ui, list.

Bad input exits with status 2 and one line naming the field, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from raysparse.errors import ConfigError, DiskFull, TrackingServerLost, TrainingDiverged


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set optimizer.lr=0.05``: values parsed as YAML scalars/lists, as a config file's are."""
    from raysparse.config import check_dotted_key, set_dotted
    from raysparse.errors import shown
    from raysparse.yaml_input import load_yaml_text

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {shown(item)}")
        check_dotted_key("--set", key)
        set_dotted(raw, key, load_yaml_text(text, f"--set {key}", f"the value {shown(text)}"))
    return raw


def _print_epoch(metrics: dict, main: str) -> None:
    m = metrics
    print(
        f"epoch {m['epoch']:>3}  loss {m['train_loss']:.4f}  val {m[f'val_{main}']:.4f}  "
        f"test {m[f'test_{main}']:.4f}  density {m['density']:.4f}  churn {m['mask_churn']:.4f}  "
        f"lr {m['lr']:.4g}  {m['epoch_seconds']:.2f}s",
        flush=True,
    )


def cmd_train(args) -> int:
    from raysparse.config import load_config, read_yaml
    from raysparse.imports import add_import_dirs
    from raysparse.tasks import build_task
    from raysparse.train import fit
    from raysparse.train.loop import NothingLeftToTrain, resumable_checkpoint
    from raysparse.train.preflight import check_before_training
    from raysparse.waiting import still_waiting
    from raysparse.zoo.user_code import announce_code, check_user_code

    raw = _apply_overrides(read_yaml(args.config), args.set or [])
    announce_code(raw)  # before load_config imports a task or method named by import path
    add_import_dirs([Path(args.config).parent, Path.cwd()])  # where factories, tasks and methods are found
    config = load_config(raw)
    with still_waiting("checking the model and data before training (building them once here)"):
        check_user_code(config)  # a broken factory is one line, before anything is printed
        check_before_training(config)  # init_from / robustness.reference files, memory
    main = build_task(config.task).main_metric  # what the epoch lines show: accuracy, perplexity, ...
    if args.resume:
        try:
            resumable_checkpoint(args.resume, config.epochs, "--resume")
        except NothingLeftToTrain as done:  # the run is complete: what was asked for is there
            print(f"raysparse: {done.message}", flush=True)
            return 0
    print(
        f"training {_block_name(config.model)} on {_block_name(config.data)} with {config.sparsity.method} "
        f"to sparsity {config.sparsity.final_sparsity:.0%} for {config.epochs} epochs",
        flush=True,
    )

    def report(metrics: dict, context) -> None:
        _print_epoch(metrics, main)
        if args.save_model and metrics["epoch"] == config.epochs:  # the trained network, e.g. a robustness.reference
            import torch

            Path(args.save_model).parent.mkdir(parents=True, exist_ok=True)
            torch.save(context.export_model().state_dict(), args.save_model)

    final = fit(config, report, checkpoint_dir=args.checkpoint_dir, resume_from=args.resume)
    print(
        f"done: test {main} {final[f'test_{main}']:.4f} at density {final['density']:.4f} "
        f"(best val {final[f'best_val_{main}']:.4f} at epoch {final['best_epoch']})"
        + (f"; model state_dict: {args.save_model}" if args.save_model else "")
    )
    if config.robustness is not None:
        names = ("mean_corrupted_accuracy", "ece", "mean_excess_error", "noise_agreement", "noise_softmax_distance")
        shown = [f"{n} {final[n]:.4f}" for n in names if n in final]
        shown += [f"shift.{name}.{metric} {value:.4f}" for name, metrics in final.get("shift", {}).items()
                  for metric, value in metrics.items()]  # robustness.datasets: the task's metrics on other data
        print("robustness: " + ", ".join(shown))
    return 0


def _block_name(spec: dict) -> str:
    """What a model or data block names: a zoo entry or a factory of the user's."""
    return str(spec.get("name") or spec.get("factory"))


def _sampled_lines(sweep, best: dict) -> list[str]:
    """``  key = value`` for each space key the best trial sampled (a ``when`` may leave one out)."""
    from raysparse.config import get_dotted

    config = best["config"]
    return [f"  {key} = {best['params'].get(key)}" for key, domain in sorted(sweep.space.items())
            if config is None or domain.active({}, lambda dotted: get_dotted(config, dotted))]


def _announce(sweep) -> None:
    """After every check: nothing is printed for a sweep that cannot start."""
    print(f"sweep {sweep.name!r}: {sweep.num_samples} trials, {sweep.max_concurrent} at a time, objectives "
          + ", ".join(f"{m} ({mode})" for m, mode in sweep.objectives), flush=True)


def cmd_sweep(args) -> int:
    from raysparse.search import load_sweep, resume_sweep, run_sweep
    from raysparse.search.disk_safety import check_name
    from raysparse.tracking.naming import redact

    if (args.space is None) == (args.resume is None):
        raise ConfigError("sweep", "give a sweep file, or --resume NAME to continue a stopped sweep (not both)")
    if args.resume is not None:
        check_name("--resume", args.resume)
        name, start = args.resume, lambda: resume_sweep(
            args.resume, address=args.address, storage_path=args.storage_path,
            announce=lambda sweep: print(f"resuming sweep {sweep.name!r}", flush=True))
    else:
        sweep = load_sweep(args.space, num_samples=args.num_samples, tracking_uri=args.tracking_uri, name=args.name,
                           storage_path=args.storage_path)
        name, start = sweep.name, lambda: run_sweep(sweep, address=args.address, announce=_announce)
    try:
        result = start()
    except (KeyboardInterrupt, SystemExit) as stop:  # Ctrl-C, or SIGTERM (raysparse job stop, kill)
        print(f"raysparse: sweep {name!r} stopped, its open runs closed as KILLED; continue it with: "
              f"raysparse sweep --resume {name}", file=sys.stderr)
        return 130 if isinstance(stop, KeyboardInterrupt) else 128 + signal.SIGTERM  # as a shell reports them
    except TrackingServerLost as err:  # its one line names the server and the resume command
        print(f"raysparse: {err}", file=sys.stderr)
        return 1
    except DiskFull:  # its one line (the path, its free space, the resume command) is printed already
        return 1
    sweep = result.sweep
    trials = result.to_dataframe()
    reported = f"metrics.{sweep.metric}"
    finished = trials[trials["status"] == "FINISHED"]  # best() chooses among them: ASHA's stopped have no network
    if reported in finished.columns and finished[reported].notna().any():
        best = result.best()
        shown = ", ".join(f"{m} {best['metrics'].get(m, float('nan')):.4f}" for m, _ in sweep.objectives)
        print(f"best trial {best['trial_id']}: {shown}")
        for line in _sampled_lines(sweep, best):
            print(line)
        if len(sweep.objectives) > 1:
            front = result.pareto()
            print(f"Pareto front: {len(front)} trials: " + "; ".join(
                f"{row['trial_id']} (" + ", ".join(f"{m} {row[f'metrics.{m}']:.4g}" for m, _ in sweep.objectives) + ")"
                for _, row in front.iterrows()))
    for _, trial in trials[trials["status"] == "FAILED"].iterrows():
        print(f"failed trial {trial['trial_id']}: {trial['failure_reason']}", file=sys.stderr)
    print(f"results: MLflow {redact(result.tracking_uri)}, experiment {result.experiment_name!r}")
    if result.report:
        print(f"report: {result.report['html']}  (also in the sweep's MLflow run, under report/)")
    print(f"browse them:  raysparse ui     |  redraw the report:  {sweep.report_command}")
    return 1 if result.every_trial_failed() else 0  # a partly failed sweep still found something


def cmd_report(args) -> int:
    from raysparse.report import TOP_ROWS, pareto_front, rank_trials, report_sweep, stage_line, sweep_objectives
    from raysparse.tracking import default_home, ensure_local_server, load_sweep

    uri = args.tracking_uri or ensure_local_server(default_home())
    data = load_sweep(uri, args.experiment or args.name, args.name)
    objectives = sweep_objectives(data.params)
    ranked = rank_trials(data.trials, objectives)
    shown = ["trial_id", "status", *[c for c, _ in objectives], "metrics.density", "params.sparsity.method"]
    shown = [c for c in dict.fromkeys(shown) if c in ranked.columns]
    print(f"sweep {data.sweep_name!r} ({data.parent_status}), {len(ranked)} trials, best first:")
    if data.stage is not None:
        print(stage_line(data.stage, objectives))
    print(ranked[shown].head(TOP_ROWS).to_string(index=False))
    if len(ranked) > TOP_ROWS:  # the terminal gets the best; the CSV (written below) has every trial
        print(f"... {len(ranked) - TOP_ROWS} more in {data.sweep_name}_trials.csv")
    if len(objectives) > 1:
        front = pareto_front(data.trials, objectives)
        print(f"Pareto front ({len(front)} trials):")
        print(front[shown].head(TOP_ROWS).to_string(index=False))
        if len(front) > TOP_ROWS:
            print(f"... {len(front) - TOP_ROWS} more in {data.sweep_name}_pareto.csv")
    out = Path(args.out) if args.out else default_home() / "reports" / data.sweep_name
    paths = report_sweep(uri, data, out, delta=args.delta)
    print(f"report: {paths['html']}")
    print("written: " + ", ".join(p.name for p in paths.values()) + f" in {out} (and logged to the sweep's parent run)")
    return 0


def cmd_potential(args) -> int:
    from raysparse import plots
    from raysparse.report import sweep_potential_rows
    from raysparse.robustness.potential import potential_table, prune_potential
    from raysparse.tracking import SweepRun, default_home, ensure_local_server, load_sweep

    uri = args.tracking_uri or ensure_local_server(default_home())
    data = load_sweep(uri, args.experiment or args.name, args.name)
    table = potential_table(prune_potential(sweep_potential_rows(data.trials, data.stage), delta=args.delta))
    print(f"prune potential (delta {args.delta:g}) of sweep {data.sweep_name!r}, distribution x method:")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    out = Path(args.out) if args.out else default_home() / "reports" / data.sweep_name
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{data.sweep_name}_potential.csv", out / f"{data.sweep_name}_potential.png"]
    table.to_csv(paths[0])
    plots.potential(table, paths[1], title=f"{data.sweep_name}: prune potential (delta {args.delta:g})")
    parent = SweepRun.attach(uri, data.experiment_name, data.parent_run_id)
    for path in paths:
        parent.log_artifact(path, "report")
    print("written: " + ", ".join(str(p) for p in paths) + " (and logged to the sweep's parent run)")
    return 0


def cmd_deploy(args) -> int:
    import json
    import os
    import tempfile

    import torch

    from raysparse.deployment import deploy, save_deployed
    from raysparse.tracking import add_run_artifacts, default_home, download_model, ensure_local_server
    from raysparse.tracking.naming import redact
    from raysparse.train.export import load_trained

    if args.batch_size < 1:
        raise ConfigError("--batch-size", f"got {args.batch_size}; allowed: an integer >= 1")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ensure_local_server(default_home())
    with tempfile.TemporaryDirectory() as folder:
        downloaded = download_model(uri, args.run_id, Path(folder) / "download")
        network = load_trained(downloaded)
        if isinstance(network, torch.fx.GraphModule):  # its torch.export program: no layers left to swap
            raise ConfigError("run", f"run {args.run_id}'s network cannot be built again here (a compacted or "
                              "custom architecture); deploy it from Python: raysparse.deploy(network, example)")
        # what it plans on: the two real examples the trial logged (token ids, images, keyword
        # tensors), repeated to the batch; a classifier's run from before they were logged
        # recorded only its input_shape: random images of it
        saved, build = downloaded / "example_input.pt", downloaded / "build.json"
        recorded = json.loads(build.read_text()) if build.is_file() else {}
        input_shape = recorded.get("input_shape")
        if saved.is_file():
            try:
                example = torch.load(saved, map_location="cpu", weights_only=True)
            except Exception as error:  # whatever torch.load refuses: a damaged file
                raise ConfigError("run", f"run {args.run_id}'s model/example_input.pt does not load: "
                                  f"{type(error).__name__}: {error}") from None
            tensors = list(example.values()) if isinstance(example, dict) else [example]
            if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors):
                raise ConfigError("run", f"run {args.run_id}'s model/example_input.pt holds "
                                  f"{type(example).__name__}; allowed: a tensor or a dict of tensors, "
                                  "examples along the first dimension")
        elif input_shape is not None:
            example = torch.randn(args.batch_size, *input_shape)
        else:
            raise ConfigError("run", f"run {args.run_id} recorded no example input (model/example_input.pt) to "
                              "deploy on; deploy it from Python: raysparse.deploy(network, example)")
        deployed = deploy(network, example, batch_size=args.batch_size)
        out = Path(folder) / "deployed"
        out.mkdir()
        # its spec as the run built it: what the data told the model factory (runs before tasks
        # existed recorded two keys of it)
        spec = json.loads((downloaded / "config.json").read_text()).get("model") or {}
        info = recorded.get("data_info", {k: recorded[k] for k in ("input_shape", "num_classes") if k in recorded})
        save_deployed(deployed, out / "model.pt", model=spec, data_info=info)
        (out / "plan.txt").write_text(str(deployed.plan) + "\n")
        add_run_artifacts(uri, args.run_id, out, "deployed")
    yours = spec.get("python", spec.get("factory")) if isinstance(spec, dict) else None
    how = f"raysparse.load_deployed(path, model=<{yours}>)" if yours else "raysparse.load_deployed(path)"
    print(f"run {args.run_id} deployed for batch {args.batch_size}:")
    print(deployed.plan)
    print(f"logged to the run ({redact(uri)}) as deployed/model.pt and deployed/plan.txt; load it with {how}")
    return 0


def cmd_masks(args) -> int:
    import os

    from raysparse.tracking import default_home, ensure_local_server, lineage_rows, masks_at_step

    if args.out and args.step is None:
        raise ConfigError("--out", f"got {args.out!r} without --step; allowed: --step N --out FILE")
    if args.out and Path(args.out).is_dir():
        raise ConfigError("--out", f"{args.out!r} is a directory; allowed: a file path")
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ensure_local_server(default_home())
    if args.step is None:
        rows = lineage_rows(uri, args.run_id)  # all read and checked first: a damaged row prints no table
        print(f"{'step':>8}  {'encoding':<8}  {'density':>8}  {'churn':>8}  {'hash':<12}  reason")
        for row in rows:
            print(f"{row['step']:>8}  {row.get('encoding', 'full'):<8}  {row['density']:>8.4f}  {row['churn']:>8.4f}  "
                  f"{row['hash'][:12]:<12}  {row['reason']}")
        return 0
    masks = masks_at_step(uri, args.run_id, args.step)
    kept, total = sum(int(m.sum()) for m in masks.values()), sum(m.numel() for m in masks.values())
    print(f"run {args.run_id}, step {args.step}: {len(masks)} masks, density {kept / total:.4f} "
          "(rebuilt from the lineage, hash checked)")
    for name, mask in masks.items():
        print(f"  {name:<30} {tuple(mask.shape)!s:<20} density {float(mask.float().mean()):.4f}")
    if args.out:
        import torch

        out = Path(args.out)
        torch.save({name: mask.clone() for name, mask in masks.items()}, out)
        print(f"written: {out} (torch.load(path, weights_only=True) gives layer -> bool tensor)")
    return 0


def cmd_submit(args) -> int:
    from raysparse.search import jobs, load_sweep
    from raysparse.tracking.naming import redact

    sweep = load_sweep(args.space, num_samples=args.num_samples, tracking_uri=None, name=args.name)  # validate here
    options = {"--num-samples": args.num_samples, "--name": args.name, "--tracking-uri": args.tracking_uri,
               "--storage-path": args.storage_path}
    entrypoint = jobs.sweep_entrypoint(Path(args.space), Path(args.working_dir), options)
    job_id = jobs.submit(args.address, entrypoint, Path(args.working_dir), name=sweep.name)
    print(f"submitted sweep {sweep.name!r} as job {job_id}: {redact(entrypoint)}", flush=True)
    print(f"  raysparse job logs {job_id}   |   raysparse job stop {job_id}", flush=True)
    if args.no_follow:
        return 0
    try:
        final = jobs.follow(args.address, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; the job goes on (raysparse job stop {job_id})", file=sys.stderr)
        return 130
    print(f"job {job_id}: {final}")
    return 0 if final == "SUCCEEDED" else 1


def cmd_job(args) -> int:
    from raysparse.search import jobs

    if args.action == "status":
        print(jobs.status(args.address, args.job_id))
    elif args.action == "logs":
        if args.follow:
            return 0 if jobs.follow(args.address, args.job_id) == "SUCCEEDED" else 1
        print(jobs.logs(args.address, args.job_id), end="")
    else:
        print(f"job {args.job_id}: {jobs.stop(args.address, args.job_id)}")
    return 0


def cmd_ui(args) -> int:
    from raysparse.tracking import default_home, ensure_local_server, stop_local_server

    if args.stop:
        print("stopped" if stop_local_server(default_home()) else "no server was running")
        return 0
    host = "127.0.0.1" if args.host == "localhost" else args.host
    # a server bound beyond loopback, started now or running already, is named on stderr there
    uri = ensure_local_server(default_home(), port=args.port, host=host)
    print(f"MLflow UI: {uri}  (store: {default_home() / 'mlflow'}; stop it with: raysparse ui --stop)")
    return 0


def cmd_list(args) -> int:
    from raysparse.methods import METHODS
    from raysparse.sparsity.distributions import DISTRIBUTIONS
    from raysparse.zoo import DATASETS, MODELS

    rows = {
        "methods": [f"{n:<9} {METHODS[n].paper}" for n in sorted(METHODS)],
        "models": MODELS.names() + ["torchvision:<name>"],
        "datasets": DATASETS.names(),
        "distributions": sorted(DISTRIBUTIONS),
    }
    for title, items in rows.items():
        print(f"{title}:")
        for item in items:
            print(f"  {item}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysparse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one sparse network from a config file")
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint file or dir")
    train.add_argument("--save-model", metavar="PATH", help="write the trained model's state_dict (torch.save)")
    train.set_defaults(handler=cmd_train)
    sweep = sub.add_parser("sweep", help="search sparse-training configs with Ray Tune + Optuna")
    sweep.add_argument("space", nargs="?", help="sweep file (see search_spaces/)")
    sweep.add_argument("--resume", metavar="NAME", help="continue sweep NAME whose driver stopped (killed, lost)")
    sweep.add_argument("--storage-path", help="Ray results: checkpoints, experiment state (shared on a cluster)")
    sweep.add_argument("--address", help="an existing Ray cluster (default: a local runtime)")
    sweep.add_argument("--num-samples", type=int, help="number of trials")
    sweep.add_argument("--tracking-uri", help="a shared MLflow server (default: the embedded one)")
    sweep.add_argument("--name", help="sweep (and MLflow experiment) name")
    sweep.set_defaults(handler=cmd_sweep)
    submit = sub.add_parser("submit", help="run a sweep on a Ray cluster as a job (Ray Jobs API)")
    submit.add_argument("space", help="sweep file, inside --working-dir")
    submit.add_argument("--address", help="the cluster's dashboard (default http://127.0.0.1:8265)")
    submit.add_argument("--working-dir", default=".", help="uploaded with the job (default: this directory)")
    submit.add_argument("--tracking-uri", help="an MLflow server every node reaches")
    submit.add_argument("--storage-path", help="shared storage for checkpoints and the experiment state")
    submit.add_argument("--num-samples", type=int, help="number of trials")
    submit.add_argument("--name", help="sweep (and MLflow experiment) name")
    submit.add_argument("--no-follow", action="store_true", help="return after submitting")
    submit.set_defaults(handler=cmd_submit)
    job = sub.add_parser("job", help="a submitted sweep: status, logs, stop")
    job.add_argument("action", choices=["status", "logs", "stop"])
    job.add_argument("job_id")
    job.add_argument("--address", help="the cluster's dashboard (default http://127.0.0.1:8265)")
    job.add_argument("--follow", action="store_true", help="logs: keep printing until the job ends")
    job.set_defaults(handler=cmd_job)
    report = sub.add_parser("report", help="an HTML report: ranked trials, Pareto front, prune potential, plots")
    report.add_argument("name", help="sweep name")
    report.add_argument("--experiment", help="MLflow experiment (default: the sweep name)")
    report.add_argument("--tracking-uri", help="MLflow server (default: the embedded one)")
    report.add_argument("--out", help="directory for the report files")
    report.add_argument("--delta", type=float, default=0.005, help=(
        "prune potential's tolerance on the task's main metric: accuracy allowed below dense (0.005: half a "
        "point); for a lower-is-better metric, the relative increase allowed above it: perplexity <= dense * "
        "(1 + delta)"))
    report.set_defaults(handler=cmd_report)
    potential = sub.add_parser("potential", help="prune potential per distribution and method of a finished sweep")
    potential.add_argument("name", help="sweep name (it needs a dense trial or a dense stage, pretrain:)")
    potential.add_argument("--delta", type=float, default=0.005, help=(
        "tolerance on the task's main metric: accuracy allowed below the dense reference (0.005: half a point); "
        "for a lower-is-better metric, the relative increase allowed above it: perplexity <= dense * (1 + delta)"))
    potential.add_argument("--experiment", help="MLflow experiment (default: the sweep name)")
    potential.add_argument("--tracking-uri", help="MLflow server (default: the embedded one)")
    potential.add_argument("--out", help="directory for the table and plot")
    potential.set_defaults(handler=cmd_potential)
    deploy = sub.add_parser("deploy", help="a trial's network on the fastest (sparse) kernels, logged to its run")
    deploy.add_argument("run_id", help="the trial's MLflow run id (see raysparse report)")
    deploy.add_argument("--batch-size", type=int, default=1, help="the batch size it will serve (default 1)")
    deploy.add_argument("--tracking-uri", help="MLflow server (default: the embedded one)")
    deploy.set_defaults(handler=cmd_deploy)
    masks = sub.add_parser("masks", help="a trial's mask lineage, or its masks at a logged step")
    masks.add_argument("run_id", help="the trial's MLflow run id (see raysparse report)")
    masks.add_argument("--step", type=int, help="rebuild the masks at this step (default: list the lineage)")
    masks.add_argument("--out", help="with --step: save them (torch.save of layer -> bool tensor)")
    masks.add_argument("--tracking-uri", help="MLflow server (default: the embedded one)")
    masks.set_defaults(handler=cmd_masks)
    ui = sub.add_parser("ui", help="start the MLflow UI on the embedded store and print its URL")
    ui.add_argument("--port", type=int, help="port (default: a free one)")
    ui.add_argument("--host", help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    ui.add_argument("--stop", action="store_true", help="stop the embedded server")
    ui.set_defaults(handler=cmd_ui)
    listing = sub.add_parser("list", help="registered methods, models, datasets, distributions")
    listing.set_defaults(handler=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"raysparse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raysparse: interrupted", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"raysparse: training stopped: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        server = sys.modules.get("raysparse.tracking.server")  # loaded by whichever command started one
        if server is None or not isinstance(err, server.ServerStartError):
            raise
        print(f"raysparse: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
