"""Options live with their method: checked by it, one flat sparsity block for all, and a user's
method (by import path or register_method) checked the same way."""

import textwrap
from dataclasses import dataclass

import pytest

import raysparse
from raysparse.config import load_config, load_sparsity
from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs
from raysparse.methods import METHODS, MethodOptions, SparseMethod, get_method
from raysparse.methods.registry import _USER
from tests.conftest import small_config


@pytest.mark.parametrize(
    "method, key, value, expected",
    [
        ("granet", "regrowth_ratio", 1.5, r"^sparsity\.regrowth_ratio: got 1\.5; allowed: \[0, 1\]$"),
        ("rigl", "growth", "gradiant", r"^sparsity\.growth: unknown growth criterion 'gradiant'; .*did you mean"),
        ("gmp", "exponent", 0, r"^sparsity\.exponent: got 0\.0; allowed: a number > 0$"),
        ("dst", "density_control", "fixed", r"^sparsity\.density_control: unknown density control 'fixed'"),
        ("hap", "layer_cap", 1.0, r"^sparsity\.layer_cap: got 1\.0; allowed: \(0, 1\)$"),
        ("hap", "hessian_batches", "many", r"^sparsity\.hessian_batches: expected an integer, got 'many'$"),
        ("wanda", "calibration_batches", 0, r"^sparsity\.calibration_batches: got 0; allowed: an integer >= 1$"),
        ("granet", "regrowth_end", 9, r"^sparsity\.regrowth_end: got 9\.0; allowed: an epoch in \[0, 4\]$"),
    ],
)
def test_a_bad_option_is_one_line_naming_its_key(method, key, value, expected):
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(small_config(method, **{key: value}))
    assert "\n" not in str(err.value)


def test_each_method_reads_its_own_options_and_keeps_the_shared_block():
    config = load_config(small_config("dst", alpha=1e-3, regrowth_ratio=0.3))
    method = get_method("dst")(config.sparsity)
    assert method.options.alpha == 1e-3 and method.config.final_sparsity == 0.8
    assert not hasattr(method.options, "regrowth_ratio")  # granet's key: accepted, not dst's
    assert not hasattr(config.sparsity, "alpha")  # the shared block holds what every method shares


@pytest.mark.parametrize("method", sorted(METHODS))
def test_the_flat_block_round_trips_for_every_method(method):
    config = load_config(small_config(method))
    assert load_config(config.to_dict()) == config
    assert set(config.to_dict()["sparsity"]) >= {"method", "final_sparsity", "prune_end"}


def test_a_sweep_base_may_hold_another_methods_key_but_its_value_is_still_checked():
    assert load_config(small_config("gmp", regrowth_ratio=0.3, alpha=1e-4)).sparsity.method == "gmp"
    with pytest.raises(ConfigError, match=r"^sparsity\.regrowth_ratio: got 2\.0; allowed: \[0, 1\]$"):
        load_config(small_config("gmp", regrowth_ratio=2.0))
    # valid for one method that takes it (rigl's regrowth_floor rule), so accepted
    assert load_config(small_config("snip", regrowth_ratio=0.001, regrowth_floor=0.0))


def test_a_key_no_method_knows_lists_the_allowed_keys_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(small_config("wanda", calibration_batch=4))
    message = str(err.value)
    assert message.startswith("sparsity.calibration_batch: unknown key 'calibration_batch'; allowed: method, ")
    assert "calibration_batches (wanda's own)" in message and "regrowth_ratio" in message
    assert message.endswith("(did you mean 'calibration_batches'?)")


def test_options_is_not_a_yaml_key():
    with pytest.raises(ConfigError, match=r"^sparsity\.options: unknown key"):
        load_config(small_config("gmp", options={"exponent": 2}))


@dataclass(frozen=True)
class BandOptions(MethodOptions):
    band: float = 0.1

    def check(self, *, epochs):
        super().check(epochs=epochs)
        if not 0 < self.band < 1:
            raise ConfigError("sparsity.band", f"got {self.band!r}; allowed: (0, 1)")


class Band(SparseMethod):
    name = "band_test"
    Options = BandOptions


def test_register_method_makes_a_user_method_and_its_options_known():
    raysparse.register_method(Band)
    try:
        config = load_config(small_config("band_test", band=0.3))
        assert get_method("band_test") is Band and config.sparsity.options == BandOptions(band=0.3)
        with pytest.raises(ConfigError, match=r"^sparsity\.band: got 1\.5; allowed: \(0, 1\)$"):
            load_config(small_config("band_test", band=1.5))
        assert load_config(small_config("gmp", band=0.3))  # a registered method's key, unused by gmp
        raysparse.register_method(type("Band", (Band,), {}))  # defined again (a notebook cell): replaced
    finally:
        METHODS._entries.pop("band_test")
        _USER.pop("band_test")


def test_register_method_refuses_what_is_not_a_method_of_its_own():
    with pytest.raises(ConfigError, match=r"^sparsity\.method: register_method got class builtins\.dict, not a sub"):
        raysparse.register_method(dict)
    with pytest.raises(ConfigError, match=r"^sparsity\.method: .*'gmp' is taken by a built-in method$"):
        raysparse.register_method(type("MyGMP", (get_method("gmp"),), {}))
    with pytest.raises(ConfigError, match=r"^sparsity\.method: Nameless\.name is 'base'"):
        raysparse.register_method(type("Nameless", (SparseMethod,), {}))
    for bad in ("élagage", "x" * 101):  # it names runs and files: ASCII, bounded
        with pytest.raises(ConfigError, match=r"a method needs a name of its own \(1 to 100 ASCII letters"):
            raysparse.register_method(type("Odd", (SparseMethod,), {"name": bad}))

    @dataclass(frozen=True)
    class Clashing(MethodOptions):
        final_sparsity: float = 0.5  # a shared key: the method would never see its own value

    with pytest.raises(ConfigError, match=r"Options redefine shared sparsity keys: final_sparsity$"):
        raysparse.register_method(type("Clash", (SparseMethod,), {"name": "clash", "Options": Clashing}))


def test_an_import_path_to_something_else_is_one_error_naming_sparsity_method(tmp_path):
    (tmp_path / "notmethods.py").write_text(textwrap.dedent('''
        class Pruner:  # looks like a method, is not a SparseMethod
            name = "pruner"
        def factory():
            pass
    '''))
    add_import_dirs([tmp_path])
    for target in ("Pruner", "factory"):
        not_a_method = r"^sparsity\.method: 'notmethods:\w+' names .*, not a subclass of raysparse\.SparseMethod$"
        with pytest.raises(ConfigError, match=not_a_method):
            load_sparsity({"method": f"notmethods:{target}"}, epochs=4)
    with pytest.raises(ConfigError, match=r"^sparsity\.method: module 'notmethods' has no 'Missing'$"):
        load_sparsity({"method": "notmethods:Missing"}, epochs=4)
