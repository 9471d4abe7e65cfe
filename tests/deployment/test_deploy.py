"""raysparse.deploy: the deployed network computes what the masked one does, whatever kernel each
layer runs, and its plan matches what was measured (never a speed: that is benchmarks/deploy.py)."""

import copy

import pytest
import torch
from torch import nn

import raysparse
from raysparse.deployment import build_deployed
from raysparse.deployment.kernels import SparseLinear, UnfoldConv2d, square_block_size
from raysparse.deployment.planner import MAX_TIMED_DENSITY, SPARSE_MARGIN
from raysparse.sparsity.masks import weight_slots
from raysparse.structured.channels import apply_plan, channel_groups, group_importance
from raysparse.structured.plan import plan_pruning
from raysparse.zoo import build_model

# float32 sums in another order (CSR, im2col, folded BatchNorm): equal to a few ulps of the outputs
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


def masked(name: str, shape, density: float = 0.1, seed: int = 0, **options) -> nn.Module:
    """A zoo model whose matmul weights keep a random ``density`` (the last one dense, as is usual),
    with random BatchNorm statistics (fresh ones are the identity, folding them would prove nothing)."""
    torch.manual_seed(seed)
    model = build_model({"name": name, **options}, shape, 10).eval()
    slots = list(weight_slots(model).items())
    with torch.no_grad():
        for _, (module, attribute) in slots[:-1]:
            weight = getattr(module, attribute)
            weight.mul_(torch.rand_like(weight) < density)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
    return model


MODELS = {
    "mlp": (dict(name="mlp", hidden=[256, 128]), (1, 8, 8)),
    "lenet5": (dict(name="lenet5"), (1, 8, 8)),
    "resnet20": (dict(name="resnet20"), (3, 8, 8)),
    "vit": (dict(name="vit", depth=1, width=16, heads=2), (1, 8, 8)),
}
# every kernel path, forced (the timing may pick none of them on the machine that runs the tests)
FORCED = {"mlp": "csr", "lenet5": "unfold-csr", "resnet20": "unfold-csr", "vit": "csr"}


def example(shape, batch=4):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("key", MODELS)
def test_deployed_outputs_equal_the_masked_model(key):
    spec, shape = MODELS[key]
    model = masked(spec["name"], shape, **{k: v for k, v in spec.items() if k != "name"})
    x = example(shape)
    with torch.no_grad():
        expected = model(x)
        timed = raysparse.deploy(model, x)
        forced = build_deployed(model, x, kernels={"*": FORCED[key]})
        torch.testing.assert_close(timed(x), expected, **TOLERANCE)
        torch.testing.assert_close(forced(x), expected, **TOLERANCE)
    assert any(row.kernel == FORCED[key] for row in forced.plan)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in timed.modules())  # folded into the convolutions
    assert not any(isinstance(m, nn.BatchNorm2d) for m in forced.modules())


def test_forced_attention_runs_its_projections_sparse_outside_the_fused_path():
    spec, shape = MODELS["vit"]
    model = masked("vit", shape, depth=1, width=16, heads=2)
    deployed = build_deployed(model, example(shape), kernels={"*": "csr"})
    kernels = {row.layer: row.kernel for row in deployed.plan}
    assert kernels["encoder.layers.0.self_attn.in_proj_weight"] == "csr"
    assert kernels["encoder.layers.0.self_attn.out_proj"] == "csr"
    attention = deployed.network.encoder.layers[0].self_attn
    assert isinstance(attention.in_proj, SparseLinear) and isinstance(attention.out_proj, SparseLinear)


@pytest.mark.parametrize("layer", ["*linear1", "*linear2", "*out_proj"])
def test_one_sparse_layer_of_an_encoder_layer_takes_it_off_the_fused_path(layer):
    model = masked("vit", (1, 8, 8), depth=1, width=16, heads=2)
    x = example((1, 8, 8))
    deployed = build_deployed(model, x, kernels={layer: "csr", "*": "dense"})  # the first pattern that matches
    assert deployed.plan.sparse_layers() == 1
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), model(x), **TOLERANCE)


def test_block_sparse_weights_get_a_bsr_kernel_with_their_block_size():
    torch.manual_seed(0)
    keep = torch.rand(16, 16) < 0.1
    weight = torch.randn(64, 64) * keep.repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert square_block_size(weight) == 4
    assert square_block_size(torch.randn(64, 64) * (torch.rand(64, 64) < 0.1)) is None  # unstructured
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
    with torch.no_grad():
        model[0].weight.copy_(weight)
    x = torch.randn(8, 64)
    deployed = build_deployed(model, x, kernels={"0": "bsr4x4"})
    assert deployed.plan[0].kernel == "bsr4x4" and deployed.network[0].weight.layout == torch.sparse_bsr
    torch.testing.assert_close(deployed(x), model(x), **TOLERANCE)


def test_a_hap_compacted_network_with_batchnorm_deploys_the_same_way():
    model = masked("resnet20", (3, 8, 8), density=1.0)
    x = example((3, 8, 8), batch=2)
    importance = {n: torch.rand(m.weight.shape[0], generator=torch.Generator().manual_seed(3))
                  for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups = channel_groups(model, x)
    apply_plan(model, x, plan_pruning(groups, group_importance(groups, importance), ratio=0.3))
    with torch.no_grad():  # masks on the compacted convolutions too
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.mul_(torch.rand_like(module.weight) < 0.2)
        deployed = build_deployed(model, x, kernels={"*": "unfold-csr"})
        torch.testing.assert_close(deployed(x), model(x), **TOLERANCE)
    assert any(isinstance(m, UnfoldConv2d) for m in deployed.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("spec", [dict(name="mlp", hidden=[512, 256]), dict(name="vit", depth=1, width=64, heads=2)])
def test_plan_has_one_row_per_weight_and_chooses_what_it_measured_fastest(batch, spec):
    model = masked(spec["name"], (1, 16, 16), density=0.05, **{k: v for k, v in spec.items() if k != "name"})
    deployed = raysparse.deploy(model, example((1, 16, 16), batch=2), batch_size=batch)
    plan = deployed.plan
    assert [row.layer for row in plan] == list(weight_slots(model)) and plan.batch_size == batch
    for row, (module, attribute) in zip(plan, weight_slots(model).values()):
        assert row.density == pytest.approx(float((getattr(module, attribute) != 0).float().mean()))
        if row.density > MAX_TIMED_DENSITY:
            assert row.timings == {} and row.kernel == "dense"
            continue
        sparse = {k: ms for k, ms in row.timings.items() if k != "dense"}
        assert "dense" in row.timings and sparse, row
        best = min(sparse, key=sparse.get)
        pays = sparse[best] <= SPARSE_MARGIN * row.timings["dense"]
        assert row.kernel == ("dense" if plan.reverted or not pays else best)
    if plan.reverted:  # the whole network was timed and the per-layer choices did not pay together
        assert plan.network_ms["deployed"] > SPARSE_MARGIN * plan.network_ms["dense"]
    if plan.sparse_layers():  # ... and kept only where they did
        assert plan.network_ms["deployed"] <= SPARSE_MARGIN * plan.network_ms["dense"]
    sparse_modules = sum(isinstance(m, (SparseLinear, UnfoldConv2d)) for m in deployed.modules())
    assert sparse_modules == plan.sparse_layers()  # a layer on a sparse kernel: a Linear or a convolution
    assert "kernel" in str(plan) and f"batch {batch}" in str(plan)


def test_deploy_leaves_the_given_model_alone_and_refuses_a_parametrized_one():
    model = masked("mlp", (1, 8, 8), hidden=[32])
    before = copy.deepcopy(model.state_dict())
    raysparse.deploy(model, example((1, 8, 8)))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(isinstance(m, (nn.Sequential, nn.Flatten, nn.Linear, nn.ReLU)) for m in model.modules())
    nn.utils.parametrize.register_parametrization(model[1], "weight", nn.Identity())
    with pytest.raises(ValueError, match="export"):
        raysparse.deploy(model, example((1, 8, 8)))
