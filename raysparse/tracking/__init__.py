"""MLflow tracking: the only package that imports mlflow (ARCHITECTURE.md, dependency direction).

``ensure_local_server`` gives the URI every run writes through; ``SweepRun`` is the driver's
parent run, ``TrialRun`` a trial's child run; ``load_sweep`` reads a sweep back for reports.
"""

import os

# trials run unattended: no "View run at" line per run end, no progress bar per download
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A dead server must not hold a trial for minutes (MLflow's default: 7 retries, backoff factor 2,
# 120 s per attempt: about 4 minutes when refused, far more when hung). 6 retries 0, 2, 4, 8, 16
# and 32 s apart outlast a restart of the embedded server (7-20 s here, see tracking/watchdog.py)
# and give up after about a minute; 10 s per attempt. Every process that logs imports this package:
# trial processes on any node get the same bounds, and a user's own settings win.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "6")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0.5")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

from raysparse._lazy import lazy_names  # noqa: E402

# names load when first used: reports and ``raysparse potential`` read runs without torch (the
# trial's run and the masks' readers need it: seconds to import here)
_HOMES = {
    **dict.fromkeys(["flatten_metrics", "flatten_params"], "raysparse.tracking.naming"),
    **dict.fromkeys(["SweepData", "add_run_artifacts", "download_exploits", "download_lineage", "download_masks",
                     "download_model", "download_plots", "load_sweep", "run_params"], "raysparse.tracking.reading"),
    **dict.fromkeys(["check_tracking_uri", "default_home", "ensure_local_server", "stop_local_server"],
                    "raysparse.tracking.server"),
    **dict.fromkeys(["ChildRun", "SweepRun"], "raysparse.tracking.sweep_run"),
    "TrialRun": "raysparse.tracking.trial_run",
    **dict.fromkeys(["lineage_rows", "masks_at_step"], "raysparse.tracking.lineage"),
}

__all__ = [
    "add_run_artifacts",
    "ChildRun",
    "SweepData",
    "SweepRun",
    "TrialRun",
    "check_tracking_uri",
    "default_home",
    "download_exploits",
    "download_lineage",
    "download_masks",
    "download_model",
    "download_plots",
    "ensure_local_server",
    "flatten_metrics",
    "flatten_params",
    "lineage_rows",
    "load_sweep",
    "masks_at_step",
    "run_params",
    "stop_local_server",
]


__getattr__ = lazy_names(globals(), _HOMES)
