"""The filesystem Tune writes a sweep's storage through (``RunConfig(storage_filesystem=...)``).

Tune's own local filesystem overwrites files in place: a disk that fills while it uploads the
experiment state leaves the state torn, and a resume cannot continue what was there. Here every
file is written beside its place and renamed over it once whole, so the previous version stays
until the new one is complete. The state files a resume unpickles are signed as they are
written and verified as they are read (search/signed_state.py). A write that finds the disk full
stops the sweep (search/disk_watch.py).

The handler is pickled into Tune's state and sent to every trial: it holds no key, only the
driver's process does.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from raysparse.search import disk_watch
from raysparse.search.signed_state import current_key, is_signed_kind, record_tag, verified


class _WholeOrNothing:
    """A file object writing ``path``'s new bytes to a file beside it, renamed over ``path`` on
    close; a state file's tag is recorded before the rename."""

    def __init__(self, path: str):
        self.path = Path(path)
        self._temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._file = open(self._temporary, "wb")  # noqa: SIM115 (closed in close())
        key = current_key() if is_signed_kind(path) else None
        self._tag = None if key is None else hmac.new(key, self.path.name.encode() + b"\0", hashlib.sha256)
        self.closed = False

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        try:
            written = self._file.write(data)
        except OSError as err:
            self._abandon(err)
            raise
        if self._tag is not None:
            self._tag.update(data)
        return written

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._file.close()
            if self._tag is not None:
                record_tag(self.path, self._tag.hexdigest())
            os.replace(self._temporary, self.path)
        except OSError as err:
            self._abandon(err)
            raise

    def _abandon(self, err: OSError) -> None:
        self.closed = True
        self._file.close()
        self._temporary.unlink(missing_ok=True)
        if err.errno == errno.ENOSPC:
            disk_watch.report_full(self.path)


class SweepStorage(pafs.FileSystemHandler):
    """The local filesystem, with whole-or-nothing writes and verified state files."""

    def __init__(self):
        self._local = pafs.LocalFileSystem()

    def __reduce__(self):  # what Tune pickles: nothing but the class
        return SweepStorage, ()

    def __eq__(self, other) -> bool:
        return isinstance(other, SweepStorage)

    def __hash__(self) -> int:
        return hash(SweepStorage)

    def get_type_name(self) -> str:
        return "raysparse-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths):
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("raysparse's sweep storage never deletes the root directory's contents")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            target.write(source.read())

    def open_input_stream(self, path: str):
        return self._read(path) if is_signed_kind(path) else self._local.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._read(path) if is_signed_kind(path) else self._local.open_input_file(path)

    def _read(self, path: str):
        """A state file is read whole and verified before anyone unpickles it (a driver without a
        key, as in a trial's process, reads none: nothing it loads is a state file)."""
        data = Path(path).read_bytes()
        key = current_key()
        if key is not None:
            verified(Path(path), data, key)
        return pa.BufferReader(data)

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_WholeOrNothing(path), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._local.open_append_stream(path)


def sweep_storage() -> pafs.FileSystem:
    return pafs.PyFileSystem(SweepStorage())
