"""A sweep's resume state is signed as it is written, and a resume loads none it cannot verify.

Tune restores a sweep by unpickling files on its storage path (``tuner.pkl``, the searcher's and
the experiment's state), and ``raysparse_sweep.json`` names the code a sweep imports. On a cluster
that storage is shared: whoever can write it could otherwise run code as the driver. Each such
file gets an HMAC-SHA256 tag beside it (``NAME.hmac``) made with a key that never leaves the
user's raysparse home (``keys/resume.key``, owner-only). The tag covers the file's name and
bytes, so a file cannot be replaced, renamed or torn unnoticed; only the key's holder can make
one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from raysparse.errors import ConfigError

KEY_FILE = Path("keys") / "resume.key"
TAG_SUFFIX = ".hmac"
KEY_BYTES = 32
# what Tune unpickles when it restores (its experiment, searcher, search generator and callback
# states, the Tuner, a trial's params), and the sweep state that names the code a sweep imports
SIGNED_NAMES = ("tuner.pkl", "params.pkl", "*-state-*.json", "*-state-*.pkl", "*_state-*.json", "*_state-*.pkl",
                "callback-states-*.pkl", "raysparse_sweep.json")

_key: bytes | None = None  # this driver's key; trial processes hold none (they write no such file)


class UnsignedState(ConfigError):
    """A file a resume would load is not signed with this home's key."""


def is_signed_kind(path: str | Path) -> bool:
    name = Path(path).name
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SIGNED_NAMES)


def use_key(home: Path) -> bytes:
    """This driver's signing key, from ``home`` (made on first use). A key file that others can
    read or write, or that another user owns, is refused: a tag is only as secret as it."""
    global _key
    path = Path(home).expanduser().resolve() / KEY_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(KEY_BYTES))
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError("RAYSPARSE_HOME", f"{str(path)!r} (the key that signs sweeps' resume state) must be the "
                          f"user's own and owner-only (chmod 600); it has mode {stat.filemode(info.st_mode)}")
    key = path.read_bytes()
    if len(key) != KEY_BYTES:
        raise ConfigError("RAYSPARSE_HOME", f"{str(path)!r} is not a raysparse key ({len(key)} bytes, not "
                          f"{KEY_BYTES}); remove it to make a new one (sweeps it signed cannot be resumed then)")
    _key = key
    return key


def current_key() -> bytes | None:
    return _key


def tag_of(key: bytes, name: str, data: bytes) -> str:
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def tag_path(path: Path) -> Path:
    return path.with_name(path.name + TAG_SUFFIX)


def record_tag(path: Path, tag: str) -> None:
    """Before the file itself is replaced: the tag file keeps the previous tag too, so a driver
    that dies between the two writes leaves a pair that still verifies."""
    tags = tag_path(path)
    previous = tags.read_text().split()[:1] if tags.exists() else []
    written = tags.with_name(f".{tags.name}.tmp")
    written.write_text("\n".join([tag, *previous]) + "\n")
    written.replace(tags)


def write_signed(path: Path, data: bytes, key: bytes) -> None:
    """``path`` replaced whole by ``data``, its tag recorded first."""
    written = path.with_name(f".{path.name}.tmp")
    written.write_bytes(data)
    record_tag(path, tag_of(key, path.name, data))
    written.replace(path)


def verified(path: Path, data: bytes, key: bytes | None, field: str = "--resume") -> bytes:
    """``data`` (the bytes read from ``path``) when its tag verifies; else one line saying why."""
    if key is None:
        raise UnsignedState(field, f"{str(path)!r} cannot be verified: no resume key is loaded in this process")
    tags = tag_path(path)
    known = tags.read_text(errors="replace").split() if tags.is_file() else []
    expected = tag_of(key, path.name, data)
    if not any(hmac.compare_digest(expected, tag) for tag in known):
        why = "has no signature" if not known else "does not match its signature (changed, torn or not written here)"
        raise UnsignedState(field, f"{str(path)!r} {why}: a resume loads only state this raysparse home's key "
                            f"signed ({KEY_FILE}), since loading it would run code; refused, nothing started")
    return data


def read_verified(path: Path, key: bytes | None, field: str = "--resume") -> bytes:
    return verified(path, path.read_bytes(), key, field)


def check_signed_dir(experiment_dir: Path, key: bytes) -> None:
    """Every file of the sweep's directory that a resume would load verifies, before Ray starts:
    the state files by name, and any other pickle or JSON there (Tune loads what it finds)."""
    for path in sorted(experiment_dir.iterdir()):
        if path.is_file() and path.suffix in (".pkl", ".json") and not path.name.startswith("."):
            read_verified(path, key)
