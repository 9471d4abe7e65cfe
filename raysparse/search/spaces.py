"""Sweep files: parse and validate completely, before Ray or MLflow starts.

A sweep is a base config (the core's shape), a search space over dotted config keys, an
optional per-layer sparsity block, objectives, trials, early stopping, resources and where
results go. ``load_sweep`` returns a frozen ``Sweep`` or raises one ``ConfigError`` naming the
field (``space.optimizer.lr``, ``objectives.val_acc``, ...).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysparse.config import (
    PATH_KEYS,
    absolute_path,
    check_dotted_key,
    get_dotted,
    load_config,
    read_yaml,
    read_yaml_with_text,
    set_dotted,
    with_absolute_paths,
)
from raysparse.errors import ConfigError, did_you_mean
from raysparse.imports import add_import_dirs
from raysparse.search.disk_safety import check_name, check_plain_data, check_storage_path
from raysparse.search.domains import Domain, parse_domain
from raysparse.search.settings import (
    EarlyStopping,
    Resources,
    checked_pbt,
    parse_early_stopping,
    parse_int,
    parse_resources,
)
from raysparse.search.stage import (
    STAGE,
    absolute_paths,
    check_stage_named,
    parse_pretrain,
    uses_stage_reference,
    with_stage,
    without_stage,
)
from raysparse.train.latency import DEPLOYED_METRICS
from raysparse.train.loop import REPORTED_METRICS, task_metrics
from raysparse.zoo.user_code import describe

SWEEP_KEYS = (
    "name", "base", "space", "layer_sparsity", "objectives", "num_samples", "max_concurrent", "seed",
    "early_stopping", "resources", "storage_path", "tracking_uri", "experiment_name", "checkpoint_interval",
    "sampler", "max_failures", "import_dirs", "pretrain", "log_weights",
)
# auto: TPE for one objective, NSGA-II for several; cmaes: one objective, numbers (a choice key is
# sampled at random); evolutionary: layer_sparsity's levels only
SAMPLERS = ("auto", "tpe", "nsga2", "random", "grid", "cmaes", "evolutionary")
MODES = ("max", "min")


@dataclass(frozen=True)
class LayerSparsity:
    """One density per prunable layer within ``bounds``, rescaled so the total hits the target."""

    layers: dict[str, int]  # layer -> number of weights
    bounds: tuple[float, float] = (0.01, 1.0)
    groups: dict[str, str] | None = None  # layer -> the group whose one level it takes (None: its own)

    def group_of(self, layer: str) -> str:
        return layer if self.groups is None else self.groups[layer]


@dataclass(frozen=True)
class PythonObjects:
    """What ``raysparse.sweep(model=, data=, loop=, task=)`` was given. They travel to the trials with
    the Sweep by Ray's own serialization (cloudpickle), so classes and closures defined in a
    notebook, a test module or ``__main__`` work; the sweep's files only record their names."""

    model: Any = None
    data: Any = None
    loop: Any = None
    task: Any = None

    def names(self) -> dict[str, str]:
        return {k: describe(v) for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class Sweep:
    name: str
    base: dict
    space: dict[str, Domain]
    objectives: tuple[tuple[str, str], ...]
    num_samples: int = 8
    max_concurrent: int = 2
    seed: int = 0
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    resources: Resources = field(default_factory=Resources)
    layer_sparsity: LayerSparsity | None = None
    storage_path: str | None = None
    tracking_uri: str | None = None
    experiment_name: str | None = None
    checkpoint_interval: float = 60.0  # seconds between a trial's checkpoints (0: every epoch)
    sampler: str = "auto"
    max_failures: int = 2  # retries of a trial whose process dies, each from its last checkpoint
    log_weights: bool = True  # false: a finished trial logs masks and densities, not its state_dict and program
    raw: dict = field(default_factory=dict, repr=False)  # the sweep as parsed, base inlined: what --resume reloads
    source_text: str | None = None  # the sweep file as written, logged to the parent run
    # importable in every trial: the sweep file's directory, the working directory, import_dirs
    import_dirs: tuple[str, ...] = ()
    objects: PythonObjects = field(default_factory=PythonObjects, repr=False, compare=False)
    # the dense stage's full config (base merged with the pretrain block), if any; out of the repr, which
    # Ray's errors quote and which would hold base twice
    pretrain: dict | None = field(default=None, repr=False)
    pretrain_file: str | None = field(default=None, repr=False)  # the stage's state_dict (set at launch)

    @property
    def pretrain_epochs(self) -> int:
        """Epochs the dense stage trains, once per sweep (0 without one)."""
        return self.pretrain.get("epochs", 30) if self.pretrain is not None else 0

    @property
    def metric(self) -> str:
        return self.objectives[0][0]

    @property
    def mode(self) -> str:
        return self.objectives[0][1]

    @property
    def report_command(self) -> str:
        """The command that redraws this sweep's report: it names the experiment when the sweep's
        is not the default (the sweep's name), where ``raysparse report NAME`` looks."""
        if self.experiment_name in (None, self.name):
            return f"raysparse report {self.name}"
        return f"raysparse report {self.name} --experiment {self.experiment_name}"

    def without_objects(self) -> Sweep:
        """The sweep as its files hold it, for what plain pickle must store (Tune's experiment state)."""
        return dataclasses.replace(self, objects=PythonObjects())

    def trial_config(self, params: dict[str, Any]) -> dict:
        """The base config with one trial's sampled values put in place."""
        from raysparse.search.layerwise import apply_layer_densities

        config = copy.deepcopy(self.base)
        sampled: dict[str, Any] = {}
        for key, domain in self.space.items():
            # Optuna samples a key only where its `when` holds; Tune's own sampler (PBT) samples
            # every key, so one whose `when` fails is left out here
            if key in params and domain.active(sampled, lambda k: get_dotted(self.base, k)):
                sampled[key] = domain.decode(params[key])
                set_dotted(config, key, sampled[key])
        if self.layer_sparsity is not None:
            apply_layer_densities(config, params, self.layer_sparsity)
        if self.pretrain is not None:
            config = with_stage(config, self.pretrain_file)
        return config

    def grace_period(self) -> int:
        """ASHA's grace period in epochs: by default one epoch past the latest end of pruning,
        since accuracy dips while sparsity ramps up and trials must not be judged then."""
        if self.early_stopping.grace_period is not None:
            return self.early_stopping.grace_period
        epochs = self.base.get("epochs", 30)
        ends = [self.base.get("sparsity", {}).get("prune_end")]
        domain = self.space.get("sparsity.prune_end")
        if domain is not None:
            ends.append(domain.upper())
        known = [e for e in ends if e is not None]
        end = max(known) if known else epochs / 2
        return min(epochs, math.ceil(end) + 1)


def load_sweep(source: str | Path | dict, *, objects: PythonObjects | None = None, **overrides: Any) -> Sweep:
    """Parse and validate a sweep file (path) or dict; ``overrides`` replace top-level keys
    (``num_samples=4``, ``tracking_uri=...``, ``name=...``); ``objects`` are the model, data
    or loop given from Python."""
    objects = _checked_objects(objects or PythonObjects())
    text = None
    if isinstance(source, (str, Path)):
        raw, text = read_yaml_with_text(source, "sweep")
        base_dir = Path(source).parent
    elif isinstance(source, dict):
        raw, base_dir = copy.deepcopy(source), Path.cwd()
    else:
        raise ConfigError("sweep", f"expected a path or a mapping, got {type(source).__name__}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    unknown = [k for k in raw if k not in SWEEP_KEYS]
    if unknown:
        allowed = ", ".join(SWEEP_KEYS)
        raise ConfigError(unknown[0], f"unknown sweep key; allowed: {allowed}{did_you_mean(unknown[0], SWEEP_KEYS)}")

    name = check_name("name", raw.get("name"))
    import_dirs = _import_dirs(raw.get("import_dirs", []), base_dir)
    raw["import_dirs"] = list(import_dirs)  # absolute: a resumed sweep imports from the same places
    add_import_dirs(import_dirs)  # the checks below may build the user's model and data (layer_sparsity)
    base = _base_config(raw.get("base"), base_dir, objects)
    space = _space(raw.get("space", {}), base)
    pretrain = parse_pretrain(raw.get("pretrain"), base, has_loop=objects.loop is not None)
    check_stage_named(base, {k: d.values for k, d in space.items() if d.kind == "choice"}, pretrain)
    if isinstance(raw.get("pretrain"), dict):  # its paths absolute, as base's: a resumed sweep may start elsewhere
        raw["pretrain"] = with_absolute_paths(raw["pretrain"])
    from raysparse.search.layerwise import parse_layer_sparsity

    layer_sparsity = parse_layer_sparsity(raw["layer_sparsity"], base, space) if "layer_sparsity" in raw else None
    # a loop of yours reports metrics of its own choosing: any name can be an objective
    task_metrics = _task_metrics(base, objects)
    main = next(iter(task_metrics))  # val_<the task's main metric>: the default objective
    objectives = _objectives(raw.get("objectives", {main: task_metrics[main]}), task_metrics,
                             any_metric=objects.loop is not None)
    sampler = raw.get("sampler", "auto")
    if sampler not in SAMPLERS:
        allowed = ", ".join(SAMPLERS)
        raise ConfigError("sampler", f"got {sampler!r}; allowed: {allowed}{did_you_mean(sampler, SAMPLERS)}")
    grid = _grid(space, base, layer_sparsity) if sampler == "grid" else None
    if sampler == "evolutionary":
        _check_evolutionary(space, layer_sparsity, objectives)
    if sampler == "cmaes" and len(objectives) != 1:
        raise ConfigError("objectives", f"got {len(objectives)}; sampler: cmaes optimizes one objective "
                          "(nsga2 searches several)")
    num_samples = parse_int(raw, "num_samples", len(grid) if grid else 8, minimum=1)
    if grid is not None and num_samples > len(grid):
        raise ConfigError("num_samples", f"got {num_samples}; the grid has {len(grid)} points, so at most {len(grid)}")
    experiment_name = raw.get("experiment_name")  # the MLflow experiment's: the sweep name's rule
    if experiment_name is not None:
        check_name("experiment_name", experiment_name)
    sweep = Sweep(
        name=name, base=base, space=space, objectives=objectives, sampler=sampler,
        num_samples=num_samples,
        max_concurrent=parse_int(raw, "max_concurrent", 2, minimum=1),
        seed=parse_int(raw, "seed", 0, minimum=0),
        # ASHA judges the first objective only: with several it would stop the trials that trade it
        # for another (the cheap, sparser ones) and thin out the Pareto front, so it is opt-in there
        early_stopping=parse_early_stopping(raw.get("early_stopping", {} if len(objectives) == 1 else False)),
        resources=parse_resources(raw.get("resources", {})),
        layer_sparsity=layer_sparsity,
        storage_path=check_storage_path(_optional_str(raw, "storage_path")),
        tracking_uri=_tracking_uri(raw),
        experiment_name=experiment_name,
        checkpoint_interval=_seconds(raw, "checkpoint_interval", 60.0),
        max_failures=parse_int(raw, "max_failures", 2, minimum=0),
        log_weights=_flag(raw, "log_weights", True),
        source_text=_redacted(text),
        raw={**raw, "base": base},
        import_dirs=import_dirs,
        objects=objects,
        pretrain=pretrain,
    )
    if objects.loop is not None and sweep.resources.workers != 1:
        raise ConfigError("resources.workers", f"got {sweep.resources.workers}; a loop of yours trains in its "
                          "trial's process, so 1")
    if pretrain is not None and sweep.storage_path is not None and "://" in sweep.storage_path:
        raise ConfigError("pretrain", f"its file goes under storage_path, which is a URI ({sweep.storage_path!r}); "
                          "trials read init_from as a file: use a shared file system path")
    _check_space_values(sweep)
    _check_pattern_pairs(sweep)
    if sweep.early_stopping.pbt:
        sweep = dataclasses.replace(sweep, early_stopping=checked_pbt(sweep))
    _check_final_objectives(sweep)
    check_plain_data(sweep.raw, "")
    return sweep


def grid_points(space: dict[str, Domain], base: dict) -> list[dict[str, Any]]:
    """Every combination of a ``sampler: grid`` sweep's choices, in file order; a key whose
    ``when`` does not hold is left out, so ``dense`` is not repeated per ``final_sparsity``."""
    points: list[dict[str, Any]] = [{}]
    for key, domain in space.items():
        grown = []
        for point in points:
            sampled = {k: space[k].decode(v) for k, v in point.items()}
            if domain.active(sampled, lambda k: get_dotted(base, k)):
                grown += [{**point, key: value} for value in domain.categories()]
            else:
                grown.append(point)
        points = grown
    return points


def _check_evolutionary(space: dict, layer_sparsity, objectives: tuple) -> None:
    """The evolutionary sampler moves weights between layer_sparsity's levels of one objective."""
    if layer_sparsity is None:
        raise ConfigError("sampler", "got 'evolutionary', which evolves per-layer levels; add a layer_sparsity "
                          "block (e.g. {bounds: [0.1, 0.9], group: block}) or use tpe")
    if space:
        raise ConfigError(f"space.{next(iter(space))}", "sampler: evolutionary evolves layer_sparsity's levels "
                          "only; fix this key in base, or search it with sampler: tpe")
    if len(objectives) != 1:
        raise ConfigError("objectives", f"got {len(objectives)}; sampler: evolutionary selects on one objective")


def _grid(space: dict[str, Domain], base: dict, layer_sparsity) -> list[dict[str, Any]]:
    if layer_sparsity is not None:
        raise ConfigError("layer_sparsity", "is a continuous search; it cannot be combined with sampler: grid")
    if not space:
        raise ConfigError("space", "sampler: grid needs at least one {choice: [...]} domain")
    for key, domain in space.items():
        if domain.kind != "choice":
            raise ConfigError(f"space.{key}", f"got a {domain.kind} domain; sampler: grid takes {{choice: [...]}} only")
    return grid_points(space, base)


def _check_final_objectives(sweep: Sweep) -> None:
    """Robustness metrics come once, in the last report: they need the robustness block, and
    ASHA, which compares trials every epoch, cannot rank by them."""
    from raysparse.robustness.evaluate import FINAL_METRICS, REFERENCE_METRICS

    final = [m for m, _ in sweep.objectives if m in FINAL_METRICS]
    if final and sweep.base.get("robustness") is None:
        raise ConfigError(
            f"objectives.{final[0]}", "is measured by the robustness suite: add a robustness block to base"
        )
    compared = [m for m in final if m in REFERENCE_METRICS]
    if compared and sweep.base["robustness"].get("reference") is None and not uses_stage_reference(
        sweep.base, sweep.pretrain
    ):
        raise ConfigError(
            f"objectives.{compared[0]}", "compares with a dense reference network: set base.robustness.reference "
            "to its state_dict file, or declare a pretrain: block (a dense stage the sweep trains once)"
        )
    if final and sweep.base["robustness"].get("split", "test") != "val":
        raise ConfigError(
            f"objectives.{final[0]}", "is measured on the test split, which never selects a model; "
            "set base.robustness.split: val to search on it"
        )
    last_report_only = FINAL_METRICS + DEPLOYED_METRICS  # deployed latency: measured on the trained network
    judged_early = sweep.early_stopping.pbt or sweep.grace_period() < sweep.base.get("epochs", 30)
    if sweep.metric in last_report_only and sweep.early_stopping.enabled and judged_early:
        raise ConfigError(
            "early_stopping",
            f"the first objective {sweep.metric!r} is only reported at the last epoch; put a per-epoch metric "
            "first or set early_stopping: false",
        )


def _checked_objects(objects: PythonObjects) -> PythonObjects:
    from torch import nn

    if isinstance(objects.model, nn.Module):
        raise ConfigError("model", f"got an instance of {type(objects.model).__name__}: one network every trial "
                          "would share; pass its class or a function building it (each trial builds a fresh one)")
    for name, given in dataclasses.asdict(objects).items():
        if given is not None and not callable(given):
            raise ConfigError(name, f"got {type(given).__name__}; allowed: a class or a function")
    if objects.loop is not None and (objects.model is not None or objects.data is not None):
        raise ConfigError("loop", "builds its own model and data; give loop= alone (trial.config holds the "
                          "base's model and data blocks as its options)")
    return objects


def _import_dirs(extra: Any, base_dir: Path) -> tuple[str, ...]:
    if not isinstance(extra, list) or not all(isinstance(d, str) for d in extra):
        raise ConfigError("import_dirs", f"got {extra!r}; allowed: a list of directories")
    dirs = [str(Path(d).resolve()) for d in (base_dir, Path.cwd(), *(base_dir / d for d in extra))]
    for directory in dirs:
        if not Path(directory).is_dir():
            raise ConfigError("import_dirs", f"{directory!r} is not a directory")
    return tuple(dict.fromkeys(dirs))


def _with_objects(base: dict, objects: PythonObjects) -> dict:
    """The base config saying which Python objects build its model and data, or train in its loop."""
    from raysparse.zoo.user_code import PYTHON, with_python_objects

    base = with_python_objects(base, objects.model, objects.data, objects.task)
    if objects.loop is not None:
        return {"model": {}, "data": {}, **base, "loop": describe(objects.loop)}
    if base.get("loop") is not None:
        raise ConfigError("loop", f"names a training loop of yours ({base['loop']!r}), which is not given: "
                          "pass it, raysparse.sweep(space, loop=fn)")
    for block in ("model", "data"):
        spec = base.get(block)
        if isinstance(spec, dict) and PYTHON in spec and getattr(objects, block) is None:
            raise ConfigError(f"{block}.python", f"names the Python object {spec[PYTHON]!r}, which is not given: "
                              f"pass it, raysparse.sweep(space, {block}=...)")
    return base


def _base_config(base: Any, base_dir: Path, objects: PythonObjects) -> dict:
    if base is None:
        raise ConfigError("base", "missing: a core config (mapping) or the path of a config YAML")
    if isinstance(base, str):
        path = Path(base) if Path(base).is_absolute() else base_dir / base
        base = read_yaml(path, "base")
    if not isinstance(base, dict):
        raise ConfigError("base", f"expected a mapping or a path, got {base!r}")
    try:
        base = _with_objects(base, objects)
        load_config(without_stage(base))  # the stage's file exists once the driver has trained it
    except ConfigError as err:
        raise ConfigError(f"base.{err.field}", str(err).removeprefix(f"{err.field}: ")) from None
    return absolute_paths(base)


def _space(raw: Any, base: dict) -> dict[str, Domain]:
    if not isinstance(raw, dict):
        raise ConfigError("space", f"expected a mapping of config keys to domains, got {raw!r}")
    space: dict[str, Domain] = {}
    for key, spec in raw.items():
        check_dotted_key("space", key)
        domain = parse_domain(spec, f"space.{key}")
        if key in PATH_KEYS and domain.kind == "choice":  # as in base: trials run in directories of their own
            domain = dataclasses.replace(domain, values=tuple(v if v == STAGE else absolute_path(v)
                                                              for v in domain.values))
        for cond_key in domain.when:
            check_dotted_key(f"space.{key}.when", cond_key)
            if cond_key not in space and get_dotted(base, cond_key) is None:
                raise ConfigError(
                    f"space.{key}.when", f"{cond_key!r} is neither an earlier space key nor set in base"
                )
        space[key] = domain
    return space


def _check_space_values(sweep: Sweep) -> None:
    """Every value a domain can produce must make a valid config: try its bounds / choices."""
    for key, domain in sweep.space.items():
        for value in domain.probe_values():
            config = copy.deepcopy(sweep.base)
            set_dotted(config, key, value)
            try:
                load_config(without_stage(config))
            except ConfigError as err:
                raise ConfigError(f"space.{key}", f"value {value!r} gives an invalid config: {err}") from None


PATTERN_KEY = "sparsity.pattern"


def _check_pattern_pairs(sweep: Sweep) -> None:
    """A pattern is valid only with some methods and sparsities (``2:4`` not with ``dst``, nor below
    ``final_sparsity`` 0.5), so each pattern a sweep samples is tried with each value of every other
    key, not only against the base: for each value of the keys its ``when`` names (each combination),
    wherever every key's ``when`` holds."""
    patterns = sweep.space.get(PATTERN_KEY)
    if patterns is None:
        return

    def base_lookup(key: str) -> Any:
        return get_dotted(sweep.base, key)

    named = [k for k in patterns.when if k in sweep.space]
    for values in itertools.product(*(sweep.space[k].probe_values() for k in named)):
        context = dict(zip(named, values))
        for pattern, (key, domain) in itertools.product(patterns.probe_values(), sweep.space.items()):
            for value in [context[key]] if key in context else domain.probe_values():
                sampled = {**context, key: value, PATTERN_KEY: pattern}
                if key == PATTERN_KEY or not all(sweep.space[k].active(sampled, base_lookup) for k in sampled):
                    continue
                config = copy.deepcopy(sweep.base)
                for sampled_key, sampled_value in sampled.items():
                    set_dotted(config, sampled_key, sampled_value)
                try:
                    load_config(without_stage(config))
                except ConfigError as err:
                    others = ", ".join(f"{k}={v!r}" for k, v in sampled.items() if k != PATTERN_KEY)
                    raise ConfigError(f"space.{PATTERN_KEY}", f"value {pattern!r} with {others} gives an invalid "
                                      f"config: {err} (a `when` on {PATTERN_KEY} can leave it out)") from None


def _task_metrics(base: dict, objects) -> dict[str, str]:
    """The metrics a trial of the base config's task reports (val_accuracy, ...: the first is
    val_<main metric>), with their directions."""
    from raysparse.tasks.registry import DEFAULT_TASK, PYTHON, build_task

    spec = base.get("task", DEFAULT_TASK)
    given = getattr(objects, "task", None)
    if given is None and isinstance(spec, dict) and PYTHON in spec:  # checked when the object is given
        return {"val_loss": "min"}
    # an object, not the class: its options decide some metrics (causal_lm's kl_to_dense)
    other_texts = tuple(base.get("evaluate_on") or {})
    return task_metrics(build_task(spec, field="base.task", given=given), other_texts)


def _objectives(raw: Any, reported: dict[str, str], any_metric: bool = False) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("objectives", f"expected a mapping metric -> max|min, got {raw!r}")
    for metric, mode in raw.items():
        if not isinstance(metric, str):
            raise ConfigError("objectives", f"got metric {metric!r}; metric names are text, e.g. val_accuracy")
        if metric.startswith("test_"):
            raise ConfigError(
                f"objectives.{metric}",
                "test data is never used for selection; use the validation metric (val_accuracy, val_loss)",
            )
        known = [*(m for m in reported if not m.startswith("test_")), *REPORTED_METRICS]
        if metric not in known and not any_metric:
            raise ConfigError(
                f"objectives.{metric}",
                f"unknown metric; reported metrics: {', '.join(known)}{did_you_mean(metric, known)}",
            )
        if mode not in MODES:
            raise ConfigError(f"objectives.{metric}", f"got mode {mode!r}; allowed: max, min")
    return tuple(raw.items())


def _redacted(text: str | None) -> str | None:
    """The sweep file as written, any ``user:password@`` in it replaced: Tune pickles the sweep."""
    from raysparse.tracking.naming import redact

    return None if text is None else redact(text)


def _tracking_uri(raw: dict) -> str | None:
    """The sweep's tracking URI without ``user:password@``: they go to MLflow's environment variables
    and the sweep (whose raw dict is saved, whose object Tune pickles) keeps no secret."""
    from raysparse.tracking.credentials import without_credentials

    uri = _optional_str(raw, "tracking_uri")
    if uri is not None:
        uri = raw["tracking_uri"] = without_credentials(uri)
    return uri


def _flag(raw: dict, key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(key, f"got {value!r}; allowed: true or false")
    return value


def _seconds(raw: dict, key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ConfigError(key, f"got {value!r}; allowed: seconds >= 0")
    return float(value)


def _optional_str(raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(key, f"got {value!r}; allowed: a non-empty string or null")
    return value
