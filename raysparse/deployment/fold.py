"""BatchNorm folded into the convolution before it, in place (eval mode): the network keeps its
own classes, so it still saves with ``weights_only=True`` (torch.fx's ``fuse`` returns a
GraphModule, whose pickle runs code)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_PAIRS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) module names where the BatchNorm reads only that convolution's output, found
    by tracing the model (torch.fx); none when it cannot be traced."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # control flow on values: nothing is folded, the network stays correct
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        before = node.args[0]
        if before.op != "call_module" or len(before.users) != 1:
            continue
        conv, bn = modules.get(before.target), modules.get(node.target)
        if any(isinstance(conv, c) and isinstance(bn, b) and bn.track_running_stats for c, b in _PAIRS):
            pairs.append((before.target, node.target))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm that follows a convolution into it (``model`` in eval mode); returns
    how many. The folded weight is the conv's scaled per output channel, so its zeros stay zeros."""
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        model.set_submodule(conv_name, fuse_conv_bn_eval(model.get_submodule(conv_name), model.get_submodule(bn_name)))
        model.set_submodule(bn_name, nn.Identity())
    return len(pairs)
