"""A sweep's dense stage (``pretrain:``) as config: the block checked, and what it gives the trials.

The value ``pretrain`` in ``init_from`` or ``robustness.reference`` (in base or as a space
choice) names the stage's trained network. With a ``pretrain:`` block declared, a trial whose
method prunes a trained network (``prunes_trained_network``: oneshot, wanda, hap) starts from
it, and a trial with a robustness block compares with it, unless its config sets the key (a
``null`` too: ``init_from: null`` trains from scratch). Everything here is plain dicts: the
driver trains the stage (search/pretrain.py) and names its file.
"""

from __future__ import annotations

import copy
from typing import Any

from raysparse.config import get_dotted, load_config, set_dotted, with_absolute_paths
from raysparse.errors import ConfigError
from raysparse.methods.registry import get_method

STAGE = "pretrain"  # the value that names the stage's network
STAGE_KEYS = ("init_from", "robustness.reference")  # the config keys that take it
# what the stage may not change: the trials load its weights into base.model, and it is dense
FIXED = {"model": "the trials load its weights, so it trains base.model",
         "sparsity": "the dense stage is dense (sparsity.method: dense)",
         "loop": "the dense stage trains in raysparse's loop"}


def stage_keys_of(config: dict) -> list[str]:
    """The keys of ``config`` whose value is the stage."""
    return [key for key in STAGE_KEYS if get_dotted(config, key) == STAGE]


def without_stage(config: dict) -> dict:
    """A copy for validation, the stage's keys set to None: its file exists only once it is trained."""
    keys = stage_keys_of(config)
    if not keys:
        return config
    config = copy.deepcopy(config)
    for key in keys:
        set_dotted(config, key, None)
    return config


def absolute_paths(config: dict) -> dict:
    """``with_absolute_paths`` that leaves the stage's value as it is (it is a name, not a path)."""
    keys = stage_keys_of(config)
    resolved = with_absolute_paths(without_stage(config))
    for key in keys:
        set_dotted(resolved, key, STAGE)
    return resolved


def parse_pretrain(raw: Any, base: dict, *, has_loop: bool) -> dict | None:
    """The stage's full config: ``raw`` (core config keys) merged over ``base``, dense; a bad key
    is one ConfigError naming ``pretrain.<key>``."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("pretrain", f"expected a mapping of core config keys, e.g. {{epochs: 20}}; got {raw!r}")
    if has_loop:
        raise ConfigError("pretrain", "a loop of yours trains the trials; the dense stage trains in raysparse's "
                          "loop, so a sweep with loop= has none (train it in your loop and name the file)")
    for key, why in FIXED.items():
        if key in raw:
            raise ConfigError(f"pretrain.{key}", f"cannot be set: {why}")
    for key in stage_keys_of(raw):
        raise ConfigError(f"pretrain.{key}", f"got {STAGE!r}, the dense stage itself; allowed: a state_dict file")
    config = _merged(base, with_absolute_paths(raw))
    config["sparsity"] = {"method": "dense"}
    for key in stage_keys_of(config):  # base's trials start from the stage; the stage itself cannot
        set_dotted(config, key, None)
    try:
        load_config(config)
    except ConfigError as err:
        raise ConfigError(f"pretrain.{err.field}", err.message) from None
    if config.get("epochs", 30) < 1:  # a core config may evaluate without training (epochs 0); a stage trains
        raise ConfigError("pretrain.epochs", f"got {config['epochs']}; allowed: an integer >= 1 (the dense stage "
                          "trains the network its trials start from)")
    return config


def check_stage_named(base: dict, space_choices: dict[str, tuple], pretrain: dict | None) -> None:
    """``pretrain`` as a value needs a stage to name."""
    if pretrain is not None:
        return
    named = [f"base.{key}" for key in stage_keys_of(base)]
    named += [f"space.{key}" for key, values in space_choices.items() if key in STAGE_KEYS and STAGE in values]
    if named:
        raise ConfigError(named[0], f"got {STAGE!r}, the sweep's dense stage, but the sweep declares none: add a "
                          "pretrain: block (e.g. pretrain: {epochs: 20})")


def uses_stage_reference(base: dict, pretrain: dict | None) -> bool:
    """True when base's trials compare with the stage (robustness.reference)."""
    robustness = base.get("robustness")
    if not isinstance(robustness, dict):
        return False
    return robustness.get("reference") == STAGE or (pretrain is not None and "reference" not in robustness)


def with_stage(config: dict, stage_file: str | None) -> dict:
    """A trial's config with the stage's defaults, and ``pretrain`` replaced by ``stage_file``
    (kept as the name while the driver has not named the file)."""
    if "init_from" not in config and _prunes_trained_network(get_dotted(config, "sparsity.method", "dense")):
        config["init_from"] = STAGE
    robustness = config.get("robustness")
    if isinstance(robustness, dict) and "reference" not in robustness:
        robustness["reference"] = STAGE
    if stage_file is not None:
        for key in stage_keys_of(config):
            set_dotted(config, key, stage_file)
    return config


def _prunes_trained_network(method: Any) -> bool:
    try:
        return get_method(method).prunes_trained_network
    except ConfigError:  # a bad combination of sampled values: the trial fails on it, with its run
        return False


def _merged(base: dict, over: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
