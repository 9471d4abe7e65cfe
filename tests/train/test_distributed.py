"""Two data-parallel ranks (gloo, two processes, no Ray) end with identical masks and weights."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysparse.train import fit
from tests.conftest import lm_config, small_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker(rank: int, port: int, out: str, method: str, text: str | None = None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    seen = {"hashes": [], "weights": None}

    def report(metrics, ctx):
        seen["hashes"].append(ctx.masks.content_hash())
        seen["weights"] = torch.cat([p.detach().flatten() for p in ctx.model.parameters()])

    final = fit(small_config(method) if text is None else lm_config(text, method), report)
    torch.save({**seen, "density": final["density"], "loss": final["train_loss"], "params": final["params"],
                "params_dense": final["params_dense"]}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("method", ["granet", "dst", "hap"])  # rank-0 masks, DDP-synced thresholds, one plan
def test_two_ranks_hold_identical_masks_and_weights(tmp_path, method):
    mp.spawn(worker, args=(free_port(), str(tmp_path), method), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["hashes"] == r1["hashes"]
    if method == "hap":  # one plan on both ranks: the same compact architecture
        assert r0["params"] == r1["params"] < 0.5 * r0["params_dense"]
    else:
        assert len(set(r0["hashes"])) > 2 and abs(r0["density"] - 0.2) < 0.01  # masks changed, identically
    assert torch.equal(r0["weights"], r1["weights"])
    assert r0["density"] == r1["density"]
    assert r0["loss"] == r1["loss"]  # the reported loss is averaged over ranks


def test_a_language_model_on_two_ranks_holds_identical_masks_and_weights(tmp_path, text_file):
    mp.spawn(worker, args=(free_port(), str(tmp_path), "rigl", text_file), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["hashes"] == r1["hashes"] and len(set(r0["hashes"])) > 2
    assert torch.equal(r0["weights"], r1["weights"])
    assert r0["density"] == r1["density"] and r0["loss"] == r1["loss"]
