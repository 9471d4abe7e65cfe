"""Attention weights are prunable weights: named, selected, distributed and packed like Conv/Linear ones."""

import pytest
import torch
from torch import nn

import raysparse
from raysparse.sparsity.masks import MaskSet, prunable_weights, resolve_dense_layers, unpack_masks, weight_slots


def encoder(**attention) -> nn.Module:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    return nn.Sequential(nn.Linear(8, 16), layer, nn.Linear(16, 10))


def test_every_weight_that_does_a_matmul_is_named_and_nothing_else():
    weights = prunable_weights(encoder())
    assert list(weights) == ["0", "1.self_attn.in_proj_weight", "1.self_attn.out_proj", "1.linear1", "1.linear2", "2"]
    model = encoder()
    assert weights["1.self_attn.in_proj_weight"].shape == (48, 16)
    kept_dense = {id(p) for p in model.parameters()} - {id(w) for w in prunable_weights(model).values()}
    names = {n for n, p in model.named_parameters() if id(p) in kept_dense}
    assert names == {"0.bias", "1.self_attn.in_proj_bias", "1.self_attn.out_proj.bias", "1.linear1.bias",
                     "1.linear2.bias", "1.norm1.weight", "1.norm1.bias", "1.norm2.weight", "1.norm2.bias", "2.bias"}


def test_separate_query_key_value_weights_when_their_widths_differ():
    attention = nn.MultiheadAttention(16, 2, kdim=6, vdim=4)
    names = {n: tuple(w.shape) for n, w in prunable_weights(attention).items()}
    assert names == {"q_proj_weight": (16, 16), "k_proj_weight": (16, 6), "v_proj_weight": (16, 4),
                     "out_proj": (16, 16)}
    assert weight_slots(attention)["k_proj_weight"] == (attention, "k_proj_weight")


def test_layer_selection_patterns_and_dense_layers_match_attention_names():
    model = encoder()
    assert list(prunable_weights(model, include=["*.self_attn.*"])) == ["1.self_attn.in_proj_weight",
                                                                        "1.self_attn.out_proj"]
    assert "1.self_attn.in_proj_weight" not in prunable_weights(model, exclude=["*in_proj_weight"])
    names = list(prunable_weights(model))
    assert resolve_dense_layers(names, ["*in_proj*", "last"]) == {"1.self_attn.in_proj_weight", "2"}


def test_distributions_give_attention_weights_their_own_density():
    model = encoder()
    erk = raysparse.layer_densities(model, 0.2, distribution="erk", dense_layers=["first"])
    assert erk["0"] == 1.0 and 0.0 < erk["1.self_attn.in_proj_weight"] < 1.0
    sizes = {n: w.numel() for n, w in prunable_weights(model).items()}
    assert sum(erk[n] * sizes[n] for n in sizes) == pytest.approx(0.2 * sum(sizes.values()))


@torch.no_grad()
def test_masks_zero_attention_weights_and_pack_by_name():
    model = encoder()
    masks = MaskSet(prunable_weights(model))
    generator = torch.Generator().manual_seed(1)
    new = {n: torch.rand(m.shape, generator=generator) < 0.3 for n, m in masks.masks.items()}
    masks.update(new, step=1, reason="test")
    in_proj = model[1].self_attn.in_proj_weight
    assert torch.all(in_proj[~new["1.self_attn.in_proj_weight"]] == 0)
    assert torch.all(model[1].self_attn.out_proj.weight[~new["1.self_attn.out_proj"]] == 0)
    unpacked = unpack_masks(masks.pack())
    assert list(unpacked) == list(masks.masks)
    assert all(torch.equal(unpacked[n], masks.masks[n].cpu()) for n in unpacked)
