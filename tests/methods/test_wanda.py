"""Wanda: |W| * ||X|| per output row on hand-built layers, and through the loop (after training
to prune_end, and on a loaded network at epoch 0)."""

import pytest
import torch
from torch import nn

from raysparse.config import load_sparsity
from raysparse.methods.wanda import Wanda, input_norms, keep_per_row, keep_per_row_under
from raysparse.sparsity.patterns import NM, Block
from raysparse.tasks.classification import Classification
from raysparse.train import fit
from tests.conftest import small_config


def pruned_by_wanda(model, inputs, **sparsity):
    cfg = load_sparsity({"method": "wanda", "distribution": "uniform", "final_sparsity": 0.5, "prune_end": 0,
                         **sparsity}, epochs=1)
    method = Wanda(cfg, seed=0)
    method.bind(task=Classification(), train_batches=lambda: iter([(x, None) for x in inputs]),
                example_input=lambda: inputs[0][:1])
    method.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), steps_per_epoch=1, total_steps=1)
    method.on_train_start()
    return method


def test_linear_keeps_the_largest_weight_times_input_norm_in_every_row():
    layer = nn.Linear(4, 2, bias=False)
    layer.weight.data = torch.tensor([[1.0, 10.0, 2.0, -4.0], [-0.5, 3.0, 6.0, 1.0]])
    # two batches of one example: ||X_j|| = (5, 0, 1, sqrt(0.5)) over both
    inputs = [torch.tensor([[3.0, 0.0, 1.0, 0.5]]), torch.tensor([[4.0, 0.0, 0.0, -0.5]])]
    method = pruned_by_wanda(nn.Sequential(layer), inputs)
    # scores: row 0 (5, 0, 2, 2.83) keeps columns 0, 3; row 1 (2.5, 0, 6, 0.71) keeps 2, 0.
    # By magnitude alone row 0 would keep 10 and -4: the input norms decide here
    expected = torch.tensor([[True, False, False, True], [True, False, True, False]])
    assert torch.equal(method.masks.masks["0"], expected)
    assert torch.equal(layer.weight != 0, expected)


def test_conv_column_norms_follow_padding_and_stride():
    # kernel 2, stride 2, padding 1 on a 2x2 input: each kernel offset meets exactly one pixel,
    # offset (0, 0) the last one, so the norms come out as the pixels reversed
    conv = nn.Conv2d(1, 2, 2, stride=2, padding=1, bias=False)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    norms = input_norms(nn.Sequential(conv), {"0": conv.weight}, [x])["0"]
    assert norms.tolist() == [[4.0, 3.0, 2.0, 1.0]]

    conv.weight.data = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.1, 0.2, 5.0, 9.0]]).view(2, 1, 2, 2)
    method = pruned_by_wanda(nn.Sequential(conv), [x])
    # scores: row 0 (4, 3, 2, 1) keeps offsets 0, 1; row 1 (0.4, 0.6, 10, 9) keeps 2, 3
    expected = torch.tensor([[True, True, False, False], [False, False, True, True]]).view(2, 1, 2, 2)
    assert torch.equal(method.masks.masks["0"], expected)


def test_grouped_conv_rows_see_their_own_group_and_conv1d_unfolds_as_height_one():
    grouped = nn.Conv2d(2, 4, 1, groups=2, bias=False)
    x = torch.cat([torch.ones(1, 1, 2, 2), 3 * torch.ones(1, 1, 2, 2)], dim=1)
    assert input_norms(grouped, {"g": grouped.weight}, [x])["g"].tolist() == [[2.0], [2.0], [6.0], [6.0]]

    conv1d = nn.Conv1d(1, 1, 2, padding=1, bias=False)  # padded (0, 3, 4, 0): offset 0 meets 3, 4; offset 1 meets 3, 4
    norms = input_norms(conv1d, {"c": conv1d.weight}, [torch.tensor([[[3.0, 4.0]]])])["c"]
    assert norms.tolist() == [[5.0, 5.0]]


def test_rows_keep_equal_shares_and_the_rest_goes_to_the_best_next_scores():
    scores = torch.tensor([[9.0, 1.0, 0.0], [5.0, 4.0, 3.0]])
    # 3 of 6: one per row, and the third to row 1, whose second best (4) beats row 0's (1)
    assert keep_per_row(scores, 3).tolist() == [[True, False, False], [True, True, False]]
    assert keep_per_row(scores, 4).sum(1).tolist() == [2, 2]
    assert int(keep_per_row(torch.rand(7, 5), 12).sum()) == 12


def test_a_weight_whose_input_no_hook_sees_is_pruned_by_magnitude_with_a_warning():
    class Functional(nn.Module):  # uses its Linear's weight without calling the Linear
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 2, bias=False)
            self.inner.weight.data = torch.tensor([[1.0, 10.0, 2.0, -4.0], [-0.5, 3.0, 6.0, 1.0]])

        def forward(self, x):
            return x @ self.inner.weight.T

    with pytest.warns(UserWarning, match="wanda: no input seen for inner; pruned by"):
        method = pruned_by_wanda(Functional(), [torch.ones(1, 4)])
    assert method.masks.masks["inner"].tolist() == [[False, True, False, True], [False, True, True, False]]


def test_through_the_loop_dense_until_prune_end_then_pruned_once():
    reports, events = [], []

    def report(metrics, ctx):
        reports.append(metrics)
        events.extend(ctx.mask_events)

    fit(small_config("wanda", prune_end=2, calibration_batches=4), report)
    assert reports[0]["density"] == 1.0
    assert [r["density"] for r in reports[1:]] == pytest.approx([0.2] * 3, abs=0.002)  # pruned after epoch 2
    assert [(e.step, e.reason) for e in events] == [(2 * reports[0]["step"], "wanda")]


def test_post_training_pruning_of_a_loaded_network_gives_every_row_an_equal_share(tmp_path):
    from raysparse.zoo import build_model

    torch.manual_seed(3)
    cfg = small_config("wanda", prune_end=0)
    cfg["epochs"] = 1
    torch.save(build_model(cfg["model"], (1, 8, 8), 10).state_dict(), tmp_path / "trained.pt")
    cfg["init_from"] = str(tmp_path / "trained.pt")
    seen = {}

    def report(metrics, ctx):
        seen.update(metrics=metrics, events=list(ctx.mask_events), masks=ctx.masks.snapshot())

    fit(cfg, report)
    assert [(e.step, e.reason) for e in seen["events"]] == [(0, "wanda")]  # before the first step
    assert seen["metrics"]["density"] == pytest.approx(0.2, abs=0.002)
    for name, mask in seen["masks"].items():  # compared per output row: shares differ by at most one
        kept = mask.flatten(1).sum(1)
        assert int(kept.max() - kept.min()) <= 1, name


def test_under_n_m_rows_still_keep_equal_counts_among_each_groups_best():
    scores = torch.tensor([[9.0, 8, 7, 1, 2, 3, 0, 0],
                           [1.0, 2, 3, 4, 8, 7, 6, 5]])
    # per row 3, from each group's best 2: row 0 gives up its 7 (a third in group 0) for the 3
    assert keep_per_row_under(NM(2, 4), scores, 6).int().tolist() == [[1, 1, 0, 0, 0, 1, 0, 0],
                                                                      [0, 0, 0, 1, 1, 1, 0, 0]]
    # blocks span rows, so whole blocks are ranked across the layer by their sums (25, 5 | 10, 26)
    assert keep_per_row_under(Block(1, 4), scores, 8).int().tolist() == [[1, 1, 1, 1, 0, 0, 0, 0],
                                                                        [0, 0, 0, 0, 1, 1, 1, 1]]
