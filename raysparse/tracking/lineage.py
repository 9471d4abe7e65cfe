"""Rebuilding a trial's masks at any logged step from its lineage (deltas on full snapshots)."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from raysparse.errors import ConfigError, shown
from raysparse.tracking.naming import LINEAGE, redact

if TYPE_CHECKING:
    import torch

# raysparse.sparsity.lineage's encodings, named here: that package imports torch, reading rows does not
FULL, DELTA = "full", "delta"
FINAL_MASKS = "masks/final.bin"  # a finished trial's masks (TrialRun.log_final)


class _NotInRun(ValueError):
    """A file a lineage names that the run's artifacts do not hold."""


def masks_at_step(tracking_uri: str, run_id: str, step: int) -> dict[str, torch.Tensor]:
    """The masks (layer -> bool tensor) a trial held at ``step``, after the last row logged there
    (after a PBT exploit went back to an earlier epoch, this trial's history from then on).

    Walks back from that row to the nearest full snapshot, applies the deltas after it, and
    checks every rebuilt row against its logged hash. Reads runs logged before deltas existed
    (rows without ``encoding``: every file a full snapshot). A damaged or forged lineage is one
    ConfigError naming the run, the step and the file; no file may claim more weights than the
    run's own masks have (``_Lineage.max_weights``), so none makes this allocate more."""
    from raysparse.sparsity.masks import unpack_masks  # torch: not for reports

    lineage = _Lineage(tracking_uri, run_id)
    rows = lineage.rows()
    at = [i for i, row in enumerate(rows) if row["step"] == step]
    if not at:
        steps = ", ".join(str(s) for s in dict.fromkeys(row["step"] for row in rows))
        raise ConfigError("step", f"run {run_id} logged no masks at step {step}; logged steps: {steps}")
    try:
        packed = rebuild(rows, at[-1], lineage.read, max_weights=lineage.max_weights(rows))
    except ValueError as err:  # a damaged file or row: one line, not a traceback
        raise ConfigError("run", f"run {run_id}, masks at step {step}: {err}") from None
    return unpack_masks(packed)


def lineage_rows(tracking_uri: str, run_id: str) -> list[dict]:
    """A trial's lineage rows, oldest first; a run without one, or with a damaged row, is an error
    naming the run (and the row's line)."""
    return _Lineage(tracking_uri, run_id).rows()


# what every row holds, by type (bool is an int to Python, never a step); ``encoding`` and a
# delta's ``base`` came later (runs logged before deltas lack them)
_ROW_FIELDS = {"step": int, "reason": str, "density": (int, float), "churn": (int, float), "hash": str, "file": str}
_MASKS_FILE = re.compile(r"masks/(?!\.\.?$)[^/\\]+")


def parse_rows(text: str, run_id: str) -> list[dict]:
    """The rows of a ``masks/lineage.jsonl``, each checked for the fields readers use: a damaged
    row is a ConfigError naming the run, the line and what is wrong with it."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"run {run_id}, {LINEAGE} line {number}"
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError("run", f"{where}: not a JSON row: {shown(line)}") from None
        if not isinstance(row, dict):
            raise ConfigError("run", f"{where}: a row is a JSON object, not {shown(row)}")
        for field, kind in _ROW_FIELDS.items():
            if field not in row:
                raise ConfigError("run", f"{where}: the row has no {field!r}; a row holds {', '.join(_ROW_FIELDS)}")
            if not isinstance(row[field], kind) or isinstance(row[field], bool):
                raise ConfigError("run", f"{where}: {field} is {shown(row[field])}, not {_kind_name(kind)}")
        if not _MASKS_FILE.fullmatch(row["file"]):  # what a reader downloads: a file in the run's masks/
            raise ConfigError("run", f"{where}: file {shown(row['file'])}; allowed: masks/<name>")
        if row.get("encoding", FULL) not in (FULL, DELTA):
            raise ConfigError("run", f"{where}: encoding {shown(row['encoding'])}; allowed: {FULL}, {DELTA}")
        if row.get("encoding") == DELTA and not isinstance(row.get("base"), str):
            raise ConfigError("run", f"{where}: a delta row names the file it applies to in 'base'; this one does not")
        rows.append(row)
    return rows


def _kind_name(kind) -> str:
    return "a number" if kind == (int, float) else {int: "an integer", str: "a string"}[kind]


def rebuild(rows: list[dict], index: int, read, *, max_weights: int | None = None) -> bytes:
    """The packed masks of ``rows[index]``; ``read(file)`` gives a lineage file's bytes.
    ``max_weights``: the most weights any of them may hold (``sparsity.lineage.decode``)."""
    from raysparse.sparsity.lineage import decode, encoding_of

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
        row = rows[i]
        try:
            blob = read(row["file"])
            if encoding_of(blob) != row.get("encoding", FULL):
                raise ValueError(f"it holds a {encoding_of(blob)} file; its row says {row.get('encoding')}")
            packed = decode(blob, packed, max_weights=max_weights)
        except ValueError as err:
            raise ValueError(f"{row['file']} (step {row['step']}): {err}") from None
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
            text = self._download(LINEAGE).decode("utf-8", "replace")  # a bad byte is a damaged row, named
        except (MlflowException, OSError):
            if self._listed(LINEAGE):
                raise
            raise ConfigError("run", f"run {self.run_id} logged no mask lineage ({LINEAGE}); "
                              "a trial of a sparse method has one") from None
        return parse_rows(text, self.run_id)

    def max_weights(self, rows: list[dict]) -> int:
        """The most weights the run's masks hold: those of its final masks (``masks/final.bin``, a
        finished run's) and of its lineage's first full snapshot (the model as built; more than
        the final masks where a method compacted the network). Each is checked against its own
        bytes, so neither can claim more than it holds."""
        from raysparse.sparsity.lineage import decode, packed_weights

        sizes = []
        try:
            sizes.append(packed_weights(self.read(FINAL_MASKS)))
        except _NotInRun:
            pass  # a trial still running, or one that failed, has none
        except ValueError as err:
            raise ValueError(f"{FINAL_MASKS}: {err}") from None
        first = next((row for row in rows if row.get("encoding", FULL) == FULL), None)
        if first is not None:
            # not bounded by the final masks (a compacted network's are smaller than the model was):
            # inflating it allocates at most zlib's ratio (~1000) times the file's own size
            try:
                sizes.append(packed_weights(decode(self.read(first["file"]))))
            except ValueError as err:
                raise ValueError(f"{first['file']} (step {first['step']}): {err}") from None
        return max(sizes, default=0)

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
        try:
            blob = self._download(file)
        except (MlflowException, OSError):
            if self._listed(file):
                raise  # there, but the server did not give it: not a damaged lineage
            raise _NotInRun("not among the run's artifacts (deleted, or never uploaded)") from None
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

    def _listed(self, file: str) -> bool:
        folder = Path(file).parent.as_posix()
        return any(f.path == file for f in MlflowClient(self.tracking_uri).list_artifacts(self.run_id, folder))


# the lineage files read lately, by (artifact root, file): rebuilding step after step of a run
# reads each file once (a file costs two HTTP requests, ~25 ms here)
_FILES: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_CACHED_BYTES, _cached = 64 << 20, 0
_FILES_LOCK = threading.Lock()
