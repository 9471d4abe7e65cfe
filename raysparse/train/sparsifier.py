"""Sparse training in a loop of your own: the method hooks the one loop calls, behind three calls.

    sparsifier = raysparse.Sparsifier(model, optimizer, {"method": "rigl", "final_sparsity": 0.9},
                                      steps_per_epoch=len(loader), epochs=10)
    for epoch in range(10):
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y) + sparsifier.penalty()
            loss.backward()
            optimizer.step()
            sparsifier.step()        # before the next zero_grad: growth reads the gradients

The method's ``after_backward`` hook runs inside ``optimizer.step()`` (a step pre-hook), at the
same point as in ``fit``; ``step()`` applies the masks, updates them on the method's schedule
and calls ``on_epoch_end`` every ``steps_per_epoch`` steps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from raysparse.config import load_config
from raysparse.errors import ConfigError
from raysparse.methods import SparseMethod, get_method
from raysparse.sparsity.masks import MaskSet


class Sparsifier:
    """Masks ``model``'s prunable weights by ``sparsity`` (a dict like a config's ``sparsity:``
    block) over ``epochs`` epochs of ``steps_per_epoch`` optimizer steps.

    ``loss_fn`` (default cross-entropy) and ``train_batches`` (a zero-argument callable giving
    an iterator of ``(x, y)`` training batches) are what a method may need for estimates of its
    own; ``input_shape`` (one example's) is otherwise read from the first forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        sparsity: Mapping,
        *,
        steps_per_epoch: int,
        epochs: int,
        seed: int = 0,
        loss_fn: Callable | None = None,
        train_batches: Callable[[], Iterator] | None = None,
        input_shape: tuple[int, ...] | None = None,
    ):
        for name, value in (("steps_per_epoch", steps_per_epoch), ("epochs", epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(name, f"got {value!r}; allowed: an integer >= 1")
        if not isinstance(sparsity, Mapping):
            raise ConfigError("sparsity", f"got {type(sparsity).__name__}; allowed: a mapping like a config's "
                              "sparsity block")
        config = load_config({"epochs": epochs, "seed": seed, "sparsity": dict(sparsity)})
        method_class = get_method(config.sparsity.method)
        if getattr(method_class, "rebuilds_model", False):
            raise ConfigError("sparsity.method", f"{config.sparsity.method!r} rebuilds the model's structure "
                              "(channels removed), which your loop's optimizer cannot follow; train it with "
                              "raysparse.train or a sweep, whose loop rebuilds the optimizer")
        self.model, self.steps_per_epoch, self.epochs = model, steps_per_epoch, epochs
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        if self.input_shape is None:
            self._shape_hook = model.register_forward_pre_hook(self._record_input_shape)
        self.method: SparseMethod = method_class(config.sparsity, seed=seed)
        self.method.bind(loss_fn=loss_fn or nn.CrossEntropyLoss(),
                         train_batches=train_batches or _needs_batches(config.sparsity.method),
                         input_shape=self.input_shape)
        self.steps = 0
        self.method.attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs)
        # the gradients of this step, before the optimizer moves the weights: where fit calls it
        optimizer.register_step_pre_hook(lambda *_: self.method.after_backward(self.steps))
        self.method.on_train_start()

    def _record_input_shape(self, module, args) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.input_shape = tuple(args[0].shape[1:])
            self._shape_hook.remove()

    def step(self) -> None:
        """After every ``optimizer.step()``: apply the masks, update them when the schedule says."""
        self.method.after_optimizer_step(self.steps)
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:
            self.method.on_epoch_end(self.steps // self.steps_per_epoch - 1)

    def penalty(self) -> torch.Tensor:
        """The term the method adds to the loss (DST's threshold penalty; zero for the others)."""
        term = self.method.regularization_loss()
        if term is None:
            device = next(iter(self.model.parameters()), torch.empty(0)).device
            return torch.zeros((), device=device)
        return term

    @property
    def density(self) -> float:
        """Kept fraction of the prunable weights."""
        return self.method.density()

    def layer_density(self) -> dict[str, float]:
        return self.method.layer_density()

    @property
    def masks(self) -> MaskSet:
        return self.method.masks

    def export(self) -> nn.Module:
        """A plain copy of the model, masks multiplied into its weights, no method machinery."""
        plain = self.method.export(self.model)
        if plain is self.model:
            plain = copy.deepcopy(self.model)
        if self.masks.apply_to_weights:  # what a step did not mask yet (an optimizer step since) is masked here
            with torch.no_grad():
                for name, mask in self.masks.masks.items():
                    plain.get_submodule(name).weight.mul_(mask)
        return plain

    def state_dict(self) -> dict:
        """Masks, counters and decay state (the model's and optimizer's own state are yours)."""
        return {"method": self.method.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state["method"])
        self.steps = int(state["steps"])


def _needs_batches(method: str) -> Callable[[], Iterator]:
    def missing() -> Iterator:
        raise ConfigError("sparsity.method", f"{method!r} estimates from training batches: pass "
                          "Sparsifier(..., train_batches=fn), fn() giving an iterator of (x, y) batches")

    return missing
