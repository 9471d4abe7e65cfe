"""ConfigError survives what Ray does to a trial's exception: copy it and pickle it."""

import copy
import pickle

from raysparse.errors import ConfigError


def test_config_error_keeps_field_and_message_through_copy_and_pickle():
    err = ConfigError("robustness.reference", "got 'ref.pt'; allowed: an existing state_dict file")
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert isinstance(again, ConfigError)
        assert (again.field, again.message, str(again)) == (err.field, err.message, str(err))


def test_a_huge_value_or_another_errors_lines_still_make_one_short_line():
    huge = ConfigError("model.hidden", f"got {[list(range(100))] * 10_000!r}; allowed: a list of integers")
    assert len(str(huge)) < 1100 and "characters cut]" in str(huge)
    assert str(huge).startswith("model.hidden: got [[0, 1, 2") and str(huge).endswith("allowed: a list of integers")
    relayed = ConfigError("--address", "no Ray dashboard answers (Connection refused\n  retried 3 times)")
    assert "\n" not in str(relayed) and str(relayed).endswith("retried 3 times)")
    again = pickle.loads(pickle.dumps(huge))
    assert (again.field, again.message) == (huge.field, huge.message)
