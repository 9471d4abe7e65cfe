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
    """nn.MultiheadAttention's eval forward (packed q/k/v, no masks; attention weights not returned) with
    ``in_proj`` and ``out_proj`` any module mapping the last dimension (dense Linear or SparseLinear)."""

    def __init__(self, attention: nn.MultiheadAttention, in_proj: nn.Module, out_proj: nn.Module):
        super().__init__()
        self.embed_dim, self.num_heads = attention.embed_dim, attention.num_heads
        self.batch_first = attention.batch_first  # nn.TransformerEncoder reads it
        self.in_proj, self.out_proj = in_proj, out_proj

    @staticmethod
    def supports(attention: nn.MultiheadAttention) -> bool:
        return attention._qkv_same_embed_dim and attention.bias_k is None and not attention.add_zero_attn

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None or attn_mask is not None:
            raise NotImplementedError("a deployed attention takes no attention or padding masks")
        # attention weights are not computed (None), as nn.MultiheadAttention's fast path does too
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if query is key and key is value:  # self-attention: one product for q, k and v
            q, k, v = self.in_proj(query).chunk(3, dim=-1)
        else:  # the packed weight projects each input; keep the matching third
            q, k, v = (self.in_proj(t).chunk(3, dim=-1)[i] for i, t in enumerate((query, key, value)))
        batch, tokens, _ = q.shape
        heads = self.num_heads
        q, k, v = (t.reshape(batch, -1, heads, self.embed_dim // heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


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
