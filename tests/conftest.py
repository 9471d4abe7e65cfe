import copy
import os

import pytest

# the fault tests kill a trial a few epochs into training, seen through MLflow: its epochs must
# reach the server about as they are trained (the default batches 0.5 s of a trial's epochs);
# set before any Ray runtime starts, whose workers inherit it
os.environ.setdefault("RAYSPARSE_LOG_EVERY_S", "0.1")


def small_config(method: str = "granet", **sparsity) -> dict:
    """A run that takes about a second on digits: the shape of the README's config, smaller."""
    return {
        "seed": 0,
        "epochs": 4,
        "model": {"name": "mlp", "hidden": [64, 32]},
        "data": {"name": "digits", "batch_size": 64, "val_fraction": 0.1},
        "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True},
        "lr_schedule": {"name": "cosine"},
        "sparsity": {
            "method": method, "distribution": "erk", "final_sparsity": 0.8,
            "prune_start": 0, "prune_end": 2, "update_frequency": 5, "regrowth_ratio": 0.3, **sparsity,
        },
    }


def transformer_config(method: str = "gmp", **sparsity) -> dict:
    """``small_config`` on a one-block ViT (``in_proj_weight``, ``out_proj``, MLP): a couple of seconds."""
    cfg = small_config(method, **sparsity)
    cfg["model"] = {"name": "vit", "depth": 1, "width": 16, "heads": 2}
    cfg["optimizer"] = {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}
    cfg["epochs"], cfg["measure_latency"] = 3, False
    return cfg


WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in old green trees".split()


def write_text(path, lines: int = 300, seed: int = 0) -> str:
    """A small corpus of made-up sentences over a 19-word vocabulary: a language model learns it
    in seconds."""
    import random

    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(lines)))
    return str(path)


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> str:
    return write_text(tmp_path_factory.mktemp("text") / "corpus.txt")


def lm_config(text: str, method: str = "gmp", **sparsity) -> dict:
    """``small_config`` for the zoo's small GPT on byte-level text blocks (``text_file``): a few seconds."""
    cfg = small_config(method, **sparsity)
    cfg["task"] = "causal_lm"
    cfg["model"] = {"name": "gpt", "depth": 1, "width": 32, "heads": 4}
    cfg["data"] = {"name": "text", "path": text, "block_size": 32, "batch_size": 16}
    cfg["optimizer"] = {"name": "adam", "lr": 0.003}
    cfg["epochs"], cfg["measure_latency"] = 3, False
    return cfg


@pytest.fixture(scope="session")
def home(tmp_path_factory):
    """One raysparse home (embedded MLflow server, Ray results) for the whole session: each server
    start costs seconds. Tests of starting, stopping or killing a server use homes of their own."""
    from raysparse.tracking import stop_local_server

    path = tmp_path_factory.mktemp("raysparse_home")
    yield path
    stop_local_server(path)


@pytest.fixture(scope="session")
def tracking_uri(home):
    """The session home's MLflow server, started as a sweep starts it."""
    from raysparse.tracking import ensure_local_server

    return ensure_local_server(home)


@pytest.fixture
def config():
    return copy.deepcopy(small_config())
