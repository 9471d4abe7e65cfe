"""HAP through the one loop: pruned once, really smaller, reported as it is, resumable."""

import pytest
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.structured.implants import ImplantedConv
from raysparse.train import fit
from raysparse.train.latency import count_params
from tests.conftest import small_config, transformer_config


def hap_config(**sparsity):
    cfg = small_config("hap", **{"final_sparsity": 0.5, "prune_unit": "channels", "prune_end": 4, **sparsity})
    cfg["model"] = {"name": "lenet5"}
    cfg["optimizer"]["lr"] = 0.05
    cfg["epochs"] = 6
    return cfg


def convnet():
    """Two plain convs and a kept classifier: every channel a plan can select takes an implant, so the
    implants cannot depend on how the Hessian traces of near-equal channels happen to round."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )


def implant_channels(model: nn.Module) -> int:
    return sum(len(m.channel_order) - m.kept.out_channels for m in model.modules() if isinstance(m, ImplantedConv))


@pytest.mark.parametrize("implant", ["zero", "lowrank"])
def test_compact_model_is_smaller_and_reported_as_it_is(implant):
    reports, models = [], []

    def report(metrics, ctx):
        reports.append(metrics)
        models.append(ctx.export_model())

    fit(hap_config(implant_ratio=0.2, implant=implant), report, model=convnet())
    before, after = reports[0], reports[-1]
    assert before["params"] == before["params_dense"] and after["params"] < 0.7 * after["params_dense"]
    assert after["params"] == count_params(models[-1])  # the reported count is the model's own
    assert after["flops_sparse"] < before["flops_sparse"] == before["flops_dense"]
    assert after["density"] < 1.0 and after["val_accuracy"] > 0.5
    kinds = {type(m).__name__ for m in models[-1].modules()}
    assert {"zero": "ZeroInitImplant", "lowrank": "LowRankImplant"}[implant] in kinds
    # 12 of 24 channels selected, all implantable: a fifth of them (2) kept as implants, 10 removed
    assert (after["channels_removed"], after["channels_implanted"]) == (10, 2) == (10, implant_channels(models[-1]))
    assert "channels_implanted" not in before  # nothing is pruned before prune_end
    assert models[-1](torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # classifier outputs kept


def test_lenet5_reports_the_implants_it_really_has():
    reports, models = [], []
    fit(hap_config(implant_ratio=0.2), lambda m, ctx: (reports.append(m), models.append(ctx.export_model())))
    assert reports[-1]["channels_implanted"] == implant_channels(models[-1])
    assert reports[-1]["channels_removed"] + reports[-1]["channels_implanted"] == round(0.5 * 226)


def test_asking_for_implants_where_none_can_go_says_so():
    cfg = hap_config(implant_ratio=0.2)
    cfg["model"] = {"name": "mlp", "hidden": [32, 16]}  # Linear layers only: no channel takes an implant
    reports = []
    with pytest.warns(UserWarning, match="implant_ratio=0.2: none of the 24 channels"):
        fit(cfg, lambda m, ctx: reports.append(m))
    assert reports[-1]["channels_implanted"] == 0 and reports[-1]["channels_removed"] == 24


def test_prune_at_epoch_zero_starts_from_a_loaded_network(tmp_path):
    from raysparse.zoo import build_model

    torch.manual_seed(3)
    trained = build_model({"name": "lenet5"}, (1, 8, 8), 10)
    torch.save(trained.state_dict(), tmp_path / "dense.pt")
    cfg = hap_config(prune_end=0)
    cfg["init_from"] = str(tmp_path / "dense.pt")
    cfg["epochs"] = 1
    reports = []
    fit(cfg, lambda m, ctx: reports.append(m))
    assert reports[0]["params"] < reports[0]["params_dense"]


def test_resume_after_the_restructure_is_bit_identical(tmp_path):
    cfg = hap_config(prune_end=2)
    cfg["epochs"] = 4
    fit(cfg, checkpoint_dir=tmp_path / "full")

    class Stop(Exception):
        pass

    def stop(metrics, ctx):
        if metrics["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        fit(cfg, stop, checkpoint_dir=tmp_path / "part")
    fit(cfg, checkpoint_dir=tmp_path / "part", resume_from=tmp_path / "part")
    full = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    assert full["method"]["plan"] == part["method"]["plan"] and full["method"]["plan"] is not None
    assert all(torch.equal(full["model"][k], part["model"][k]) for k in full["model"])


def test_vit_loses_mlp_channels_says_its_attention_stays_and_still_runs():
    cfg = transformer_config("hap", final_sparsity=0.5, prune_unit="channels", prune_end=2, hessian_batches=2)
    reports, models = [], []
    with pytest.warns(UserWarning, match=r"hap removes channels from 1 of the 2 channel groups of ViT; 1 stay "
                                         r"whole: the width tied to an nn.MultiheadAttention's embed_dim"):
        fit(cfg, lambda m, ctx: (reports.append(m), models.append(ctx.export_model())))
    before, after = reports[0], reports[-1]
    assert before["params"] == before["params_dense"] and after["params"] < 0.85 * after["params_dense"]
    assert after["params"] == count_params(models[-1]) and after["density"] < 0.9
    block = models[-1].encoder.layers[0]
    assert block.linear1.out_features < 32 and block.self_attn.embed_dim == 16  # MLP channels, not attention
    assert models[-1](torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert after["val_accuracy"] > 0.3  # chance is 0.1


class AttentionOnly(nn.Module):
    """Rows of the image as tokens, one attention layer, a classifier: every channel group either holds
    the attention width or the classes, so torch-pruning has nothing it can cut."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        tokens = self.embed(x.flatten(1, 2))
        return self.head(self.attention(tokens, tokens, tokens, need_weights=False)[0].mean(1))


def test_a_model_it_cannot_compact_is_refused_before_training_in_one_line():
    reports = []
    with pytest.raises(ConfigError) as excinfo:
        fit(hap_config(), lambda m, ctx: reports.append(m), model=AttentionOnly())
    assert excinfo.value.field == "sparsity.method" and reports == []
    assert "\n" not in str(excinfo.value)
    assert str(excinfo.value).startswith("sparsity.method: hap finds no channels that torch-pruning can remove "
                                         "in AttentionOnly (the width tied to an nn.MultiheadAttention's embed_dim")
