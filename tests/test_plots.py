"""The allocation figures: density by block and matrix type, and allocations against depth."""

from raysparse import plots

NAMES = [f"model.layers.{b}.{kind}" for b in range(3) for kind in ("self_attn.q_proj", "mlp.up_proj")]


def test_layers_of_numbered_blocks_are_placed_by_block_and_type():
    blocks, types, place = plots.blocks_and_types([*NAMES, "lm_head"])
    assert blocks == ["model.layers.0", "model.layers.1", "model.layers.2"]
    assert types == ["self_attn.q_proj", "mlp.up_proj"]
    assert "lm_head" not in place and place["model.layers.2.mlp.up_proj"] == ("model.layers.2", "mlp.up_proj")
    assert plots.blocks_and_types(["fc1", "fc2"]) is None  # no blocks: no such figure


def test_the_figures_are_written_for_a_transformer_and_skipped_for_an_mlp(tmp_path):
    densities = {n: 0.1 * (i + 1) for i, n in enumerate(NAMES)}
    assert plots.allocation_heatmap(densities, tmp_path / "heat.png").stat().st_size > 0
    sizes = dict.fromkeys(NAMES, 10)
    path = plots.allocation_by_depth({"best": densities, "uniform": dict.fromkeys(NAMES, 0.4)}, sizes,
                                     tmp_path / "depth.png")
    assert path.stat().st_size > 0
    assert plots.allocation_heatmap({"fc1": 0.5}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
