"""Credentials never stored: a tracking URI's ``user:password@`` goes to MLflow's own environment
variables (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, which the MLflow client
sends as basic auth), and every copy raysparse keeps (the sweep's state file, Tune's pickles,
params, tags, the report) holds the URI without them. Ray's local workers inherit the driver's
environment; a cluster's nodes need the two variables set (cluster.yaml), as a resume does."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def without_credentials(uri: str) -> str:
    """``http://alice:S3cret@host:5000`` -> ``http://host:5000``, the user and password set in this
    process's environment for MLflow (a URI without them is returned as it is)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    os.environ[USERNAME] = unquote(parts.username or "")
    if parts.password is not None:
        os.environ[PASSWORD] = unquote(parts.password)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 address keeps its brackets
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))
