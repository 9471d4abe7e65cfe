"""A resume loads only the state its home's key signed: a crafted pickle on the sweep's storage
(shared, on a cluster) is refused in one line and never runs; the key stays owner-only in the
home, never on the storage."""

import os
import pickle
import stat

import pytest

from raysparse.errors import ConfigError
from raysparse.search import resume_sweep, run_sweep
from raysparse.search.signed_state import KEY_FILE, UnsignedState, read_verified, tag_path, use_key, write_signed
from tests.search.conftest import tiny_sweep


class RunsAShell:
    """What an attacker writes: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_signed_file_verifies_and_a_changed_or_unsigned_one_is_refused(tmp_path):
    key = use_key(tmp_path / "home")
    path = tmp_path / "tuner.pkl"
    write_signed(path, b"state one", key)
    assert read_verified(path, key) == b"state one"
    write_signed(path, b"state two", key)  # the tag file keeps the previous tag: a torn pair still verifies
    assert read_verified(path, key) == b"state two"
    path.write_bytes(b"state three")
    with pytest.raises(UnsignedState, match=r"tuner\.pkl' does not match its signature"):
        read_verified(path, key)
    renamed = tmp_path / "searcher-state-x.pkl"  # a tag covers the name: a signed file moved is refused
    renamed.write_bytes(b"state two")
    tag_path(renamed).write_text(tag_path(path).read_text())
    with pytest.raises(UnsignedState, match="does not match its signature"):
        read_verified(renamed, key)
    tag_path(renamed).unlink()
    with pytest.raises(UnsignedState, match="has no signature"):
        read_verified(renamed, key)


def test_the_key_is_owner_only_and_one_readable_by_others_is_refused(tmp_path):
    home = tmp_path / "home"
    key = use_key(home)
    assert use_key(home) == key and len(key) == 32  # made once, then read
    path = home / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=r"resume\.key' .* must be the user's own and owner-only .* -rw-r--r--"):
        use_key(home)


def test_a_crafted_searcher_pickle_is_refused_before_anything_starts_and_never_runs(ray_runtime, home, tmp_path):
    raw = tiny_sweep("signed", num_samples=1, max_concurrent=1)
    raw["base"]["epochs"] = 2
    run_sweep(raw, home=home, verbose=False)
    experiment = home / "ray_results" / "signed"
    key = (home / KEY_FILE).read_bytes()
    assert all(key not in p.read_bytes() for p in experiment.rglob("*") if p.is_file())  # never on storage
    (searcher,) = experiment.glob("searcher-state-*.pkl")
    assert tag_path(searcher).is_file() and tag_path(experiment / "tuner.pkl").is_file()  # Tune's writes, signed

    marker = tmp_path / "ran"
    searcher.write_bytes(pickle.dumps(RunsAShell(marker)))
    with pytest.raises(ConfigError, match=rf"{searcher.name}' does not match its signature .* refused, nothing "
                                          "started") as caught:
        resume_sweep("signed", home=home, verbose=False)
    assert caught.value.field == "--resume"
    assert not marker.exists()

    searcher.unlink()
    extra = experiment / "callback-states-2026.pkl"  # a file Tune would find and load, with no tag at all
    extra.write_bytes(pickle.dumps(RunsAShell(marker)))
    with pytest.raises(ConfigError, match=r"callback-states-2026\.pkl' has no signature"):
        resume_sweep("signed", home=home, verbose=False)
    assert not marker.exists()
