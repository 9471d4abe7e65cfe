"""Block-sequential calibration on a tiny random HF Llama (GQA): the blocks are found, their
captured inputs reproduce the logits, each block is calibrated on the pruned outputs of the one
before, SparseGPT keeps its exact counts and matches the per-layer path where both see the same
inputs, and the blocks run about twice per batch instead of once per pruned layer."""

import pytest
import torch
from torch import nn

from raysparse.config import load_sparsity
from raysparse.methods import get_method
from raysparse.methods.sequential import capture_block_inputs, chain_problem, feed, run_block, transformer_blocks
from raysparse.tasks.base import call
from raysparse.tasks.causal_lm import CausalLM
from raysparse.tasks.classification import Classification
from raysparse.zoo.models import build_model

# 4 query heads over 2 key-value heads (grouped-query attention); the head is untied: a prunable
# layer outside the blocks
LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 50}
BATCHES = 2


def tiny_llama(**config) -> nn.Module:
    torch.manual_seed(0)
    return build_model({"name": "hf", "config": {**LLAMA, **config}}, {"vocab_size": 50, "block_size": 16})


def token_batches(n: int = BATCHES) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, 50, (2, 16), generator=g) for _ in range(n)]


def pruner(method: str, model: nn.Module, batches: list, **sparsity):
    """The method attached to ``model``, pruning at 50% (uniform) when ``on_train_start`` is called."""
    cfg = load_sparsity({"method": method, "distribution": "uniform", "final_sparsity": 0.5, "prune_end": 0,
                         "calibration_batches": len(batches), **sparsity}, epochs=1)
    pruning = get_method(method)(cfg, seed=0)
    pruning.bind(task=CausalLM(), train_batches=lambda: iter(batches), example_input=lambda: batches[0][:1])
    pruning.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1, total_steps=1)
    return pruning


def test_the_blocks_are_the_largest_list_of_alike_modules_holding_linears():
    model = tiny_llama()
    blocks, name = transformer_blocks(model)
    assert name == "model.layers" and blocks is model.model.layers and len(blocks) == 3
    gpt = build_model({"name": "gpt", "depth": 2, "width": 16, "heads": 2}, {"vocab_size": 20, "block_size": 8})
    assert transformer_blocks(gpt)[1] == "blocks"
    assert transformer_blocks(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))) is None
    # a list of projections is no stack of blocks: what runs between them is not in the list
    assert transformer_blocks(nn.ModuleList(nn.Linear(4, 4) for _ in range(3))) is None


def test_the_captured_inputs_run_through_every_block_reproduce_the_logits():
    model = tiny_llama().eval()
    ids = token_batches(1)[0]
    padded = {"input_ids": ids, "attention_mask": torch.tensor([[0] * 4 + [1] * 12, [1] * 16])}  # left padding
    batches = [ids, padded]
    cached = capture_block_inputs(model, lambda batch: call(model, batch), batches, model.model.layers[0])
    assert cached[1][1]["attention_mask"] is not None  # each batch keeps its own mask
    for block in model.model.layers:
        once = run_block(block, cached)
        again = run_block(block, cached)  # a KV cache kept in the inputs would grow and change this
        assert all(torch.equal(a, b) for a, b in zip(once, again))
        cached = feed(cached, once)
    with torch.no_grad():
        for batch, (args, _) in zip(batches, cached):
            expected = call(model, batch).logits
            assert torch.allclose(model.lm_head(model.model.norm(args[0])), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_each_block_is_calibrated_on_the_pruned_outputs_of_the_block_before(method):
    model, batches = tiny_llama(tie_word_embeddings=True), token_batches()  # no full pass for a head after
    layers = model.model.layers
    dense_block0 = [p.detach().clone() for p in layers[0].parameters()]
    model.eval()
    cached = capture_block_inputs(model, lambda batch: call(model, batch), batches, layers[0])
    dense_outputs = run_block(layers[0], cached)
    seen = []
    handle = layers[1].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    pruner(method, model.train(), batches, sequential=True).on_train_start()
    handle.remove()
    assert any(not torch.equal(p, d) for p, d in zip(layers[0].parameters(), dense_block0))  # block 0 was pruned
    pruned_outputs = run_block(layers[0], cached)
    # one pass of batch 0 checks the blocks chain; then block 1 runs over the batches twice: statistics, outputs
    assert len(seen) == 1 + 2 * BATCHES
    for i in range(BATCHES):
        for calibration in (seen[1 + i], seen[1 + BATCHES + i]):
            torch.testing.assert_close(calibration, pruned_outputs[i], rtol=0, atol=1e-6)
            assert not torch.allclose(calibration, dense_outputs[i], atol=1e-3)


def test_sparsegpt_keeps_exact_counts_and_agrees_with_the_per_layer_path_where_inputs_are_the_same():
    batches = token_batches()
    results = {}
    for sequential in (True, False):
        model = tiny_llama()
        method = pruner("sparsegpt", model, batches, sequential=sequential)
        method.on_train_start()
        results[sequential] = method.masks.masks, dict(model.named_parameters())
    (masks, weights), (layer_masks, layer_weights) = results[True], results[False]
    assert "lm_head" in masks  # untied: pruned after the blocks, from full passes
    for name, mask in masks.items():  # uniform: every layer keeps round(0.5 * size), both ways
        assert int(mask.sum()) == int(layer_masks[name].sum()) == round(0.5 * mask.numel()), name
        assert torch.all(weights[f"{name}.weight"][~mask] == 0), name
    # block 0's q, k and v see the embeddings either way (one shared Hessian, computed once here):
    # the same masks and weights; o_proj sees them pruned only on the per-layer path
    for part in ("q_proj", "k_proj", "v_proj"):
        name = f"model.layers.0.self_attn.{part}"
        assert torch.equal(masks[name], layer_masks[name]), name
        torch.testing.assert_close(weights[f"{name}.weight"], layer_weights[f"{name}.weight"], rtol=0, atol=1e-6)
    name = "model.layers.0.self_attn.o_proj.weight"
    assert not torch.allclose(weights[name], layer_weights[name])


def test_wanda_sequential_matches_the_one_pass_norms_on_block_0_and_differs_later():
    batches = token_batches()
    masks = {}
    for sequential in (True, False):
        method = pruner("wanda", tiny_llama(), batches, sequential=sequential)
        assert method.options.sequential is sequential
        method.on_train_start()
        masks[sequential] = method.masks.masks
    block0 = [n for n in masks[True] if n.startswith("model.layers.0.")]
    assert len(block0) == 7 and all(torch.equal(masks[True][n], masks[False][n]) for n in block0)
    later = [n for n in masks[True] if n.startswith("model.layers.2.")]
    assert any(not torch.equal(masks[True][n], masks[False][n]) for n in later)


def block_calls(sequential: bool, tied: bool) -> int:
    """How often sparsegpt runs a transformer block of the tiny Llama."""
    model, seen = tiny_llama(tie_word_embeddings=tied), []
    for layer in model.model.layers:
        layer.register_forward_hook(lambda *_: seen.append(1))
    pruner("sparsegpt", model, token_batches(), sequential=sequential).on_train_start()
    return len(seen)


@pytest.mark.parametrize("tied", [True, False])
def test_the_blocks_run_about_twice_per_batch_not_once_per_pruned_layer(tied):
    blocks, per_block = 3, 7
    head = 0 if tied else blocks * BATCHES  # an untied head: one full pass for the layers after the blocks
    # one pass of one batch checks the chain; each block runs for its statistics, all but the last again
    assert block_calls(True, tied) == blocks + (2 * blocks - 1) * BATCHES + head
    # per layer: one pass of one batch for the order, one full calibration pass per pruned layer
    assert block_calls(False, tied) == blocks + (blocks * per_block + (not tied)) * BATCHES * blocks


def test_blocks_that_do_not_chain_are_pruned_layer_by_layer_with_a_warning():
    class Parallel(nn.Module):  # two alike blocks on the same input, summed: not a chain
        def __init__(self):
            super().__init__()
            self.branches = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(2))

        def forward(self, x):
            return sum(branch(x) for branch in self.branches)

    torch.manual_seed(0)
    model = Parallel()
    cfg = load_sparsity({"method": "sparsegpt", "distribution": "uniform", "final_sparsity": 0.5, "prune_end": 0},
                        epochs=1)
    method = get_method("sparsegpt")(cfg, seed=0)
    batches = [(torch.randn(16, 8), None)]
    method.bind(task=Classification(), train_batches=lambda: iter(batches), example_input=lambda: batches[0][0][:1])
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1, total_steps=1)
    with pytest.warns(UserWarning, match=r"^sparsegpt: branches cannot be pruned block by block: block 1's input "
                                         r"is not block 0's output; pruning as with sequential: false$"):
        method.on_train_start()
    assert [int(m.sum()) for m in method.masks.masks.values()] == [32, 32]


def test_the_chain_check_names_what_breaks_it():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 8)

        def forward(self, x, scale=1.0):
            return self.linear(x) * scale

    class Stack(nn.Module):
        def __init__(self, scales, blocks=None):
            super().__init__()
            self.blocks = blocks or nn.ModuleList(Scaled() for _ in scales)
            self.scales = scales

        def forward(self, x):
            for block, scale in zip(self.blocks, self.scales):
                x = block(x, scale=scale)
            return x

    x = torch.randn(2, 8)
    for model, problem in [
        (Stack([1.0, 1.0]), None),
        (Stack([1.0, 2.0]), "block 1 gets other arguments than block 0"),  # as per-layer attention masks would
        (Stack([1.0, 1.0], nn.ModuleList([Scaled()] * 2)), "its blocks ran in the order [0, 1, 0, 1], not once each "
                                                           "in order"),  # one module twice
    ]:
        assert chain_problem(model, model, x, model.blocks) == problem
