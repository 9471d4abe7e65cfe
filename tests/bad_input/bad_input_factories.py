"""User code for the bad-input corpus: factories that a config names by import path and that
are wrong in one way each (the corpus files' directory is importable, as a sweep file's is)."""

import torch
from torch import nn
from torch.utils.data import TensorDataset


def raises(width: int = 8):
    raise ValueError(f"width {width} needs a GPU")


def three_outputs(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def not_a_module():
    return "a network"


class NoWeights(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]


def small_mlp(input_shape, num_classes, width: int = 16):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))


def no_test_split():
    return {"train": TensorDataset(torch.zeros(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))}


def float_labels():
    split = TensorDataset(torch.zeros(8, 1, 8, 8), torch.zeros(8))
    return {"train": split, "test": split}


def a_list():
    return [torch.zeros(3)]


def label_beyond_num_classes():
    """num_classes=10 given, but the test split holds a 10 (labels run 1..10, not 0..9)."""
    images, labels = torch.zeros(20, 1, 8, 8), torch.arange(20) % 10
    return {"train": TensorDataset(images, labels), "test": TensorDataset(images, labels + 1), "num_classes": 10}


def negative_label():
    """No num_classes: it is the largest label + 1, and a -1 (an "unlabelled" marker) is no class."""
    labels = torch.arange(20) % 4
    labels[7] = -1
    split = TensorDataset(torch.zeros(20, 1, 8, 8), labels)
    return {"train": split, "test": split}
