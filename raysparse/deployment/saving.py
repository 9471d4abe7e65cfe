"""A deployed network on disk as data, never as pickled classes: its weights (the state_dict, sparse
tensors and all), its plan (which layer runs which kernel, at what batch) and its model's spec (the
config block and the data's info that build the undeployed architecture), in one ``torch.save`` of
plain dicts, strings and tensors.

Loading reads it with ``torch.load(weights_only=True)`` and no class allowed beyond torch's tensors,
builds the architecture again, folds its BatchNorms and swaps the plan's kernels in as ``deploy`` did
(no timing), then puts the weights in. A file cannot run code of its choosing: a zoo or torchvision
model is a name in a registry, an HF model a config dict, and a model of your own is built only by
the class or builder you pass (``model=``), never by an import path the file names.
"""

from __future__ import annotations

import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from raysparse.deployment.model import DeployedModel
from raysparse.deployment.plan import DENSE, Plan, PlanRow
from raysparse.deployment.planner import _replace, kernel_builder
from raysparse.errors import MAX_MESSAGE_LENGTH, ConfigError, cut
from raysparse.sparsity.masks import weight_slots
from raysparse.structured.fold import fold_batchnorm
from raysparse.zoo.user_code import FACTORY, PYTHON, build_network, describe, is_user_code, one_line

FORMAT, VERSION = "raysparse.deployed", 1
KEYS = {"format", "version", "model", "data_info", "plan", "weights"}
SAVE_HINT = "raysparse.deployment.save_deployed(deployed, path, model=..., data_info=...)"


def save_deployed(deployed: DeployedModel, path: str | Path, *, model: Mapping | str | None = None,
                  data_info: Mapping | None = None) -> Path:
    """Write ``deployed`` as ``raysparse.load_deployed`` reads it back.

    ``model`` is the config block that built the network before it was deployed: ``"resnet20"``,
    ``{"name": "vit", "depth": 1}``, ``"torchvision:resnet18"``, ``{"name": "hf", "config": {...}}``
    (one built from a ``path`` is recorded by its config, so the file needs no directory), or your
    own (``{"python": "pkg.mod:Net", **options}``, ``{"factory": "pkg.mod:make", **options}``: the
    options are kept, ``load_deployed`` takes the class or builder as ``model=``). ``data_info`` is
    what the data told the model factory (``{"input_shape": [3, 32, 32], "num_classes": 10}``; a
    run's ``build.json``). Without ``model``, an HF model is recorded by its config and any other
    by its class's import path (loaded with ``model=``)."""
    spec = _spec(deployed.network, model)
    info = dict(data_info or {})
    if "name" in spec and spec["name"] != "hf" and not info:
        raise ConfigError("data_info", f"got {data_info!r} for model {spec['name']!r}; allowed: what the data told "
                          "its factory, e.g. {'input_shape': [1, 8, 8], 'num_classes': 10}")
    plan = deployed.plan
    rows = [[r.layer, list(r.shape), r.density, r.kernel, dict(r.timings)] for r in plan]
    record = {"batch_size": plan.batch_size, "network_ms": dict(plan.network_ms), "reverted": plan.reverted,
              "rows": rows}
    saved = {"format": FORMAT, "version": VERSION, "model": _json(spec, "model"),
             "data_info": _json(info, "data_info"), "plan": _json(record, "plan"),
             "weights": dict(deployed.network.state_dict())}
    torch.save(saved, path)
    return Path(path)


def load_deployed(path: str | Path, *, model=None, map_location=None) -> DeployedModel:
    """The network ``save_deployed`` wrote (or ``raysparse deploy RUN_ID`` logged as
    ``deployed/model.pt``), on its saved kernels, computing what it did when it was saved.

    ``model`` gives a model of your own (its file records the import path and options, never runs
    them): an nn.Module class or builder (called with the recorded options and data info) or an
    instance of the undeployed architecture, as ``raysparse.load_model`` takes it. A file that is
    anything else (a pickled module, a class or attribute besides tensors, a plan or weights that do
    not fit the model) is refused with one ValueError line."""
    saved = _read(path, map_location)
    spec, info = _plain(saved, "model", dict, path), _plain(saved, "data_info", dict, path)
    plan = _plan(_plain(saved, "plan", dict, path), path)
    weights = saved["weights"]
    with torch.random.fork_rng(devices=[]):  # its random weights are replaced: the caller's RNG stays as it was
        network = fold_batchnorm(_architecture(spec, info, model, path)).requires_grad_(False)
        _match_device_and_dtype(network, weights)
        _replace(network, _kernels(network, plan, path))
    _load_weights(network, weights, path)
    return DeployedModel(network, plan)


def _spec(network: nn.Module, model: Mapping | str | None) -> dict:
    if model is None:  # an HF model says what it is; anything else is a class of the caller's
        if type(network).__module__.startswith("transformers.") and hasattr(network, "config"):
            return {"name": "hf", "config": _hf_config(network)}
        return {PYTHON: describe(network)}
    spec = {"name": model} if isinstance(model, str) else dict(model)
    if spec.get("name") == "hf" and "path" in spec:  # the weights are in the file: only the config is needed
        spec = {**{k: v for k, v in spec.items() if k != "path"}, "config": _hf_config(network)}
    return spec


def _hf_config(network: nn.Module) -> dict:
    # what differs from the config class's defaults: keys the zoo's hf model takes back
    return {k: v for k, v in network.config.to_diff_dict().items() if not k.startswith("_")}


def _json(value, field: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(field, f"got {value!r}; allowed: plain data (JSON): {error}") from None


def _refusal(path, message: str) -> ValueError:
    # one line, of bounded length, whatever names a crafted file put into it
    return ValueError(cut(" ".join(f"{str(path)!r} {message}".split()), MAX_MESSAGE_LENGTH))


def _read(path, map_location) -> dict:
    try:
        with warnings.catch_warnings():
            # the check of every sparse tensor's indices is what a file from elsewhere needs: no warning about it
            warnings.filterwarnings("ignore", message=".*Validating sparse tensor invariants.*")
            saved = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:  # torch's text: many lines of advice around the global it refused
        named = re.search(r"GLOBAL (\S+)", str(error))
        what = f"names {named[1]}" if named else f"is refused by torch.load(weights_only=True): {one_line(error)}"
        raise _refusal(path, f"{what}; load_deployed loads no pickled classes, only the weights, plan and "
                             f"model spec that {SAVE_HINT} writes (saved by torch.save? save it that way)") from None
    except RuntimeError as error:  # a damaged archive, a sparse tensor whose indices do not hold
        raise _refusal(path, f"does not load: {one_line(error)}") from None
    tagged = type(saved) is dict and set(saved) == KEYS and type(saved["format"]) is str
    if not tagged or saved["format"] != FORMAT:
        raise _refusal(path, f"is not a deployed network written by {SAVE_HINT}")
    if type(saved["version"]) is not int or saved["version"] != VERSION:
        raise _refusal(path, f"is format version {saved['version']!r}; this raysparse reads version {VERSION}")
    weights = saved["weights"]
    # exact types: a tensor or dict of weights_only may still carry instance attributes
    if type(weights) is not dict or not all(type(k) is str and type(v) is torch.Tensor and not vars(v)
                                            for k, v in weights.items()):
        raise _refusal(path, "holds weights that are not plain tensors by name (an object or attribute besides "
                             "them); load_deployed loads nothing else")
    return saved


def _plain(saved: dict, key: str, kind: type, path):
    try:
        value = json.loads(saved[key]) if type(saved[key]) is str else None
    except ValueError:
        value = None
    if type(value) is not kind:
        raise _refusal(path, f"holds a {key} that is not the JSON {kind.__name__} save_deployed writes")
    return value


def _plan(record: dict, path) -> Plan:
    def number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    rows = record.get("rows")
    batch, network_ms = record.get("batch_size"), record.get("network_ms")
    fits = (type(rows) is list and type(batch) is int and batch >= 1 and type(record.get("reverted")) is bool
            and type(network_ms) is dict and all(number(v) for v in network_ms.values()))
    plan_rows = []
    for row in rows if fits else ():
        if not (type(row) is list and len(row) == 5 and type(row[0]) is str and type(row[1]) is list
                and all(type(n) is int for n in row[1]) and number(row[2]) and type(row[3]) is str
                and type(row[4]) is dict and all(number(v) for v in row[4].values())):
            fits = False
            break
        plan_rows.append(PlanRow(row[0], tuple(row[1]), float(row[2]), row[3], row[4]))
    if not fits:
        raise _refusal(path, "holds a plan that is not rows of (layer, shape, density, kernel, timings) with "
                             "batch_size, network_ms and reverted")
    return Plan(plan_rows, batch_size=batch, network_ms=network_ms, reverted=record["reverted"])


def _architecture(spec: dict, info: dict, given, path) -> nn.Module:
    """The undeployed architecture, as ``raysparse.load_model`` builds a run's (given replaces what the
    block names; its other keys are options), but importing nothing the file names."""
    if isinstance(given, nn.Module):
        return given
    if given is None and is_user_code(spec):
        named = spec.get(PYTHON, spec.get(FACTORY))
        raise _refusal(path, f"was deployed from your model {named!r}; pass it as model= (the class or builder): "
                             "load_deployed runs no code a file names")
    if given is not None:
        spec = {k: v for k, v in spec.items() if k not in ("name", FACTORY, PYTHON)}
    try:
        return build_network(spec, info, given=given)
    except ConfigError as error:
        raise _refusal(path, f"names a model that cannot be built here: {error}") from None
    except Exception as error:  # a factory's own failure on the file's options (memory, an assertion)
        raise _refusal(path, f"names a model that cannot be built here: {type(error).__name__}: "
                             f"{one_line(error)}") from None


def _match_device_and_dtype(network: nn.Module, weights: dict) -> None:
    """The architecture where the weights are (``map_location``) and in their floating dtype, so the
    buffers the file does not hold (positions, rotary frequencies) are there too."""
    devices = {t.device for t in weights.values()}
    floating = {t.dtype for t in weights.values() if t.is_floating_point()}
    built = next((p.dtype for p in network.parameters() if p.is_floating_point()), None)
    dtype = floating.pop() if len(floating) == 1 and built not in floating else None
    network.to(device=devices.pop() if len(devices) == 1 else None, dtype=dtype)


def _kernels(network: nn.Module, plan: Plan, path) -> dict[str, nn.Module]:
    """The plan's kernels, built on the architecture's layers as deploy built them (each layer's
    weight zeroed first: the kernel is then cheap to build, and the file's weights replace it)."""
    slots = weight_slots(network)
    if [row.layer for row in plan] != list(slots):
        raise _refusal(path, f"holds a plan of layers {_few(row.layer for row in plan)}, not the model's "
                             f"{_few(slots)}")
    chosen = {}
    for row in plan:
        if row.kernel == DENSE:
            continue
        module, attribute = slots[row.layer]
        build = kernel_builder(row.kernel, module, attribute)
        if build is None:
            raise _refusal(path, f"runs layer {row.layer!r} ({type(module).__name__}) on kernel {row.kernel!r}, "
                                 "which it cannot take")
        with torch.no_grad():
            getattr(module, attribute).zero_()
        try:
            chosen[row.layer] = build(module, attribute)
        except (RuntimeError, ValueError) as error:  # a block size that does not divide, a kernel this device lacks
            raise _refusal(path, f"runs layer {row.layer!r} on kernel {row.kernel!r}, which cannot be built "
                                 f"here: {one_line(error)}") from None
    return chosen


def _load_weights(network: nn.Module, weights: dict, path) -> None:
    """The file's tensors in place of the built ones (assigned: a sparse tensor's size is its own),
    each of the same name, shape, dtype, layout and device as the one it replaces."""
    expected = network.state_dict()
    if set(expected) != set(weights):
        raise _refusal(path, f"holds weights that do not fit the model: missing {_few(set(expected) - set(weights))}, "
                             f"unexpected {_few(set(weights) - set(expected))}")
    for name, tensor in weights.items():
        want = expected[name]
        if (tensor.shape, tensor.dtype, tensor.layout, tensor.device) != (want.shape, want.dtype, want.layout,
                                                                          want.device):
            raise _refusal(path, f"holds {name} as {_described(tensor)}; the model's is {_described(want)}")
    with torch.no_grad():
        network.load_state_dict(weights, assign=True)


def _described(tensor: torch.Tensor) -> str:
    return f"{list(tensor.shape)} {tensor.dtype} {tensor.layout} on {tensor.device}"


def _few(names, limit: int = 5) -> str:
    names = sorted(names) if isinstance(names, set) else list(names)
    shown = ", ".join(names[:limit]) or "none"
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
