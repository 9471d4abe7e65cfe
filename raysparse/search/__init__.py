"""The search service: the only package that imports ray.tune, ray.train and optuna.

Its names load when first used: a trial's process imports ``raysparse.search.trial`` (Ray unpickles
the trainable there), and the driver's tuner, Optuna and report modules would add seconds to every
new trial process."""

from raysparse._lazy import lazy_names

_HOMES = {
    "SweepResult": "raysparse.search.result", "PythonObjects": "raysparse.search.spaces",
    "Sweep": "raysparse.search.spaces", "load_sweep": "raysparse.search.spaces",
    "check_before_start": "raysparse.search.tuner", "resume_sweep": "raysparse.search.tuner",
    "run_sweep": "raysparse.search.tuner",
}

__all__ = ["check_before_start", "PythonObjects", "Sweep", "SweepResult", "load_sweep", "resume_sweep", "run_sweep"]


__getattr__ = lazy_names(globals(), _HOMES)
