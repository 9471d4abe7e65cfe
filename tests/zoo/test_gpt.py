"""The zoo's small GPT: shapes, causality, the tied head, its options, and that it learns."""

import math

import pytest
import torch
import torch.nn.functional as F

from raysparse.errors import ConfigError
from raysparse.sparsity.masks import prunable_weights
from raysparse.zoo.models import MODELS, build_model


def gpt(vocab_size=256, block_size=16, **options):
    return MODELS["gpt"](vocab_size=vocab_size, block_size=block_size, **options)


def test_tokens_give_logits_over_the_vocabulary_for_up_to_block_size_positions():
    model = gpt(vocab_size=50, block_size=16, depth=3, width=24, heads=3)
    assert model(torch.randint(0, 50, (2, 16))).shape == (2, 16, 50)
    assert model(torch.randint(0, 50, (2, 5))).shape == (2, 5, 50)
    with pytest.raises(ValueError, match="at most block_size=16"):
        model(torch.randint(0, 50, (1, 17)))


def test_projections_are_separate_linears_named_like_llama():
    weights = prunable_weights(gpt(depth=2, tie_head=False))  # a tied head is the embedding's to decide
    per_block = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj", "mlp.down_proj"]
    assert list(weights) == [f"blocks.{i}.{name}" for i in range(2) for name in per_block] + ["lm_head"]
    assert weights["blocks.0.mlp.up_proj"].shape == (4 * 64, 64)


def test_a_token_changes_no_logits_before_it():
    torch.manual_seed(0)
    model = gpt().eval()
    tokens = torch.randint(0, 256, (1, 16))
    changed = tokens.clone()
    changed[0, 9] = (tokens[0, 9] + 1) % 256
    before, after = model(tokens), model(changed)
    assert torch.equal(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])  # the test would pass on a model that ignores input


def test_tie_head_makes_the_head_weight_the_token_embedding_parameter():
    tied, untied = gpt(tie_head=True), gpt(tie_head=False)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.lm_head.weight is not untied.token_embedding.weight
    # the shared Parameter is counted once: 256 x 64 fewer parameters than untied
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 256 * 64


def test_learns_a_repetitive_text_in_100_adam_steps():
    torch.manual_seed(0)
    stream = torch.tensor(list(b"abcdefg" * 200))
    starts = torch.arange(0, len(stream) - 17, 7)
    blocks = torch.stack([stream[s: s + 17] for s in starts])  # 16 inputs and their 16 next tokens
    model = gpt(block_size=16, depth=1, width=32, heads=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(100):
        batch = blocks[torch.randint(0, len(blocks), (16,))]
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 256), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > 5.0  # about ln(256) = 5.5 at the start: the init does not already know the text
    # ln 7 = 1.95 is all a model gets that learned which 7 bytes occur but not their order
    assert sum(losses[-5:]) / 5 < 0.5 * math.log(7)


def test_build_model_passes_the_texts_info_and_names_a_bad_option_under_model():
    model = build_model({"name": "gpt", "depth": 1}, {"vocab_size": 40, "block_size": 8})
    assert len(model.blocks) == 1 and model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 40)
    with pytest.raises(ConfigError, match=r"^model.heads: 3 must divide width=64"):
        build_model({"name": "gpt", "heads": 3}, {"vocab_size": 40, "block_size": 8})


@pytest.mark.parametrize(("option", "value", "message"), [
    ("heads", 5, "must divide width=64"),
    ("depth", 0, "positive integer"),
    ("width", 2.5, "positive integer"),
    ("tie_head", "yes", "true or false"),
    ("vocab_size", -1, "positive integer"),
    ("block_size", True, "positive integer"),
])
def test_bad_options_raise_a_config_error_naming_the_option(option, value, message):
    with pytest.raises(ConfigError) as excinfo:
        gpt(**{option: value})
    assert excinfo.value.field == option and message in str(excinfo.value)
    assert repr(value) in str(excinfo.value) or str(value) in str(excinfo.value)  # the bad value is shown
