"""The one training loop, its checkpoints and metrics.

Light on import: ``raysparse`` imports this package first, so that its function ``raysparse.train``
keeps the name (a package loaded later would overwrite it); torch loads with ``fit``.
"""

from raysparse.errors import TrainingDiverged

__all__ = ["EpochContext", "TrainingDiverged", "fit"]


def __getattr__(name: str):
    if name in ("EpochContext", "fit"):
        from raysparse.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'raysparse.train' has no attribute {name!r}")
