"""Deterministic batch loaders: in-memory ``TensorSplit``s batched by indexing, other Datasets
through a seeded DataLoader, both with optional on-the-fly augmentation.

``TensorSplit``s keep images as uint8 (CIFAR-10 as float32 would take 600 MB) and normalize
per batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class TensorSplit(Dataset):
    """Examples in memory. ``x`` is (N, C, H, W) uint8 in [0, 255] or float; batches come out as
    ``((x / 255 if uint8) - mean) / std`` in float32, with per-channel ``mean`` and ``std``.

    ``source_index`` gives each example's position in the file it came from (train file, test
    file, or the whole dataset when it has no test split). ``crop_padding`` and ``flip`` say
    which augmentation suits these images (0 / False: none).
    """

    def __init__(self, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, source_index: Tensor,
                 *, crop_padding: int = 0, flip: bool = False):
        self.x, self.y = x, y.long()
        self.mean = mean.float().reshape(1, -1, 1, 1)
        self.std = std.float().reshape(1, -1, 1, 1)
        self.source_index = source_index
        self.crop_padding, self.flip = crop_padding, flip

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.batch(torch.tensor([i]))
        return x[0], y[0]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Normalized float32 images and int64 labels for the examples at ``index``."""
        x = self.x[index].float()
        if self.x.dtype == torch.uint8:
            x = x.div_(255)
        return x.sub_(self.mean).div_(self.std), self.y[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The whole split, normalized."""
        return self.batch(torch.arange(len(self)))


class TensorLoader:
    """Batches of a TensorSplit, reshuffled from ``generator`` on every iteration.

    Indexing a permutation is far faster than a DataLoader's per-item collation for data that
    already sits in memory, and the batch sequence is a pure function of the generator state.
    """

    def __init__(self, split: TensorSplit, *, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, augment: bool, drop_last: bool,
                 shard: tuple[int, int] = (0, 1)):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.generator, self.augment, self.drop_last = generator, augment, drop_last
        self.rank, self.world = shard

    def _shard_size(self) -> int:
        # every rank gets the same count, or DDP ranks would wait for each other's last step
        return len(self.split) // self.world

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        # all ranks draw the same permutation (same generator seed) and take disjoint slices
        order = order[self.rank::self.world][: self._shard_size()]
        for batch in range(len(self)):
            x, y = self.split.batch(order[batch * self.batch_size:(batch + 1) * self.batch_size])
            if self.augment:
                x = augment_images(x, self.generator, padding=self.split.crop_padding,
                                   flip=self.split.flip)
            yield x, y


class _AugmentedLoader:
    """A DataLoader whose batches get augmented on the fly, drawing from ``generator``."""

    def __init__(self, loader: DataLoader, generator: torch.Generator | None):
        self.loader, self.generator = loader, generator

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.loader:
            yield augment_images(x, self.generator, padding=max(1, x.shape[-1] // 8), flip=True), y


class _ShardedPermutation(Sampler):
    """Indices of one rank's shard of a permutation drawn from ``generator`` on each pass."""

    def __init__(self, n: int, *, shuffle: bool, generator: torch.Generator | None, shard: tuple[int, int]):
        self.n, self.shuffle, self.generator = n, shuffle, generator
        self.rank, self.world = shard

    def __len__(self) -> int:
        return self.n // self.world

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else torch.arange(self.n)
        return iter(order[self.rank::self.world][: len(self)].tolist())


def make_loader(split: Dataset, *, batch_size: int, shuffle: bool,
                generator: torch.Generator | None, augment: bool = False,
                drop_last: bool = False, num_workers: int = 0, shard: tuple[int, int] = (0, 1)):
    """An iterable of ``(x, y)`` batches with ``len()``; the same generator seed gives the same
    batches, augmentation included.

    TensorSplits are batched by indexing a ``torch.randperm`` drawn from ``generator`` on each
    pass (``num_workers`` is ignored: nothing to parallelize); other Datasets go through a
    DataLoader seeded by ``generator``. With ``augment``,
    batches get a random crop after zero padding (in normalized units, i.e. the mean colour) and,
    for natural images, a horizontal flip; see ``augment_images``. ``shard=(rank, world)`` gives
    each data-parallel rank a disjoint, equally long slice of the same permutation.
    """
    if isinstance(split, TensorSplit):
        return TensorLoader(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            augment=augment, drop_last=drop_last, shard=shard)
    sampler = _ShardedPermutation(len(split), shuffle=shuffle, generator=generator, shard=shard)
    loader = DataLoader(split, batch_size=batch_size, sampler=sampler, generator=generator,
                        drop_last=drop_last, num_workers=num_workers)
    return _AugmentedLoader(loader, generator) if augment else loader


def augment_images(x: Tensor, generator: torch.Generator | None, *, padding: int,
                   flip: bool) -> Tensor:
    """Per-image random crop of ``x`` (N, C, H, W) padded by ``padding`` zeros on each side,
    then a random horizontal flip with probability 1/2 if ``flip``. Batched: one gather."""
    n, channels, height, width = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (top[:, None] + torch.arange(height))[:, None, :, None]
        cols = (left[:, None] + torch.arange(width))[:, None, None, :]
        x = padded[torch.arange(n)[:, None, None, None],
                   torch.arange(channels)[None, :, None, None], rows, cols]
    if flip:
        flipped = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    return x
