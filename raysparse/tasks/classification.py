"""Classification: ``(input, int label)`` examples, logits ``[batch, num_classes]``; cross-entropy,
accuracy. The default task, as every raysparse run was before tasks existed (same numbers)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from raysparse.errors import ConfigError
from raysparse.tasks.base import MAX, MIN, Task, logits_of
from raysparse.tasks.registry import register_task


@register_task
class Classification(Task):
    name = "classification"
    metrics = {"accuracy": MAX, "loss": MIN}
    data_keys = ("num_classes",)

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        x, y = batch
        logits = logits_of(model(x))
        return _cross_entropy(logits, y, label_smoothing=self.label_smoothing), y.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        for batch in loader:
            x, y = self.to_device(batch, device)
            logits = logits_of(model(x))
            loss_sum += float(_cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
            total += y.numel()
        if total == 0:
            return {"accuracy": float("nan"), "loss": float("nan")}
        return {"accuracy": correct / total, "loss": loss_sum / total}

    # ---- data -------------------------------------------------------------------------------
    def describe_data(self, splits: Mapping[str, Dataset], given: Mapping, field: str, what: str) -> dict:
        example = splits["train"][0]
        ok = isinstance(example, (tuple, list)) and len(example) == 2 and isinstance(example[0], torch.Tensor)
        if not ok or _label(example[1]) is None:
            shown = type(example).__name__ if not isinstance(example, (tuple, list)) else \
                "(" + ", ".join(type(v).__name__ for v in example) + ")"
            raise ConfigError(field, f"train[0] of {what} is {shown}; expected (tensor, int label) for task "
                              "classification (a language model: task: causal_lm)")
        num_classes = given.get("num_classes")
        # given num_classes, a split is checked where its labels are at hand (targets, labels, a
        # TensorDataset's tensor): reading every example of big data is what giving it avoids
        ranges = {name: _label_range(split, read_all=num_classes is None) for name, split in splits.items()}
        if num_classes is None:
            num_classes = max(high for _, high in ranges.values()) + 1
        elif ranges["train"] is None:
            ranges["train"] = (_label(example[1]), _label(example[1]))
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(field, f"{what} gives num_classes={num_classes!r}; expected an integer >= 2")
        source = " as given" if "num_classes" in given else ": the largest label + 1"
        for name, found in ranges.items():
            bad = [label for label in found or () if not 0 <= label < num_classes]
            if bad:
                raise ConfigError(field, f"{what} returned label {bad[0]} in its {name!r} split; allowed: labels "
                                  f"in [0, {num_classes}) (num_classes={num_classes}{source})")
        return {**given, "input_shape": tuple(example[0].shape), "num_classes": num_classes}

    def check_output(self, output, batch, info: Mapping, field: str) -> None:
        x = batch[0]
        expected = [len(x), info["num_classes"]]
        got = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        if not isinstance(output, torch.Tensor) or list(output.shape) != expected:
            raise ConfigError(field, f"a batch of shape {list(x.shape)} gives outputs {got}; expected {expected} "
                              f"([batch, num_classes], num_classes={info['num_classes']}; a language model "
                              "gives [batch, seq, vocab]: task: causal_lm)")

    def example_batch(self, dataset: Dataset, size: int):
        # zeros of the example shape, as every classifier was measured before tasks existed:
        # FLOPs and latency do not depend on the values, and the figures stay the same
        x, _ = dataset[0]
        return torch.zeros(size, *x.shape, dtype=x.dtype), torch.zeros(size, dtype=torch.long)


def _label(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value)
    return None


def _label_range(dataset, *, read_all: bool) -> tuple[int, int] | None:
    """The smallest and largest label, from ``targets`` / ``labels`` when the Dataset has them (as
    torchvision's do); otherwise (``read_all``) every example is read once: give num_classes for
    big data. None: not at hand, and not read."""
    labels = _labels_at_hand(dataset)
    if labels is None and read_all:
        labels = torch.as_tensor([int(dataset[i][1]) for i in range(len(dataset))])
    return None if labels is None else (int(labels.min()), int(labels.max()))


def _labels_at_hand(dataset) -> torch.Tensor | None:
    if isinstance(dataset, Subset):
        labels = _labels_at_hand(dataset.dataset)
        return None if labels is None else labels[list(dataset.indices)]
    found = next((getattr(dataset, a) for a in ("targets", "labels") if getattr(dataset, a, None) is not None), None)
    if found is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        found = dataset.tensors[1]
    try:
        labels = torch.as_tensor(found) if found is not None else None
    except (TypeError, ValueError, RuntimeError):  # not numbers (class names): read the examples
        return None
    if labels is None or labels.numel() == 0 or labels.is_floating_point() or labels.dtype == torch.bool:
        return None
    return labels


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, **options) -> torch.Tensor:
    try:
        return nn.functional.cross_entropy(logits, labels, **options)
    except IndexError:  # a label outside [0, num_classes) (on the CPU; CUDA asserts): no retry changes it
        outside = labels[(labels < 0) | (labels >= logits.shape[-1])]
        if outside.numel() == 0:
            raise
        raise ConfigError("data", f"a batch holds label {int(outside[0])}; allowed: labels in "
                          f"[0, {logits.shape[-1]}) (the model's outputs per example)") from None
