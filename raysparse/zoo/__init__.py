"""Models and datasets by name: ``build_model({"name": "resnet20"}, ...)``, ``build_data(...)``."""

from raysparse.zoo import formats, gpt, hf, text  # noqa: F401 - register on-disk datasets, "text", models "gpt", "hf"
from raysparse.zoo.datasets import (
    DATASETS,
    DataSplits,
    build_data,
    dataset_names,
)
from raysparse.zoo.loaders import TensorSplit, make_loader
from raysparse.zoo.models import MODELS, build_model, model_names
from raysparse.zoo.registry import Registry

__all__ = [
    "DATASETS",
    "MODELS",
    "DataSplits",
    "Registry",
    "TensorSplit",
    "build_data",
    "build_model",
    "dataset_names",
    "make_loader",
    "model_names",
]
