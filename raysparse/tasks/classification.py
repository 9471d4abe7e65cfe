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
        return nn.functional.cross_entropy(logits, y, label_smoothing=self.label_smoothing), y.numel()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        for batch in loader:
            x, y = self.to_device(batch, device)
            logits = logits_of(model(x))
            loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
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
        if num_classes is None:
            num_classes = max(_max_label(split) for split in splits.values()) + 1
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(field, f"{what} gives num_classes={num_classes!r}; expected an integer >= 2")
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


def _max_label(dataset) -> int:
    """The largest label, read from ``targets`` / ``labels`` when the Dataset has them (as
    torchvision's do); otherwise every example is read once: give num_classes for big data."""
    if isinstance(dataset, Subset):
        return int(torch.as_tensor(_labels(dataset.dataset))[list(dataset.indices)].max())
    return int(torch.as_tensor(_labels(dataset)).max())


def _labels(dataset):
    for attribute in ("targets", "labels"):
        if getattr(dataset, attribute, None) is not None:
            return getattr(dataset, attribute)
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    return [int(dataset[i][1]) for i in range(len(dataset))]
