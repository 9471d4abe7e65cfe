"""Checkpoints that resume bit-identically: model, optimizer, LR schedule, method state (masks,
generator), RNG states, epoch and step. Loaded with ``torch.load(weights_only=True)``; a file
that is not one, or whose bytes no longer match its sha256 fingerprints, is one ConfigError."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path

import torch

from raysparse.errors import ConfigError, cut
from raysparse.sparsity.masks import masks_hash

CHECKPOINT_FILE = "checkpoint.pt"


def capture_rng() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_python_state(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state):
    version, internal, gauss = state  # lists come back from torch.save as lists: random wants tuples
    return version, tuple(internal), gauss


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict (names, dtypes, shapes and bytes, in name order): a restore that
    gives back other weights than were saved shows up as another hash."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write atomically (tmp file + rename): a crash mid-write never leaves a torn checkpoint."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, field: str = "resume_from") -> dict:
    """A checkpoint file (or a directory holding ``checkpoint.pt``), its fingerprints checked:
    a truncated, tampered or foreign file is a ConfigError naming ``field`` and the file."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    state = load_tensors(path, field, what="checkpoint")
    if not isinstance(state, dict):
        raise ConfigError(field, f"{str(path)!r} holds a {type(state).__name__}, not a checkpoint")
    saved = state.get("fingerprints")
    if isinstance(saved, dict):  # (checkpoints written before fingerprints existed have none)
        _check_fingerprints(state, saved, path, field)
    return state


def _check_fingerprints(state: dict, saved: dict, path: Path, field: str) -> None:
    found = {}
    if isinstance(state.get("model"), dict):
        found["weights"] = state_hash(state["model"])
    masks = state["method"].get("masks") if isinstance(state.get("method"), dict) else None
    if isinstance(masks, dict):
        found["masks"] = masks_hash(masks)
    differ = [k for k in ("weights", "masks") if k in saved and found.get(k) != saved[k]]
    if differ:
        raise ConfigError(field, f"{str(path)!r}: its {' and '.join(differ)} differ from the sha256 fingerprints "
                          "it was saved with (the file was changed or damaged after it was written); refused")


def load_tensors(path: str | Path, field: str, *, what: str = "state_dict file", map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with one ConfigError line for a missing, truncated,
    non-torch or unsafe file. PyTorch's own refusal is never shown: its advice to pass
    ``weights_only=False`` would run whatever code the file carries."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(field, f"{str(path)!r}: no such {what}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _REFUSED_GLOBAL.search(str(err))
        if refused:  # weights_only met a class or function: the file carries more than tensors
            raise ConfigError(field, f"{str(path)!r} holds objects other than tensors ({_shown(refused.group(1))}); "
                              "refused for safety, as loading it could run code; save tensors only, e.g. "
                              "torch.save(model.state_dict(), path)") from None
        raise ConfigError(field, f"{str(path)!r} is not a torch.save file ({_NOT_TORCH})") from None
    except (RuntimeError, EOFError, KeyError, zipfile.BadZipFile, OSError, ValueError):
        raise ConfigError(field, f"{str(path)!r} is not a torch.save file ({_NOT_TORCH})") from None


def load_state_dict_file(path: str | Path, field: str, map_location="cpu") -> dict[str, torch.Tensor]:
    """A state_dict file a config names (``init_from``, ``robustness.reference``), checked as one."""
    state = load_tensors(path, field, map_location=map_location)
    if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in state.items())):
        raise ConfigError(field, f"{str(Path(path))!r} holds a {type(state).__name__}, not a state_dict (a mapping "
                          "of parameter names to tensors, as torch.save(model.state_dict(), path) writes)")
    return state


def _shown(name: str) -> str:
    """A name from the file, printable and short: it is the file's text, not ours."""
    return cut("".join(c if c.isascii() and c.isprintable() else "?" for c in name), 80)


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")  # "... was not an allowed global", "... whose module is blocked"
_NOT_TORCH = "truncated, damaged or of another format"
