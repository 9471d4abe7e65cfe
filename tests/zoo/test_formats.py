import gzip
import io
import os
import pickle
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from raysparse.errors import ConfigError
from raysparse.zoo import TensorSplit, build_data, make_loader
from raysparse.zoo.formats import NumpyOnlyUnpickler
from tests.zoo.conftest import batches

# ---------------------------------------------------------------------------- helpers


def raw_images(split: TensorSplit) -> torch.Tensor:
    """Undo the per-batch normalization, back to the stored 0..255 pixels."""
    x, _ = split.tensors()
    return (x * split.std + split.mean).mul(255).round()


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(f"{path}.gz", "wb") as file:
            file.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist(directory, rng, num_train=30, num_test=10, compress=False):
    directory.mkdir(parents=True, exist_ok=True)
    data = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (num_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, num_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (num_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, num_test),
    }
    for name, array in data.items():
        write_idx(directory / name, array, compress)
    return data


class Python2Pickler(pickle._Pickler):
    """Writes what the real CIFAR files hold: Python 2 cPickle, protocol 2, where every str is a
    byte string and numpy arrays reference numpy.core.multiarray._reconstruct."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_byte_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_byte_string

    def save_global(self, obj, name=None):
        module = "numpy.core.multiarray" if obj.__name__ == "_reconstruct" else obj.__module__
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())
        self.memoize(obj)


def write_cifar_batch(path, data: np.ndarray, labels: list[int], label_key: bytes,
                      python2: bool = False) -> None:
    # The real files are pickled dicts with bytes keys, uint8 N x 3072 data, labels as lists.
    batch = {b"batch_label": b"testing batch", label_key: labels, b"data": data,
             b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as file:
        if python2:
            Python2Pickler(file, protocol=2).dump(batch)
        else:
            pickle.dump(batch, file)


def write_cifar10(root, per_batch: int = 4, seed: int = 0) -> None:
    """A small CIFAR-10 in the real python-version layout under ``root``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(5):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        write_cifar_batch(folder / f"data_batch_{i + 1}", data, [int(v) for v in rng.integers(0, 10, per_batch)],
                          b"labels")
    write_cifar_batch(folder / "test_batch", rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                      list(range(per_batch)), b"labels")


class RunsShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ----------------------------------------------------------------- on-disk formats


@pytest.mark.parametrize(("name", "layout", "compress"), [
    ("mnist", ".", False),
    ("mnist", "MNIST/raw", True),
    ("fashion_mnist", "FashionMNIST/raw", False),
])
def test_mnist_formats_load(tmp_path, name, layout, compress):
    written = write_mnist(tmp_path / layout, np.random.default_rng(0), compress=compress)
    data = build_data({"name": name, "root": str(tmp_path), "val_fraction": 0.2}, seed=0)
    assert data.info["input_shape"] == (1, 28, 28) and data.info["num_classes"] == 10
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    assert torch.equal(data.test.y, torch.from_numpy(written["t10k-labels-idx1-ubyte"]))
    train_images = torch.from_numpy(written["train-images-idx3-ubyte"]).float().unsqueeze(1)
    assert torch.equal(raw_images(data.train), train_images[data.train.source_index])


@pytest.mark.parametrize("payload", [b"\0\0\x08\x03\0\0\0\x02", b"\x01\x02\x03\x04", b""])
def test_malformed_idx_file_is_a_config_error(tmp_path, payload):
    write_mnist(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(payload)
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte") as excinfo:
        build_data({"name": "mnist", "root": str(tmp_path)}, seed=0)
    assert excinfo.value.field == "data.root"


@pytest.mark.parametrize("python2", [False, True], ids=["numpy2-pickle", "python2-pickle"])
def test_cifar10_format_loads(tmp_path, python2):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_data = rng.integers(0, 256, (5, 4, 3072), dtype=np.uint8)
    for i in range(5):
        write_cifar_batch(folder / f"data_batch_{i + 1}", train_data[i], [i, i, 9, 0], b"labels",
                          python2)
    test_data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", test_data, [0, 1, 2, 3, 4, 5], b"labels", python2)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy 2's DeprecationWarning on numpy.core
        data = build_data({"name": "cifar10", "root": str(tmp_path), "val_fraction": 0.25},
                          seed=0)
    assert data.info["input_shape"] == (3, 32, 32) and data.info["num_classes"] == 10
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, 6)
    assert data.test.y.tolist() == [0, 1, 2, 3, 4, 5]
    assert data.train.x.dtype == torch.uint8  # kept compact; normalized per batch
    expected = torch.from_numpy(train_data.reshape(20, 3, 32, 32)).float()
    assert torch.equal(raw_images(data.train), expected[data.train.source_index])


def test_cifar100_format_loads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_cifar_batch(folder / "train", rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                      list(range(90, 100)), b"fine_labels")
    write_cifar_batch(folder / "test", rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                      [99, 50, 0], b"fine_labels")
    data = build_data({"name": "cifar100", "root": str(tmp_path), "val_fraction": 0.2}, seed=0)
    assert data.info["num_classes"] == 100 and (len(data.train), len(data.val)) == (8, 2)
    assert data.test.y.tolist() == [99, 50, 0]
    assert set(data.train.y.tolist()) | set(data.val.y.tolist()) == set(range(90, 100))


def test_unpickler_refuses_globals_other_than_numpy_arrays(tmp_path):
    marker = tmp_path / "pwned"
    malicious = pickle.dumps({b"data": RunsShellCommand(f"touch {marker}")})
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|nt.system"):
        NumpyOnlyUnpickler(io.BytesIO(malicious), encoding="bytes").load()
    assert not marker.exists()

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_cifar_batch(folder / "train", np.zeros((2, 3072), np.uint8), [0, 1], b"fine_labels")
    (folder / "test").write_bytes(malicious)
    with pytest.raises(ConfigError, match="refusing") as excinfo:
        build_data({"name": "cifar100", "root": str(tmp_path)}, seed=0)
    assert excinfo.value.field == "data.root" and not marker.exists()


def write_image_folder(root, part, counts, size=(12, 10)):
    rng = np.random.default_rng(len(part))
    for label, count in counts.items():
        (root / part / label).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / part / label / f"{i}.png")


def test_imagefolder_loads_and_carves_val_from_train(tmp_path):
    write_image_folder(tmp_path, "train", {"cat": 6, "dog": 4})
    write_image_folder(tmp_path, "test", {"cat": 2, "dog": 3})
    data = build_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 8,
                       "val_fraction": 0.2}, seed=0)
    assert data.info["input_shape"] == (3, 8, 8) and data.info["num_classes"] == 2
    assert (len(data.train), len(data.val), len(data.test)) == (8, 2, 5)
    assert set(data.train.indices).isdisjoint(data.val.indices)
    x, y = next(iter(make_loader(data.test, batch_size=5, shuffle=False, generator=None)))
    assert x.shape == (5, 3, 8, 8) and y.tolist() == [0, 0, 1, 1, 1]
    train_x = torch.cat([x for x, _ in make_loader(data.train, batch_size=8, shuffle=False,
                                                   generator=None)])
    assert train_x.mean(dim=(0, 2, 3)).abs().max() < 1e-4  # normalized with train statistics
    first, again = batches(data.train, 3, augment=True), batches(data.train, 3, augment=True)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))


def test_imagefolder_uses_an_existing_val_folder(tmp_path):
    for part, counts in (("train", {"a": 3, "b": 3}), ("val", {"a": 1, "b": 1}),
                         ("test", {"a": 1, "b": 2})):
        write_image_folder(tmp_path, part, counts)
    data = build_data({"name": "imagefolder", "root": str(tmp_path), "image_size": 8}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 3)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "cifar100", "imagefolder"])
def test_missing_root_or_files_name_data_root(tmp_path, name):
    for spec, expected in (({"name": name}, "missing"),
                           ({"name": name, "root": str(tmp_path / "nowhere")}, "nowhere"),
                           ({"name": name, "root": str(tmp_path)}, "expected|needs")):
        with pytest.raises(ConfigError, match=expected) as excinfo:
            build_data(spec, seed=0)
        assert excinfo.value.field == "data.root"
