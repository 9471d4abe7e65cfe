"""``density`` is over every weight that does a matmul; weights the layer selection leaves out of the
masks are counted (``weights_outside_masks``) and named once, never silently dropped from it."""

import pytest
import torch

from raysparse.sparsity.masks import prunable_weights
from raysparse.train import fit
from raysparse.train.metrics import layer_flops, sparse_flops
from raysparse.zoo import build_model
from tests.conftest import transformer_config


def test_weights_left_out_by_exclude_count_in_density_and_are_reported(capsys):
    seen = {}

    def report(metrics, ctx):
        seen.update(model=ctx.model, masks=ctx.masks)

    cfg = transformer_config("gmp", final_sparsity=0.9, exclude=["*.in_proj_weight"])
    final = fit(cfg, report)
    every = {n: w.numel() for n, w in prunable_weights(seen["model"]).items()}
    outside = every["encoder.layers.0.self_attn.in_proj_weight"]
    kept, masked = seen["masks"].count()
    assert masked + outside == sum(every.values())  # nothing is neither masked nor outside
    assert seen["masks"].density() == pytest.approx(0.1, abs=0.01)  # the selection is at its target ...
    assert final["density"] == pytest.approx((kept + outside) / (masked + outside))  # ... the network is not
    assert final["density"] > 0.2 and final["weights_outside_masks"] == outside
    line, = [line for line in capsys.readouterr().err.splitlines() if "are outside the masks" in line]
    assert f"1 weight tensors that do a matmul ({outside:,} of {sum(every.values()):,} weights)" in line
    assert line.endswith("encoder.layers.0.self_attn.in_proj_weight")


def test_dense_layers_stay_inside_the_budget(capsys):
    """``dense_layers`` are masked (all ones) and count toward the target: density hits it exactly."""
    cfg = transformer_config("gmp", final_sparsity=0.8, dense_layers=["*.out_proj"])
    final = fit(cfg)
    assert final["density"] == pytest.approx(0.2, abs=0.01)
    assert final["layer_density"]["encoder.layers.0.self_attn.out_proj"] == 1.0
    assert final["weights_outside_masks"] == 0
    assert "are outside the masks" not in capsys.readouterr().err


def test_attention_flops_are_counted_per_weight_and_scale_with_its_density():
    torch.manual_seed(0)
    model = build_model({"name": "vit", "depth": 1, "width": 16, "heads": 2}, (1, 8, 8), 10)
    total, by_layer = layer_flops(model, torch.zeros(1, 1, 8, 8))
    tokens, width = 16, 16  # 8x8 digits in 2x2 patches
    in_proj, out_proj = "encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn.out_proj"
    assert by_layer[in_proj] == 2 * (3 * width * width) * tokens  # query, key and value projections
    assert by_layer[out_proj] == 2 * width * width * tokens
    weights = sum(by_layer[n] for n in prunable_weights(model))
    assert weights < total  # the attention scores themselves are counted too (not the fused fast path's 0)
    assert by_layer["encoder.layers.0.self_attn"] > by_layer[in_proj] + by_layer[out_proj]
    half = sparse_flops(total, by_layer, {in_proj: 0.5})
    assert total - half == by_layer[in_proj] // 2
