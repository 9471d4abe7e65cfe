"""The one YAML reader for user input: aliases are bounded by what they add, not file size."""

import pytest
import yaml

from raysparse.errors import ConfigError
from raysparse.yaml_input import MAX_ALIAS_VALUES, load_yaml_text

ANCHORED = """
defaults: &defaults {lr: 0.1, momentum: 0.9, betas: [0.9, 0.999]}
sgd: {<<: *defaults, name: sgd}
adam: {<<: *defaults, name: adam, lr: 0.001}
same: *defaults
"""


def test_anchors_and_merge_keys_as_people_write_them_load_as_safe_load_does():
    assert load_yaml_text(ANCHORED, "config", "a file") == yaml.safe_load(ANCHORED)


def test_a_large_file_without_aliases_is_not_refused():
    text = "layers: [" + ", ".join(["0.5"] * (3 * MAX_ALIAS_VALUES)) + "]"
    assert len(load_yaml_text(text, "config", "a file")["layers"]) == 3 * MAX_ALIAS_VALUES


@pytest.mark.parametrize(("copies", "refused"), [(MAX_ALIAS_VALUES // 20, False), (MAX_ALIAS_VALUES // 10, True)])
def test_the_bound_is_on_what_aliases_add(copies, refused):
    """Each alias of a 10-number list adds 11 values (the list and its numbers)."""
    text = "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nb: [" + ", ".join(["*a"] * copies) + "]"
    if not refused:
        assert len(load_yaml_text(text, "config", "a file")["b"]) == copies
        return
    with pytest.raises(ConfigError, match=r"^config: a file: its aliases expand it past 10000 values"):
        load_yaml_text(text, "config", "a file")


def test_long_text_repeated_by_aliases_is_refused():
    text = f"a: &a {'x' * 100_000}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]"
    with pytest.raises(ConfigError, match="1000000 characters"):
        load_yaml_text(text, "sweep", "a file")


def test_deep_nesting_is_one_error_not_a_recursion_traceback():
    with pytest.raises(ConfigError, match="invalid YAML in a file"):
        load_yaml_text("[" * 5000 + "]" * 5000, "config", "a file")
