"""Import paths of user code: found, or one error naming the field."""

import pytest

from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs, import_object, is_import_path


def test_an_import_path_names_a_module_and_an_attribute():
    assert is_import_path("pkg.module:factory") and is_import_path("m:Outer.inner")
    assert not any(map(is_import_path, ["mlp", "pkg.module", "a:b:c", "pkg.mo dule:x", "torchvision:", 3]))


def test_user_module_is_imported_from_an_added_directory(tmp_path):
    (tmp_path / "user_pkg_for_imports").mkdir()
    (tmp_path / "user_pkg_for_imports" / "__init__.py").write_text("class Outer:\n    class inner:\n        pass\n")
    add_import_dirs([tmp_path])
    assert import_object("user_pkg_for_imports:Outer.inner", "model.factory").__name__ == "inner"


def test_bad_paths_name_the_field_and_what_went_wrong(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.factory: got 'nope'; allowed: an import path"):
        import_object("nope", "model.factory")
    with pytest.raises(ConfigError, match=r"^data\.factory: cannot import 'no_such_module_x' \(ModuleNotFoundError"):
        import_object("no_such_module_x:make", "data.factory")
    with pytest.raises(ConfigError, match=r"^sparsity\.method: module 'json' has no 'nothing'"):
        import_object("json:nothing", "sparsity.method")
    (tmp_path / "broken_user_module.py").write_text("raise RuntimeError('boom at import')\n")
    add_import_dirs([tmp_path])
    with pytest.raises(ConfigError, match=r"cannot import 'broken_user_module' \(RuntimeError: boom at import\)"):
        import_object("broken_user_module:x", "model.factory")
