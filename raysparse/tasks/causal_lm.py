"""Causal language modelling: token-id blocks in, logits ``[batch, seq, vocab]`` out; next-token
cross-entropy, perplexity.

Examples are a LongTensor of token ids (the labels are the ids), an ``(input_ids, labels)`` pair
or a dict with ``input_ids`` and optionally ``attention_mask`` and ``labels`` (HF collators).
The shift happens once, here: logits at position t predict the label at t + 1; labels equal to
``ignore_index`` and padded positions (``attention_mask == 0``) count nowhere. Perplexity is the
exponential of the token-weighted mean loss over the whole split, never a mean of per-batch
perplexities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from raysparse.errors import ConfigError
from raysparse.tasks.base import MIN, Task, TaskOptions, call, describe_input, logits_of
from raysparse.tasks.registry import register_task


@dataclass(frozen=True)
class CausalLMOptions(TaskOptions):
    ignore_index: int = -100  # labels that count nowhere (PyTorch's and HF's convention)
    # evaluation runs the model on at most this many tokens at once (whole examples, at least one):
    # the logits of 8 blocks of 512 tokens over a 49k vocabulary are 0.8 GB, twice with the loss
    eval_tokens: int = 2048
    # > 0: report kl_to_dense, the mean KL divergence of the network's next-token distribution from
    # the dense network's, over this many shuffled training (calibration) batches
    kl_to_dense: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.eval_tokens, bool) or not isinstance(self.eval_tokens, int) or self.eval_tokens < 1:
            raise ConfigError("task.eval_tokens", f"got {self.eval_tokens!r}; allowed: an integer >= 1")
        if isinstance(self.kl_to_dense, bool) or not isinstance(self.kl_to_dense, int) or self.kl_to_dense < 0:
            raise ConfigError("task.kl_to_dense", f"got {self.kl_to_dense!r}; allowed: an integer >= 0 "
                              "(training batches to compare on; 0: no kl_to_dense)")


@register_task
class CausalLM(Task):
    name = "causal_lm"
    Options = CausalLMOptions
    metrics = {"perplexity": MIN, "loss": MIN}
    data_keys = ("vocab_size", "block_size")

    def ids_and_labels(self, batch) -> tuple[object, torch.Tensor]:
        """(model input, labels already shifted to line up with the logits' positions)."""
        if isinstance(batch, Mapping):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            labels = batch.get("labels", batch["input_ids"]).clone()
            if "attention_mask" in batch:
                labels[batch["attention_mask"] == 0] = self.options.ignore_index
        elif isinstance(batch, (tuple, list)):  # (ids, labels), or (ids,) as a one-tensor TensorDataset gives
            inputs, labels = batch[0], batch[1] if len(batch) > 1 else batch[0]
        else:
            inputs, labels = batch, batch
        return inputs, labels[:, 1:]

    def token_losses(self, model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        """(summed next-token cross-entropy, tokens it sums over)."""
        inputs, labels = self.ids_and_labels(batch)
        logits = logits_of(call(model, inputs))[:, :-1]
        ignore = self.options.ignore_index
        total = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=ignore,
            reduction="sum", label_smoothing=self.label_smoothing,
        )
        return total, int((labels != ignore).sum())

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, int]:
        total, tokens = self.token_losses(model, batch)
        return total / max(tokens, 1), tokens

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        tokens = 0
        for batch in loader:
            for part in _parts(batch, self.options.eval_tokens):
                total, count = self.token_losses(model, self.to_device(part, device))
                loss_sum += total.double()
                tokens += count
        if tokens == 0:
            return {"perplexity": float("nan"), "loss": float("nan")}
        loss = float(loss_sum) / tokens
        return {"perplexity": math.exp(min(loss, 700.0)), "loss": loss}  # exp(700): the float's ceiling

    # ---- kl_to_dense ------------------------------------------------------------------------
    def reference_metrics(self) -> dict[str, str]:
        return {"kl_to_dense": MIN} if self.options.kl_to_dense else {}

    def reference_batches(self) -> int:
        return self.options.kl_to_dense

    @torch.no_grad()
    def capture_reference(self, model: nn.Module, batches: list, device: torch.device) -> list[torch.Tensor]:
        """The dense network's next-token log-probabilities at every counted position, per part
        (float32 on the CPU: 4 bytes times the vocabulary per token)."""
        was_training = model.training
        model.eval()
        try:
            return [self._log_probs(model, part, device)[0].cpu() for batch in batches
                    for part in _parts(batch, self.options.eval_tokens)]
        finally:
            model.train(was_training)

    @torch.no_grad()
    def compare_to_reference(self, model: nn.Module, batches: list, reference: list[torch.Tensor],
                             device: torch.device) -> dict[str, float]:
        """KL(dense || now), summed over the vocabulary, averaged over the counted positions."""
        was_training = model.training
        model.eval()
        total, tokens = 0.0, 0
        try:
            parts = [part for batch in batches for part in _parts(batch, self.options.eval_tokens)]
            for part, dense in zip(parts, reference, strict=True):
                now, _ = self._log_probs(model, part, device)
                dense = dense.to(now.device)
                total += float((dense.exp() * (dense - now)).sum(dtype=torch.float64))
                tokens += len(dense)
        finally:
            model.train(was_training)
        return {"kl_to_dense": total / max(tokens, 1)}

    def _log_probs(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-softmax of the logits at the positions whose label counts, ``[tokens, vocab]``."""
        inputs, labels = self.ids_and_labels(self.to_device(batch, device))
        logits = logits_of(call(model, inputs))[:, :-1]
        counted = labels != self.options.ignore_index
        return torch.log_softmax(logits[counted].float(), dim=-1), counted

    # ---- data -------------------------------------------------------------------------------
    def describe_data(self, splits: Mapping[str, Dataset], given: Mapping, field: str, what: str) -> dict:
        example = splits["train"][0]
        ids = example.get("input_ids") if isinstance(example, Mapping) else \
            example[0] if isinstance(example, (tuple, list)) else example
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.is_floating_point() or len(ids) < 2:
            shown = describe_input(ids) if isinstance(ids, torch.Tensor) else type(example).__name__
            raise ConfigError(field, f"train[0] of {what} is {shown}; expected for task causal_lm a 1-d integer "
                              "tensor of at least 2 token ids, an (input_ids, labels) pair or a dict with input_ids")
        vocab = given.get("vocab_size")
        if vocab is not None and (isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2):
            raise ConfigError(field, f"{what} gives vocab_size={vocab!r}; expected an integer >= 2")
        return {**given, "block_size": given.get("block_size", len(ids))}

    def check_output(self, output, batch, info: Mapping, field: str) -> None:
        inputs, _ = self.ids_and_labels(batch)
        ids = inputs["input_ids"] if isinstance(inputs, Mapping) else inputs
        try:
            logits = logits_of(output)
        except TypeError as err:
            raise ConfigError(field, str(err)) from None
        vocab = info.get("vocab_size")
        shape = list(logits.shape)
        if logits.dim() != 3 or shape[:2] != list(ids.shape) or (vocab is not None and shape[2] < vocab):
            raise ConfigError(field, f"token ids {list(ids.shape)} give logits {shape}; expected "
                              f"[{ids.shape[0]}, {ids.shape[1]}, vocab{'' if vocab is None else f' >= {vocab}'}] "
                              "([batch, seq, vocab])")
        top = int(ids.max())
        if top >= shape[2]:
            raise ConfigError(field, f"the data has token id {top}, but the model's vocabulary has {shape[2]} entries")


def _parts(batch, tokens: int):
    """``batch`` in consecutive slices of whole examples, at most ``tokens`` tokens each (one
    example at least); tensors, tuples and dicts of them alike."""
    first = batch if isinstance(batch, torch.Tensor) else \
        next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    rows = max(1, tokens // max(1, first.shape[-1])) if first.dim() > 1 else len(first)
    for start in range(0, len(first), rows):
        yield _rows(batch, start, start + rows)


def _rows(batch, start: int, end: int):
    if isinstance(batch, torch.Tensor):
        return batch[start:end]
    if isinstance(batch, Mapping):
        return {k: _rows(v, start, end) for k, v in batch.items()}
    return type(batch)(_rows(v, start, end) for v in batch)
