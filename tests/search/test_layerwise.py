"""The per-layer search's grouping: one searched level per matrix (default), per transformer block,
or per matrix type; every trial still meets its budget exactly."""

import pytest

from raysparse.errors import ConfigError
from raysparse.search.layerwise import PARAM_PREFIX, by_type
from raysparse.search.spaces import load_sweep
from tests.conftest import lm_config

LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "tie_word_embeddings": True}
MATRICES = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj"]


def llama_sweep(text, **layer_sparsity):
    base = lm_config(text, "wanda", distribution="uniform", final_sparsity=0.6)
    base["model"] = {"name": "hf", "config": LLAMA}
    return load_sweep({"name": "grouped", "base": base, "space": {}, "objectives": {"val_perplexity": "min"},
                       "num_samples": 2, "layer_sparsity": {"bounds": [0.05, 1.0], **layer_sparsity}})


def test_a_matrix_type_is_the_name_with_its_block_indices_as_underscore():
    assert by_type(["model.layers.12.mlp.up_proj.weight", "lm_head.weight", "layer1.0.conv1.weight"]) == {
        "model.layers.12.mlp.up_proj.weight": "model.layers._.mlp.up_proj.weight",
        "lm_head.weight": "lm_head.weight", "layer1.0.conv1.weight": "layer1._.conv1.weight"}


@pytest.mark.parametrize("group, levels", [("matrix", 3 * 7), ("block", 3), ("type", 7)])
def test_each_group_takes_one_level_and_the_budget_is_exact(text_file, group, levels):
    sweep = llama_sweep(text_file, group=group)
    searched = sweep.layer_sparsity
    groups = sorted(set(map(searched.group_of, searched.layers)))
    assert len(groups) == levels
    params = {PARAM_PREFIX + g: 0.1 + 0.8 * i / len(groups) for i, g in enumerate(groups)}  # distinct levels
    densities = sweep.trial_config(params)["sparsity"]["layer_densities"]
    kept = sum(densities[n] * size for n, size in searched.layers.items())
    assert kept == pytest.approx(0.4 * sum(searched.layers.values()), abs=len(densities))
    for g in groups:  # the layers of one group share its level
        assert len({round(densities[n], 9) for n in searched.layers if searched.group_of(n) == g}) == 1
    if group == "block":
        assert groups == ["model.layers.0", "model.layers.1", "model.layers.2"]
    if group == "type":
        assert groups == sorted(f"model.layers._.{m}" for m in MATRICES)


def test_an_unknown_grouping_is_one_line(text_file):
    with pytest.raises(ConfigError, match=r"layer_sparsity\.group: unknown grouping 'blocks'.*did you mean 'block'"):
        llama_sweep(text_file, group="blocks")


def test_a_model_factory_in_the_sweeps_import_dirs_is_found_for_the_layer_sizes(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "layerwise_models_t.py").write_text(
        "from torch import nn\n\ndef net(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))\n")
    (tmp_path / "sweeps").mkdir()
    raw = {"name": "factory", "import_dirs": ["../code"], "space": {}, "objectives": {"val_accuracy": "max"},
           "base": {"epochs": 2, "model": {"factory": "layerwise_models_t:net"},
                    "data": {"name": "digits", "batch_size": 64},
                    "sparsity": {"method": "gmp", "final_sparsity": 0.5}},
           "layer_sparsity": {"bounds": [0.1, 1.0]}}
    import yaml

    path = tmp_path / "sweeps" / "factory.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert sorted(load_sweep(str(path)).layer_sparsity.layers) == ["1", "3"]
