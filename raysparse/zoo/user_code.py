"""Models and data of the user's own: a factory named by import path (``model.factory:
"pkg.module:make_net"``) or a Python object given to ``raysparse.train`` / ``raysparse.sweep``
(``model=Net``), recorded in the config as ``model.python`` (its ``module:qualname``).

A model factory gets its block's options, plus what describes the data (``input_shape`` /
``num_classes`` for a classifier, ``vocab_size`` / ``block_size`` for a language model: the
data's ``info``) when its signature names them, and returns an ``nn.Module``. A data factory
gets its block's options (never the loader's: batch_size, val_fraction, num_workers, augment)
and returns ``{"train": Dataset, "test": Dataset, "val": Dataset (optional), ...}`` plus the
keys its task describes data by (``num_classes``; ``vocab_size``), with examples of the task's
form (see ``raysparse.tasks``). Every way in fails with one ConfigError on ``<block>.factory``
(or ``<block>`` for a Python object) saying what went wrong.
"""

from __future__ import annotations

import copy
import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from raysparse.errors import ConfigError, did_you_mean
from raysparse.imports import import_object, is_import_path
from raysparse.sparsity.masks import prunable_weights
from raysparse.tasks import DEFAULT_TASK, Task, build_task, call
from raysparse.tasks.base import describe_input
from raysparse.zoo.datasets import DataSplits, SplitOptions, build_data, train_val_indices
from raysparse.zoo.models import build_model
from raysparse.zoo.registry import check_options, keyword_options

FACTORY, PYTHON = "factory", "python"
LOADER_KEYS = ("batch_size", "val_fraction", "num_workers", "augment")  # the loop's, not the factory's
SPLIT_KEYS = ("train", "val", "test")
MODEL_EXTRAS = ("input_shape", "num_classes", "vocab_size", "block_size")  # the data's info, by name
CALLS_CODE = "raysparse: this config calls code by import path: "


def is_user_code(spec: object) -> bool:
    return isinstance(spec, Mapping) and (FACTORY in spec or PYTHON in spec)


def describe(obj: object) -> str:
    """``module:qualname`` of a class or function (of an instance: of its class)."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', type(target).__name__)}"


def check_user_block(spec: Mapping, block: str) -> None:
    """What ``load_config`` checks of a user block without importing anything."""
    if FACTORY in spec and PYTHON in spec:
        raise ConfigError(f"{block}.{PYTHON}", f"a {block} is given either as a Python object or by "
                          f"{block}.factory, not both")
    if "name" in spec:
        raise ConfigError(f"{block}.name", f"got {spec['name']!r} next to a {block} of your own; the zoo's "
                          f"{block}.name and your {block} exclude each other")
    if FACTORY in spec and not is_import_path(spec[FACTORY]):
        raise ConfigError(f"{block}.factory", f"got {spec[FACTORY]!r}; allowed: an import path "
                          "'package.module:callable'")
    if PYTHON in spec and not isinstance(spec[PYTHON], str):
        raise ConfigError(f"{block}.python", f"got {spec[PYTHON]!r}; allowed: the module:qualname text "
                          f"raysparse records for a {block}= object")
    fraction = spec.get("val_fraction", 0.1)
    if block == "data" and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                            or not 0 <= fraction <= 0.5):
        raise ConfigError("data.val_fraction", f"got {fraction!r}; allowed: a number in [0, 0.5]")


def with_python_objects(raw: dict, model: object = None, data: object = None, task: object = None) -> dict:
    """A copy of a raw config whose model / data blocks say that Python objects build them (and
    whose ``task`` names the task object given).

    A block's other keys are the object's options, so a zoo ``name`` or a ``factory`` next to
    it is an error. An ``nn.Module`` instance (``raysparse.train`` only) is trained as it is
    and leaves the config alone, as it always did.
    """
    raw = copy.deepcopy(raw)
    if task is not None:
        from raysparse.tasks.registry import get_task_class

        spec = raw.get("task") if isinstance(raw.get("task"), dict) else {}
        options = {k: v for k, v in spec.items() if k not in ("name", PYTHON)}
        raw["task"] = {**options, PYTHON: describe(get_task_class(None, "task", given=task))}
    for block, given in (("model", model), ("data", data)):
        if given is None:
            continue
        if not callable(given):
            raise ConfigError(block, f"got {type(given).__name__}; allowed: {_allowed(block)}")
        if isinstance(given, nn.Module):
            continue
        spec = raw.get(block) if isinstance(raw.get(block), dict) else {}
        for key in ("name", FACTORY):
            if key in spec:
                raise ConfigError(f"{block}.{key}", f"is {spec[key]!r}, but {block}= gives one of your own; "
                                  f"drop one (the block's other keys are options of yours)")
        raw[block] = {**spec, PYTHON: describe(given)}
    return raw


def _allowed(block: str) -> str:
    if block == "model":
        return "an nn.Module subclass or a callable returning an nn.Module"
    return "a zero-argument callable returning {'train': Dataset, 'test': Dataset, ...}"


# ---- building ----------------------------------------------------------------------------
def build_network(spec: Mapping, info: Mapping, num_classes: int | None = None, *, given: object = None) -> nn.Module:
    """The model a config block describes: the zoo's, a factory's or a Python object's; each
    gets the entries of the data's ``info`` that its signature names."""
    if isinstance(given, nn.Module):
        return given
    if num_classes is not None:  # a classifier's two facts given directly, as build_model takes them
        info = {"input_shape": tuple(info), "num_classes": num_classes}
    if given is None and not is_user_code(spec):
        return build_model(spec, info)
    builder, field, what = _builder(spec, "model", given)
    model = _call(builder, _options(spec, ()), dict(info), field, what)
    if not isinstance(model, nn.Module):
        raise ConfigError(field, f"{what} returned {type(model).__name__}; expected an nn.Module")
    return model


def build_splits(spec: Mapping, seed: int, task: Task | None = None, *, given: object = None) -> DataSplits:
    """The data a config block describes: the zoo's dataset, or a factory's / Python object's
    Datasets with validation carved from train (``val_fraction``, seeded) unless given, described
    and checked by the task (default: classification)."""
    if given is None and not is_user_code(spec):
        return build_data(spec, seed)
    task = task if task is not None else build_task(DEFAULT_TASK)
    builder, field, what = _builder(spec, "data", given)
    splits = _call(builder, _options(spec, LOADER_KEYS), {}, field, what)
    allowed = (*SPLIT_KEYS, *task.data_keys)
    if not isinstance(splits, Mapping):
        raise ConfigError(field, f"{what} returned {type(splits).__name__}; expected a mapping {{'train': "
                          f"Dataset, 'test': Dataset, 'val': Dataset (optional), {', '.join(task.data_keys)}}}")
    for key in splits:
        if key not in allowed:
            raise ConfigError(field, f"{what} returned key {key!r}; allowed for task {task.name!r}: "
                              f"{', '.join(allowed)}{did_you_mean(key, allowed)}")
    for key in ("train", "test", "val"):
        if key in splits or key != "val":
            _check_dataset(splits.get(key), key, field, what)
    given_info = {k: v for k, v in splits.items() if k not in SPLIT_KEYS}
    info = _describe(task, {k: v for k, v in splits.items() if k in SPLIT_KEYS}, given_info, field, what)
    train, val = splits["train"], splits.get("val")
    if val is None:  # carved from train as the zoo does: a seeded shuffle, never from test
        common = SplitOptions(seed=seed, val_fraction=spec.get("val_fraction", 0.1), limit=None, root=None,
                              field="data")
        train_index, val_index = train_val_indices(len(train), common)
        train, val = Subset(train, train_index.tolist()), Subset(train, val_index.tolist())
    return DataSplits(train=train, val=val, test=splits["test"], info=info)


def _describe(task: Task, splits: dict, given: dict, field: str, what: str) -> dict:
    try:
        return task.describe_data(splits, given, field, what)
    except ConfigError:
        raise
    except Exception as err:  # the user's __getitem__
        raise ConfigError(field, f"reading train[0] of {what} raised {type(err).__name__}: {one_line(err)}") from None


def _builder(spec: Mapping, block: str, given: object) -> tuple[Callable, str, str]:
    """(callable, the field its errors name, how they name it)."""
    if given is not None:
        return given, block, describe(given)
    if FACTORY in spec:
        return import_object(spec[FACTORY], f"{block}.factory"), f"{block}.factory", repr(spec[FACTORY])
    raise ConfigError(f"{block}.python", f"names the Python object {spec[PYTHON]!r}, which is not given here; "
                      f"pass it ({block}=...) or name a factory by import path in {block}.factory")


def _options(spec: Mapping, reserved: tuple[str, ...]) -> dict:
    return {k: v for k, v in spec.items() if k not in (FACTORY, PYTHON, *reserved)}


def accepted_options(builder: Callable) -> list[str] | None:
    """The options a factory takes by keyword (None: it takes ``**kwargs``, so anything)."""
    try:
        names = keyword_options(builder, skip=MODEL_EXTRAS)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return None
    return names


def check_option(builder: Callable, option: str, field: str, what: str) -> None:
    allowed = accepted_options(builder)
    if allowed is not None:
        check_options({option: None}, allowed, field, what)


def _call(builder: Callable, options: dict, extras: dict, field: str, what: str) -> Any:
    allowed = accepted_options(builder)
    if allowed is not None:
        block = field.split(".")[0]
        check_options(options, allowed, block, f"{block} {'factory ' if field.endswith(FACTORY) else ''}{what}")
    try:
        named = set(inspect.signature(builder).parameters)
    except (TypeError, ValueError):
        named = set()
    try:
        return builder(**options, **{k: v for k, v in extras.items() if k in named})
    except ConfigError:
        raise
    except Exception as err:  # the user's code: whatever it raises becomes one line naming the field
        raise ConfigError(field, f"{what} raised {type(err).__name__}: {one_line(err)}") from None


def one_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- checking ----------------------------------------------------------------------------
def _check_dataset(dataset: object, split: str, field: str, what: str) -> None:
    if dataset is None:
        raise ConfigError(field, f"{what} returned no {split!r} split; it needs 'train' and 'test' Datasets")
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise ConfigError(field, f"{what} returned {split!r} as a {type(dataset).__name__}; expected a torch "
                          "Dataset (with __len__ and __getitem__)")
    if len(dataset) == 0:
        raise ConfigError(field, f"{what} returned an empty {split!r} split")


def model_field(spec: Mapping, given: object = None) -> str:
    if given is not None or PYTHON in spec:
        return "model"
    return "model.factory" if FACTORY in spec else "model.name"


@torch.no_grad()
def check_model(model: nn.Module, data: DataSplits, task: Task, field: str) -> None:
    """Two real training examples through the model: its output must have the task's form, and
    it must have at least one prunable weight. The model is left in the mode it was in."""
    batch = task.example_batch(data.train, min(2, len(data.train)))
    device = next(iter(model.parameters()), torch.empty(0)).device
    inputs = task.model_input(task.to_device(batch, device))
    was_training = model.training
    model.eval()  # no BatchNorm statistics move, no dropout draws from the RNG
    try:
        out = call(model, inputs)
    except Exception as err:  # the user's forward
        raise ConfigError(field, f"a batch {describe_input(inputs)} through the model raised "
                          f"{type(err).__name__}: {one_line(err)}") from None
    finally:
        model.train(was_training)
    task.check_output(out, batch, data.info, field)
    if not prunable_weights(model):
        raise ConfigError(field, "the model has no prunable weight (Conv/Linear); nothing to sparsify")


def code_by_import_path(config) -> list[tuple[str, str]]:
    """(field, import path) of everything a config (a Config, or its raw mapping) names by import
    path: raysparse imports each and calls it (a factory; a task's or a method's class)."""
    def get(obj: object, key: str) -> Any:
        return obj.get(key) if isinstance(obj, Mapping) else getattr(obj, key, None)

    task, datasets = get(config, "task"), get(get(config, "robustness"), "datasets")
    named = [(f"{block}.factory", get(get(config, block), FACTORY)) for block in ("model", "data")]
    named.append(("task.name", get(task, "name")) if isinstance(task, Mapping) else ("task", task))
    named.append(("sparsity.method", get(get(config, "sparsity"), "method")))
    if isinstance(datasets, Mapping):
        named += [(f"robustness.datasets.{name}.factory", get(spec, FACTORY)) for name, spec in datasets.items()]
    return [(field, path) for field, path in named if is_import_path(path)]


_ANNOUNCED: set[str] = set()  # lines this process printed: `raysparse sweep` checks a sweep twice


def announce_code(config) -> None:
    """One line on stderr naming the code a config calls, before any of it is called (once per
    process): a config file runs code by design (``model.factory: "os:system"`` would run a
    shell), so whoever runs one sees what it runs."""
    found = code_by_import_path(config)
    line = CALLS_CODE + ", ".join(f"{field} {path}" for field, path in found)
    if found and line not in _ANNOUNCED:
        _ANNOUNCED.add(line)
        print(line, file=sys.stderr, flush=True)


def check_user_code(config, *, model: object = None, data: object = None, task: object = None,
                    searched: tuple[str, ...] = ()) -> None:
    """Before a sweep starts, on the driver (once per command, never in a trial): say which code
    the config names by import path, import and call the factories once, and put one batch
    through the model. ``searched`` (dotted space keys) must name options they take."""
    announce_code(config)
    if not any(given is not None or is_user_code(spec) for spec, given in ((config.model, model), (config.data, data))):
        return
    for key in searched:
        block, _, option = key.partition(".")
        spec, given = (config.model, model) if block == "model" else (config.data, data)
        if block in ("model", "data") and (given is not None or is_user_code(spec)) and option not in LOADER_KEYS:
            builder, field, what = _builder(spec, block, given)
            kind = "factory " if field.endswith(FACTORY) else ""
            check_option(builder, option.split(".")[0], f"space.{block}", f"{block} {kind}{what}")
    torch.manual_seed(config.seed)
    the_task = build_task(config.task, label_smoothing=config.label_smoothing, given=task)
    splits = build_splits(config.data, config.seed, the_task, given=data)
    network = build_network(config.model, splits.info, given=model)
    check_model(network, splits, the_task, model_field(config.model, model))
