"""A post-training sweep's start computed once (``train/shared_start.py``): a trial given it prunes
and evaluates exactly as one that loads the network and runs the calibration batches itself."""

import pickle

import numpy as np
import pytest

from raysparse.config import load_config
from raysparse.train import fit
from raysparse.train.shared_start import compute_shared_start, start_key
from tests.conftest import lm_config

LLAMA = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 64, "tie_word_embeddings": True}


def post_training_config(text, method="wanda", **sparsity):
    config = lm_config(text, method, prune_start=0, prune_end=0, final_sparsity=0.6, **sparsity)
    config.update(epochs=0, model={"name": "hf", "config": LLAMA})
    return config


def read_only(start):
    """The start as a trial gets it from Ray's object store: its arrays not writable."""
    copy = pickle.loads(pickle.dumps(start))
    for array, _ in copy.tensors.values():
        array.flags.writeable = False
    return copy


@pytest.mark.parametrize("distribution", ["uniform", "owl"])
def test_a_trial_given_the_shared_start_ends_as_one_that_computes_it(text_file, distribution):
    config = post_training_config(text_file, distribution=distribution)
    start = compute_shared_start(config)
    assert start is not None and start.key == start_key(load_config(config))
    assert "lm_head.weight" not in start.tensors  # tied to the embedding: shared once
    assert any("rotary_emb" in name for name in start.tensors)  # buffers too, non-persistent ones included
    given = read_only(start)
    assert given.read_only
    alone, shared = fit(config), fit(config, shared_start=given)
    assert shared["val_perplexity"] == alone["val_perplexity"]
    assert shared["test_perplexity"] == alone["test_perplexity"]
    assert shared["layer_density"] == alone["layer_density"]
    assert all(not a.flags.writeable for a, _ in given.tensors.values())  # read, never written


def test_a_trial_whose_start_differs_computes_its_own(text_file):
    config = post_training_config(text_file)
    start = compute_shared_start(config)
    other = {**config, "seed": 1}
    start.tensors[next(iter(start.tensors))][0][...] = np.nan  # would poison a trial that used it
    assert np.isfinite(fit(other, shared_start=start)["val_perplexity"])


@pytest.mark.parametrize("method, sequential", [("sparsegpt", True), ("wanda", True), ("sparsegpt", False)])
def test_methods_whose_statistics_depend_on_the_allocation_share_the_weights_only(text_file, method, sequential):
    config = post_training_config(text_file, method, sequential=sequential)
    start = compute_shared_start(config)
    assert start.statistics == {} and start.tensors
    assert set(start.references) == {"uniform", "owl"}  # OWL from a calibration pass of the dense network
    assert fit(config, shared_start=read_only(start))["val_perplexity"] == fit(config)["val_perplexity"]


def test_a_run_that_trains_shares_no_start(text_file):
    trained = post_training_config(text_file)
    trained["epochs"] = 1
    assert compute_shared_start(trained) is None


def test_kl_to_dense_is_zero_for_the_dense_network_and_grows_with_sparsity(text_file):
    kl = {}
    for sparsity in (0.0, 0.5, 0.8):
        config = post_training_config(text_file, "dense" if sparsity == 0 else "wanda")
        config["sparsity"]["final_sparsity"] = sparsity or 0.5
        config["task"] = {"name": "causal_lm", "kl_to_dense": 2, "eval_tokens": 64}
        kl[sparsity] = fit(config)["kl_to_dense"]
    assert abs(kl[0.0]) < 1e-6
    assert 0 < kl[0.5] < kl[0.8]


def test_kl_to_dense_is_an_objective_only_where_the_task_reports_it(text_file):
    from raysparse.errors import ConfigError
    from raysparse.search.spaces import load_sweep

    base = post_training_config(text_file)
    raw = {"name": "kl", "base": base, "space": {}, "objectives": {"kl_to_dense": "min"}, "num_samples": 1,
           "layer_sparsity": {"bounds": [0.1, 0.9], "group": "block"}}
    with pytest.raises(ConfigError) as caught:
        load_sweep(raw)
    assert caught.value.field.startswith("objectives")
    base["task"] = {"name": "causal_lm", "kl_to_dense": 8}
    assert load_sweep(raw).objectives == (("kl_to_dense", "min"),)
    base["evaluate_on"] = {"code": {"name": "text", "path": text_file}}  # another text's metrics too
    assert load_sweep({**raw, "objectives": {"code_perplexity": "min"}}).objectives == (("code_perplexity", "min"),)
