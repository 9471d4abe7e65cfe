import pytest
import torch

from raysparse.errors import ConfigError
from raysparse.sparsity.distributions import DISTRIBUTIONS, configured_distribution, erdos_renyi_kernel, kept_counts
from raysparse.sparsity.owl import block_groups, block_outlier_ratios, outlier_ratio, owl_densities, owl_options

# mean 3: above 1*3 are 4 and 12, above 2*3 only 12, above 5*3 none
EIGHT = torch.tensor([[1.0, 1, 1, 1], [2, 2, 4, 12]])
FLAT = torch.ones(2, 4)  # no entry is above its mean


def llama_like(blocks: int, outliers: dict[int, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Wanda-like scores of ``blocks`` blocks (q_proj 32x32, up_proj 64x32); block b gets
    ``outliers[b]`` entries 100x the typical score planted in each layer."""
    generator = torch.Generator().manual_seed(seed)
    scores = {}
    for b in range(blocks):
        for part, shape in (("self_attn.q_proj", (32, 32)), ("mlp.up_proj", (64, 32))):
            score = torch.rand(shape, generator=generator)
            score.view(-1)[torch.randperm(score.numel(), generator=generator)[: outliers.get(b, 0)]] = 100.0
            scores[f"model.layers.{b}.{part}.weight"] = score
    return scores


def kept_within_one_per_layer(densities, scores, density):
    sizes = {n: s.numel() for n, s in scores.items()}
    counts = kept_counts(densities, sizes)
    return abs(sum(counts.values()) - density * sum(sizes.values())) <= len(scores)


def test_outlier_ratio_counts_entries_above_M_times_the_mean():
    assert outlier_ratio(EIGHT, 1.0) == 2 / 8
    assert outlier_ratio(EIGHT, 2.0) == 1 / 8
    assert outlier_ratio(EIGHT, 5.0) == 0.0
    assert outlier_ratio(-EIGHT, 2.0) == 1 / 8  # weights as scores: |W|


def test_block_ratio_is_the_size_weighted_mean_of_its_layers():
    scores = {"b.0.small": EIGHT, "b.0.big": torch.ones(4, 6), "b.1.x": EIGHT}
    got = block_outlier_ratios(scores, 1.0, block_groups(list(scores)))
    assert got == {"b.0.": pytest.approx((0.25 * 8 + 0.0 * 24) / 32), "b.1.": 0.25}


def test_owl_hand_computed_with_clamp_and_resolved_shift():
    # ratios (M=1) 0.25, 0, 0 -> base 0.6, 0.4, 0.4; the unclamped shift (+1/30) would put block 0
    # at 0.633 > 0.5 + 0.1, so it is clamped at 0.6 and the others share the rest: 0.45 each
    scores = {"b.0.x": EIGHT, "b.1.x": FLAT, "b.2.x": FLAT}
    got = owl_densities(scores, 0.5, M=1.0, lam=0.1)
    assert got == {"b.0.x": pytest.approx(0.6), "b.1.x": pytest.approx(0.45), "b.2.x": pytest.approx(0.45)}


def test_owl_hand_computed_without_clamp_is_the_papers_shift():
    # ratios 0.25 and 0 -> densities 0.5 +- 0.1, mean 0.5 already: no shift
    got = owl_densities({"b.0.x": EIGHT, "b.1.x": FLAT}, 0.5, M=1.0, lam=0.1)
    assert got == {"b.0.x": pytest.approx(0.6), "b.1.x": pytest.approx(0.4)}


def test_M_decides_which_entries_are_outliers():
    scores = {"b.0.x": EIGHT, "b.1.x": torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 5]])}  # mean 1.5: 5 > 2*1.5
    # M=1: ratios 2/8 vs 1/8, block 0 denser; M=2: 1/8 each, uniform; M=5: none anywhere, uniform
    assert owl_densities(scores, 0.5, M=1.0, lam=0.1) == {"b.0.x": pytest.approx(0.6), "b.1.x": pytest.approx(0.4)}
    assert owl_densities(scores, 0.5, M=2.0, lam=0.1) == {"b.0.x": 0.5, "b.1.x": 0.5}
    assert owl_densities(scores, 0.5, M=5.0, lam=0.1) == {"b.0.x": 0.5, "b.1.x": 0.5}


def test_block_with_planted_outliers_keeps_more():
    scores = llama_like(4, {0: 60, 2: 20})
    got = owl_densities(scores, 0.3)
    block = {b: got[f"model.layers.{b}.mlp.up_proj.weight"] for b in range(4)}
    assert block[0] > block[2] > block[1] == pytest.approx(block[3])
    for b in range(4):  # one density per block
        assert got[f"model.layers.{b}.self_attn.q_proj.weight"] == block[b]


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 0.95])
@pytest.mark.parametrize("lam", [0.0, 0.08, 0.3])
def test_budget_holds_and_lambda_bounds_the_deviation(density, lam):
    scores = llama_like(5, {0: 200, 1: 40, 3: 5}, seed=1)
    got = owl_densities(scores, density, lam=lam)
    assert kept_within_one_per_layer(got, scores, density)
    for d in got.values():
        assert max(density - lam, 0.0) - 1e-9 <= d <= min(density + lam, 1.0) + 1e-9


def test_dense_layers_hold_one_and_the_rest_centres_on_what_is_left():
    scores = llama_like(3, {0: 100})
    dense = frozenset({"model.layers.0.mlp.up_proj.weight"})  # 2048 of 9216 weights
    got = owl_densities(scores, 0.5, lam=0.08, dense_layers=dense)
    assert got["model.layers.0.mlp.up_proj.weight"] == 1.0
    assert kept_within_one_per_layer(got, scores, 0.5)
    left = (0.5 * 9216 - 2048) / (9216 - 2048)
    assert all(left - 0.08 - 1e-9 <= d <= left + 0.08 + 1e-9 for n, d in got.items() if n not in dense)


def test_groups_by_first_numeric_index_else_one_per_layer():
    names = [
        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight",
        "model.layers.1.self_attn.q_proj.weight", "model.layers.12.mlp.down_proj.weight",
        "model.layers.3.block_sparse_moe.experts.7.w1.weight", "layer1.0.downsample.0.weight",
        "0.weight", "lm_head.weight", "fc1.weight",
    ]
    assert block_groups(names) == {
        "model.layers.0.self_attn.q_proj.weight": "model.layers.0.",
        "model.layers.0.mlp.up_proj.weight": "model.layers.0.",
        "model.layers.1.self_attn.q_proj.weight": "model.layers.1.",
        "model.layers.12.mlp.down_proj.weight": "model.layers.12.",
        "model.layers.3.block_sparse_moe.experts.7.w1.weight": "model.layers.3.",
        "layer1.0.downsample.0.weight": "layer1.0.",
        "0.weight": "0.",
        "lm_head.weight": "lm_head.weight",
        "fc1.weight": "fc1.weight",
    }


def test_explicit_groups_replace_the_name_rule():
    scores = {"a": EIGHT, "b": FLAT, "c": FLAT}
    got = owl_densities(scores, 0.5, M=1.0, lam=0.1, groups={"a": "g", "b": "g", "c": "h"})
    # g = (0.25*8 + 0*8) / 16 = 0.125, h = 0 -> base 0.6, 0.6, 0.4 (mean 1.6/3); the shift -1/30 would
    # put c below 0.5 - 0.1, so c is clamped at 0.4 and a, b share the rest: (12 - 3.2) / 16 = 0.55
    assert got == {"a": pytest.approx(0.55), "b": pytest.approx(0.55), "c": pytest.approx(0.4)}


def test_registered_as_a_distribution_reading_weights_as_magnitudes():
    weights = {n: torch.randn_like(s) * s for n, s in llama_like(3, {1: 50}).items()}
    got = DISTRIBUTIONS["owl"](weights, 0.4, dense_layers=frozenset())
    assert got == owl_densities({n: w.abs() for n, w in weights.items()}, 0.4)
    assert got["model.layers.1.mlp.up_proj.weight"] > got["model.layers.0.mlp.up_proj.weight"]


def test_configured_distribution_binds_owl_options():
    scores = {"b.0.x": EIGHT, "b.1.x": FLAT}
    owl = configured_distribution("owl", {"M": 1, "lambda": 0.05})
    assert owl(scores, 0.5) == {"b.0.x": pytest.approx(0.55), "b.1.x": pytest.approx(0.45)}
    assert configured_distribution("owl")(scores, 0.5) == {"b.0.x": 0.5, "b.1.x": 0.5}  # M=5: no outliers
    # another distribution's options are checked, accepted and unused (a sweep samples the distribution)
    assert configured_distribution("erk", {"lambda": 0.05}) is erdos_renyi_kernel


@pytest.mark.parametrize(("options", "field", "message"), [
    ({"M": 0}, "sparsity.distribution_options.M", "allowed: a number > 0"),
    ({"M": True}, "sparsity.distribution_options.M", "allowed: a number > 0"),
    ({"lambda": 1.5}, "sparsity.distribution_options.lambda", r"allowed: a number in \[0, 1\]"),
    ({"lambda": "0.1"}, "sparsity.distribution_options.lambda", r"allowed: a number in \[0, 1\]"),
    ({"lamda": 0.1}, "sparsity.distribution_options.lamda", "did you mean 'lambda'"),
    ([("M", 5)], "sparsity.distribution_options", "allowed: a mapping"),
])
def test_bad_options_name_the_field_and_what_is_allowed(options, field, message):
    with pytest.raises(ConfigError, match=message) as error:
        configured_distribution("erk", options)
    assert error.value.field == field


def test_options_default_to_the_papers():
    assert owl_options({}) == {"M": 5.0, "lam": 0.08}
