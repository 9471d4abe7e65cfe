"""Neural implants: HAP's "moderately sensitive" channels are kept but computed by a cheap module.

HAP: Yu et al., "Hessian-Aware Pruning and Optimal Neural Implant", https://arxiv.org/abs/2101.08940

An implanted conv computes its kept channels with the original kxk conv and its implant channels with a
cheap branch, then puts the channels back in their original order with a fixed gather, so the layers
after it see exactly the shapes they saw before. Everything data-dependent is decided at construction:
the forward pass is plain tensor code that ``torch.jit.script``, ``torch.jit.trace`` and
``torch.export`` accept.

Only a plain ``nn.Conv2d`` gets implants (:func:`supports_implant`); Linear layers never do, as in the
seed code, which implants convolutions only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from raysparse.errors import unknown_choice

IMPLANT_KINDS = ("zero", "lowrank")


def supports_implant(module: nn.Module) -> bool:
    """Whether ``module`` can be implanted: an ``nn.Conv2d`` with groups=1, zero padding and odd kernel.

    A grouped conv's channels each read a slice of the input, which one implant branch over the whole
    input would not respect; the 1x1 branch reads the kernel's centre tap, and an even kernel has none.
    """
    if type(module) is not nn.Conv2d or module.groups != 1 or module.padding_mode != "zeros":
        return False
    return all(dilation * (size - 1) % 2 == 0 for size, dilation in zip(module.kernel_size, module.dilation))


class ImplantedConv(nn.Module):
    """``kept`` computes the kept channels, ``implant`` the implant channels; output in original order."""

    def __init__(self, kept: nn.Module, implant: nn.Module, kept_idx: Sequence[int], implant_idx: Sequence[int]):
        super().__init__()
        self.kept = kept
        self.implant = implant
        # cat() lists kept then implant channels; argsort of that listing is the inverse permutation.
        # Not persistent: the plan that built this module rebuilds it, so it is structure, not state.
        order = torch.argsort(torch.tensor([*kept_idx, *implant_idx], device=next(kept.parameters()).device))
        self.register_buffer("channel_order", order, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.kept(x), self.implant(x)], dim=1).index_select(1, self.channel_order)


class ZeroInitImplant(ImplantedConv):
    """The seed code's implant: a 1x1 conv, same stride, zero-initialised, for the implant channels.

    Implant channels start at exactly 0 (as if removed) and are learned during fine-tuning. The 1x1
    conv reads the input pixel under the kxk kernel's centre; for convs without "same" padding the input
    is padded or cropped (negative padding) so the two branches line up pixel for pixel.
    """

    def __init__(self, conv: nn.Conv2d, implant_idx: Sequence[int]):
        kept_idx = _check_split(conv, implant_idx)
        pointwise = nn.Conv2d(
            conv.in_channels, len(implant_idx), 1, stride=conv.stride, bias=conv.bias is not None,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        nn.init.zeros_(pointwise.weight)
        if pointwise.bias is not None:
            nn.init.zeros_(pointwise.bias)
        shift = [_centre_offset(conv, axis) for axis in (1, 0)]  # F.pad order: width first
        branch = pointwise if shift == [0, 0] else nn.Sequential(
            nn.ZeroPad2d((shift[0], shift[0], shift[1], shift[1])), pointwise,
        )
        super().__init__(_conv_rows(conv, kept_idx), branch, kept_idx, implant_idx)


class LowRankImplant(ImplantedConv):
    """HAP's low-rank replacement as we interpret it: the implant channels' kxk weights at rank ``rank``.

    The M implant rows of the weight, reshaped to (M, in*k*k), are factored by a truncated SVD into a
    kxk conv in->rank (same stride, padding, dilation) and a 1x1 conv rank->M that carries the original
    bias. So the implant starts close to the removed computation; at full rank it is exact. The paper
    does not spell out the factorisation; this is the least-squares-optimal one. ``rank`` defaults to
    max(1, M // 4) and is capped at min(M, in*k*k).
    """

    def __init__(self, conv: nn.Conv2d, implant_idx: Sequence[int], rank: int | None = None):
        kept_idx = _check_split(conv, implant_idx)
        implants = len(implant_idx)
        rank = max(1, implants // 4) if rank is None else rank
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got rank={rank}")
        rows = conv.weight.detach()[list(implant_idx)].reshape(implants, -1)
        rank = min(rank, *rows.shape)
        u, s, vh = torch.linalg.svd(rows.double(), full_matrices=False)
        root = s[:rank].sqrt()  # split the singular values evenly so both factors are well scaled
        basis = nn.Conv2d(
            conv.in_channels, rank, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, bias=False, device=conv.weight.device, dtype=conv.weight.dtype,
        )
        mix = nn.Conv2d(rank, implants, 1, bias=conv.bias is not None, device=conv.weight.device,
                        dtype=conv.weight.dtype)
        with torch.no_grad():
            basis.weight.copy_((root[:, None] * vh[:rank]).reshape(basis.weight.shape))
            mix.weight.copy_((u[:, :rank] * root).reshape(mix.weight.shape))
            if conv.bias is not None:
                mix.bias.copy_(conv.bias[list(implant_idx)])
        super().__init__(_conv_rows(conv, kept_idx), nn.Sequential(basis, mix), kept_idx, implant_idx)


def implant_conv(conv: nn.Conv2d, implant_idx: Sequence[int], kind: str = "zero") -> ImplantedConv:
    """The replacement for ``conv`` whose output channels ``implant_idx`` are implants of ``kind``.

    ``kind`` is "zero" (:class:`ZeroInitImplant`) or "lowrank" (:class:`LowRankImplant`, default rank).
    """
    if kind == "zero":
        return ZeroInitImplant(conv, implant_idx)
    if kind == "lowrank":
        return LowRankImplant(conv, implant_idx)
    raise unknown_choice("implant_kind", "implant kind", kind, IMPLANT_KINDS)


def _check_split(conv: nn.Module, implant_idx: Sequence[int]) -> list[int]:
    """The kept channels, after checking that the implant channels leave at least one of them."""
    if not supports_implant(conv):
        raise ValueError(f"only a plain Conv2d (groups=1, zero padding, odd kernel) gets implants, got {conv}")
    implants = set(implant_idx)
    if not implants or len(implants) != len(implant_idx) or not implants <= set(range(conv.out_channels)):
        raise ValueError(
            f"implant_idx must be distinct channel indices in [0, {conv.out_channels}), got {list(implant_idx)}"
        )
    kept_idx = [c for c in range(conv.out_channels) if c not in implants]
    if not kept_idx:
        raise ValueError(f"implant_idx covers all {conv.out_channels} channels; at least one must stay kept")
    return kept_idx


def _conv_rows(conv: nn.Conv2d, rows: list[int]) -> nn.Conv2d:
    """A copy of ``conv`` computing only the output channels ``rows``."""
    part = nn.Conv2d(
        conv.in_channels, len(rows), conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        part.weight.copy_(conv.weight[rows])
        if conv.bias is not None:
            part.bias.copy_(conv.bias[rows])
    return part


def _centre_offset(conv: nn.Conv2d, axis: int) -> int:
    """Padding that makes a 1x1 conv (same stride) read the pixel under the kernel's centre tap."""
    if conv.padding == "valid":
        padding = 0
    elif conv.padding == "same":
        padding = conv.dilation[axis] * (conv.kernel_size[axis] - 1) // 2
    else:
        padding = conv.padding[axis]
    return padding - conv.dilation[axis] * (conv.kernel_size[axis] - 1) // 2
