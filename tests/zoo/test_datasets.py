import gzip
import io
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from raysparse.errors import ConfigError
from raysparse.zoo import DATASETS, TensorSplit, build_data, dataset_names, make_loader
from raysparse.zoo.datasets import NumpyOnlyUnpickler, augment_images

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


def write_cifar_batch(path, data: np.ndarray, labels: list[int], label_key: bytes) -> None:
    # The real files are pickled dicts with bytes keys, uint8 N x 3072 data, labels as lists.
    batch = {b"batch_label": b"testing batch", label_key: labels, b"data": data,
             b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
    with open(path, "wb") as file:
        pickle.dump(batch, file)


class RunsShellCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ------------------------------------------------------------------ splits and options


def test_digits_splits_are_disjoint_and_add_up():
    data = build_data({"name": "digits", "val_fraction": 0.1}, seed=0)
    splits = [data.train, data.val, data.test]
    assert sum(len(s) for s in splits) == 1797
    indices = torch.cat([s.source_index for s in splits])
    assert sorted(indices.tolist()) == list(range(1797))
    assert len(data.test) == round(0.2 * 1797) and len(data.val) == round(0.1 * (1797 - 359))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10


def test_digits_are_standardized_with_train_statistics():
    x, _ = build_data({"name": "digits"}, seed=0).train.tensors()
    assert x.dtype == torch.float32
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_same_seed_same_splits_other_seed_other_train_val_same_test():
    first, again, other = (build_data({"name": "digits"}, seed=s) for s in (1, 1, 2))
    assert torch.equal(first.train.source_index, again.train.source_index)
    assert torch.equal(first.train.tensors()[0], again.train.tensors()[0])
    assert not torch.equal(first.train.source_index, other.train.source_index)
    assert not torch.equal(first.val.source_index, other.val.source_index)
    # The holdout test set is fixed, so test numbers compare across run seeds.
    assert torch.equal(first.test.source_index, other.test.source_index)


def test_limit_caps_train_plus_val_and_zero_val_fraction_gives_empty_val():
    data = build_data({"name": "digits", "limit": 100, "val_fraction": 0.2}, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (80, 20, 359)
    data = build_data({"name": "digits", "val_fraction": 0}, seed=0)
    assert len(data.val) == 0 and len(data.train) == 1797 - 359


def test_loader_keys_are_accepted_and_ignored():
    spec = {"name": "digits", "batch_size": 32, "num_workers": 2, "augment": True}
    assert len(build_data(spec, seed=0).train) == len(build_data({"name": "digits"}, 0).train)


def test_synthetic_is_learnable_by_a_linear_model():
    from sklearn.linear_model import LogisticRegression

    data = build_data({"name": "synthetic"}, seed=0)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    (x_train, y_train), (x_test, y_test) = data.train.tensors(), data.test.tensors()
    model = LogisticRegression(max_iter=500).fit(x_train.flatten(1), y_train)
    assert model.score(x_test.flatten(1), y_test) > 0.6  # chance is 0.1


def test_synthetic_options():
    data = build_data({"name": "synthetic", "num_samples": 300, "num_features": 5,
                       "num_classes": 3}, seed=0)
    assert data.input_shape == (1, 1, 5) and data.num_classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 300
    data = build_data({"name": "synthetic", "shape": [3, 4, 4], "num_samples": 100}, seed=0)
    assert data.train.x.shape[1:] == (3, 4, 4)


@pytest.mark.parametrize(
    ("spec", "field", "bad_value"),
    [
        ({"name": "digitz"}, "data.name", "digitz"),
        ({"name": "digits", "val_fraction": 0.7}, "data.val_fraction", "0.7"),
        ({"name": "digits", "val_fraction": "big"}, "data.val_fraction", "big"),
        ({"name": "digits", "limit": -5}, "data.limit", "-5"),
        ({"name": "digits", "limt": 5}, "data.limt", "limt"),
        ({"name": "synthetic", "shape": [1, 2]}, "data.shape", "[1, 2]"),
        ({"name": "synthetic", "num_classes": 1}, "data.num_classes", "1"),
        ({"name": "imagefolder", "image_size": 0, "root": "."}, "data.image_size", "0"),
    ],
)
def test_bad_specs_name_the_field_and_value(spec, field, bad_value):
    with pytest.raises(ConfigError) as excinfo:
        build_data(spec, seed=0)
    assert excinfo.value.field == field
    assert field in str(excinfo.value) and bad_value in str(excinfo.value)


def test_unknown_key_lists_allowed_keys_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"allowed: .*val_fraction.*did you mean 'limit'"):
        build_data({"name": "digits", "limt": 5}, seed=0)


def test_dataset_names_cover_the_registry():
    assert dataset_names() == DATASETS.names()
    assert {"digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "cifar100",
            "imagefolder"} <= set(dataset_names())


# --------------------------------------------------------------------------- loaders


def batches(split, seed, augment=False, **kwargs):
    generator = torch.Generator().manual_seed(seed)
    loader = make_loader(split, batch_size=64, shuffle=True, generator=generator,
                         augment=augment, **kwargs)
    return list(loader) + list(loader)  # two epochs: the second must reshuffle


@pytest.fixture(scope="module")
def digits():
    return build_data({"name": "digits"}, seed=0)


def test_loader_same_generator_seed_same_batches(digits):
    first, again, other = (batches(digits.train, s) for s in (5, 5, 6))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], other[0][1])
    epoch = len(first) // 2
    assert not torch.equal(first[0][1], first[epoch][1])


def test_loader_covers_each_example_once_per_epoch(digits):
    loader = make_loader(digits.train, batch_size=100, shuffle=True,
                         generator=torch.Generator().manual_seed(0))
    labels = torch.cat([y for _, y in loader])
    assert len(loader) == -(-len(digits.train) // 100)
    assert torch.equal(labels.sort().values, digits.train.y.sort().values)
    dropping = make_loader(digits.train, batch_size=100, shuffle=False, generator=None,
                           drop_last=True)
    assert len(dropping) == len(digits.train) // 100 == len(list(dropping))


def test_augmentation_is_deterministic_and_changes_images(digits):
    plain = batches(digits.train, 5)
    first, again = batches(digits.train, 5, augment=True), batches(digits.train, 5, augment=True)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], plain[0][0])
    assert first[0][0].shape == plain[0][0].shape


def test_augment_images_crops_a_window_of_the_padded_image_and_flips():
    images = torch.randn(6, 3, 5, 5)
    out = augment_images(images, torch.Generator().manual_seed(0), padding=2, flip=True)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for image, window in zip(padded, out):
        candidates = [image[:, r:r + 5, c:c + 5] for r in range(5) for c in range(5)]
        candidates += [crop.flip(-1) for crop in candidates]
        assert any(torch.equal(window, crop) for crop in candidates)


# ----------------------------------------------------------------- on-disk formats


@pytest.mark.parametrize(("name", "layout", "compress"), [
    ("mnist", ".", False),
    ("mnist", "MNIST/raw", True),
    ("fashion_mnist", "FashionMNIST/raw", False),
])
def test_mnist_formats_load(tmp_path, name, layout, compress):
    written = write_mnist(tmp_path / layout, np.random.default_rng(0), compress=compress)
    data = build_data({"name": name, "root": str(tmp_path), "val_fraction": 0.2}, seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
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


def test_cifar10_format_loads(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_data = rng.integers(0, 256, (5, 4, 3072), dtype=np.uint8)
    for i in range(5):
        write_cifar_batch(folder / f"data_batch_{i + 1}", train_data[i], [i, i, 9, 0], b"labels")
    test_data = rng.integers(0, 256, (6, 3072), dtype=np.uint8)
    write_cifar_batch(folder / "test_batch", test_data, [0, 1, 2, 3, 4, 5], b"labels")

    data = build_data({"name": "cifar10", "root": str(tmp_path), "val_fraction": 0.25}, seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
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
    assert data.num_classes == 100 and (len(data.train), len(data.val)) == (8, 2)
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
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
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
