"""The layers a deployed network runs: a Linear or a 3x3 convolution whose weight is a torch.sparse
CSR / BSR tensor. Each holds exactly what it computes with in its state_dict (sparse tensors load with
``torch.load(weights_only=True)``), which is what ``raysparse.deployment.saving`` writes."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn


def quietly_sparse(weight: torch.Tensor, layout: str, blocksize: int | None = None) -> torch.Tensor:
    """``weight`` as a CSR or BSR tensor. torch warns on every CSR tensor it makes that the layout is
    "in beta"; a deployed network makes one per layer, so that warning would drown the output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse (CSR|BSR) tensor support is in beta.*")
        if layout == "csr":
            return weight.detach().to_sparse_csr()
        return weight.detach().to_sparse_bsr((blocksize, blocksize))


class SparseLinear(nn.Module):
    """y = x W^T + b with W sparse: computed as (W x^T + b)^T, the one product torch.sparse
    runs fast on the CPU (sparse @ dense, MKL); a dense @ sparse product is 3-30x slower here.
    The output is the transpose of a contiguous tensor, so the next SparseLinear reads it without a copy."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, layout: str = "csr",
                 blocksize: int | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kernel = layout if layout == "csr" else f"bsr{blocksize}x{blocksize}"
        self.register_buffer("weight", quietly_sparse(weight, layout, blocksize))
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device) if bias is None else bias
        self.register_buffer("bias_column", bias.detach().reshape(-1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.addmm(self.bias_column, self.weight, rows.t()).t()
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, kernel={self.kernel}"


class UnfoldConv2d(nn.Module):
    """A Conv2d (groups 1, zero padding) as im2col (``F.unfold``) then a CSR product: it pays where
    the weight is large and the feature map small (VGG's last stages, batch 1); MKL-DNN's
    convolution wins on large maps, which the timing finds out layer by layer."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.kernel = "unfold-csr"
        self.register_buffer("weight", quietly_sparse(conv.weight.reshape(conv.out_channels, -1), "csr"))
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                                                   device=conv.weight.device)
        self.register_buffer("bias_column", bias.detach().reshape(-1, 1).clone())

    @staticmethod
    def supports(conv: nn.Conv2d) -> bool:
        return conv.groups == 1 and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (N, C*k*k, L)
        out_h, out_w = (
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip((height, width), self.padding, self.dilation, self.kernel_size, self.stride)
        )
        if batch == 1:  # no copy: the product's (C_out, L) is the output map
            return torch.addmm(self.bias_column, self.weight, columns[0]).view(1, self.out_channels, out_h, out_w)
        # one product over the whole batch: (C*k*k, N*L) costs a copy, but N small products cost more
        stacked = columns.transpose(0, 1).reshape(columns.shape[1], -1)
        out = torch.addmm(self.bias_column, self.weight, stacked)
        return out.view(self.out_channels, batch, out_h, out_w).transpose(0, 1)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, kernel_size={self.kernel_size}, kernel=unfold-csr"


class SemiStructuredLinear(nn.Module):
    """A 2:4 Linear on NVIDIA's sparse tensor cores (``torch.sparse.to_sparse_semi_structured``,
    compute capability >= 8.0). Not tested: raysparse's machines have no GPU (see the README)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.kernel = "semi-structured-2:4"
        # a dtype the GPU's kernels do not take raises on the first call: the timing then drops it
        self.weight = torch.sparse.to_sparse_semi_structured(weight.detach().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    # torch.load(weights_only=True) rebuilds no tensor subclass: the state holds the dense (2:4)
    # weight, compressed again when it is loaded
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight.to_dense()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        if key in state_dict:
            self.weight = torch.sparse.to_sparse_semi_structured(state_dict[key].detach().contiguous())
        else:
            missing_keys.append(key)
        others = {k: v for k, v in state_dict.items() if k != key}
        super()._load_from_state_dict(others, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def semi_structured_available(device: torch.device) -> bool:
    if device.type != "cuda" or not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return False
    return torch.cuda.get_device_capability(device)[0] >= 8


def is_two_four(weight: torch.Tensor) -> bool:
    """At most 2 nonzeros in every group of 4 consecutive inputs (the 2:4 pattern)."""
    if weight.dim() != 2 or weight.shape[1] % 4:
        return False
    return bool(((weight != 0).reshape(weight.shape[0], -1, 4).sum(-1) <= 2).all())


def square_block_size(weight: torch.Tensor, sizes=(16, 8, 4, 2), fill: float = 1.1) -> int | None:
    """The largest square block size whose nonzero blocks hold little more than the nonzeros (at most
    ``fill`` times): the zeros come in such blocks. MKL's BSR product takes square blocks only."""
    rows, cols = weight.shape
    nonzero = int((weight != 0).sum())
    for size in sizes:
        if rows % size or cols % size or nonzero == 0:
            continue
        tiles = (weight != 0).reshape(rows // size, size, cols // size, size).any(dim=3).any(dim=1)
        if int(tiles.sum()) * size * size <= fill * nonzero:
            return size
    return None
