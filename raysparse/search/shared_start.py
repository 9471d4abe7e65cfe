"""A post-training sweep's shared start (``train/shared_start.py``) in Ray's object store.

The driver computes it once, before the first trial, and puts it in the object store; the trials
get the one object reference (through ``tune.with_parameters``, wrapped in a list: an ObjectRef
itself cannot be put) and read its arrays where they lie. Its size, and what computing it took,
are printed at start and logged to the parent run (``shared_start_mb``, ``shared_start_s``).
"""

from __future__ import annotations

import resource

import ray

from raysparse.search.spaces import Sweep
from raysparse.train.shared_start import SharedStart, compute_shared_start


def shares_a_start(sweep: Sweep) -> bool:
    """Post-training (``epochs: 0``) trials of one process each, building the config's own model."""
    return (sweep.base.get("epochs") == 0 and sweep.resources.workers == 1 and sweep.objects.loop is None
            and sweep.objects.model is None and sweep.pretrain is None)


def put_shared_start(sweep: Sweep, announce=print) -> list[ray.ObjectRef] | None:
    """``[ref]`` to the sweep's shared start in the object store, or None where trials share none."""
    if not shares_a_start(sweep):
        return None
    start = compute_shared_start(sweep.base)
    if start is None:
        return None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    method = sweep.base["sparsity"]["method"]
    what = f"dense weights and {method}'s calibration statistics" if start.statistics else \
        f"dense weights ({method}'s calibration depends on each trial's pruning: every trial runs its own)"
    announce(f"raysparse: shared start of every trial: {start.nbytes / 2**20:.0f} MB of {what}, computed once "
             f"in {start.seconds:g} s (driver peak {peak_mb:.0f} MB); the trials read it from Ray's object store")
    return [ray.put(start)]


def log_references(parent, start: SharedStart) -> None:
    """``allocations.json`` in the parent run: the masked layers' sizes and the heuristics'
    allocations (uniform, OWL), which the report draws the best searched one against."""
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ALLOCATIONS_FILE
        path.write_text(json.dumps({"layer_sizes": start.layer_sizes, **start.references}, indent=1))
        parent.log_artifact(path)


ALLOCATIONS_FILE = "allocations.json"


def get_shared_start(shared: list[ray.ObjectRef] | None) -> tuple[SharedStart | None, str | None]:
    """The start a trial reads (its arrays views of the store's copy on this node), and its object id."""
    if not shared:
        return None, None
    return ray.get(shared[0]), shared[0].hex()
