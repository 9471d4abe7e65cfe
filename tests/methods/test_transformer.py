"""Every method on a transformer: attention weights (``in_proj_weight``, ``out_proj``) reach the target
density and their pruned entries stay zero in what the forward pass computes with."""

import pytest
import torch
from torch import nn

from raysparse.config import load_config
from raysparse.methods import METHODS
from raysparse.sparsity.masks import weight_slots
from raysparse.train import fit
from tests.conftest import transformer_config

ATTENTION = ("encoder.layers.0.self_attn.in_proj_weight", "encoder.layers.0.self_attn.out_proj")
MASKING = sorted(set(METHODS) - {"dense", "hap"})  # hap removes channels (tests/methods/test_hap.py)


def effective(model: nn.Module, name: str) -> torch.Tensor:
    """The weight the forward pass uses: the parameter, or DST's parametrized product."""
    module, attribute = weight_slots(model)[name]
    return getattr(module, attribute)


@pytest.mark.parametrize("method", MASKING)
def test_attention_weights_reach_the_target_and_pruned_entries_stay_zero(method):
    reports = []

    def report(metrics, ctx):
        for name, mask in ctx.masks.masks.items():
            assert torch.all(effective(ctx.model, name)[~mask] == 0), (method, name, metrics["epoch"])
        reports.append(metrics)

    # uniform: every layer, attention included, at the target; a one-epoch ramp leaves two epochs at it
    final = fit(transformer_config(method, final_sparsity=0.75, distribution="uniform", prune_end=1), report)
    tolerance = max(METHODS[method].density_tolerance, 1e-3)
    assert final["density"] == pytest.approx(0.25, abs=tolerance)
    assert final["weights_outside_masks"] == 0
    for name in ATTENTION:
        if method == "dst":  # the network learns its own allocation; the projection fixes only the total
            assert final["layer_density"][name] < 0.9, name
        else:
            assert final["layer_density"][name] == pytest.approx(0.25, abs=1e-3), name
    assert final["flops_sparse"] < 0.6 * final["flops_dense"]


@pytest.mark.parametrize("method", ["gmp", "rigl", "dst"])
def test_masks_stay_on_attention_weights_through_optimizer_steps(method):
    # free DST: its masks follow the thresholds set below, no projection to a global count at step 0
    cfg = load_config(transformer_config(method, final_sparsity=0.5, initial_sparsity=0.5, prune_end=0,
                                         distribution="uniform", density_control="free"))
    torch.manual_seed(0)
    from raysparse.zoo import build_model

    model = build_model(cfg.model, (1, 8, 8), 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    sparse = METHODS[method](cfg.sparsity, seed=0)
    sparse.attach(model, optimizer, steps_per_epoch=4, total_steps=8)
    if method == "dst":
        for name in ATTENTION:  # thresholds that mask about half of each attention weight
            sparse.gates[name].threshold.data.fill_(float(sparse.masks.weights[name].detach().abs().median()))
        sparse.sync_masks(step=0, reason="test")
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for step in range(8):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        penalty = sparse.regularization_loss()
        (loss if penalty is None else loss + penalty).backward()
        sparse.after_backward(step)
        optimizer.step()
        sparse.after_optimizer_step(step)
        sparse.on_epoch_end(step // 4)
        for name in ATTENTION:
            mask = sparse.masks.masks[name]
            assert 0.2 < mask.float().mean() < 0.8, (method, name)
            assert torch.all(effective(model, name)[~mask] == 0), (method, name, step)


def test_dst_gates_separate_query_key_value_weights_and_exports_a_plain_model():
    from torch.nn.utils import parametrize

    from raysparse.methods.dst import DST

    torch.manual_seed(0)
    attention = nn.MultiheadAttention(16, 2, kdim=6, vdim=4, batch_first=True)
    model = nn.ModuleDict({"attention": attention})
    method = DST(load_config(transformer_config("dst")).sparsity, seed=0)
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=10, total_steps=100)
    assert set(method.gates) == {f"attention.{r}_proj_weight" for r in "qkv"} | {"attention.out_proj"}
    for gate in method.gates.values():
        gate.threshold.data.fill_(0.1)
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 3, 6), torch.randn(2, 3, 4)
    plain = method.export(model)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert (plain["attention"].k_proj_weight == 0).any()
    torch.testing.assert_close(plain["attention"](q, k, v)[0], model["attention"](q, k, v)[0])


def test_torchvision_vision_transformer_has_its_attention_masked():
    """torchvision's VisionTransformer class (vit_b_16's, here one small block) through the loop."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=8, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=10)
    vit.conv_proj = nn.Conv2d(1, 16, kernel_size=4, stride=4)  # digits have one channel
    cfg = transformer_config("static", final_sparsity=0.8, distribution="uniform", prune_end=1)
    cfg["epochs"] = 1
    final = fit(cfg, model=vit)
    attention = "encoder.layers.encoder_layer_0.self_attention"
    for name in (f"{attention}.in_proj_weight", f"{attention}.out_proj"):
        assert final["layer_density"][name] == pytest.approx(0.2, abs=1e-3)
        module, attribute = weight_slots(vit)[name]
        assert (getattr(module, attribute) == 0).float().mean() == pytest.approx(0.8, abs=1e-3)
