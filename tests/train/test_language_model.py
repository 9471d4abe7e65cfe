"""A language model gets what a classifier gets: every masking method through ``fit`` and the
Sparsifier on the zoo's GPT, an HF Llama (GQA) from a factory, HAP refused in one line."""

import pytest
import torch

from raysparse import Sparsifier
from raysparse.errors import ConfigError
from raysparse.methods import METHODS
from raysparse.sparsity.masks import weight_slots
from raysparse.tasks.causal_lm import CausalLM
from raysparse.train import fit
from raysparse.zoo import build_data, build_model
from tests.conftest import lm_config

LANGUAGE_MODEL_METHODS = sorted(set(METHODS) - {"dense", "hap"})  # hap removes channels: refused below


def masked_density(masks) -> float:
    return sum(int(m.sum()) for m in masks.masks.values()) / sum(m.numel() for m in masks.masks.values())


@pytest.mark.parametrize("method", LANGUAGE_MODEL_METHODS)
def test_every_method_prunes_the_gpt_to_its_target_and_keeps_pruned_weights_zero(method, text_file):
    seen = []

    def report(metrics, ctx):
        for name, mask in ctx.masks.masks.items():
            module, attribute = weight_slots(ctx.model)[name]
            assert torch.all(getattr(module, attribute)[~mask] == 0), (method, name)
        seen.append((metrics, masked_density(ctx.masks), ctx))

    final = fit(lm_config(text_file, method, final_sparsity=0.75, distribution="uniform", prune_end=1), report)
    metrics, density, ctx = seen[-1]
    tolerance = max(METHODS[method].density_tolerance, 1e-3)
    if method != "dst":  # dst learns its own allocation and density
        assert density == pytest.approx(0.25, abs=tolerance)
    assert "lm_head" not in ctx.masks.masks and "blocks.0.attn.q_proj" in ctx.masks.masks
    assert final["weights_outside_masks"] == ctx.model.lm_head.weight.numel()  # the tied head, once
    assert torch.isfinite(torch.tensor(final["val_perplexity"])) and final["val_perplexity"] > 1
    assert final["best_val_perplexity"] == min(m["val_perplexity"] for m, _, _ in seen)
    assert "val_accuracy" not in final


def test_training_lowers_the_perplexity_below_the_uniform_guess(text_file):
    final = fit({**lm_config(text_file, "dense"), "epochs": 4})
    assert final["val_perplexity"] < 0.5 * 256  # a model that learned nothing stays near the byte vocabulary's 256


@pytest.mark.parametrize("method", LANGUAGE_MODEL_METHODS)
def test_the_sparsifier_runs_a_language_model_loop_and_exports_it(method, text_file):
    data = build_data({"name": "text", "path": text_file, "block_size": 32}, seed=0)
    torch.manual_seed(0)
    model = build_model({"name": "gpt", "depth": 1, "width": 32, "heads": 4}, data.info)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    loader = torch.utils.data.DataLoader(data.train, batch_size=16, shuffle=True)
    task = CausalLM()
    sparsity = {"method": method, "final_sparsity": 0.8, "update_frequency": 4, "prune_end": 1,
                "distribution": "uniform"}
    sparsifier = Sparsifier(model, optimizer, sparsity, steps_per_epoch=len(loader), epochs=2, task=task,
                            train_batches=lambda: iter(loader))
    for _ in range(2):
        for batch in loader:
            optimizer.zero_grad()
            (task.loss(model, batch)[0] + sparsifier.penalty()).backward()
            optimizer.step()
            sparsifier.step()
    if method != "dst":  # dst learns its own density
        assert sparsifier.density == pytest.approx(0.2, abs=max(METHODS[method].density_tolerance, 1e-3))
    example = sparsifier.example_input  # two real examples of the first batch: token ids, not made-up floats
    assert example.shape == (2, 32) and example.dtype == torch.long
    plain = sparsifier.export()
    for name, mask in sparsifier.masks.masks.items():
        module, attribute = weight_slots(plain)[name]
        assert torch.all(getattr(module, attribute)[~mask] == 0)
    assert CausalLM().evaluate(plain, [data.val[0][None]], torch.device("cpu"))["perplexity"] > 1


def test_hap_refuses_a_language_model_it_would_break_in_one_line(text_file):
    with pytest.raises(ConfigError) as caught:
        fit(lm_config(text_file, "hap"))
    assert caught.value.field == "sparsity.method" and "hap cannot compact GPT" in caught.value.message
    assert "\n" not in caught.value.message


LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "tie_word_embeddings": True}


def tiny_llama(vocab_size):
    """A user's factory: transformers' Llama from a config, random weights, grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = {k: v for k, v in LLAMA.items() if k != "model_type"}
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **config))


def test_a_transformers_llama_from_a_factory_has_its_projections_masked_and_its_tied_head_dense(text_file):
    seen = {}
    cfg = lm_config(text_file, "gmp", final_sparsity=0.6, distribution="uniform", prune_end=1)
    cfg["model"] = {}
    final = fit(cfg, lambda metrics, ctx: seen.update(ctx=ctx), model=tiny_llama)
    masks = seen["ctx"].masks
    projections = {f"model.layers.{i}.{part}" for i in range(2) for part in
                   ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                    "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert set(masks.masks) == projections  # GQA: k_proj and v_proj are half as wide, masked all the same
    assert masked_density(masks) == pytest.approx(0.4, abs=1e-3)
    head = seen["ctx"].model.lm_head.weight
    assert head is seen["ctx"].model.model.embed_tokens.weight and torch.all(head != 0)  # tied, never pruned
    assert final["weights_outside_masks"] == head.numel()
    assert final["val_perplexity"] > 1 and final["flops_sparse"] < final["flops_dense"]


def test_a_language_model_on_image_data_is_one_error_naming_the_model():
    with pytest.raises(ConfigError) as caught:
        fit({"model": {"name": "gpt"}, "epochs": 1})
    assert caught.value.field == "model.name" and "vocab_size" in caught.value.message
