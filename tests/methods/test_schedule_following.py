"""Methods follow their schedules: GMP density tracks the polynomial, GraNet regrows after each
pruning step and keeps regrowing after pruning ends, GraNet-ST starts sparse."""

import pytest

from raysparse.sparsity.schedules import gmp_sparsity
from raysparse.train import fit
from tests.conftest import small_config


def run(method, **sparsity):
    reports, events = [], []

    def report(metrics, ctx):
        reports.append(metrics)
        events.extend(ctx.mask_events)

    fit(small_config(method, **sparsity), report)
    return reports, events


def test_gmp_density_follows_the_polynomial_schedule():
    reports, events = run("gmp", distribution="uniform", prune_end=3)
    steps_per_epoch = reports[0]["step"]
    for r in reports:
        last_update = max(e.step for e in events if e.step < r["step"])
        expected = 1 - gmp_sparsity(last_update, initial=0.0, final=0.8, start=0, end=3 * steps_per_epoch, frequency=5)
        assert r["density"] == pytest.approx(expected, abs=0.002)
    assert all(e.reason == "prune" for e in events)


def test_granet_regrows_after_each_prune_and_after_pruning_ends():
    reports, events = run("granet", prune_end=2)
    end_step = 2 * reports[0]["step"]
    prune_steps = [e.step for e in events if e.reason == "prune"]
    regrow_steps = [e.step for e in events if e.reason == "regrow"]
    assert prune_steps and all(s in regrow_steps for s in prune_steps if s > 0)
    assert any(s > end_step for s in regrow_steps)
    assert not any(s > end_step for s in prune_steps)
    late = [r for r in reports if r["step"] > end_step + 10]
    assert all(r["density"] == pytest.approx(0.2, abs=0.002) for r in late)  # regrowth keeps density


def test_granet_st_starts_from_sparse_erk_masks():
    reports, events = run("granet", initial_sparsity=0.5)
    assert events[0].reason == "init" and events[0].density == pytest.approx(0.5, abs=0.002)
    assert reports[-1]["density"] == pytest.approx(0.2, abs=0.002)


def test_regrowth_ratio_decays():
    _, events = run("rigl", regrowth_ratio=0.5)
    churn = [e.churn for e in events if e.reason == "regrow"]
    assert len(churn) > 5 and churn[-1] < churn[0]


def test_set_and_rigl_grow_different_weights():
    _, rigl = run("rigl")
    _, set_ = run("set")
    assert rigl[0].hash == set_[0].hash  # same seed, same initial masks
    assert rigl[-1].hash != set_[-1].hash


def test_oneshot_is_dense_until_prune_end_then_prunes_once():
    reports, events = run("oneshot", prune_end=2)
    assert [r["density"] for r in reports[:2]] == [1.0, 1.0]
    assert [e.reason for e in events] == ["oneshot"]
    assert reports[2]["density"] == pytest.approx(0.2, abs=0.002)


def test_snip_prunes_on_the_first_step():
    reports, events = run("snip")
    assert [(e.step, e.reason) for e in events] == [(0, "snip")]
    assert reports[0]["density"] == pytest.approx(0.2, abs=0.002)
