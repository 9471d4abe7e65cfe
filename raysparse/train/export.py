"""Exporting a trained model so it loads without raysparse: a torch.export program (load with
``torch.export.load(path).module()``) next to the plain state_dict."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def export_program(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Write ``model`` (eval mode, on CPU) as a torch.export program for inputs of
    ``(batch, *input_shape)`` with a dynamic batch dimension."""
    path = Path(path)
    model = model.eval().cpu()
    example = (torch.randn(2, *input_shape),)
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path
