"""The driver's directories on Ray's workers' ``sys.path``: after the standard library and
site-packages, never before.

Ray 2.60 gives every worker of a job the directory the driver runs in and its script's directory
(``ray/_private/worker.py``, ``connect``: ``JobConfig._py_driver_sys_path``), and each worker puts
them first on its ``sys.path`` when its first task arrives (``ray/_raylet.pyx``,
``maybe_initialize_job_config``: ``sys.path.insert(0, ...)``), before it unpickles anything: a stray
``netrc.py`` or ``colorsys.py`` where the user ran ``raysparse sweep`` replaced the standard module
in every trial. ``init_ray`` keeps them out of the job's config, and each worker appends them itself
as it starts (Ray's ``worker_process_setup_hook``, run before any task), so that a class pickled by
reference from the user's own modules there still imports.
"""

from __future__ import annotations

import os
import sys

import ray
from ray.job_config import JobConfig

DIRS_ENV = "RAYSPARSE_DRIVER_DIRS"  # the driver's directories, os.pathsep-joined, in each worker's environment


def init_ray(address: str, **options) -> None:
    """``ray.init(address=address, **options)`` whose workers find the driver's modules after the
    standard library and site-packages. A Ray Client address (``ray://``) is left as it is: the
    workers of a Ray Client job get none of the client's directories."""
    if address.startswith("ray://"):
        ray.init(address=address, **options)
        return
    runtime_env = {"env_vars": {DIRS_ENV: os.pathsep.join(driver_dirs())},
                   "worker_process_setup_hook": f"{__name__}.append_driver_dirs"}
    ray.init(address=address, job_config=_WithoutDriverDirs(), runtime_env=runtime_env, **options)
    first = list(ray._private.worker.global_worker.core_worker.get_job_config().py_driver_sys_path)
    if first:  # a Ray that sends them otherwise must not put them ahead of the standard library unnoticed
        ray.shutdown()
        raise RuntimeError(f"Ray {ray.__version__} (not the 2.60 this was made for) would put {first} first on "
                           f"every worker's sys.path, ahead of the standard library; stopped it")


def driver_dirs() -> list[str]:
    """What Ray 2.60 would put first: the driver script's directory where the driver has it on
    ``sys.path`` (not for ``python -m`` or an interactive session), then the working directory."""
    import __main__

    dirs = []
    if hasattr(__main__, "__file__"):
        script = os.path.dirname(os.path.realpath(sys.argv[0]))
        if script in sys.path:
            dirs.append(script)
    dirs.append(os.path.abspath(os.curdir))
    return list(dict.fromkeys(dirs))


def append_driver_dirs() -> None:
    """Ray's setup hook in each worker: the driver's directories at the end of ``sys.path``."""
    present = {os.path.realpath(p) for p in sys.path if p}
    for directory in os.environ.get(DIRS_ENV, "").split(os.pathsep):
        if directory and os.path.realpath(directory) not in present:
            sys.path.append(directory)
            present.add(os.path.realpath(directory))


class _WithoutDriverDirs(JobConfig):
    """A job config that sends the workers none of the directories ``ray.init`` adds to it."""

    def _get_proto_job_config(self):
        self._py_driver_sys_path.clear()
        return super()._get_proto_job_config()
