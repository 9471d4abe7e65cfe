"""Block-sequential calibration, the protocol of SparseGPT and Wanda's released code on LLMs.

The inputs of the first transformer block are captured once per calibration batch (the forward
pass stopped where it reaches the block: its positional and keyword arguments, e.g. an HF Llama
layer's hidden states, attention mask, position ids and rotary ``position_embeddings``). Then each
block in turn runs over those inputs with hooks on its layers collecting statistics, its layers
are pruned, and it runs again with the pruned weights: its outputs are the next block's inputs.
So a block's statistics see every block before it pruned, only one block's activations are held,
and the model costs about two block passes per block and batch instead of a full forward pass
per pruned layer.

Every block gets block 0's arguments besides the hidden states: exact only where the model runs
its blocks one after another, each on the one before's output, all with the same other arguments.
``chain_problem`` checks that on one batch before anything is pruned (a model that passes per-layer
masks, e.g. alternating sliding-window attention, fails it and is pruned layer by layer). A KV
cache the model hands its blocks (``past_key_values``) would grow with every rerun of a block, so
it is dropped and ``use_cache`` set false. Layers outside the blocks form two more groups: those
the forward pass reaches before the first block (a ViT's patch embedding) are pruned first, from
inputs the pass computes up to there; the others (an untied LM head) last, from full passes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

Inputs = tuple[tuple, dict]  # a block's positional and keyword arguments for one batch
# keyword arguments that carry a KV cache, and what they become when a block is rerun
_NO_CACHE = {"past_key_values": None, "past_key_value": None, "layer_past": None, "use_cache": False}
_PROJECTIONS = (nn.Linear, nn.Conv1d, nn.Conv2d)


class _Reached(Exception):
    """Raised by a pre-hook to stop the forward pass where it reaches a block."""


def transformer_blocks(model: nn.Module) -> tuple[nn.ModuleList, str] | None:
    """The model's stack of transformer blocks and its name (``model.layers`` in an HF Llama): the
    nn.ModuleList with the most children that are all of one class, not a projection themselves,
    and each hold an nn.Linear. None where there is no such list (a plain MLP)."""
    best: tuple[nn.ModuleList, str] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        children = list(module)
        if len({type(c) for c in children}) != 1 or isinstance(children[0], _PROJECTIONS):
            continue
        if all(any(isinstance(m, nn.Linear) for m in c.modules()) for c in children):
            if best is None or len(module) > len(best[0]):
                best = (module, name)
    return best


def run_until(block: nn.Module, run: Callable) -> Callable[[Any], Inputs | None]:
    """``run(batch)`` stopped where the forward pass reaches ``block``: returns the block's
    ``(args, kwargs)``, or None where the pass never reaches it."""
    def stopped(batch) -> Inputs | None:
        seen: list[Inputs] = []

        def hook(module, args, kwargs):
            seen.append((args, dict(kwargs)))
            raise _Reached

        handle = block.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            run(batch)
        except _Reached:
            pass
        finally:
            handle.remove()
        return seen[0] if seen else None
    return stopped


@torch.no_grad()
def capture_block_inputs(model: nn.Module, run: Callable, batches: Iterable, first_block: nn.Module) -> list[Inputs]:
    """The ``(args, kwargs)`` ``first_block`` receives from ``run(batch)``, one per batch, in eval
    mode; the forward pass stops there. A KV cache among the keywords is dropped."""
    was_training = model.training
    model.eval()
    try:
        stopped, cached = run_until(first_block, run), []
        for batch in batches:
            inputs = stopped(batch)
            if inputs is None:
                raise RuntimeError("the forward pass never reached the first transformer block")
            args, kwargs = inputs
            _hidden(args, kwargs)  # refuse a call whose hidden states cannot be found, before pruning
            cached.append((args, {k: _NO_CACHE[k] if k in _NO_CACHE else v for k, v in kwargs.items()}))
        return cached
    finally:
        model.train(was_training)


def call_block(block: nn.Module) -> Callable[[Inputs], Any]:
    """A ``run`` for cached inputs: the block on one batch's ``(args, kwargs)``."""
    return lambda inputs: block(*inputs[0], **inputs[1])


@torch.no_grad()
def run_block(block: nn.Module, cached: list[Inputs]) -> list[torch.Tensor]:
    """The block's hidden states on each cached input (a tuple output's element 0), in eval mode."""
    was_training = block.training
    block.eval()
    try:
        return [_first(block(*args, **kwargs)) for args, kwargs in cached]
    finally:
        block.train(was_training)


def feed(cached: list[Inputs], hidden: list[torch.Tensor]) -> list[Inputs]:
    """The next block's inputs: ``cached`` with its hidden states replaced, the rest as they were."""
    return [((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})
            for (args, kwargs), h in zip(cached, hidden, strict=True)]


@torch.no_grad()
def chain_problem(model: nn.Module, run: Callable, batch, blocks: nn.ModuleList) -> str | None:
    """None where, on ``batch``, the blocks run once each in order, each on the one before's output
    and with block 0's other arguments (so the block-sequential pass is exact); else what differs."""
    calls: list[int] = []
    problems: list[str] = []
    state: dict = {}  # block 0's other arguments, the last block's output: compared as the pass goes

    def before(i: int):
        def hook(module, args, kwargs):
            calls.append(i)
            if i == 0 or len(calls) != i + 1:
                state.setdefault("others", _others(args, kwargs))
            elif not _same(_hidden(args, kwargs), state.get("output")):
                problems.append(f"block {i}'s input is not block {i - 1}'s output")
            elif not _same(_others(args, kwargs), state["others"]):
                problems.append(f"block {i} gets other arguments than block 0")
        return hook

    def after(i: int):
        def hook(module, args, output):
            state["output"] = _first(output)
        return hook

    handles = [h for i, b in enumerate(blocks) for h in (b.register_forward_pre_hook(before(i), with_kwargs=True),
                                                         b.register_forward_hook(after(i)))]
    was_training = model.training
    model.eval()
    try:
        run(batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        state.clear()
    if calls != list(range(len(blocks))):
        return f"its blocks ran in the order {calls[:10]}, not once each in order"
    return problems[0] if problems else None


@torch.no_grad()
def prune_block_by_block(
    model: nn.Module, run: Callable, batches: list, blocks: nn.ModuleList, weights: dict[str, torch.Tensor],
    modules: dict[str, nn.Module], prune_group: Callable[[list[str], nn.Module, Iterable, Callable], None],
) -> None:
    """Prune ``weights`` group by group (the module docstring says how). ``modules`` holds the
    projection that owns each weight, where there is one; ``prune_group(names, host, inputs,
    run)`` collects its statistics with hooks under ``host`` while ``run`` goes over ``inputs``,
    then prunes those weights in place."""
    in_block: list[list[str]] = []
    inside: set[str] = set()
    for block in blocks:  # a weight two blocks share is pruned with the first
        params = {id(p) for p in block.parameters()}
        in_block.append([n for n, w in weights.items() if id(w) in params and n not in inside])
        inside.update(in_block[-1])
    outside = [n for n in weights if n not in inside]
    was_training = model.training
    model.eval()
    try:
        stopped = run_until(blocks[0], run)
        reached: set[str] = set()
        handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: reached.add(n))
                   for n in outside if n in modules]
        try:
            stopped(batches[0])
        finally:
            for handle in handles:
                handle.remove()
        first = [n for n in outside if n in reached or n not in modules]  # unseen ones: by |W|, first as before
        if first:
            prune_group(first, model, batches, stopped)
        cached = capture_block_inputs(model, run, batches, blocks[0])
        for i, block in enumerate(blocks):
            if in_block[i]:
                prune_group(in_block[i], block, cached, call_block(block))
            if i + 1 < len(blocks):
                cached = feed(cached, run_block(block, cached))
        del cached
        last = [n for n in outside if n not in first]
        if last:
            prune_group(last, model, batches, run)
    finally:
        model.train(was_training)


def from_rank0(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` as rank 0 holds it, under torch.distributed (a bool tensor travels as bytes)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        if tensor.dtype == torch.bool:
            as_bytes = tensor.to(torch.uint8)
            dist.broadcast(as_bytes, src=0)
            tensor.copy_(as_bytes.bool())
        else:
            dist.broadcast(tensor, src=0)
    return tensor


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise RuntimeError(f"a transformer block was called with keywords {sorted(kwargs)} and no positional "
                       "argument: its hidden states are not found")


def _others(args: tuple, kwargs: dict) -> tuple:
    return (args[1:], kwargs) if args else ((), {k: v for k, v in kwargs.items() if k != "hidden_states"})


def _same(a, b) -> bool:
    if a is b:
        return True
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and type(a) is type(b):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (bool, int, float, str)) and type(a) is type(b):
        return a == b
    return False
