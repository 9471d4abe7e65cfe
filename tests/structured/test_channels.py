"""Channel groups and compaction on real models: removing zeroed channels changes nothing."""

import copy

import pytest
import torch
from torch import nn

from raysparse.structured.channels import (
    ChannelGroup,
    apply_plan,
    channel_groups,
    group_importance,
    zero_channels,
)
from raysparse.structured.plan import PruningPlan, plan_pruning
from raysparse.zoo import build_model

SHAPE = (3, 32, 32)


def built(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, SHAPE, 10).eval()
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # fresh BatchNorm is the identity; random statistics make the test bite
        if isinstance(module, nn.BatchNorm2d):
            for tensor, low, high in [(module.running_mean, -1, 1), (module.running_var, 0.5, 2),
                                      (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)]:
                tensor.data.uniform_(low, high, generator=generator)
    return model


def example() -> torch.Tensor:
    return torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))


def planned(model: nn.Module, **options) -> tuple[list[ChannelGroup], PruningPlan]:
    """A plan from random per-channel importance, the shape of what HAP's traces give."""
    generator = torch.Generator().manual_seed(3)
    importance = {name: torch.rand(module.weight.shape[0], generator=generator)
                  for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))}
    groups = channel_groups(model, example())
    return groups, plan_pruning(groups, group_importance(groups, importance), **options)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=["resnet20", "vgg11", "torchvision:resnet18", "lenet5", "mlp", "vit"])
def pruned(request):
    """The model, its masked twin and its compact copy, for a plan removing 30% of the channels."""
    original = built(request.param)
    groups, plan = planned(original, ratio=0.3)
    compact, zeroed = copy.deepcopy(original), copy.deepcopy(original)
    summary = apply_plan(compact, example(), plan)
    zero_channels(zeroed, example(), plan)
    return dict(original=original, groups=groups, plan=plan, compact=compact, zeroed=zeroed, summary=summary)


@torch.no_grad()
def test_removing_zeroed_channels_leaves_outputs_unchanged(pruned):
    x = example()
    assert pruned["compact"](x).shape == (2, 10)  # the classifier keeps its classes
    torch.testing.assert_close(pruned["compact"](x), pruned["zeroed"](x), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(pruned["original"](x), pruned["zeroed"](x), atol=1e-3)  # the zeros did matter


def test_compact_model_matches_summary_and_plan(pruned):
    compact, plan, summary, groups = pruned["compact"], pruned["plan"], pruned["summary"], pruned["groups"]
    assert summary["params_after"] == params(compact) < summary["params_before"] == params(pruned["original"])
    assert summary["params_before"] - summary["params_after"] == plan.params_removed  # counted exactly
    assert plan.channels_removed == round(0.3 * plan.channels_total) == plan.channels_total - summary["channels_after"]
    for group in groups:
        layer = compact.get_submodule(group.id)
        kept = layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features
        assert kept == group.channels - len(plan.groups[group.id]["removed"])


def test_residual_stream_is_one_group_and_classifier_outputs_are_kept():
    model = built("resnet20")
    groups = {group.id: group for group in channel_groups(model, example())}
    assert set(groups["0"].output_modules) == {"0", "3.conv2", "4.conv2", "5.conv2"}
    assert set(groups["6.shortcut.0"].output_modules) == {"6.shortcut.0", "6.conv2", "7.conv2", "8.conv2"}
    assert "14" not in {name for group in groups.values() for name in group.output_modules}
    stream = groups["0"]
    importance = {name: torch.full((stream.channels,), float(i)) for i, name in enumerate(stream.output_modules)}
    assert torch.all(group_importance([stream], importance)["0"] == 0 + 1 + 2 + 3)
    model.train()
    model[1].eval()  # a mixed mode, as with frozen BatchNorm, survives the tracing
    assert "0" not in {group.id for group in channel_groups(model, example(), keep=[model[0]])}
    assert model.training and not model[1].training and model[3].bn1.training


def test_bad_arguments_are_named():
    groups = [ChannelGroup("a", 2, ("a",), 1, True, ())]
    with pytest.raises(KeyError, match="no importance for a"):
        group_importance(groups, {})
    _, plan = planned(built("resnet20"), ratio=0.3)
    with pytest.raises(ValueError, match="not a layer of this model"):
        apply_plan(built("vgg11"), example(), plan)
    group_id, entry = next((gid, entry) for gid, entry in plan.groups.items() if entry["removed"])
    overlapping = {**plan.to_dict(), "groups": {group_id: {**entry, "implants": entry["removed"][:1]}}}
    with pytest.raises(ValueError, match="distinct indices"):
        apply_plan(built("resnet20"), example(), overlapping)


def test_transformers_lose_mlp_channels_and_keep_their_attention_width():
    """torch-pruning shrinks nn.MultiheadAttention only by re-splitting its heads: that group is left out,
    named with the reason; bare parameters (torchvision's class token and positions) are no refusal."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    models = {
        "vit": build_model({"name": "vit", "depth": 2}, SHAPE, 10),
        "torchvision": VisionTransformer(image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=16,
                                         mlp_dim=32, num_classes=10),
    }
    mlps = {"vit": ["encoder.layers.1.linear1", "encoder.layers.0.linear1"],
            "torchvision": ["encoder.layers.encoder_layer_1.mlp.0", "encoder.layers.encoder_layer_0.mlp.0"]}
    for kind, model in models.items():
        info = {}
        groups = channel_groups(model, example(), info=info)
        assert sorted(group.id for group in groups) == sorted(mlps[kind])
        (layers, reason), = info["skipped"]
        assert "nn.MultiheadAttention" in reason and any(name.endswith("attention") or name.endswith("attn")
                                                         for name in layers)
        plan = plan_pruning(groups, {g.id: torch.rand(g.channels) for g in groups}, ratio=0.5)
        before = params(model)
        summary = apply_plan(model, example(), plan)
        assert summary["params_after"] == params(model) < before
        assert model(example()).shape == (2, 10)
