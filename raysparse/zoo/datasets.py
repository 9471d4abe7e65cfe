"""Datasets by name, split into train/val/test with a seed.

Validation is always carved from the training data, never from test. Normalization statistics
come from the train split only. In-memory datasets become ``TensorSplit``s (see
``raysparse.zoo.loaders``). The bundled datasets live here; the on-disk formats register
themselves from ``raysparse.zoo.formats``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from raysparse.errors import ConfigError
from raysparse.zoo.loaders import TensorSplit
from raysparse.zoo.registry import Registry, check_options, keyword_options

DATASETS: Registry = Registry("dataset")

# Keys every dataset accepts; the last three configure the loader, not the data.
COMMON_KEYS = ("name", "val_fraction", "root", "limit", "batch_size", "num_workers", "augment")
# Datasets without an official test split hold out 20% with a fixed seed, so that test numbers
# stay comparable across run seeds just as with an official split.
TEST_HOLDOUT_FRACTION = 0.2
TEST_HOLDOUT_SEED = 0


@dataclass
class DataSplits:
    """Train, validation and test data (``TensorSplit`` or torch ``Dataset``) and what describes
    them (``info``): ``input_shape`` and ``num_classes`` for images, ``vocab_size`` and
    ``block_size`` for text. A model factory gets the entries its signature names."""

    train: Dataset
    val: Dataset
    test: Dataset
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SplitOptions:
    """What every dataset builder gets besides its own options."""

    seed: int
    val_fraction: float
    limit: int | None
    root: Path | None
    field: str

    def require_root(self, expected: str) -> Path:
        if self.root is None:
            raise ConfigError(f"{self.field}.root",
                              f"missing; expected a directory with {expected}")
        if not self.root.is_dir():
            raise ConfigError(f"{self.field}.root",
                              f"{str(self.root)!r} is not a directory; expected {expected} in it")
        return self.root


def dataset_names() -> list[str]:
    """Names accepted by ``build_data``, for ``raysparse list``."""
    return DATASETS.names()


def build_data(spec: Mapping, seed: int, field: str = "data") -> DataSplits:
    """Load the dataset described by ``spec`` and split it with ``seed``.

    ``spec`` holds ``name`` and optionally ``val_fraction`` (0.1, in [0, 0.5]), ``root`` (file
    datasets), ``limit`` (keep only the first N shuffled training examples: train + val <= N,
    test untouched) and the dataset's own options. ``batch_size``, ``num_workers`` and
    ``augment`` are accepted and ignored: they belong to ``make_loader``.
    """
    builder, common, options = _parse_spec(spec, seed, field)
    return builder(common, **options)


def check_data_spec(spec: Mapping, field: str = "data") -> None:
    """Every check of ``build_data`` that needs no data: names, options, fractions, limits."""
    _parse_spec(spec, 0, field)


def _parse_spec(spec: Mapping, seed: int, field: str):
    if not isinstance(spec, Mapping):
        raise ConfigError(field, f"expected a mapping with a 'name', got {spec!r}")
    name = spec.get("name")
    if name is None:
        raise ConfigError(f"{field}.name", f"missing; available: {', '.join(dataset_names())}")
    builder = DATASETS.get(name, f"{field}.name")
    own_options = keyword_options(builder, skip=("common",))
    check_options(spec, [*COMMON_KEYS, *own_options], field, f"dataset {name!r}")
    common = SplitOptions(
        seed=seed,
        val_fraction=_fraction(spec.get("val_fraction", 0.1), f"{field}.val_fraction"),
        limit=optional_positive_int(spec.get("limit"), f"{field}.limit"),
        root=_optional_directory(spec.get("root"), f"{field}.root"),
        field=field,
    )
    return builder, common, {key: spec[key] for key in own_options if key in spec}


def _fraction(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 0.5:
        raise ConfigError(field, f"expected a number in [0, 0.5], got {value!r}")
    return float(value)


def _optional_directory(value: object, field: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(field, f"expected a directory path, got {value!r}")
    return Path(value).expanduser()


def optional_positive_int(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(field, f"expected a positive integer, got {value!r}")
    return value


# ---------------------------------------------------------------------------- splitting


def train_val_indices(n: int, common: SplitOptions) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of ``range(n)``, cut to ``limit``, then split into (train, val)."""
    order = np.random.default_rng(common.seed).permutation(n)[: common.limit]
    num_val = round(len(order) * common.val_fraction)
    return order[num_val:], order[:num_val]


def tensor_splits(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor] | None,
                  num_classes: int, common: SplitOptions, *,
                  crop_padding: int = 0, flip: bool = False) -> DataSplits:
    """Split in-memory data into TensorSplits; without ``test``, hold out 20% of ``train``."""
    x, y = train
    if test is None:
        order = np.random.default_rng(TEST_HOLDOUT_SEED).permutation(len(y))
        num_test = round(len(y) * TEST_HOLDOUT_FRACTION)
        pool, test_index = torch.from_numpy(order[num_test:]), torch.from_numpy(order[:num_test])
        test = (x[test_index], y[test_index])
    else:
        pool, test_index = torch.arange(len(y)), torch.arange(len(test[1]))
    train_pos, val_pos = (torch.from_numpy(i) for i in train_val_indices(len(pool), common))
    train_index, val_index = pool[train_pos], pool[val_pos]
    mean, std = channel_stats(x[train_index].split(4096))

    def split(xs: Tensor, ys: Tensor, index: Tensor) -> TensorSplit:
        return TensorSplit(xs, ys, mean, std, index, crop_padding=crop_padding, flip=flip)

    return DataSplits(
        train=split(x[train_index], y[train_index], train_index),
        val=split(x[val_index], y[val_index], val_index),
        test=split(*test, test_index),
        info={"input_shape": tuple(x.shape[1:]), "num_classes": num_classes},
    )


def channel_stats(batches: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std over image batches, in [0, 1] units for uint8 images.

    Accumulated batch by batch, so neither a uint8 dataset nor an image folder has to exist
    as one float tensor.
    """
    total = total_sq = count = 0
    for batch in batches:
        part = batch.double() / 255 if batch.dtype == torch.uint8 else batch.double()
        total = total + part.sum(dim=(0, 2, 3))
        total_sq = total_sq + part.square().sum(dim=(0, 2, 3))
        count += part.numel() // part.shape[1]
    if count == 0:
        raise ValueError("cannot compute normalization statistics of an empty train split")
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.clamp_min(1e-6).float()  # a constant channel must not divide by 0


# --------------------------------------------------------------------- bundled datasets


@DATASETS.register("digits")
def digits(common: SplitOptions) -> DataSplits:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled: works offline)."""
    images, target = _digits_arrays()
    x = torch.from_numpy(images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(target).long()
    return tensor_splits((x, y), None, 10, common, crop_padding=1)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 8, 8) and labels of scikit-learn's digits, read from its bundled file as
    ``load_digits`` reads it, without importing scikit-learn: that import took ~1 s of every
    sweep's start and of each new trial process (twice that on a loaded machine)."""
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # finds the package without running it
    data_file = Path(next(iter(spec.submodule_search_locations or []), "")) / "datasets" / "data" / "digits.csv.gz" \
        if spec is not None else None
    if data_file is None or not data_file.is_file():  # another layout: scikit-learn's own loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(data_file, mode="rt", encoding="utf-8") as text:
        data = np.loadtxt(text, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


@DATASETS.register("synthetic")
def synthetic(common: SplitOptions, *, num_samples: int = 2000, shape=None,
              num_features: int | None = None, num_classes: int = 10,
              data_seed: int = 0) -> DataSplits:
    """Gaussian class clusters: one random mean per class plus isotropic noise.

    ``shape`` (C, H, W; default (1, 8, 8)) or ``num_features`` (shape (1, 1, F)) set the input.
    The data depend on ``data_seed`` only, so run seeds change the splits, not the problem.
    A linear model reaches roughly 85% on the defaults (chance: 10%).
    """
    field = common.field
    shape = _synthetic_shape(shape, num_features, field)
    num_samples = optional_positive_int(num_samples, f"{field}.num_samples")
    num_classes = optional_positive_int(num_classes, f"{field}.num_classes")
    if num_classes < 2 or num_classes > num_samples:
        raise ConfigError(f"{field}.num_classes",
                          f"expected 2 <= num_classes <= num_samples, got {num_classes}")
    if isinstance(data_seed, bool) or not isinstance(data_seed, int):
        raise ConfigError(f"{field}.data_seed", f"expected an integer, got {data_seed!r}")
    rng = np.random.default_rng(data_seed)
    num_inputs = math.prod(shape)
    # Class means are ~sqrt(2 * num_inputs) apart; noise growing with sqrt(num_inputs) keeps
    # the classes overlapping at any shape (0.3 is tuned for ~85% linear accuracy on 8x8).
    means = rng.normal(size=(num_classes, num_inputs))
    labels = np.arange(num_samples) % num_classes
    noise = rng.normal(scale=0.3 * math.sqrt(num_inputs), size=(num_samples, num_inputs))
    x = torch.from_numpy(means[labels] + noise).float().reshape(num_samples, *shape)
    return tensor_splits((x, torch.from_numpy(labels)), None, num_classes, common)


def _synthetic_shape(shape: object, num_features: object, field: str) -> tuple[int, int, int]:
    if shape is not None and num_features is not None:
        raise ConfigError(f"{field}.num_features", "give either shape or num_features, not both")
    if num_features is not None:
        return (1, 1, optional_positive_int(num_features, f"{field}.num_features"))
    if shape is None:
        return (1, 8, 8)
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    if not ok:
        raise ConfigError(f"{field}.shape", f"expected [channels, height, width], got {shape!r}")
    return tuple(shape)
