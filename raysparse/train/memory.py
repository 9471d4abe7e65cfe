"""Does a run's model fit in this machine's memory? Counted on the meta device, so a network of
10^10 weights is refused in milliseconds instead of being allocated until the kernel kills it.

The estimate is a lower bound: per parameter, the weight, its gradient, the mask multiplier
(MaskSet's float copy) and the optimizer's buffers (1 for SGD with momentum, 2 for Adam/AdamW)
at the parameter's element size, plus two bool bytes (the mask and the loop's snapshot of it).
Activations come on top and depend on the batch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from raysparse.errors import ConfigError

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def optimizer_buffers(optimizer) -> int:
    if optimizer.name in ("adam", "adamw"):
        return 2
    return 1 if optimizer.momentum > 0 else 0


def training_bytes(spec: Mapping, info: Mapping, optimizer) -> tuple[int, int]:
    """(parameters, bytes to train them) of a zoo model for data described by ``info``, built on
    the meta device."""
    from raysparse.zoo.models import build_model

    with torch.device("meta"):
        model = build_model(spec, info)
    params = list(model.parameters())
    copies = 3 + optimizer_buffers(optimizer)  # weight, gradient, mask multiplier, optimizer state
    needed = sum(p.numel() * (p.element_size() * copies + 2) for p in params)
    return sum(p.numel() for p in params), needed


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, or less under a cgroup limit."""
    found = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else -1
        if pages > 0:
            found.append(pages * os.sysconf("SC_PAGE_SIZE"))
    try:  # cgroup v2: a container's limit may be far below the machine's memory
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int((_CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_fits_in_memory(config, info: Mapping, field: str = "model") -> None:
    """A ConfigError on ``field`` when training the config's zoo model needs more memory than is
    available here. Models of the user's are built by their own code (``check_user_code``), and
    a GPU run's weights live on the GPU: neither is estimated here."""
    spec = config.model
    if "name" not in spec or config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return
    available = available_memory()
    if available is None:
        return
    params, needed = training_bytes(spec, info, config.optimizer)
    if needed > available:
        raise ConfigError(field, f"{spec['name']!r} has {params:,} parameters; training it needs at least "
                          f"{_gib(needed)} (weights, gradients, masks and optimizer state), and this machine has "
                          f"{_gib(available)} available; choose a smaller model")


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def release_freed_memory() -> None:
    """Free what only the cyclic collector can (a finished run's network sits in reference cycles:
    a method's callbacks into its run), then hand the freed heap back to the system: glibc keeps
    it otherwise, and a process that held a 0.5 GB network stays that large (malloc_trim, Linux)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the collection alone
        pass
