import math

import pytest

from raysparse.sparsity.schedules import constant, cosine_decay, gmp_sparsity, is_gmp_update_step, linear_decay


def test_gmp_matches_zhu_gupta_at_chosen_points():
    kw = dict(initial=0.0, final=0.5, start=0, end=100)
    assert gmp_sparsity(50, **kw) == pytest.approx(0.4375)  # 0.5 - 0.5 * (1 - 0.5)^3
    assert gmp_sparsity(0, **kw) == 0.0
    assert gmp_sparsity(100, **kw) == 0.5


def test_gmp_holds_between_updates_and_outside_window():
    kw = dict(initial=0.2, final=0.9, start=10, end=110, frequency=20, exponent=3)
    assert gmp_sparsity(5, **kw) == 0.2
    # step 45 is held at t = 30: progress 0.2 -> 0.9 + (0.2 - 0.9) * 0.8^3
    assert gmp_sparsity(45, **kw) == pytest.approx(0.9 - 0.7 * 0.512)
    assert gmp_sparsity(45, **kw) == gmp_sparsity(30, **kw)
    assert gmp_sparsity(500, **kw) == 0.9


def test_gmp_exponent_one_is_linear():
    assert gmp_sparsity(25, initial=0.0, final=0.8, start=0, end=100, exponent=1) == pytest.approx(0.2)


def test_gmp_rejects_bad_arguments():
    with pytest.raises(ValueError, match="frequency"):
        gmp_sparsity(1, initial=0, final=0.5, start=0, end=10, frequency=0)
    with pytest.raises(ValueError, match="end"):
        gmp_sparsity(1, initial=0, final=0.5, start=10, end=5)


def test_update_steps_include_start_multiples_and_end():
    steps = [s for s in range(0, 40) if is_gmp_update_step(s, start=5, end=27, frequency=10)]
    assert steps == [5, 15, 25, 27]


def test_cosine_decay_formula():
    kw = dict(total=100, initial=0.5, floor=0.005)
    assert cosine_decay(0, **kw) == pytest.approx(0.5)
    assert cosine_decay(50, **kw) == pytest.approx(0.005 + 0.495 * 0.5)
    assert cosine_decay(25, **kw) == pytest.approx(0.005 + 0.495 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_decay(100, **kw) == pytest.approx(0.005)
    assert cosine_decay(1000, **kw) == pytest.approx(0.005)


def test_linear_and_constant_decay():
    assert linear_decay(25, total=100, initial=0.4, floor=0.0) == pytest.approx(0.3)
    assert constant(99, total=100, initial=0.4, floor=0.0) == 0.4
