import pytest
import torch
from torch import nn

from raysparse.sparsity.masks import MaskSet, masks_hash, prunable_weights, unpack_masks, weights_outside


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


class TinyLM(nn.Module):
    """Token embedding (50 x 16), one hidden Linear, a head to the vocabulary: tied or not."""

    def __init__(self, *, tied: bool):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.body = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.body(self.embed(tokens))))


def test_a_head_tied_to_the_embedding_is_not_prunable_and_counts_once_outside_the_masks():
    m = TinyLM(tied=True)
    assert list(prunable_weights(m)) == ["body"]
    assert weights_outside(m, ["body"]) == {"head": 50 * 16}  # the shared table once, not twice
    assert weights_outside(m, []) == {"body": 16 * 16, "head": 50 * 16}


def test_masking_every_prunable_weight_of_a_tied_model_leaves_the_embedding_whole():
    m = TinyLM(tied=True)
    table = m.embed.weight.detach().clone()
    masks = MaskSet(prunable_weights(m))
    masks.update({n: torch.zeros_like(v) for n, v in masks.masks.items()}, step=0, reason="prune")
    assert torch.all(m.body.weight == 0)
    assert torch.equal(m.embed.weight, table) and m.head.weight is m.embed.weight


def test_an_untied_head_with_an_equal_table_stays_prunable():
    m = TinyLM(tied=False)
    with torch.no_grad():
        m.head.weight.copy_(m.embed.weight)  # equal values are no tie: only the same Parameter is
    assert list(prunable_weights(m)) == ["body", "head"]
    assert weights_outside(m, ["body", "head"]) == {}
