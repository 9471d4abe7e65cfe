"""Patterns against their definitions: hand-built scores with known answers, masks checked by
counting groups and blocks here, independently of the code under test."""

import itertools

import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.sparsity.distributions import cap_densities
from raysparse.sparsity.masks import MaskSet
from raysparse.sparsity.patterns import (
    NM,
    UNSTRUCTURED,
    Block,
    layer_patterns,
    parse_pattern,
    unpatterned_layers,
)


def nm_holds(mask, n, m):
    """The definition: in every row of weight.flatten(1), every m consecutive columns keep <= n."""
    rows = mask.flatten(1).tolist()
    return all(sum(row[j:j + m]) <= n for row in rows for j in range(0, len(row), m))


def blocks_whole(mask, r, c):
    matrix = mask.flatten(1)
    return all(
        len(set(matrix[i:i + r, j:j + c].flatten().tolist())) == 1
        for i in range(0, matrix.shape[0], r) for j in range(0, matrix.shape[1], c)
    )


@pytest.mark.parametrize("text, expected", [
    ("unstructured", UNSTRUCTURED), ("2:4", NM(2, 4)), ("1:8", NM(1, 8)), ("block:1x4", Block(1, 4)),
    ("block:4x4", Block(4, 4)), (" 2:4 ", NM(2, 4)),
])
def test_patterns_parse(text, expected):
    assert parse_pattern(text) == expected


@pytest.mark.parametrize("bad", ["3:2", "4:4", "0:4", "block:0x4", "block:4x0", "block:4", "2-4", "2:4:8", "",
                                 "Unstructured", None, [2, 4], 4.0])
def test_a_bad_pattern_is_one_line_naming_the_field_and_what_is_allowed(bad):
    with pytest.raises(ConfigError, match=r"^sparsity\.pattern: got .*; allowed: unstructured, 'N:M' with "
                                          r"1 <= N < M \(e\.g\. '2:4'\), or 'block:RxC'") as err:
        parse_pattern(bad)
    assert "\n" not in str(err.value)


def test_an_unquoted_yaml_2_4_is_explained():
    with pytest.raises(ConfigError, match=r"^sparsity\.pattern: got 124, a number: YAML reads an unquoted 2:4 "
                                          r"as 124; quote it \(\"2:4\"\)"):
        parse_pattern(124)


def test_nm_top_k_keeps_at_most_n_per_group_and_the_best_such_weights():
    score = torch.tensor([[9.0, 8, 7, 1, 2, 3, 0.5, 0.1]])
    # unconstrained top-3 is 9, 8, 7: three in the first group; under 2:4 the third is 3
    chosen = NM(2, 4).select(score, torch.ones_like(score, dtype=torch.bool), 3)
    assert chosen.tolist() == [[True, True, False, False, False, True, False, False]]
    full = NM(2, 4).select(score, torch.ones_like(score, dtype=torch.bool), 8)  # more than it holds: 2 per group
    assert full.tolist() == [[True, True, False, False, True, True, False, False]]


def test_nm_growth_fills_only_the_room_the_kept_weights_leave():
    score = torch.tensor([[5.0, 4, 3, 2, 9, 8, 7, 6]])
    kept = torch.tensor([[False, False, False, True, True, False, False, True]])  # one in group 0, two in group 1
    grown = NM(2, 4).select(score, ~kept, 3, kept=kept)
    assert grown.tolist() == [[True, False, False, False, False, False, False, False]]  # group 1 is full
    assert nm_holds(grown | kept, 2, 4)


def test_nm_top_k_is_the_best_mask_under_the_pattern_by_brute_force():
    generator = torch.Generator().manual_seed(0)
    pattern = NM(2, 4)
    for k in range(0, 5):
        score = torch.rand(1, 8, generator=generator)
        best = max(
            (sum(score[0, i].item() for i in kept) for kept in itertools.combinations(range(8), k)
             if nm_holds(torch.zeros(1, 8, dtype=torch.bool).index_fill_(1, torch.tensor(kept, dtype=torch.long),
                                                                          True), 2, 4)),
        )
        chosen = pattern.select(score, torch.ones(1, 8, dtype=torch.bool), k)
        assert int(chosen.sum()) == k and nm_holds(chosen, 2, 4)
        assert score[chosen].sum().item() == pytest.approx(best, rel=1e-6)


def test_nm_growth_is_the_best_addition_to_the_kept_weights_by_brute_force():
    generator = torch.Generator().manual_seed(3)
    pattern = NM(2, 4)
    for _ in range(20):
        score = torch.rand(1, 8, generator=generator)
        kept = pattern.select(torch.rand(1, 8, generator=generator), torch.ones(1, 8, dtype=torch.bool),
                              int(torch.randint(0, 4, (1,), generator=generator)))
        room = 4 - int(kept.sum())
        k = int(torch.randint(0, room + 1, (1,), generator=generator))
        free = [i for i in range(8) if not kept[0, i]]

        best = max(sum(score[0, i].item() for i in added) for added in itertools.combinations(free, k)
                   if nm_holds(kept.index_fill(1, torch.tensor(added, dtype=torch.long), True), 2, 4))
        grown = pattern.select(score, ~kept, k, kept=kept)
        assert int(grown.sum()) == k and not (grown & kept).any() and nm_holds(grown | kept, 2, 4)
        assert score[grown].sum().item() == pytest.approx(best, rel=1e-6)


def test_nm_groups_a_convolution_along_its_flattened_inputs():
    # weight [out=1, in=2, kh=1, kw=2]: the 4 inputs (c0 u0, c0 u1, c1 u0, c1 u1) form one group of 4
    mask = torch.tensor([True, True, True, False]).view(1, 2, 1, 2)
    assert not NM(2, 4).holds(mask) and not nm_holds(mask, 2, 4)
    assert NM(2, 4).fits(torch.Size([16, 4, 3, 3])) and not NM(2, 4).fits(torch.Size([16, 3, 3, 3]))
    score = torch.rand(8, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    chosen = NM(2, 4).select(score, torch.ones_like(score, dtype=torch.bool), 8 * 18)
    assert chosen.shape == score.shape and int(chosen.sum()) == 8 * 18 and nm_holds(chosen, 2, 4)


def test_block_top_k_keeps_whole_blocks_ranked_by_summed_score():
    score = torch.tensor([
        [1.0, 1, 0, 0],
        [1.0, 1, 0, 9],  # right block sums 9: more than the left (4), though the left has more large weights
        [2.0, 2, 0, 0],
        [2.0, 2, 0, 0],  # bottom-left sums 8
    ])
    everything = torch.ones_like(score, dtype=torch.bool)
    two = Block(2, 2).select(score, everything, 8)
    assert two.int().tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert int(Block(2, 2).select(score, everything, 5).sum()) == 4  # k is rounded to whole blocks
    partly = everything.clone()
    partly[0, 3] = False  # a block with one non-candidate is no candidate
    bottom_left = [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert Block(2, 2).select(score, partly, 4).int().tolist() == bottom_left


def test_holds_agrees_with_the_definitions_on_random_masks():
    generator = torch.Generator().manual_seed(2)
    for _ in range(50):
        mask = torch.rand(4, 8, generator=generator) < 0.4
        assert NM(2, 4).holds(mask) == nm_holds(mask, 2, 4)
        assert NM(1, 2).holds(mask) == nm_holds(mask, 1, 2)
    whole = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert Block(2, 2).holds(whole) and blocks_whole(whole, 2, 2)
    assert not Block(2, 2).holds(whole.roll(1, 1)) and not blocks_whole(whole.roll(1, 1), 2, 2)
    assert Block(1, 2).holds(whole.roll(2, 1))


def test_layers_whose_shape_does_not_divide_stay_unstructured():
    shapes = {"conv1": torch.Size([16, 3, 3, 3]), "fc": torch.Size([64, 32]), "head": torch.Size([10, 32]),
              "first": torch.Size([64, 64])}
    got = layer_patterns(Block(4, 4), shapes, dense_layers=["first"])
    assert got == {"conv1": UNSTRUCTURED, "fc": Block(4, 4), "head": UNSTRUCTURED, "first": UNSTRUCTURED}
    assert unpatterned_layers(Block(4, 4), shapes, dense_layers=["first"]) == ["conv1", "head"]
    assert unpatterned_layers(NM(2, 4), shapes) == ["conv1"]


def test_a_mask_set_refuses_an_update_that_breaks_its_pattern():
    weight = torch.nn.Parameter(torch.ones(2, 4))
    masks = MaskSet({"w": weight})
    masks.enforce({"w": NM(2, 4)})
    masks.update({"w": torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)}, step=1, reason="ok")
    with pytest.raises(RuntimeError, match=r"bad at step 2: the new mask of w breaks its pattern '2:4'"):
        masks.update({"w": torch.tensor([[1, 1, 1, 0], [0, 1, 0, 1]], dtype=torch.bool)}, step=2, reason="bad")


def test_cap_densities_moves_what_a_capped_layer_cannot_hold_to_the_others():
    sizes = {"a": 100, "b": 100, "c": 100}
    # a: 0.9 -> 0.5 (40 weights over); b, c scale by 1 + 40/50 -> 0.72, 0.18; b -> 0.5 (22 over); c -> 0.4
    got = cap_densities({"a": 0.9, "b": 0.4, "c": 0.1}, sizes, {"a": 0.5, "b": 0.5, "c": 0.5})
    assert got == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.4})
    assert sum(got[n] * sizes[n] for n in sizes) == pytest.approx(140)
    fixed = cap_densities({"a": 0.9, "b": 0.4, "c": 0.1}, sizes, {"a": 0.5, "b": 0.5, "c": 0.5}, frozenset("c"))
    assert fixed == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.1})  # c given explicitly: never grows
    untouched = {"a": 0.3, "b": 0.2, "c": 1.0}
    assert cap_densities(untouched, sizes, {"a": 0.5, "b": 0.5}) == untouched
