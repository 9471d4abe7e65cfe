import pytest
import torch

from raysparse.zoo import build_data, make_loader
from raysparse.zoo.loaders import augment_images
from tests.zoo.conftest import batches


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


def test_shards_are_disjoint_equal_and_cover_the_permutation(digits):
    data = digits
    shards = []
    for rank in range(2):
        loader = make_loader(data.train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(5),
                             shard=(rank, 2))
        shards.append(torch.cat([y for _, y in loader]))
    assert len(shards[0]) == len(shards[1]) == len(data.train) // 2
    single = torch.cat([y for _, y in make_loader(data.train, batch_size=32, shuffle=True,
                                                   generator=torch.Generator().manual_seed(5))])
    assert torch.equal(torch.stack([shards[0], shards[1]], 1).flatten(), single[: 2 * len(shards[0])])
