"""Datasets by name, split into train/val/test with a seed, and deterministic batch loaders.

Validation is always carved from the training data, never from test. Normalization statistics
come from the train split only. In-memory datasets become ``TensorSplit``s that keep images as
uint8 (CIFAR-10 as float32 would take 600 MB) and normalize per batch.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from raysparse.errors import ConfigError

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct
from raysparse.zoo.registry import Registry, check_options, keyword_options

DATASETS: Registry = Registry("dataset")

# Keys every dataset accepts; the last three configure the loader, not the data.
COMMON_KEYS = ("name", "val_fraction", "root", "limit", "batch_size", "num_workers", "augment")
# Datasets without an official test split hold out 20% with a fixed seed, so that test numbers
# stay comparable across run seeds just as with an official split.
TEST_HOLDOUT_FRACTION = 0.2
TEST_HOLDOUT_SEED = 0


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


@dataclass
class DataSplits:
    """Train, validation and test data (``TensorSplit`` or torch ``Dataset``) and their shape."""

    train: Dataset
    val: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int


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
        limit=_optional_positive_int(spec.get("limit"), f"{field}.limit"),
        root=_optional_directory(spec.get("root"), f"{field}.root"),
        field=field,
    )
    return builder(common, **{key: spec[key] for key in own_options if key in spec})


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


def _optional_positive_int(value: object, field: str) -> int | None:
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
    mean, std = _channel_stats(x[train_index].split(4096))

    def split(xs: Tensor, ys: Tensor, index: Tensor) -> TensorSplit:
        return TensorSplit(xs, ys, mean, std, index, crop_padding=crop_padding, flip=flip)

    return DataSplits(
        train=split(x[train_index], y[train_index], train_index),
        val=split(x[val_index], y[val_index], val_index),
        test=split(*test, test_index),
        input_shape=tuple(x.shape[1:]),
        num_classes=num_classes,
    )


def _channel_stats(batches: Iterable[Tensor]) -> tuple[Tensor, Tensor]:
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


# ------------------------------------------------------------------------------ loading


class TensorLoader:
    """Batches of a TensorSplit, reshuffled from ``generator`` on every iteration.

    Indexing a permutation is far faster than a DataLoader's per-item collation for data that
    already sits in memory, and the batch sequence is a pure function of the generator state.
    """

    def __init__(self, split: TensorSplit, *, batch_size: int, shuffle: bool,
                 generator: torch.Generator | None, augment: bool, drop_last: bool):
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.generator, self.augment, self.drop_last = generator, augment, drop_last

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
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


def make_loader(split: Dataset, *, batch_size: int, shuffle: bool,
                generator: torch.Generator | None, augment: bool = False,
                drop_last: bool = False, num_workers: int = 0):
    """An iterable of ``(x, y)`` batches with ``len()``; the same generator seed gives the same
    batches, augmentation included.

    TensorSplits are batched by indexing a ``torch.randperm`` drawn from ``generator`` on each
    pass; other Datasets go through a DataLoader seeded by ``generator``. With ``augment``,
    batches get a random crop after zero padding (in normalized units, i.e. the mean colour) and,
    for natural images, a horizontal flip; see ``augment_images``.
    """
    if isinstance(split, TensorSplit):
        return TensorLoader(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            augment=augment, drop_last=drop_last)
    loader = DataLoader(split, batch_size=batch_size, shuffle=shuffle, generator=generator,
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


# --------------------------------------------------------------------- bundled datasets


@DATASETS.register("digits")
def digits(common: SplitOptions) -> DataSplits:
    """scikit-learn's 8x8 handwritten digits (1797 images, bundled: works offline)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images / 16.0).float().unsqueeze(1)
    y = torch.from_numpy(bunch.target).long()
    return tensor_splits((x, y), None, 10, common, crop_padding=1)


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
    num_samples = _optional_positive_int(num_samples, f"{field}.num_samples")
    num_classes = _optional_positive_int(num_classes, f"{field}.num_classes")
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
        return (1, 1, _optional_positive_int(num_features, f"{field}.num_features"))
    if shape is None:
        return (1, 8, 8)
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    if not ok:
        raise ConfigError(f"{field}.shape", f"expected [channels, height, width], got {shape!r}")
    return tuple(shape)


# ------------------------------------------------------------------------- file datasets

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@DATASETS.register("mnist")
def mnist(common: SplitOptions) -> DataSplits:
    """MNIST from its raw IDX files in ``root`` or ``root/MNIST/raw`` (torchvision's layout)."""
    return _idx_dataset(common, "MNIST", flip=False)


@DATASETS.register("fashion_mnist")
def fashion_mnist(common: SplitOptions) -> DataSplits:
    """Fashion-MNIST from its IDX files in ``root`` or ``root/FashionMNIST/raw``."""
    return _idx_dataset(common, "FashionMNIST", flip=True)


def _idx_dataset(common: SplitOptions, folder: str, flip: bool) -> DataSplits:
    expected = f"{', '.join(IDX_FILES)} (each optionally .gz), directly or under {folder}/raw"
    root = common.require_root(expected)
    for directory in (root, root / folder / "raw"):
        paths = [_plain_or_gz(directory / name) for name in IDX_FILES]
        if all(paths):
            break
    else:
        raise ConfigError(f"{common.field}.root", f"no MNIST-format files in {str(root)!r}; "
                                                  f"expected {expected}")
    field = f"{common.field}.root"
    train_x, train_y, test_x, test_y = (read_idx(path, field) for path in paths)
    for images, labels, path in ((train_x, train_y, paths[0]), (test_x, test_y, paths[2])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(field, f"{path}: images {images.shape} do not match labels "
                                     f"{labels.shape}")
        if labels.max(initial=0) > 9:
            raise ConfigError(field, f"labels for {path} go beyond 9")
    train = (torch.from_numpy(train_x).unsqueeze(1), torch.from_numpy(train_y).long())
    test = (torch.from_numpy(test_x).unsqueeze(1), torch.from_numpy(test_y).long())
    return tensor_splits(train, test, 10, common, crop_padding=2, flip=flip)


def _plain_or_gz(path: Path) -> Path | None:
    gz = path.with_name(path.name + ".gz")
    return path if path.is_file() else gz if gz.is_file() else None


def read_idx(path: Path, field: str) -> np.ndarray:
    """A uint8 IDX file (the MNIST format, optionally gzipped) as a numpy array.

    Header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then one
    big-endian uint32 per dimension. Anything else is a ConfigError on ``field``.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:
        raise ConfigError(field, f"cannot read {path}: {error}") from None
    if len(data) < 4 or data[0:2] != b"\0\0" or data[2] != 0x08:
        raise ConfigError(field, f"{path} is not a uint8 IDX file (bad magic number "
                                 f"{data[:4].hex()!r}, expected 0000080X)")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data[4:header_size], dtype=">u4"))
    if len(dims) != ndim or len(data) - header_size != math.prod(dims):
        raise ConfigError(field, f"{path} is truncated or malformed: header says {dims}, "
                                 f"payload has {len(data) - header_size} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


@DATASETS.register("cifar10")
def cifar10(common: SplitOptions) -> DataSplits:
    """CIFAR-10, python version: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}``."""
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar(common, "cifar-10-batches-py", train_files, "test_batch", b"labels", 10)


@DATASETS.register("cifar100")
def cifar100(common: SplitOptions) -> DataSplits:
    """CIFAR-100, python version, fine labels: ``root/cifar-100-python/{train,test}``."""
    return _cifar(common, "cifar-100-python", ["train"], "test", b"fine_labels", 100)


def _cifar(common: SplitOptions, folder: str, train_files: list[str], test_file: str,
           label_key: bytes, num_classes: int) -> DataSplits:
    expected = f"{folder}/ with {', '.join(train_files)} and {test_file}"
    root = common.require_root(expected)
    directory = next((d for d in (root / folder, root) if (d / test_file).is_file()), None)
    if directory is None or not all((directory / name).is_file() for name in train_files):
        raise ConfigError(f"{common.field}.root", f"no CIFAR files in {str(root)!r}; "
                                                  f"expected {expected}")
    field = f"{common.field}.root"
    train = [_read_cifar_batch(directory / name, label_key, num_classes, field)
             for name in train_files]
    train_x, train_y = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    test = _read_cifar_batch(directory / test_file, label_key, num_classes, field)
    return tensor_splits((train_x, train_y), test, num_classes, common, crop_padding=4, flip=True)


def _read_cifar_batch(path: Path, label_key: bytes, num_classes: int,
                      field: str) -> tuple[Tensor, Tensor]:
    try:
        with open(path, "rb") as file:
            batch = NumpyOnlyUnpickler(file, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ConfigError(field, f"cannot unpickle {path}: {error}") from None
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(field, f"{path} is not a CIFAR batch (needs b'data' and "
                                 f"{label_key!r}): {error!r}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ConfigError(field, f"{path}: expected data N x 3072 and N labels, got "
                                 f"{data.shape} and {labels.shape}")
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise ConfigError(field, f"{path}: labels outside 0..{num_classes - 1}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else.

    A pickle can call any importable function while loading; the CIFAR files only need numpy's
    array reconstruction, so every other global (``os.system``, ...) is refused.
    """

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),  # written by numpy < 2 (the real files)
        ("numpy._core.multiarray", "_reconstruct"),  # written by numpy >= 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        # Both spellings map to the numpy in use: numpy 2 warns when numpy.core is imported.
        return _reconstruct if name == "_reconstruct" else getattr(np, name)


@DATASETS.register("imagefolder")
def imagefolder(common: SplitOptions, *, image_size: int = 32) -> DataSplits:
    """Images in ``root/train/<class>/`` and ``root/test/<class>/`` (any format PIL reads).

    Images are converted to RGB, resized (shorter side) and center-cropped to ``image_size``.
    An optional ``root/val/`` replaces the validation split carved from train.
    """
    from torchvision import datasets, transforms  # ~2 s to import; only pay when used

    field = common.field
    size = _optional_positive_int(image_size, f"{field}.image_size")
    root = common.require_root("train/<class>/*.png and test/<class>/*.png")
    folders = {part: root / part for part in ("train", "val", "test") if (root / part).is_dir()}
    if "train" not in folders or "test" not in folders:
        raise ConfigError(f"{field}.root", f"{str(root)!r} needs train/<class>/ and "
                                           f"test/<class>/ folders of images (val/ optional)")
    shape_images = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size),
                                       transforms.ToTensor()])
    try:
        parts = {part: datasets.ImageFolder(str(path), transform=shape_images)
                 for part, path in folders.items()}
    except (FileNotFoundError, OSError) as error:
        raise ConfigError(f"{field}.root",
                          f"cannot read images under {str(root)!r}: {error}") from None
    for part, folder in parts.items():
        if folder.classes != parts["train"].classes:
            raise ConfigError(f"{field}.root", f"{part}/ has classes {folder.classes}, but "
                                               f"train/ has {parts['train'].classes}")
    if "val" in parts:
        order = np.random.default_rng(common.seed).permutation(len(parts["train"]))
        train, val = Subset(parts["train"], order[: common.limit].tolist()), parts["val"]
    else:
        train_index, val_index = train_val_indices(len(parts["train"]), common)
        train = Subset(parts["train"], train_index.tolist())
        val = Subset(parts["train"], val_index.tolist())
    mean, std = _dataset_stats(train)
    normalize = transforms.Compose([shape_images, transforms.Normalize(mean, std)])
    for folder in parts.values():
        folder.transform = normalize
    return DataSplits(train=train, val=val, test=parts["test"], input_shape=(3, size, size),
                      num_classes=len(parts["train"].classes))


def _dataset_stats(dataset: Dataset) -> tuple[list[float], list[float]]:
    mean, std = _channel_stats(images for images, _ in DataLoader(dataset, batch_size=256))
    return mean.tolist(), std.tolist()
