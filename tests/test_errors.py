"""ConfigError survives what Ray does to a trial's exception: copy it and pickle it."""

import copy
import pickle

from raysparse.errors import ConfigError


def test_config_error_keeps_field_and_message_through_copy_and_pickle():
    err = ConfigError("robustness.reference", "got 'ref.pt'; allowed: an existing state_dict file")
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert isinstance(again, ConfigError)
        assert (again.field, again.message, str(again)) == (err.field, err.message, str(err))
