"""Exporting a trained model so it loads without raysparse: a torch.export program (load with
``torch.export.load(path).module()``) next to the plain state_dict; and loading it back as the
network it was (``raysparse.load_model``)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs, import_object, is_import_path
from raysparse.zoo.user_code import PYTHON, build_network, one_line


def export_program(model: nn.Module, example: Any, path: str | Path) -> Path:
    """Write ``model`` (eval mode, on CPU) as a torch.export program traced on ``example`` (a
    real model input of at least 2 examples: a tensor, or a dict of keyword tensors), with a
    dynamic batch dimension."""
    path = Path(path)
    model = model.eval().cpu()
    batch = torch.export.Dim("batch", min=1)
    if isinstance(example, Mapping):
        example = {k: v.cpu() for k, v in example.items()}
        program = torch.export.export(model, (), kwargs=example, dynamic_shapes={k: {0: batch} for k in example})
    else:
        program = torch.export.export(model, (example.cpu(),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


def load_trained(folder: str | Path, *, model=None) -> nn.Module:
    """The network of a trial's ``model/`` folder: its architecture built again from
    ``config.json`` and ``build.json``, then its final weights (masks in them) loaded.

    ``model`` gives the architecture where the config cannot (a closure, a loop of yours): an
    nn.Module class or builder (called with the model block's options) or an instance. Without
    it, a network that cannot be built again here comes from ``model.pt2``, with a warning.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    build = json.loads((folder / "build.json").read_text()) if (folder / "build.json").is_file() else {}
    state = torch.load(folder / "state_dict.pt", weights_only=True)
    try:
        network = _architecture(config, build, model)
        network.load_state_dict(state)
        return network
    except (ConfigError, RuntimeError) as err:  # RuntimeError: weights that do not fit (HAP compacted the model)
        if model is not None or not (folder / "model.pt2").is_file():
            raise ConfigError("model", f"cannot build the trial's network again: {one_line(err)}") from None
        warnings.warn(f"raysparse.load_model: {one_line(err)}; loaded its torch.export program (model/model.pt2) "
                      "instead (pass model= for your own class)", stacklevel=3)
        return torch.export.load(folder / "model.pt2").module()


def _architecture(config: dict, build: dict, given) -> nn.Module:
    if isinstance(given, nn.Module):
        return given
    # what the data told the model factory (runs before tasks existed recorded two keys of it)
    info = build.get("data_info", {k: build[k] for k in ("input_shape", "num_classes") if k in build})
    if not info and given is None:
        raise ConfigError("model", "the run recorded nothing of its data to build its network with; pass model=")
    add_import_dirs(d for d in build.get("import_dirs", []) if Path(d).is_dir())
    spec = dict(config.get("model") or {})
    if given is None and config.get("loop") is not None:
        raise ConfigError("model", f"a loop of yours ({config['loop']}) built it; pass model=")
    if given is None and PYTHON in spec:
        if not is_import_path(spec[PYTHON]):  # a closure, a class defined inside a function
            raise ConfigError("model.python", f"{spec[PYTHON]!r} cannot be imported; pass model=")
        given = import_object(spec[PYTHON], "model.python")
    if given is not None:  # it replaces what the block named; the block's other keys are its options
        spec = {k: v for k, v in spec.items() if k not in ("name", "factory", PYTHON)}
    torch.manual_seed(config.get("seed", 0))  # as the trial built it (the weights are replaced anyway)
    return build_network(spec, info, given=given)
