"""Model ``hf``: a tiny random Llama (GQA, tied head) from a config dict or a saved directory; what
its masks cover; and every refusal as one ConfigError naming the field."""

import subprocess
import sys

import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.sparsity.masks import prunable_weights, weights_outside
from raysparse.zoo.models import MODELS, build_model

# 4 query heads over 2 key-value heads (grouped-query attention), head dim 8
LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 50, "tie_word_embeddings": True}
TEXT = {"vocab_size": 50, "block_size": 16}  # what a text data source describes itself by
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def tiny_llama(**config):
    torch.manual_seed(0)
    return build_model({"name": "hf", "config": {**LLAMA, **config}}, TEXT)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The tiny Llama written by save_pretrained, and the model itself."""
    model, directory = tiny_llama(), tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(directory)
    return str(directory), model


def test_the_seven_projections_of_each_layer_are_prunable_and_the_tied_head_counts_once_outside():
    model = tiny_llama()
    assert MODELS["hf"] is MODELS.get("hf", "model.name")
    weights = prunable_weights(model)
    assert list(weights) == [f"model.layers.{i}.{name}" for i in range(2) for name in PROJECTIONS]
    assert weights["model.layers.0.self_attn.k_proj"].shape == (2 * 8, 32)  # 2 key-value heads of 8
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert weights_outside(model, weights) == {"lm_head": 50 * 32}


def test_an_untied_head_is_prunable():
    assert "lm_head" in prunable_weights(tiny_llama(tie_word_embeddings=False))


def test_a_config_without_vocab_size_takes_the_datas():
    config = {k: v for k, v in LLAMA.items() if k != "vocab_size"}
    model = build_model({"name": "hf", "config": config}, {"vocab_size": 77, "block_size": 16})
    assert model(torch.randint(0, 77, (2, 5))).logits.shape == (2, 5, 77)
    assert model.training  # like every zoo model


def test_a_saved_model_loads_back_with_identical_logits(saved):
    directory, original = saved
    loaded = build_model({"name": "hf", "path": directory}, TEXT)
    assert loaded.training and loaded.lm_head.weight is loaded.model.embed_tokens.weight
    tokens = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(tokens).logits, original.eval()(tokens).logits)


def test_dtype_sets_the_weights_dtype(saved):
    model = build_model({"name": "hf", "path": saved[0], "dtype": "bfloat16"}, TEXT)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_a_meta_build_of_a_saved_model_reads_no_weights_and_counts_them_all(saved):
    with torch.device("meta"):  # how a config check and the memory estimate build a model
        model = build_model({"name": "hf", "path": saved[0]}, TEXT)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in saved[1].parameters())


@pytest.mark.parametrize(("options", "error"), [
    ({}, r"^model\.path: got path=None and config=None; allowed: exactly one of path"),
    ({"path": "/x", "config": LLAMA}, r"^model\.path: got path='/x' and config=\{.*allowed: exactly one"),
    ({"path": "/no/such/dir"}, r"^model\.path: got '/no/such/dir'; allowed: an existing local directory"),
    ({"config": {**LLAMA, "hidden_sizee": 32}},
     r"^model\.config\.hidden_sizee: unknown key for model_type 'llama'; allowed: .* \(did you mean 'hidden_size'\?\)"),
    ({"config": {**LLAMA, "model_type": "lama"}}, r"^model\.config\.model_type: unknown model type 'lama'"),
    ({"config": {"hidden_size": 32}}, r"^model\.config: got \{'hidden_size': 32\}; allowed: a mapping with a model_t"),
    ({"config": {**LLAMA, "num_attention_heads": 3}}, r"^model\.config: .*not a multiple of the number of attention"),
    ({"config": {"model_type": "t5"}}, r"^model\.config: .*Unrecognized configuration class .*T5Config"),
    ({"config": {**LLAMA, "vocab_size": 40}},
     r"^model\.config: the model's vocab_size=40 is smaller than the data's vocabulary of 50 tokens"),
    ({"config": LLAMA, "dtype": "float64"}, r"^model\.dtype: unknown dtype 'float64'; available: bfloat16, float16"),
])
def test_bad_input_is_one_config_error_naming_the_field(options, error):
    with pytest.raises(ConfigError, match=error) as caught:
        build_model({"name": "hf", **options}, TEXT)
    assert "\n" not in str(caught.value)


def test_a_directory_without_a_model_or_with_too_small_a_vocabulary_names_model_path(tmp_path, saved):
    with pytest.raises(ConfigError, match=r"^model\.path: '.*': ValueError: Unrecognized model in"):
        build_model({"name": "hf", "path": str(tmp_path)}, TEXT)
    with pytest.raises(ConfigError, match=r"^model\.path: the model's vocab_size=50 is smaller than the data's "
                                          r"vocabulary of 256 tokens; allowed: a model with vocab_size >= 256"):
        build_model({"name": "hf", "path": saved[0]}, {"vocab_size": 256})


def test_without_transformers_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ConfigError, match=r"^model\.name: model 'hf' needs transformers: pip install 'raysparse\[hf\]"):
        build_model({"name": "hf", "config": LLAMA}, TEXT)


def test_registering_the_model_imports_no_transformers():
    code = "import sys, raysparse.zoo; assert 'hf' in raysparse.zoo.MODELS; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
