"""Typed run configuration, validated completely before anything starts.

A config is a dict (or YAML file) of the shape in the README. ``load_config`` turns it into a
frozen ``Config`` or raises one ``ConfigError`` naming the field, the bad value and what is
allowed. Model and data blocks stay dicts: their options belong to the zoo's factories, which
validate them by name.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysparse.errors import ConfigError, did_you_mean, shown, unknown_choice
from raysparse.errors import require as _require
from raysparse.errors import require_choice as _choice
from raysparse.methods import SparsityConfig, get_method, known_methods
from raysparse.robustness.evaluate import RobustnessConfig
from raysparse.sparsity.distributions import DISTRIBUTIONS, configured_distribution
from raysparse.sparsity.patterns import NM, UNSTRUCTURED, parse_pattern

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "step", "multistep")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    betas: tuple[float, ...] = (0.9, 0.999)


@dataclass(frozen=True)
class LRScheduleConfig:
    name: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the epochs
    step_size: int = 30  # step: epochs between decays
    gamma: float = 0.1


@dataclass(frozen=True)
class Config:
    seed: int = 0
    epochs: int = 30
    device: str = "auto"
    # what is learned: classification (the default), causal_lm, "pkg.module:MyTask", or a mapping
    # {name: ..., <option>: ...} with the task's own options (raysparse.tasks)
    task: str | dict = "classification"
    label_smoothing: float = 0.0
    init_from: str | None = None  # a state_dict file (torch.save) to start from, e.g. a trained network
    measure_latency: bool = True  # batch 1 and 64: dense at start / after a restructure, deployed at the end
    model: dict = field(default_factory=lambda: {"name": "mlp", "hidden": [256, 128]})
    data: dict = field(default_factory=lambda: {"name": "digits", "batch_size": 64, "val_fraction": 0.1})
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_schedule: LRScheduleConfig = field(default_factory=LRScheduleConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    robustness: RobustnessConfig | None = None  # evaluated at the final epoch when set
    # other texts (or images) to evaluate on, each a data block like ``data``: its test split gives
    # <name>_<metric> (code_perplexity) at every evaluation; never used for selection unless an objective
    evaluate_on: dict = field(default_factory=dict)
    # a training loop of the user's (raysparse.sweep(loop=fn), its module:qualname): it builds the
    # model and data itself, so their blocks hold its options, unchecked
    loop: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data that ``load_config`` takes back (the sparsity block flat, as in YAML)."""
        return {**dataclasses.asdict(self), "sparsity": self.sparsity.to_dict()}


RESERVED_SPLITS = ("train", "val", "test", "best_val")  # metric prefixes the loop uses


def set_dotted(tree: dict, key: str, value: Any) -> None:
    """``set_dotted(cfg, "optimizer.lr", 0.05)``: the dotted keys of --set and sweep spaces."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(key, f"{part!r} is not a mapping")
    node[leaf] = value


def check_dotted_key(field_name: str, key: Any) -> str:
    """A key for ``set_dotted``: names between the dots (``...`` or ``a..b`` names no field)."""
    if not isinstance(key, str) or not all(key.split(".")):
        raise ConfigError(field_name, f"got key {shown(key)}; allowed: a dotted config key such as optimizer.lr")
    return key


def get_dotted(tree: dict, key: str, default: Any = None) -> Any:
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# the config keys that name files or directories
PATH_KEYS = ("init_from", "data.root", "data.path", "robustness.reference")


def absolute_path(value: Any) -> Any:
    return str(Path(value).expanduser().resolve()) if isinstance(value, str) else value


def with_absolute_paths(raw: dict) -> dict:
    """A copy of a raw config whose paths are absolute, against this process's working directory
    (where validation found them): a Tune trial runs in a trial directory of its own, where
    ``data/cifar10`` would name nothing."""
    resolved = copy.deepcopy(raw)
    keys = list(PATH_KEYS)
    datasets = get_dotted(resolved, "robustness.datasets")
    if isinstance(datasets, dict):  # other evaluation sets read their files in the trial too
        keys += [f"robustness.datasets.{name}.{key}" for name in datasets for key in ("path", "root")]
    tokenizer = get_dotted(resolved, "data.tokenizer")
    if isinstance(tokenizer, str) and tokenizer != "bytes":  # a tokenizer directory, not the built-in name
        keys.append("data.tokenizer")
    for key in keys:
        if get_dotted(resolved, key) is not None:
            set_dotted(resolved, key, absolute_path(get_dotted(resolved, key)))
    return resolved


def read_yaml(path: str | Path, field_name: str = "config") -> dict:
    """A YAML mapping from a file, with clear errors for a missing, non-UTF-8 or bad file, or one
    whose aliases would expand it without bound (raysparse.yaml_input)."""
    return read_yaml_with_text(path, field_name)[0]


def read_yaml_with_text(path: str | Path, field_name: str = "config") -> tuple[dict, str]:
    """``read_yaml``, and the file's text as written (a sweep logs it to its parent run)."""
    from raysparse.yaml_input import read_yaml_file

    path = Path(path)
    raw, text = read_yaml_file(path, field_name)
    if not isinstance(raw, dict):
        raise ConfigError(field_name, f"{str(path)!r} must hold a mapping, got {type(raw).__name__}")
    return raw, text


def load_config(source: Config | dict | str | Path) -> Config:
    """Validate a dict / YAML path into a Config (a Config passes through)."""
    if isinstance(source, Config):
        return source
    raw = read_yaml(source) if isinstance(source, (str, Path)) else source
    if not isinstance(raw, dict):
        raise ConfigError("config", f"expected a mapping, got {type(raw).__name__}")
    config = _from_dict(Config, raw, "")
    _check_values(config)
    _check_other_methods_options(raw.get("sparsity", {}), config.sparsity, config.epochs)
    if config.robustness is not None and _is_classifier(config.task):
        # an image classifier records the image suite's defaults, as every default is recorded: a later
        # change of a default cannot silently change a reproduction (other tasks leave them None)
        config = dataclasses.replace(config, robustness=config.robustness.with_image_defaults())
    return config


def load_sparsity(raw: dict, *, epochs: int) -> SparsityConfig:
    """A flat ``sparsity:`` block checked as ``load_config`` checks it, for a run of ``epochs``."""
    sparsity = _sparsity_from_dict(raw, "sparsity")
    _check_sparsity(sparsity, epochs)
    _check_other_methods_options(raw, sparsity, epochs)
    return sparsity


# ---- generic dict -> dataclass with type checks -----------------------------------------------
def _from_dict(cls, raw: Any, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                path, f"unknown key {key!r}; allowed: {', '.join(names)}{did_you_mean(key, names)}"
            )
        values[key] = _coerce(hints[key], value, path)
    return cls(**values)


def _coerce(hint, value, path):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) > 1:  # e.g. str | dict: a name or a block of options
            if not isinstance(value, tuple(typing.get_origin(a) or a for a in inner)):
                kinds = " or ".join("a mapping" if a is dict else f"a {a.__name__}" for a in inner)
                raise ConfigError(path, f"expected {kinds}, got {value!r}")
            return copy.deepcopy(value)
        return _coerce(inner[0], value, path)
    if hint is SparsityConfig:
        return _sparsity_from_dict(value, path)
    if dataclasses.is_dataclass(hint):
        return _from_dict(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        if args:
            return {k: _coerce(args[1], v, f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    raise TypeError(f"config type {hint!r} at {path} is not supported")  # a bug of ours, not input


# ---- value checks -------------------------------------------------------------------------------
def _check_values(c: Config) -> None:
    for name, block in c.evaluate_on.items():
        if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name)) or name in RESERVED_SPLITS:
            reserved = ", ".join(RESERVED_SPLITS)
            raise ConfigError(f"evaluate_on.{name}", f"got the name {shown(name)}; allowed: 1 to 40 lowercase "
                              f"letters, digits and '_', starting with a letter, other than {reserved}")
        if not isinstance(block, dict):
            raise ConfigError(f"evaluate_on.{name}", f"got {shown(block)}; allowed: a data block like data's "
                              "({factory: 'module:function', ...} or {name: text, path: ...})")
    _require(c.epochs >= 0, "epochs", c.epochs, "an integer >= 0 (0: prune a trained network and evaluate it, "
             "no training)")
    _require(c.seed >= 0, "seed", c.seed, "an integer >= 0")
    _choice("device", "device", c.device, DEVICES)
    if c.init_from is not None and not Path(c.init_from).expanduser().is_file():
        raise ConfigError("init_from", f"got {c.init_from!r}; allowed: an existing state_dict file")
    _require(0.0 <= c.label_smoothing < 1.0, "label_smoothing", c.label_smoothing, "[0, 1)")

    o = c.optimizer
    _choice("optimizer.name", "optimizer", o.name, OPTIMIZERS)
    _require(o.lr > 0, "optimizer.lr", o.lr, "a number > 0")
    _require(0.0 <= o.momentum < 1.0, "optimizer.momentum", o.momentum, "[0, 1)")
    _require(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "a number >= 0")
    _require(not o.nesterov or (o.name == "sgd" and o.momentum > 0), "optimizer.nesterov", o.nesterov,
             "true only with optimizer 'sgd' and momentum > 0")
    _require(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optimizer.betas", list(o.betas),
             "two numbers in [0, 1)")

    s = c.lr_schedule
    _choice("lr_schedule.name", "lr schedule", s.name, LR_SCHEDULES)
    _require(all(0 < m <= 1 for m in s.milestones), "lr_schedule.milestones", list(s.milestones),
             "fractions of the epochs in (0, 1]")
    _require(s.step_size >= 1, "lr_schedule.step_size", s.step_size, "an integer >= 1")
    _require(0 < s.gamma <= 1, "lr_schedule.gamma", s.gamma, "(0, 1]")

    _check_sparsity(c.sparsity, c.epochs)
    _check_task(c)
    _check_blocks(c)
    if c.robustness is not None:
        _check_robustness(c.robustness, c.data, c.task)


def _check_task(c: Config) -> None:
    """The task's name and options (a task of yours is imported here, as a method is); the object
    given as task= is checked where it is given."""
    from raysparse.tasks.registry import PYTHON, build_task

    if not (isinstance(c.task, dict) and PYTHON in c.task):
        build_task(c.task, label_smoothing=c.label_smoothing)


def _is_classifier(task: str | dict) -> bool | None:
    """Whether the task is an image classifier's (the robustness block's image suite applies);
    None for a task given as an object (task=) that does not import here: the loop tells."""
    from raysparse.imports import import_object
    from raysparse.tasks.classification import Classification
    from raysparse.tasks.registry import get_task_class
    from raysparse.zoo.user_code import PYTHON

    try:
        cls = import_object(task[PYTHON], "task") if isinstance(task, dict) and PYTHON in task else get_task_class(task)
    except ConfigError:
        return None
    return isinstance(cls, type) and issubclass(cls, Classification)


def _check_robustness(r: RobustnessConfig, data: dict, task: str | dict = "classification") -> None:
    """``datasets`` for every task; the image suite (corruptions, noise ball, calibration) for an
    image classifier only: another task (a language model) that sets one of its options is refused."""
    from raysparse.robustness.corruptions import CORRUPTIONS
    from raysparse.robustness.evaluate import DATASET_NAME, refuse_image_options
    from raysparse.tasks.registry import task_name
    from raysparse.zoo.datasets import check_data_spec
    from raysparse.zoo.user_code import PYTHON, check_user_block, is_user_code

    _choice("robustness.split", "split", r.split, ("test", "val"))
    classifier = _is_classifier(task)
    if classifier is False:
        refuse_image_options(r, str(task_name(task)))
        _require(bool(r.datasets), "robustness.datasets", {}, f"other evaluation sets {{name: <data block>}}: "
                 f"for task {task_name(task)!r} the robustness block evaluates only those")
    for name, spec in r.datasets.items():
        _require(isinstance(name, str) and DATASET_NAME.fullmatch(name), "robustness.datasets", name,
                 "names of letters, digits, _ and - (one part of the metric key shift.<name>.<metric>)")
        field_name = f"robustness.datasets.{name}"
        if isinstance(spec, dict) and PYTHON in spec:
            raise ConfigError(f"{field_name}.{PYTHON}", "a Python object cannot be given here; allowed: a zoo "
                              "dataset (name: ...) or a factory of yours (factory: 'package.module:callable')")
        if is_user_code(spec):
            check_user_block(spec, field_name)
        else:
            check_data_spec(spec, field_name)
            if "path" in spec and not Path(str(spec["path"])).expanduser().exists():  # read only after training
                raise ConfigError(f"{field_name}.path", f"got {spec['path']!r}; allowed: an existing file or directory")
        if r.split == "val":
            fraction = spec.get("val_fraction", 0.1)
            _require(isinstance(fraction, (int, float)) and fraction > 0, f"{field_name}.val_fraction", fraction,
                     "> 0 when robustness.split is val")
    if classifier is False:
        return
    images = r.with_image_defaults()
    for name in images.corruptions:
        _choice("robustness.corruptions", "corruption", name, CORRUPTIONS)
    _require(all(1 <= s <= 5 for s in images.severities) and images.severities, "robustness.severities",
             list(images.severities), "a non-empty list of integers in 1..5")
    _require(all(e > 0 for e in images.noise_eps), "robustness.noise_eps", list(images.noise_eps), "numbers > 0")
    _require(images.max_examples >= 1, "robustness.max_examples", images.max_examples, "an integer >= 1")
    if r.reference is not None and not Path(r.reference).expanduser().is_file():
        raise ConfigError("robustness.reference", f"got {r.reference!r}; allowed: an existing state_dict file")
    _require(data.get("name") not in (None, "imagefolder"), "robustness", data.get("name") or data.get("factory")
             or data.get("python"), "the zoo's in-memory datasets (not imagefolder, not data of your own)")
    if r.split == "val":
        _require(data.get("val_fraction", 0.1) > 0, "data.val_fraction", data.get("val_fraction"),
                 "> 0 when robustness.split is val")


def _check_sparsity(p: SparsityConfig, epochs: int) -> None:
    _choice("sparsity.distribution", "distribution", p.distribution, DISTRIBUTIONS)
    configured_distribution(p.distribution, p.distribution_options)  # checks every option, used or not
    if p.distribution == "owl" and not get_method(p.method).activation_scores:
        takers = ", ".join(sorted(m.name for m in known_methods() if m.activation_scores))
        raise ConfigError("sparsity.distribution", f"got 'owl', but method {p.method!r} gives no activation "
                          f"scores (|W| * ||X||) to count outliers of; allowed: another distribution, or "
                          f"'owl' with a method that calibrates: {takers}")
    for key in ("initial_sparsity", "final_sparsity"):
        _require(0.0 <= getattr(p, key) < 1.0, f"sparsity.{key}", getattr(p, key), "[0, 1)")
    _require(p.initial_sparsity <= p.final_sparsity, "sparsity.initial_sparsity", p.initial_sparsity,
             f"at most final_sparsity ({p.final_sparsity})")
    _require(0 <= p.prune_start <= epochs, "sparsity.prune_start", p.prune_start, f"an epoch in [0, {epochs}]")
    if p.prune_end is not None:
        _require(p.prune_start <= p.prune_end <= epochs, "sparsity.prune_end", p.prune_end,
                 f"an epoch in [prune_start={p.prune_start}, epochs={epochs}]")
    _require(p.update_frequency >= 1, "sparsity.update_frequency", p.update_frequency, "an integer >= 1 (steps)")
    if p.distribution == "explicit" and not p.layer_densities:
        raise ConfigError("sparsity.layer_densities", "distribution 'explicit' needs a mapping layer -> density")
    options = p.options if p.options is not None else get_method(p.method).Options()
    options.check(epochs=epochs)  # each method checks its own options (methods/<name>.py)
    if epochs == 0 and not get_method(p.method).prunes_without_training:
        able = sorted(m.name for m in known_methods() if m.prunes_without_training)
        raise ConfigError("epochs", f"got 0 (post-training pruning) with sparsity.method {p.method!r}, which prunes "
                          f"while training; with epochs 0 use one of: {', '.join(able)}")
    _check_pattern(p)


def _check_pattern(p: SparsityConfig) -> None:
    """A pattern needs a method that picks masks by a score, and densities it can hold: at most
    N/M on an N:M layer, so final_sparsity (and a sparse start) at least 1 - N/M."""
    pattern = parse_pattern(p.pattern)
    if pattern is UNSTRUCTURED:
        return
    if not get_method(p.method).takes_pattern:
        takers = ", ".join(sorted(m.name for m in known_methods() if m.takes_pattern))
        raise ConfigError("sparsity.pattern", f"got {p.pattern!r}, but method {p.method!r} cannot keep a pattern "
                          f"(its masks are not picked by a score); allowed: unstructured, or a method that takes "
                          f"one: {takers}")
    if not isinstance(pattern, NM):
        return  # a block pattern holds any density
    floor = 1.0 - pattern.max_density
    holds = f"with pattern {p.pattern!r} (at most {pattern.n} of every {pattern.m} weights kept)"
    _require(p.final_sparsity >= floor - 1e-9, "sparsity.final_sparsity", p.final_sparsity, f">= {floor:g} {holds}")
    _require(p.initial_sparsity == 0 or p.initial_sparsity >= floor - 1e-9, "sparsity.initial_sparsity",
             p.initial_sparsity, f"0 or >= {floor:g} {holds}")
    for name, density in (p.layer_densities or {}).items():
        _require(density <= pattern.max_density + 1e-9, f"sparsity.layer_densities.{name}", density,
                 f"<= {pattern.max_density:g} {holds}")


# ---- the sparsity block: one flat mapping of the shared keys and the method's own options ---------
SHARED_SPARSITY_KEYS = tuple(f.name for f in dataclasses.fields(SparsityConfig) if f.name != "options")


def _option_names(options_type: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(options_type))


def _sparsity_from_dict(raw: Any, path: str) -> SparsityConfig:
    """Shared keys into a SparsityConfig, the method's own into its ``Options``. A key of another
    method is accepted and unused: a sweep that samples ``sparsity.method`` has one base block for
    all of them (``_check_other_methods_options`` still checks its value)."""
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a mapping, got {raw!r}")
    method = get_method(raw.get("method", SparsityConfig.method), f"{path}.method")
    own = [k for k in _option_names(method.Options) if k not in SHARED_SPARSITY_KEYS]
    others = sorted({k for m in known_methods() for k in _option_names(m.Options)} - set(own))
    for key in raw:
        if key not in SHARED_SPARSITY_KEYS and key not in own and key not in others:
            known = [*SHARED_SPARSITY_KEYS, *own, *others]
            raise ConfigError(
                f"{path}.{key}",
                f"unknown key {key!r}; allowed: {', '.join(SHARED_SPARSITY_KEYS)} (every method), "
                f"{', '.join(own) or 'none'} ({method.name}'s own), {', '.join(others)} (other methods', "
                f"unused by {method.name}){did_you_mean(key, known)}",
            )
    if not isinstance(raw.get("pattern", ""), str):  # YAML reads an unquoted 2:4 as 124: say so
        parse_pattern(raw["pattern"], f"{path}.pattern")
    shared = _from_dict(SparsityConfig, {k: v for k, v in raw.items() if k in SHARED_SPARSITY_KEYS}, path)
    options = _from_dict(method.Options, {k: v for k, v in raw.items() if k in own}, path)
    return dataclasses.replace(shared, options=options)


def _check_other_methods_options(raw: Any, sparsity: SparsityConfig, epochs: int) -> None:
    """Every key is checked before anything starts, even one this method does not use: it must be
    valid for at least one method that takes it (the one a sweep will sample it with)."""
    options_type = type(sparsity.options) if sparsity.options is not None else get_method(sparsity.method).Options
    own = {*SHARED_SPARSITY_KEYS, *_option_names(options_type)}
    foreign = {k: v for k, v in raw.items() if k not in own} if isinstance(raw, dict) else {}
    unproven, failures = set(foreign), []
    for options_type in dict.fromkeys(m.Options for m in known_methods()):
        taken = {k: v for k, v in foreign.items() if k in _option_names(options_type)}
        if not taken:
            continue
        try:
            _from_dict(options_type, taken, "sparsity").check(epochs=epochs)
        except ConfigError as err:
            failures.append((set(taken), err))
            continue
        unproven -= set(taken)
    for taken, err in failures:
        if taken & unproven:
            raise err


# data of some shape, for checking a zoo model's options before any data is read
PLACEHOLDER_INFO = {"input_shape": (3, 32, 32), "num_classes": 10, "vocab_size": 256, "block_size": 32}


def _check_blocks(c: Config) -> None:
    import torch

    from raysparse.zoo import DATASETS, MODELS, build_model
    from raysparse.zoo.datasets import check_data_spec
    from raysparse.zoo.user_code import check_user_block, is_user_code

    if c.loop is not None:  # the user's loop builds both; their blocks are its options
        return
    for block, registry, kind in (("model", MODELS, "model"), ("data", DATASETS, "dataset")):
        spec = getattr(c, block)
        if is_user_code(spec):  # imported and called before a sweep starts, not here (check_user_code)
            check_user_block(spec, block)
            continue
        if "name" not in spec:
            raise ConfigError(f"{block}.name", f"missing; available: {', '.join(registry.names())} "
                              f"(or {block}.factory: 'package.module:callable' for one of your own)")
        name = spec["name"]
        if not (isinstance(name, str) and (name in registry or (kind == "model" and name.startswith("torchvision:")))):
            raise unknown_choice(f"{block}.name", kind, name, registry.names())
    if not is_user_code(c.data):
        check_data_spec(c.data)
    if not is_user_code(c.model):
        with torch.device("meta"):  # every option of the model, checked without allocating it
            build_model(c.model, PLACEHOLDER_INFO)
    from raysparse.zoo.formats import FILE_DATASETS

    if c.data.get("name") in FILE_DATASETS:  # caught here, before a sweep starts, not in a trial
        root = c.data.get("root")
        if not isinstance(root, str) or not Path(root).expanduser().is_dir():
            raise ConfigError(
                "data.root", f"got {root!r}; dataset {c.data['name']!r} reads its files from an existing directory"
            )
    batch_size = c.data.get("batch_size", 64)
    _require(isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1,
             "data.batch_size", batch_size, "an integer >= 1")
