"""The one training loop, its checkpoints and metrics."""

from raysparse.train.loop import EpochContext, TrainingDiverged, fit

__all__ = ["EpochContext", "TrainingDiverged", "fit"]
