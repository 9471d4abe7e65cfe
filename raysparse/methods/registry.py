"""Methods by name (one ``Registry``), a user's methods by import path or ``register_method``."""

from __future__ import annotations

import dataclasses
import pickle

from raysparse.errors import ConfigError, shown
from raysparse.imports import import_object, is_import_path
from raysparse.methods.base import MethodOptions, SparseMethod, SparsityConfig
from raysparse.registry import Registry

METHODS: Registry[type[SparseMethod]] = Registry("method")
# a user's methods known in this process: registered ones by name, imported ones by import path;
# a sweep ships them to its trial processes (whose registry starts with the built-in ones only)
_USER: dict[str, type[SparseMethod]] = {}
_SHIPPED: list[bytes] = []  # from the driver, loaded when first needed (import dirs are set by then)


def register(cls: type[SparseMethod]) -> type[SparseMethod]:
    """Decorator of the built-in methods: registered under ``cls.name``."""
    return METHODS.register(cls.name)(cls)


def register_method(cls: type, field: str = "sparsity.method") -> type[SparseMethod]:
    """Make a user's SparseMethod subclass available as ``sparsity.method: <cls.name>``."""
    _check_method_class(cls, "register_method got", field)
    name = cls.name
    # it goes into run names and files: ASCII (isidentifier alone takes 'é') and bounded
    if (not isinstance(name, str) or not name.isidentifier() or not name.isascii() or len(name) > 100
            or name == SparseMethod.name):
        raise ConfigError(field, f"{cls.__qualname__}.name is {shown(name)}; a method needs a name of its own "
                          "(1 to 100 ASCII letters, digits and '_', e.g. name = 'my_pruning')")
    if name in METHODS and METHODS[name] is not cls and name not in _USER:
        raise ConfigError(field, f"{cls.__qualname__}.name {name!r} is taken by a built-in method")
    # a user's earlier class of that name is replaced: a notebook cell run again defines a new one
    _USER[name] = METHODS.register(name, replace=True)(cls)
    return cls


def get_method(name: object, field: str = "sparsity.method") -> type[SparseMethod]:
    """The method class for a registered name or an import path ``'package.module:Class'``."""
    _load_shipped()
    if is_import_path(name):
        cls = import_object(name, field)
        _check_method_class(cls, f"{name!r} names", field)
        _USER[name] = cls
        return cls
    return METHODS.get(name, field)


def known_methods() -> list[type[SparseMethod]]:
    """Every method class this process knows: registered and imported by path."""
    _load_shipped()
    return list(dict.fromkeys([*METHODS.values(), *_USER.values()]))


def user_methods() -> dict[str, list]:
    """What a trial process needs to know the same methods: the registered classes (the caller
    pickles them, by value where they are not importable) and the import paths used."""
    _load_shipped()
    return {
        "classes": [cls for key, cls in _USER.items() if not is_import_path(key)],
        "paths": [key for key in _USER if is_import_path(key)],
    }


def add_user_methods(pickled: bytes) -> None:
    """In a trial process: the pickled ``user_methods()`` of the driver. Loaded when first needed,
    so that a user's modules are importable by then."""
    _SHIPPED.append(pickled)


def _load_shipped() -> None:
    while _SHIPPED:
        try:
            shipped = pickle.loads(_SHIPPED.pop())
        except Exception as err:  # unpickling imports the user's modules: any error is theirs
            raise ConfigError("sparsity.method", f"a method registered on the driver cannot be loaded here "
                              f"({type(err).__name__}: {err})") from None
        for cls in shipped["classes"]:
            register_method(cls)
        for path in shipped["paths"]:
            try:
                get_method(path)
            except ConfigError:
                pass  # unknown here only matters if this trial uses it, and get_method says so then


def _check_method_class(cls: object, got: str, field: str) -> None:
    what = f"class {cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else f"a {type(cls).__name__}"
    if not (isinstance(cls, type) and issubclass(cls, SparseMethod)):
        raise ConfigError(field, f"{got} {what}, not a subclass of raysparse.SparseMethod")
    options = cls.Options
    if not (isinstance(options, type) and issubclass(options, MethodOptions) and dataclasses.is_dataclass(options)):
        raise ConfigError(field, f"{got} {what} whose Options ({options!r}) is not a dataclass subclassing "
                          "raysparse.MethodOptions")
    clashing = {f.name for f in dataclasses.fields(SparsityConfig)} & {f.name for f in dataclasses.fields(options)}
    if clashing:  # the shared block would take the value: the method would never see its own
        raise ConfigError(field, f"{got} {what} whose Options redefine shared sparsity keys: "
                          f"{', '.join(sorted(clashing))}")
