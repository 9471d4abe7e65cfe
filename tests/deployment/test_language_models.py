"""raysparse.deploy on language models: the zoo's GPT and a tiny HF Llama (separate q/k/v/o and
MLP Linears applied to [batch, seq, width]) and a user's GPT on nn.MultiheadAttention with a
causal mask, deployed on token ids: outputs equal the masked model's, the plan names every
projection (never a speed: that is benchmarks/deploy.py)."""

import pytest
import torch
from torch import nn

import raysparse
from raysparse.deployment import build_deployed
from raysparse.deployment.attention import DeployedAttention, SubmoduleEncoderLayer
from raysparse.deployment.kernels import SparseLinear
from raysparse.deployment.planner import _layer_inputs
from raysparse.sparsity.masks import weight_slots
from raysparse.tasks import logits_of
from raysparse.zoo import build_model
from tests.zoo.test_hf import LLAMA

TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}  # float32 sums in another order (CSR)
KERNELS = ("dense", "csr", "bsr16x16", "bsr8x8", "bsr4x4", "bsr2x2")
GPT_LAYERS = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj"]
LLAMA_LAYERS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def masked_at_90(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every Linear but the head keeps a random 10% of its weights (the head is tied to the
    token embedding: masking it would prune the embedding)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and name != "lm_head":
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator) < 0.1)
    return model.eval()


def token_ids(vocab: int, seq: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def gpt() -> nn.Module:
    torch.manual_seed(0)
    return masked_at_90(build_model({"name": "gpt", "depth": 2, "width": 64, "heads": 4},
                                    {"vocab_size": 256, "block_size": 32}))


def llama() -> nn.Module:
    torch.manual_seed(0)
    return masked_at_90(build_model({"name": "hf", "config": LLAMA}, {"vocab_size": 50, "block_size": 16}))


def assert_projections_planned(plan, names: list[str]) -> None:
    kernels = {row.layer: row.kernel for row in plan}
    assert set(kernels) == set(names)  # the tied head is no layer of the plan: it is the embedding
    assert all(kernel in KERNELS for kernel in kernels.values()), kernels
    for row in plan:
        assert row.density == pytest.approx(0.1, abs=0.05), row


@pytest.mark.parametrize("batch", [1, 16])
def test_a_masked_gpt_deploys_on_token_ids_and_computes_the_same(batch):
    model, ids = gpt(), token_ids(256, 32)
    deployed = raysparse.deploy(model, ids, batch_size=batch)
    forced = build_deployed(model, ids, kernels={"*": "csr"}, batch_size=batch)
    x = ids[torch.arange(batch) % 2]
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(deployed(x), expected, **TOLERANCE)
        torch.testing.assert_close(forced(x), expected, **TOLERANCE)
    names = [f"blocks.{i}.{layer}" for i in range(2) for layer in GPT_LAYERS]
    assert_projections_planned(deployed.plan, names)
    assert deployed.plan.batch_size == batch and f"batch {batch}:" in str(deployed.plan)
    assert all(row.timings.get("dense") and row.sparse_ms for row in deployed.plan)  # every one timed
    assert sum(isinstance(m, SparseLinear) for m in forced.modules()) == len(names) == forced.plan.sparse_layers()


def test_the_planner_times_each_projection_on_every_token_of_the_batch():
    model, ids = gpt(), token_ids(256, 32)
    x = ids[torch.arange(16) % 2]
    inputs = _layer_inputs(model, weight_slots(model), x)
    assert inputs["blocks.0.attn.q_proj"].shape == (16, 32, 64)
    assert inputs["blocks.1.mlp.down_proj"].shape == (16, 32, 4 * 64)


@pytest.mark.parametrize("batch", [1, 16])
def test_a_masked_hf_llama_deploys_on_token_ids_and_computes_the_same(batch):
    model, ids = llama(), token_ids(50, 16)
    deployed = raysparse.deploy(model, ids, batch_size=batch)
    forced = build_deployed(model, ids, kernels={"*": "csr"}, batch_size=batch)
    x = ids[torch.arange(batch) % 2]
    with torch.no_grad():
        expected = model(x).logits
        torch.testing.assert_close(logits_of(deployed(x)), expected, **TOLERANCE)
        torch.testing.assert_close(logits_of(forced(x)), expected, **TOLERANCE)
    assert_projections_planned(deployed.plan, [f"model.layers.{i}.{layer}" for i in range(2) for layer in LLAMA_LAYERS])
    assert sum(isinstance(m, SparseLinear) for m in forced.modules()) == 14


def test_an_hf_llama_deploys_on_keyword_inputs_with_padding():
    model, ids = llama(), token_ids(50, 16)
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 12:] = 0  # the second example is 12 tokens long
    example = {"input_ids": ids, "attention_mask": attention_mask}
    deployed = build_deployed(model, example, kernels={"*": "csr"}, batch_size=4)
    assert deployed.plan.batch_size == 4
    batch = {k: v[torch.tensor([0, 1, 0, 1])] for k, v in example.items()}
    with torch.no_grad():
        torch.testing.assert_close(deployed(**batch).logits, model(**batch).logits, **TOLERANCE)


class MultiheadGPT(nn.Module):
    """A user's causal GPT on nn.MultiheadAttention: the causal mask in one of the forms
    nn.MultiheadAttention takes, optionally with padding (True: a padded key)."""

    def __init__(self, mask: str, vocab: int = 40, width: int = 32, heads: int = 4, batch_first: bool = True):
        super().__init__()
        self.mask, self.heads, self.batch_first = mask, heads, batch_first
        self.tokens = nn.Embedding(vocab, width)
        self.attention = nn.ModuleList(nn.MultiheadAttention(width, heads, batch_first=batch_first) for _ in range(2))
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        seq = ids.shape[1]
        causal = torch.triu(torch.ones(seq, seq, dtype=torch.bool, device=ids.device), 1)  # True: may not attend
        options = {"key_padding_mask": padding}
        if self.mask == "bool":
            options["attn_mask"] = causal
        elif self.mask == "float":
            options["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(seq)
        elif self.mask == "bool-per-head":  # [batch * heads, L, S]
            options["attn_mask"] = causal.expand(ids.shape[0] * self.heads, seq, seq)
        elif self.mask == "hint":  # the causal mask and is_causal, without weights: SDPA's causal kernel
            options.update(attn_mask=causal, is_causal=True, need_weights=False)
        x = self.tokens(ids)
        for attention in self.attention:
            h = x if self.batch_first else x.transpose(0, 1)
            out = attention(h, h, h, **options)[0]
            x = x + (out if self.batch_first else out.transpose(0, 1))
        return self.head(x + self.mlp(x))


def masked_multihead(mask: str, **options) -> nn.Module:
    torch.manual_seed(0)
    model = MultiheadGPT(mask, **options)
    with torch.no_grad():
        for module, attribute in list(weight_slots(model).values())[:-1]:
            weight = getattr(module, attribute)
            weight.mul_(torch.rand_like(weight) < 0.1)
    return model.eval()


@pytest.mark.parametrize("mask", ["bool", "float", "bool-per-head", "hint"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_a_users_multihead_attention_gpt_with_a_causal_mask_deploys_and_computes_the_same(mask, batch_first):
    model, ids = masked_multihead(mask, batch_first=batch_first), token_ids(40, 12, batch=4)
    deployed = raysparse.deploy(model, ids)
    forced = build_deployed(model, ids, kernels={"*": "csr"})
    assert all(isinstance(m, DeployedAttention) for m in forced.network.attention)
    with torch.no_grad():
        expected = model(ids)
        torch.testing.assert_close(deployed(ids), expected, **TOLERANCE)
        torch.testing.assert_close(forced(ids), expected, **TOLERANCE)
        # the mask matters: without it the output differs, so the equality above is no accident
        unmasked = MultiheadGPT("none", batch_first=batch_first)
        unmasked.load_state_dict(model.state_dict())
        assert not torch.allclose(unmasked.eval()(ids), expected, **TOLERANCE)


@pytest.mark.parametrize("mask", ["bool", "float"])
def test_padding_masks_merge_with_the_causal_mask(mask):
    model, ids = masked_multihead(mask), token_ids(40, 12, batch=3)
    padding = torch.zeros(3, 12, dtype=torch.bool)
    padding[1, 8:] = padding[2, 5:] = True  # right padding: every query still sees its first key
    if mask == "float":  # the same type as the causal mask (torch deprecates mixing them)
        padding = torch.zeros(3, 12).masked_fill(padding, float("-inf"))
    forced = build_deployed(model, ids, kernels={"*": "csr"})
    with torch.no_grad():
        expected = model(ids, padding)
        torch.testing.assert_close(forced(ids, padding), expected, **TOLERANCE)
        assert not torch.allclose(model(ids), expected, **TOLERANCE)


def test_a_causal_transformer_encoder_deploys_off_its_fused_path_with_the_same_outputs():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    with torch.no_grad():
        for module, attribute in weight_slots(model).values():
            weight = getattr(module, attribute)
            weight.mul_(torch.rand_like(weight) < 0.1)
    model.eval()
    x = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(1))
    causal = nn.Transformer.generate_square_subsequent_mask(10)
    deployed = build_deployed(model, x, kernels={"*": "csr"})
    assert all(isinstance(m, SubmoduleEncoderLayer) for m in deployed.network.layers)
    with torch.no_grad():
        expected = model(x, mask=causal, is_causal=True)
        torch.testing.assert_close(deployed(x, mask=causal, is_causal=True), expected, **TOLERANCE)
        torch.testing.assert_close(deployed(x, mask=causal.isinf()), expected, **TOLERANCE)
        assert not torch.allclose(deployed(x), expected, **TOLERANCE)


def test_a_deployed_attention_refuses_a_mask_of_another_dtype():
    model, ids = masked_multihead("none"), token_ids(40, 6)
    attention = build_deployed(model, ids, kernels={"*": "csr"}).network.attention[0]
    x = torch.randn(2, 6, 32)
    with pytest.raises(TypeError, match="bool or float"):
        attention(x, x, x, attn_mask=torch.ones(6, 6, dtype=torch.long))
