"""Loading a deployed network saved with ``torch.save(deployed, path)``, by
``torch.load(weights_only=True)``: the file may name only module classes of torch.nn and of
raysparse (and torch's own activation functions); anything else is refused before loading, so a
file cannot run code of its choosing."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import torch
from torch import nn

_FUNCTION_MODULES = ("torch._C._nn", "torch.nn.functional")  # nn.TransformerEncoderLayer keeps F.gelu / F.relu


def load_deployed(path: str | Path, *, map_location=None) -> nn.Module:
    """The network ``torch.save(raysparse.deploy(...), path)`` wrote (sparse weights, plan and all)."""
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    allowed = [_allowed(name, path) for name in needed]
    with torch.serialization.safe_globals(allowed), warnings.catch_warnings():
        # the check of every sparse tensor's indices is what a file from elsewhere needs: no warning about it
        warnings.filterwarnings("ignore", message=".*Validating sparse tensor invariants.*")
        return torch.load(path, map_location=map_location, weights_only=True)


def _allowed(name: str, path) -> object:
    module_name, _, attribute = name.rpartition(".")
    refusal = ValueError(f"{str(path)!r} names {name}, which is not a torch.nn or raysparse module class; "
                         "load_deployed does not load it (torch.load(weights_only=False) would, if you trust the file)")
    if module_name in _FUNCTION_MODULES:
        return getattr(importlib.import_module(module_name), attribute)
    if not module_name.startswith(("torch.nn.", "raysparse.")):
        raise refusal
    found = getattr(importlib.import_module(module_name), attribute, None)
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise refusal
    return found
