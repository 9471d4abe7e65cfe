"""The search service: the only package that imports ray.tune, ray.train and optuna."""

from raysparse.search.result import SweepResult
from raysparse.search.spaces import PythonObjects, Sweep, load_sweep
from raysparse.search.tuner import check_before_start, resume_sweep, run_sweep

__all__ = ["check_before_start", "PythonObjects", "Sweep", "SweepResult", "load_sweep", "resume_sweep", "run_sweep"]
