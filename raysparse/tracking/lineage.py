"""Rebuilding a trial's masks at any logged step from its lineage (deltas on full snapshots)."""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysparse.errors import ConfigError
from raysparse.tracking.naming import LINEAGE, redact

if TYPE_CHECKING:
    import torch

def masks_at_step(tracking_uri: str, run_id: str, step: int) -> dict[str, torch.Tensor]:
    """The masks (layer -> bool tensor) a trial held at ``step``, after the last row logged there
    (after a PBT exploit went back to an earlier epoch, this trial's history from then on).

    Walks back from that row to the nearest full snapshot, applies the deltas after it, and
    checks every rebuilt row against its logged hash. Reads runs logged before deltas existed
    (rows without ``encoding``: every file a full snapshot)."""
    from raysparse.sparsity.masks import unpack_masks  # torch: not for reports

    lineage = _Lineage(tracking_uri, run_id)
    rows = lineage.rows()
    at = [i for i, row in enumerate(rows) if row["step"] == step]
    if not at:
        steps = ", ".join(str(s) for s in dict.fromkeys(row["step"] for row in rows))
        raise ConfigError("step", f"run {run_id} logged no masks at step {step}; logged steps: {steps}")
    try:
        packed = rebuild(rows, at[-1], lineage.read)
    except (ValueError, KeyError, zlib.error) as err:  # a damaged file or row: one line, not a traceback
        raise ConfigError("run", f"run {run_id}, masks at step {step}: {type(err).__name__}: {err}") from None
    return unpack_masks(packed)


def lineage_rows(tracking_uri: str, run_id: str) -> list[dict]:
    """A trial's lineage rows, oldest first; a run without one is an error naming the run."""
    return _Lineage(tracking_uri, run_id).rows()


def rebuild(rows: list[dict], index: int, read) -> bytes:
    """The packed masks of ``rows[index]``; ``read(file)`` gives a lineage file's bytes."""
    from raysparse.sparsity.lineage import DELTA, decode, encoding_of

    chain = [index]
    while rows[chain[-1]].get("encoding") == DELTA:
        here = chain[-1]
        base = next((j for j in range(here - 1, -1, -1) if rows[j]["file"] == rows[here]["base"]), None)
        if base is None:
            raise ValueError(f"lineage row {here} (step {rows[here]['step']}) is a delta on {rows[here]['base']}, "
                             "which no earlier row holds")
        chain.append(base)
    packed = None
    for i in reversed(chain):
        row, blob = rows[i], read(rows[i]["file"])
        if encoding_of(blob) != row.get("encoding", "full"):
            raise ValueError(f"{row['file']} holds a {encoding_of(blob)} file; its row says {row.get('encoding')}")
        packed = decode(blob, packed)
        rebuilt = hashlib.sha256(packed).hexdigest()
        if rebuilt != row["hash"]:
            raise ValueError(f"the masks rebuilt for step {row['step']} ({row['file']}) have hash {rebuilt[:12]}, "
                             f"not the logged {row['hash'][:12]}: the lineage is damaged")
    return packed


class _Lineage:
    """A run's lineage, read by artifact URI (the run is resolved once, not once a file)."""

    def __init__(self, tracking_uri: str, run_id: str):
        self.tracking_uri, self.run_id = tracking_uri, run_id
        try:
            self.root = MlflowClient(tracking_uri).get_run(run_id).info.artifact_uri
        except MlflowException as err:
            raise ConfigError("run", f"no run {run_id!r} on {redact(tracking_uri)} ({err.error_code})") from None

    def rows(self) -> list[dict]:
        try:
            text = self._download(LINEAGE).decode()
        except (MlflowException, OSError):
            if any(f.path == LINEAGE for f in MlflowClient(self.tracking_uri).list_artifacts(self.run_id, "masks")):
                raise
            raise ConfigError("run", f"run {self.run_id} logged no mask lineage ({LINEAGE}); "
                              "a trial of a sparse method has one") from None
        return [json.loads(line) for line in text.splitlines() if line]

    def read(self, file: str) -> bytes:
        """A lineage file's bytes. Kept for later calls: a file's name says what it holds (step,
        masks hash, and a delta's base hash), a retry rewrites it with the same bytes, and every
        rebuilt row is checked against its logged hash anyway."""
        global _cached
        key = (self.root, file)
        with _FILES_LOCK:  # readers in several threads (a report's) share it
            if key in _FILES:
                _FILES.move_to_end(key)
                return _FILES[key]
        blob = self._download(file)
        with _FILES_LOCK:
            if key not in _FILES:
                _FILES[key] = blob
                _cached += len(blob)
            while _cached > _CACHED_BYTES and len(_FILES) > 1:
                _cached -= len(_FILES.popitem(last=False)[1])
        return blob

    def _download(self, file: str) -> bytes:
        import mlflow.artifacts

        with tempfile.TemporaryDirectory() as tmp:
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{self.root}/{file}", dst_path=tmp,
                                                            tracking_uri=self.tracking_uri)).read_bytes()


# the lineage files read lately, by (artifact root, file): rebuilding step after step of a run
# reads each file once (a file costs two HTTP requests, ~25 ms here)
_FILES: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_CACHED_BYTES, _cached = 64 << 20, 0
_FILES_LOCK = threading.Lock()
