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
from raysparse.sparsity.masks import MaskSet, weight_slots
from raysparse.tasks import DEFAULT_TASK, Task, build_task, logits_of, move


class Sparsifier:
    """Masks ``model``'s prunable weights by ``sparsity`` (a dict like a config's ``sparsity:``
    block) over ``epochs`` epochs of ``steps_per_epoch`` optimizer steps.

    ``task`` (a ``raysparse.tasks.Task`` or a task's name; default classification) says how a
    batch is fed to the model and scored, ``loss_fn(output, target)`` replaces its loss, and
    ``train_batches`` (a zero-argument callable giving an iterator of training batches) is what a
    method may need for estimates of its own. The first forward pass's input is kept (two
    examples, on the CPU) as the real example a trial exports the model with.
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
        task: Task | str = DEFAULT_TASK,
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
        self.task = task if isinstance(task, Task) else build_task(task, field="task")
        if loss_fn is not None:
            self.task = _WithLoss(self.task, loss_fn)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.example_input = None  # the first forward pass's input: two real examples, on the CPU
        self._example_hook = model.register_forward_pre_hook(self._record_example, with_kwargs=True)
        self.method: SparseMethod = method_class(config.sparsity, seed=seed)
        self.method.bind(task=self.task, train_batches=train_batches or _needs_batches(config.sparsity.method),
                         example_input=self._example_on_model_device)
        self.steps = 0
        self.method.attach(model, optimizer, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * epochs)
        # the gradients of this step, before the optimizer moves the weights: where fit calls it
        optimizer.register_step_pre_hook(lambda *_: self.method.after_backward(self.steps))
        self.method.on_train_start()

    def _record_example(self, module, args, kwargs) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.example_input = args[0][:2].detach().cpu()
            self.input_shape = self.input_shape or tuple(args[0].shape[1:])
        elif not args and kwargs and all(isinstance(v, torch.Tensor) for v in kwargs.values()):
            self.example_input = {k: v[:2].detach().cpu() for k, v in kwargs.items()}  # an HF model's keywords
        else:
            return
        self._example_hook.remove()

    def _example_on_model_device(self):
        if self.example_input is None:
            raise RuntimeError("the Sparsifier has seen no forward pass yet, so it has no example input")
        device = next(self.model.parameters()).device
        return move(self.example_input[:1] if isinstance(self.example_input, torch.Tensor) else
                    {k: v[:1] for k, v in self.example_input.items()}, device)

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
            slots = weight_slots(plain)  # an attention mask names a parameter, not a module's .weight
            with torch.no_grad():
                for name, mask in self.masks.masks.items():
                    module, attribute = slots[name]
                    getattr(module, attribute).mul_(mask)
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


class _WithLoss(Task):
    """A task whose loss is the user's ``loss_fn(output, target)`` (the Sparsifier's ``loss_fn=``)."""

    def __init__(self, task: Task, loss_fn: Callable):
        super().__init__(task.options, label_smoothing=task.label_smoothing)
        self.inner, self.loss_fn = task, loss_fn
        self.metrics, self.name = task.metrics, task.name

    def loss(self, model, batch):
        inputs, target = batch[0], batch[1]
        return self.loss_fn(logits_of(model(inputs)), target), len(inputs)

    def evaluate(self, model, loader, device):
        return self.inner.evaluate(model, loader, device)
