"""Datasets read from their files on disk: MNIST-style IDX files (mnist, fashion_mnist),
CIFAR python batches (cifar10, cifar100) and folders of images (imagefolder).

They register into the same ``DATASETS`` registry as the bundled ones; importing
``raysparse.zoo`` imports this module.
"""

from __future__ import annotations

import gzip
import math
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from raysparse.errors import ConfigError
from raysparse.zoo.datasets import (
    DATASETS,
    DataSplits,
    SplitOptions,
    channel_stats,
    optional_positive_int,
    tensor_splits,
    train_val_indices,
)

try:
    from numpy._core.multiarray import _reconstruct  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct

# ---------------------------------------------------------------------------- IDX (MNIST)

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# datasets read from files under data.root (nothing is downloaded at run time)
FILE_DATASETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder")


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


# ------------------------------------------------------------------- CIFAR python batches


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


# -------------------------------------------------------------------------- image folders


@DATASETS.register("imagefolder")
def imagefolder(common: SplitOptions, *, image_size: int = 32) -> DataSplits:
    """Images in ``root/train/<class>/`` and ``root/test/<class>/`` (any format PIL reads).

    Images are converted to RGB, resized (shorter side) and center-cropped to ``image_size``.
    An optional ``root/val/`` replaces the validation split carved from train.
    """
    from torchvision import datasets, transforms  # ~2 s to import; only pay when used

    field = common.field
    size = optional_positive_int(image_size, f"{field}.image_size")
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
    info = {"input_shape": (3, size, size), "num_classes": len(parts["train"].classes)}
    return DataSplits(train=train, val=val, test=parts["test"], info=info)


def _dataset_stats(dataset: Dataset) -> tuple[list[float], list[float]]:
    mean, std = channel_stats(images for images, _ in DataLoader(dataset, batch_size=256))
    return mean.tolist(), std.tolist()
