"""A small decoder-only language model, registered as model ``gpt``.

Attention and MLP weights are separate ``nn.Linear``s named like Llama's (``q_proj``, ``k_proj``,
``v_proj``, ``o_proj``; ``mlp.up_proj``, ``mlp.down_proj``), so each one is a mask of its own
(``blocks.0.attn.q_proj``) and patterns such as ``*.attn.*`` or ``*.mlp.*`` select them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raysparse.errors import ConfigError
from raysparse.zoo.models import MODELS, _positive_int


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj = nn.Linear(width, width), nn.Linear(width, width)
        self.v_proj, self.o_proj = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape

        def split_heads(projection: nn.Linear) -> torch.Tensor:
            return projection(x).view(batch, seq, self.heads, width // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split_heads(self.q_proj), split_heads(self.k_proj), split_heads(self.v_proj), is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    """``down_proj(gelu(up_proj(x)))`` with 4 * width hidden units."""

    def __init__(self, width: int):
        super().__init__()
        self.up_proj, self.down_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn_norm = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """GPT-2's layout (Radford et al. 2019, "Language Models are Unsupervised Multitask Learners",
    https://cdn.openai.com/better-language-models/language_models_are_unsupervised_multitask_learners.pdf):
    token and learned position embeddings, pre-norm blocks, a final LayerNorm and a linear head.

    Token ids ``[batch, seq]`` (``seq <= block_size``) give logits ``[batch, seq, vocab_size]``.
    With ``tie_head`` the head's weight is the token embedding's Parameter itself, as in GPT-2.
    """

    def __init__(self, vocab_size: int, block_size: int, *, depth: int, width: int, heads: int,
                 tie_head: bool):
        super().__init__()
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Embedding(block_size, width)
        self.register_buffer("positions", torch.arange(block_size), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab_size, bias=False)
        self._init_weights(depth)
        if tie_head:
            self.lm_head.weight = self.token_embedding.weight

    def _init_weights(self, depth: int) -> None:
        # GPT-2's init: N(0, 0.02) everywhere (nn.Embedding's default N(0, 1) would start a tied
        # head with logits in the tens), and the projections that add to the residual stream
        # scaled by 1/sqrt(2 * depth) so its variance does not grow with depth.
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        seq = tokens.shape[1]
        if seq > self.block_size:
            raise ValueError(f"got {seq} tokens per sequence; this model takes at most block_size={self.block_size}")
        x = self.token_embedding(tokens) + self.position_embedding(self.positions[:seq])
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


@MODELS.register("gpt")
def gpt(vocab_size: int, block_size: int, *, depth: int = 2, width: int = 64, heads: int = 4,
        tie_head: bool = True) -> nn.Module:
    """A small GPT (GPT-2's layout, Radford et al. 2019): ``depth`` blocks of ``heads``-head causal
    attention and a 4 * ``width`` GELU MLP over ``block_size`` positions and ``vocab_size`` tokens
    (at the defaults on bytes, block_size 128: about 0.12M parameters)."""
    vocab_size, block_size = _positive_int(vocab_size, "vocab_size"), _positive_int(block_size, "block_size")
    depth, width, heads = _positive_int(depth, "depth"), _positive_int(width, "width"), _positive_int(heads, "heads")
    if width % heads:
        raise ConfigError("heads", f"{heads} must divide width={width} (each head gets width / heads dimensions)")
    if not isinstance(tie_head, bool):
        raise ConfigError("tie_head", f"expected true or false, got {tie_head!r}")
    return GPT(vocab_size, block_size, depth=depth, width=width, heads=heads, tie_head=tie_head)
