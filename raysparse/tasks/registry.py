"""Tasks by name (one ``Registry``), a user's by import path or as a Python object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from raysparse.errors import ConfigError, did_you_mean
from raysparse.imports import import_object, is_import_path
from raysparse.registry import Registry
from raysparse.tasks.base import Task, TaskOptions

TASKS: Registry[type[Task]] = Registry("task")
DEFAULT_TASK = "classification"
PYTHON = "python"  # task: {python: "module:qualname"}: the object raysparse.train/sweep(task=...) gave


def register_task(cls: type[Task]) -> type[Task]:
    """Decorator of the built-in tasks: registered under ``cls.name``."""
    return TASKS.register(cls.name)(cls)


def task_name(spec: object) -> object:
    """The name or import path a ``task`` config value gives (a string, or a mapping's ``name``)."""
    return spec.get("name", spec.get(PYTHON)) if isinstance(spec, Mapping) else spec


def get_task_class(spec: object, field: str = "task", given: object = None) -> type[Task]:
    """The task class a config's ``task`` names: a registered name, ``'pkg.module:MyTask'``, or
    (``given``) a Task subclass or instance from the Python API."""
    if given is not None:
        cls = given if isinstance(given, type) else type(given)
        _check_task_class(cls, f"task= got {describe(given)}", field)
        return cls
    name = task_name(spec)
    if isinstance(spec, Mapping) and PYTHON in spec:
        raise ConfigError(f"{field}.{PYTHON}", f"names the Python object {spec[PYTHON]!r}, which is not given "
                          "here; pass it (task=...) or name it by import path in task.name")
    if is_import_path(name):
        cls = import_object(name, f"{field}.name" if isinstance(spec, Mapping) else field)
        _check_task_class(cls, f"{name!r} names", field)
        return cls
    return TASKS.get(name, f"{field}.name" if isinstance(spec, Mapping) else field)


def build_task(spec: object, *, label_smoothing: float = 0.0, field: str = "task", given: object = None) -> Task:
    """The task a config's ``task`` value describes, its options checked; an instance in ``given``
    is used as it is."""
    if isinstance(given, Task):
        return given
    cls = get_task_class(spec, field, given)
    raw = {k: v for k, v in spec.items() if k not in ("name", PYTHON)} if isinstance(spec, Mapping) else {}
    return cls(task_options(cls, raw, field), label_smoothing=label_smoothing)


def task_options(cls: type[Task], raw: Mapping, field: str) -> TaskOptions:
    allowed = [f.name for f in dataclasses.fields(cls.Options)]
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{field}.{key}", f"is not an option of task {cls.name or cls.__qualname__!r}; "
                              f"allowed: {', '.join(allowed) or 'none'}{did_you_mean(key, allowed)}")
    for f in dataclasses.fields(cls.Options):
        if f.name in raw and isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            value = raw[f.name]
            if isinstance(value, bool) or not isinstance(value, type(f.default)):
                raise ConfigError(f"{field}.{f.name}", f"got {value!r}; allowed: {type(f.default).__name__}")
    return cls.Options(**raw)


def describe(obj: object) -> str:
    target = obj if isinstance(obj, type) else type(obj)
    return f"{target.__module__}:{target.__qualname__}"


def _check_task_class(cls: object, got: str, field: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(field, f"{got} {cls!r}, not a subclass of raysparse.Task")
    if not cls.metrics:
        raise ConfigError(field, f"{got} {cls.__qualname__} with no metrics; a task declares metrics = "
                          "{'name': 'max' or 'min', ...}, its main metric first")
    options = cls.Options
    if not (isinstance(options, type) and issubclass(options, TaskOptions) and dataclasses.is_dataclass(options)):
        raise ConfigError(field, f"{got} {cls.__qualname__} whose Options is not a dataclass subclassing "
                          "raysparse.TaskOptions")
