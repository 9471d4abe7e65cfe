"""A model too large for memory is refused before it is allocated: counted on the meta device."""

import re
from pathlib import Path

import pytest
import torch

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.train import fit
from raysparse.train.memory import available_memory, check_fits_in_memory, training_bytes
from raysparse.zoo import MODELS, build_model
from tests.conftest import small_config

HUGE = {"name": "mlp", "hidden": [100_000, 100_000]}  # 10^10 weights: 40 GB of float32 before any gradient


IMAGES = {"input_shape": (3, 32, 32), "num_classes": 10}
TEXT = {"vocab_size": 50, "block_size": 16}
SMALL = {"vit": {"depth": 1, "width": 16, "heads": 2}, "gpt": {"depth": 1, "width": 16, "heads": 2},
         "hf": {"config": {"model_type": "llama", "hidden_size": 16, "num_hidden_layers": 1,
                           "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32}}}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_zoo_model_counts_on_the_meta_device_what_it_allocates(name):
    spec = {"name": name, **SMALL.get(name, {})}
    info = TEXT if name in ("gpt", "hf") else IMAGES
    real = sum(p.numel() for p in build_model(spec, info).parameters())
    sgd = load_config({}).optimizer
    params, needed = training_bytes(spec, info, sgd)
    assert params == real
    assert needed == real * (4 * 4 + 2)  # float32 weight, gradient, mask multiplier, momentum; two bool masks


def test_adam_needs_one_buffer_more_than_sgd():
    adam = load_config({"optimizer": {"name": "adam", "lr": 0.001}}).optimizer
    digits = {"input_shape": (1, 8, 8), "num_classes": 10}
    params, needed = training_bytes({"name": "mlp", "hidden": [32]}, digits, adam)
    assert params == 64 * 32 + 32 + 32 * 10 + 10 and needed == params * (5 * 4 + 2)


def test_available_memory_is_what_this_machine_has_left():
    total = int(re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text()).group(1)) * 1024
    assert 0 < available_memory() <= total


def test_a_model_of_ten_billion_weights_is_refused_by_fit_before_it_is_allocated():
    cfg = small_config("gmp")
    cfg["model"] = HUGE
    with pytest.raises(ConfigError) as caught:
        fit(cfg)  # allocating would take 40 GB (or the kernel's OOM killer): it must fail at once
    assert caught.value.field == "model"
    assert "10,007,600,010 parameters" in caught.value.message and "GiB available" in caught.value.message


def test_a_model_that_fits_is_not_refused_and_meta_leaves_the_default_device_alone():
    check_fits_in_memory(load_config(small_config("gmp")), {"input_shape": (1, 8, 8), "num_classes": 10})
    assert torch.empty(1).device.type == "cpu"


def test_a_dead_network_in_a_reference_cycle_is_freed():
    import weakref

    from torch import nn

    from raysparse.train.memory import release_freed_memory

    class Run:  # a method's callback into its run: the cycle a finished trial leaves
        def __init__(self):
            self.net = nn.Linear(4, 4)
            self.callback = lambda: self.net

    run = Run()
    gone = weakref.ref(run.net)
    del run
    release_freed_memory()
    assert gone() is None
