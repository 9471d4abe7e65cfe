"""A local Ray runtime that only this machine can reach."""

from __future__ import annotations

import ray
from ray._private import ray_constants

from raysparse.search.worker_path import init_ray

LOOPBACK = "127.0.0.1"


def start_local_ray(**options) -> None:
    """``ray.init`` of a new local runtime whose servers all listen on 127.0.0.1: GCS, raylet
    (node and object manager), every worker's gRPC server, the dashboard agent (and its metrics
    export), the runtime-env agent, the autoscaler monitor's and the dashboard's metrics. Ray's
    token auth stays as Ray sets it (on, for a local runtime). New, always: ``address="local"``
    neither joins a cluster named by RAY_ADDRESS nor one that ``ray start`` left on this machine
    (``--address`` is the way to a cluster). Its workers find the driver's directories after the
    standard library and site-packages (``worker_path.init_ray``)."""
    # Ray 2.60 binds each of these to loopback only when the node's IP is 127.0.0.1, and to every
    # interface otherwise. But on Linux ray.init replaces a node IP of 127.0.0.1 by the machine's
    # own address (services.resolve_ip_for_localhost), so that other nodes could join, unless
    # clusters are off, as Ray has them on macOS and Windows. A local runtime is never joined:
    # turn them off for this call only (a later ray.init(address=...) in this process is unchanged).
    clusters = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        init_ray("local", _node_ip_address=LOOPBACK, **options)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = clusters
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # a Ray that resolves it otherwise must not expose the runtime unnoticed
        ray.shutdown()
        raise RuntimeError(f"the local Ray runtime took node IP {node_ip}, not {LOOPBACK}, so its servers would "
                           f"listen beyond this machine: Ray {ray.__version__} is not the 2.60 this was made for; "
                           f"stopped it")
