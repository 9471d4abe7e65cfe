"""The classification task's own checks: labels outside [0, num_classes) are one error before
anything starts (read where they are at hand), and one that slips through fails as bad data, not
as an IndexError a retry would meet again."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from raysparse.errors import ConfigError
from raysparse.tasks import build_task

FIELD, WHAT = "data.factory", "'lab:make'"


class Counted(Dataset):
    """Labels only through __getitem__, which counts its calls; ``targets`` when given, as
    torchvision's datasets have them."""

    def __init__(self, labels, targets=None):
        self.items, self.reads = list(labels), 0
        if targets is not None:
            self.targets = targets

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.reads += 1
        return torch.zeros(4), self.items[i]


def describe(splits, **given):
    return build_task("classification").describe_data(splits, given, FIELD, WHAT)


def test_a_label_past_the_given_num_classes_is_found_in_targets_without_reading_examples():
    train, val = Counted([0, 1, 2], targets=[0, 1, 2]), Counted([0, 1, 2], targets=[3, 0, 1])
    with pytest.raises(ConfigError, match=r"^data\.factory: 'lab:make' returned label 3 in its 'val' split; "
                                          r"allowed: labels in \[0, 3\) \(num_classes=3 as given\)$"):
        describe({"train": train, "val": val, "test": Counted([0], targets=[0])}, num_classes=3)
    assert val.reads == 0 and train.reads == 1  # train[0]: the example's form


def test_a_negative_label_is_refused_from_a_tensor_dataset_and_from_read_examples():
    images = torch.zeros(5, 4)
    with pytest.raises(ConfigError, match=r"returned label -1 in its 'test' split; allowed: labels in \[0, 10\)"):
        describe({"train": TensorDataset(images, torch.arange(5)),
                  "test": TensorDataset(images, torch.tensor([0, 1, -1, 2, 3]))}, num_classes=10)
    # no num_classes: every example is read, and -1 is no class though the largest label fits
    with pytest.raises(ConfigError, match=r"returned label -1 in its 'train' split; allowed: labels in \[0, 3\) "
                                          r"\(num_classes=3: the largest label \+ 1\)$"):
        describe({"train": Counted([2, -1, 0]), "test": Counted([1])})
    # -100 is cross_entropy's ignore_index: it would train silently as "no label", so it is refused too
    with pytest.raises(ConfigError, match=r"returned label -100 in its 'train' split"):
        describe({"train": TensorDataset(images, torch.tensor([0, 1, -100, 1, 0])),
                  "test": TensorDataset(images, torch.arange(5))}, num_classes=5)


def test_a_subset_is_checked_on_its_own_examples_only():
    images, labels = torch.zeros(6, 4), torch.tensor([0, 1, 2, 0, 1, 99])  # 99: outside the subset
    whole = TensorDataset(images, labels)
    info = describe({"train": Subset(whole, [0, 1, 2, 3]), "test": Subset(whole, [4, 0])}, num_classes=3)
    assert info["num_classes"] == 3 and info["input_shape"] == (4,)
    with pytest.raises(ConfigError, match=r"returned label 99 in its 'test' split"):
        describe({"train": Subset(whole, [0, 1, 2]), "test": Subset(whole, [4, 5])}, num_classes=3)


def test_labels_in_range_pass_and_big_data_without_targets_is_not_read():
    train, test = Counted([1, 0, 2, 1]), Counted([0, 2])
    info = describe({"train": train, "test": test}, num_classes=3)
    assert info["num_classes"] == 3 and (train.reads, test.reads) == (1, 0)
    inferred = describe({"train": Counted([1, 0, 2, 1]), "test": Counted([0, 4])})
    assert inferred["num_classes"] == 5  # the largest label over every split, plus one


def test_a_label_that_slips_through_fails_training_and_evaluation_as_bad_data():
    task, model = build_task("classification"), nn.Linear(4, 3)
    x, labels = torch.randn(4, 4), torch.tensor([0, 2, 3, 1])
    with pytest.raises(ConfigError, match=r"^data: a batch holds label 3; allowed: labels in \[0, 3\)"):
        task.loss(model, (x, labels))
    with pytest.raises(ConfigError, match=r"^data: a batch holds label -2; allowed: labels in \[0, 3\)"):
        task.evaluate(model, DataLoader(TensorDataset(x, torch.tensor([0, -2, 1, 1])), batch_size=2),
                      torch.device("cpu"))
    loss, count = task.loss(model, (x, torch.tensor([0, 2, 2, 1])))
    assert torch.isfinite(loss) and count == 4
