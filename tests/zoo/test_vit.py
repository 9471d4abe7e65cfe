"""The zoo's small ViT and torchvision's vit_b_16: their options, their attention weights, and learning."""

import pytest
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.sparsity.masks import prunable_weights
from raysparse.train import fit
from raysparse.zoo import build_model
from tests.conftest import small_config


def test_options_shape_the_network():
    model = build_model({"name": "vit", "patch_size": 4, "depth": 3, "width": 24, "heads": 3, "mlp_ratio": 1.5},
                        (3, 32, 32), 7)
    blocks = [m for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer)]
    assert len(blocks) == 3 and blocks[0].self_attn.num_heads == 3 and blocks[0].linear1.out_features == 36
    assert model.position.num_embeddings == 64  # (32 / 4) ** 2 patches
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    weights = prunable_weights(model)
    assert sum(name.endswith("self_attn.in_proj_weight") for name in weights) == 3
    assert not any("position" in name or "norm" in name for name in weights)  # embeddings and norms stay
    assert list(weights)[0] == "patches" and list(weights)[-1] == "head"  # 'first' and 'last'


@pytest.mark.parametrize(("option", "value", "message"), [
    ("patch_size", 3, "must divide the image sides (8x8)"),
    ("heads", 5, "must divide width=32"),
    ("depth", 0, "positive integer"),
    ("mlp_ratio", "2", "number > 0"),
    ("dropout", 1.0, "[0, 1)"),
])
def test_bad_options_name_the_field(option, value, message):
    with pytest.raises(ConfigError) as excinfo:
        build_model({"name": "vit", option: value}, (1, 8, 8), 10)
    assert excinfo.value.field == f"model.{option}" and message in str(excinfo.value)


def test_learns_digits_in_a_few_epochs():
    cfg = small_config("dense")
    cfg["model"] = {"name": "vit"}
    cfg["optimizer"] = {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}
    cfg["epochs"], cfg["measure_latency"] = 4, False
    final = fit(cfg)
    assert final["val_accuracy"] > 0.5  # chance is 0.1


def test_torchvision_vit_b_16_builds_for_the_input_size_and_names_its_attention():
    with torch.device("meta"):  # 86M parameters: their names and shapes are enough here
        model = build_model({"name": "torchvision:vit_b_16"}, (3, 32, 32), 10)
    weights = prunable_weights(model)
    attention = [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(12)]
    assert all(f"{a}.in_proj_weight" in weights and f"{a}.out_proj" in weights for a in attention)
    assert weights[f"{attention[0]}.in_proj_weight"].shape == (3 * 768, 768)
    assert len(weights) == 1 + 12 * 4 + 1  # patch embedding, 4 per block, head
    assert "class_token" not in weights and "encoder.pos_embedding" not in weights
    with pytest.raises(ConfigError, match=r"^model.name: torchvision:vit_b_16 on 8x8 inputs"):
        build_model({"name": "torchvision:vit_b_16"}, (1, 8, 8), 10)
