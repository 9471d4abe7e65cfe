import pytest
import torch
from torch import nn

from raysparse.sparsity.masks import MaskSet, masks_hash, prunable_weights, unpack_masks


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 64), nn.Linear(64, 10))


def random_masks(masks, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(m.shape, generator=g) < density for n, m in masks.masks.items()}


def test_prunable_weights_filters_by_pattern():
    m = model()
    assert list(prunable_weights(m)) == ["0", "3", "4"]
    assert list(prunable_weights(m, include=["3", "4"], exclude=["4"])) == ["3"]


def test_update_zeroes_weights_and_optimizer_state_where_mask_changed():
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    m(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    masks = MaskSet(prunable_weights(m))
    new = random_masks(masks, 0.3)
    masks.update(new, step=1, reason="prune", optimizer=opt)
    for name, w in masks.weights.items():
        assert torch.all(w[~new[name]] == 0)
        assert torch.all(opt.state[w]["momentum_buffer"][~new[name]] == 0)
        assert torch.all(w[new[name]] != 0)  # kept weights untouched
    event = masks.events[-1]
    assert event.hash == masks.content_hash() and event.parent_hash != event.hash
    assert abs(event.density - masks.density()) < 1e-12 and 0.6 < event.churn < 0.8


def test_exact_density_counts():
    m = model()
    masks = MaskSet(prunable_weights(m))
    new = random_masks(masks, 0.25)
    masks.update(new, step=0, reason="init")
    kept = sum(int(v.sum()) for v in new.values())
    total = sum(v.numel() for v in new.values())
    assert masks.density() == kept / total
    assert masks.layer_density()["4"] == int(new["4"].sum()) / 640


def test_pack_is_at_most_1_1_bits_per_weight_and_round_trips():
    m = model()
    masks = MaskSet(prunable_weights(m))
    masks.update(random_masks(masks, 0.1), step=0, reason="init")
    blob = masks.pack()
    total = masks.count()[1]
    assert len(blob) * 8 / total <= 1.1
    back = unpack_masks(blob)
    assert all(torch.equal(back[n], masks.masks[n]) for n in masks.masks)
    assert masks_hash(back) == masks.content_hash()


def test_hash_changes_with_one_bit():
    m = model()
    masks = MaskSet(prunable_weights(m))
    before = masks.content_hash()
    flipped = {n: v.clone() for n, v in masks.masks.items()}
    flipped["4"].view(-1)[7] = False
    assert masks_hash(flipped) != before


def test_churn_and_state_dict_round_trip():
    m = model()
    masks = MaskSet(prunable_weights(m))
    snap = masks.snapshot()
    masks.update(random_masks(masks, 0.5), step=0, reason="init")
    assert masks.churn_since(snap) == pytest.approx(1 - masks.density())
    other = MaskSet(prunable_weights(model()))
    other.load_state_dict(masks.state_dict())
    assert other.content_hash() == masks.content_hash()
    assert all(torch.all(w[~other.masks[n]] == 0) for n, w in other.weights.items())
