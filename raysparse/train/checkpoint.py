"""Checkpoints that resume bit-identically: model, optimizer, LR schedule, method state (masks,
generator), RNG states, epoch and step. Loaded with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import torch

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


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    return torch.load(path, map_location="cpu", weights_only=True)
