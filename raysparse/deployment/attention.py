"""Self-attention with its projections on the deployed kernels.

torch's nn.MultiheadAttention (and nn.TransformerEncoderLayer's fused eval "fast path") read the
dense ``in_proj_weight`` directly, so a sparse projection needs a module of its own; the encoder
layer that holds one then runs its unfused path (``SubmoduleEncoderLayer``), which calls it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DeployedAttention(nn.Module):
    """nn.MultiheadAttention's eval forward (packed q/k/v; attention weights not returned) with
    ``in_proj`` and ``out_proj`` any module mapping the last dimension (dense Linear or SparseLinear).

    Masks mean what they mean to nn.MultiheadAttention: ``attn_mask`` ``[L, S]`` or
    ``[batch * heads, L, S]`` and ``key_padding_mask`` ``[batch, S]``, each bool (True: may *not*
    attend) or float (added to the scores); ``is_causal`` is the hint that ``attn_mask`` is the
    causal mask (alone, it asks for one)."""

    def __init__(self, attention: nn.MultiheadAttention, in_proj: nn.Module, out_proj: nn.Module):
        super().__init__()
        self.embed_dim, self.num_heads = attention.embed_dim, attention.num_heads
        self.batch_first = attention.batch_first  # nn.TransformerEncoder reads it
        self.in_proj, self.out_proj = in_proj, out_proj

    @staticmethod
    def supports(attention: nn.MultiheadAttention) -> bool:
        return attention._qkv_same_embed_dim and attention.bias_k is None and not attention.add_zero_attn

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        # attention weights are not computed (None), as nn.MultiheadAttention's fast path does too
        if query.dim() != 3:
            raise ValueError(f"a deployed attention takes batched inputs (3 dimensions); got query of shape "
                             f"{list(query.shape)}")
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query is key and key is value:  # self-attention: one product for q, k and v
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:  # the packed weight projects each input; keep the matching third
            q, k, v = (self.in_proj(t).chunk(3, dim=-1)[i] for i, t in enumerate((query, key, value)))
        batch, tokens, _ = q.shape
        heads = self.num_heads
        q, k, v = (t.reshape(batch, -1, heads, self.embed_dim // heads).transpose(1, 2) for t in (q, k, v))
        # as nn.MultiheadAttention decides: the causal hint replaces the mask unless padding must be
        # merged into it (or weights were asked for, which torch computes from the mask)
        causal = is_causal and key_padding_mask is None and (attn_mask is None or not need_weights)
        mask = None if causal else self._scores_mask(attn_mask, key_padding_mask, batch, q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def _scores_mask(self, attn_mask, key_padding_mask, batch: int, dtype) -> torch.Tensor | None:
        """Both masks as one float mask added to the scores ``[batch, heads, L, S]`` (broadcast).
        A bool mask of nn.MultiheadAttention is True where attention is *not* allowed, the opposite
        of scaled_dot_product_attention's: as torch does, it becomes -inf there, 0 elsewhere."""
        mask = _additive(attn_mask, dtype)
        if mask is not None and mask.dim() == 3:  # [batch * heads, L, S], heads of one example together
            mask = mask.view(batch, self.num_heads, *mask.shape[1:])
        padding = _additive(key_padding_mask, dtype)
        if padding is not None:
            padding = padding.view(batch, 1, 1, -1)
            mask = padding if mask is None else mask + padding
        return mask


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros_like(mask, dtype=dtype).masked_fill_(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"an attention mask must be bool or float (as nn.MultiheadAttention takes); got {mask.dtype}")
    return mask.to(dtype)


class SubmoduleEncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer that always runs through its submodules (torch's own unfused
    path), never the fused kernel that reads the dense weights."""

    def forward(self, src: torch.Tensor, src_mask=None, src_key_padding_mask=None, is_causal: bool = False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
        return self.norm2(x + self._ff_block(x))
