"""The DDP evidence a trial logs to its MLflow run each report: how many ranks hold rank 0's masks,
counted by real collectives (gloo, two processes, no Ray); the sweep test (test_sweep.py) reads it
back from a real two-worker trial's run."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from raysparse.search.trial import _ranks_with_rank0_masks
from raysparse.sparsity.masks import MaskSet, prunable_weights


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def masks(differ: bool) -> MaskSet:
    torch.manual_seed(0)
    mask_set = MaskSet(prunable_weights(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))))
    if differ:  # one weight pruned on this rank only (in place: MaskSet.update would sync it from rank 0)
        mask_set.masks["2"].view(-1)[0] = False
    return mask_set


def worker(rank: int, port: int, out: str, rank1_differs: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    counted = _ranks_with_rank0_masks(masks(differ=rank1_differs and rank == 1))
    torch.save(counted, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def counted_on_each_rank(tmp_path, rank1_differs: bool) -> list[int]:
    mp.spawn(worker, args=(free_port(), str(tmp_path), rank1_differs), nprocs=2)
    return [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]


def test_every_rank_counts_the_ranks_holding_rank0s_masks(tmp_path):
    assert counted_on_each_rank(tmp_path, rank1_differs=False) == [2, 2]
    assert counted_on_each_rank(tmp_path, rank1_differs=True) == [1, 1]  # logged so: the run shows the split


def test_a_trial_of_one_process_logs_no_count():
    assert not dist.is_initialized() and _ranks_with_rank0_masks(masks(differ=False)) is None
