"""MaskSet: binary masks over a model's prunable weights.

Masks are stored as bool tensors (the truth, checkpointed) plus a float copy in each weight's
dtype, so applying them after every optimizer step is one in-place multiply per layer.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.sparsity.patterns import UNSTRUCTURED, Pattern

PRUNABLE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# nn.MultiheadAttention's own projections: the packed q/k/v weight, or one per input when kdim/vdim differ
# (its out_proj is an nn.Linear, found as one). Embeddings, norms and biases do no matmul with an input.
ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
_OPTIMIZER_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def weight_slots(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every weight that does a matmul, by mask name: ``name -> (owning module, attribute)``.

    A module's ``weight`` is named after the module (``layer1.0.conv1``, ``blocks.0.attn.out_proj``);
    any other weight after the module and the attribute (``blocks.0.attn.in_proj_weight``). Torch
    forbids a child module named like a parameter, so the names are unique. Order: the model's module
    order, a module's own weights before its children's (``in_proj_weight`` before ``out_proj``).

    A Linear whose weight *is* an Embedding's (a language model's head tied to its token embedding,
    HuggingFace's ``tie_word_embeddings``) is left out: masking it would prune the embedding table
    through the tie. :func:`weights_outside` counts it instead.
    """
    slots = {}
    tied = _embedding_tables(model)
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and module.weight is not None:
            if id(module.weight) not in tied:
                slots[name] = (module, "weight")
        elif isinstance(module, nn.MultiheadAttention):
            for attribute in ATTENTION_WEIGHTS:
                if getattr(module, attribute, None) is not None:
                    slots[f"{name}.{attribute}" if name else attribute] = (module, attribute)
    return slots


def prunable_weights(
    model: nn.Module,
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> dict[str, nn.Parameter]:
    """Weights that do a matmul (Conv, Linear, attention projections) by mask name
    (:func:`weight_slots`), filtered by fnmatch patterns on that name."""
    include, exclude = list(include), list(exclude)
    found = {}
    for name, (module, attribute) in weight_slots(model).items():
        if include and not any(fnmatch.fnmatchcase(name, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        found[name] = getattr(module, attribute)
    return found


def weights_outside(model: nn.Module, masked: Iterable[str]) -> dict[str, int]:
    """Weights that do a matmul but are not among ``masked`` (left out by ``include`` / ``exclude``,
    or a tied LM head): ``name -> number of weights``. They stay dense; an honest density counts them
    at 1."""
    masked = set(masked)
    outside = {n: w.numel() for n, w in prunable_weights(model).items()} | _tied_heads(model)
    return {n: size for n, size in outside.items() if n not in masked}


def _tied_heads(model: nn.Module) -> dict[str, int]:
    """Linears whose weight is an Embedding's (tied LM heads): ``name -> number of weights``, each
    shared table once. They do a matmul, are never masked (:func:`weight_slots`) and stay dense."""
    tied, heads = _embedding_tables(model), {}
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE_TYPES) and id(module.weight) in tied:
            heads[name] = tied.pop(id(module.weight)).numel()
    return heads


def _embedding_tables(model: nn.Module) -> dict[int, nn.Parameter]:
    # by identity: a tie shares the Parameter object itself (equal values are no tie)
    return {id(m.weight): m.weight for m in model.modules() if isinstance(m, nn.Embedding)}


def resolve_dense_layers(
    layer_names: list[str], patterns: Iterable[str], field: str = "sparsity.dense_layers"
) -> frozenset[str]:
    """Expand names/patterns (plus the aliases ``first`` and ``last``) into layer names.

    A pattern that matches no layer is an error: a silently ignored typo would leave the layer
    pruned while the user believes it dense.
    """
    dense = set()
    for pattern in patterns:
        if pattern == "first":
            matched = layer_names[:1]
        elif pattern == "last":
            matched = layer_names[-1:]
        else:
            matched = [n for n in layer_names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ConfigError(
                field,
                f"{pattern!r} matches no prunable layer; layers are: {', '.join(layer_names)} "
                "(or use 'first' / 'last')",
            )
        dense.update(matched)
    return frozenset(dense)


@dataclass(frozen=True)
class MaskEvent:
    """One mask update: what the lineage log in MLflow records."""

    step: int
    reason: str
    density: float
    churn: float
    hash: str
    parent_hash: str
    packed: bytes
    weights_hash: str = ""  # checkpoint and resume rows: sha256 of the weights saved / restored


class MaskSet:
    """Masks for ``weights`` (name -> parameter); all-ones (dense) until updated."""

    def __init__(
        self, weights: dict[str, nn.Parameter], dense_layers: Iterable[str] = (), *, apply_to_weights: bool = True
    ):
        self.weights = dict(weights)
        self.dense_layers = frozenset(dense_layers)
        # False when the method masks in the forward pass itself (DST): masked weights live on
        self.apply_to_weights = apply_to_weights
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in self.weights.items()}
        self._multipliers = {n: torch.ones_like(w) for n, w in self.weights.items()}
        # multipliers are updated in place, so these lists stay valid for the fused multiply
        masked = [n for n in self.weights if n not in self.dense_layers]
        self._masked_weights = [self.weights[n] for n in masked]
        self._masked_multipliers = [self._multipliers[n] for n in masked]
        self.events: list[MaskEvent] = []
        self._hash = self.content_hash()
        self.patterns: dict[str, Pattern] = {}  # a layer's pattern, checked on every update (enforce)

    def enforce(self, patterns: dict[str, Pattern]) -> None:
        """Refuse, from now on, an update whose mask breaks its layer's pattern (a method's bug)."""
        self.patterns = dict(patterns)

    # ---- applying -------------------------------------------------------------------------
    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (called after every optimizer step): one fused multiply."""
        if self._masked_weights and self.apply_to_weights:
            torch._foreach_mul_(self._masked_weights, self._masked_multipliers)

    @torch.no_grad()
    def update(
        self,
        new_masks: dict[str, torch.Tensor],
        *,
        step: int,
        reason: str,
        optimizer: torch.optim.Optimizer | None = None,
        reset: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Install new masks, zero weights and optimizer state where the mask changed.

        Weights that are pruned become zero; weights that are regrown start at zero with fresh
        optimizer state (GraNet, RigL); both get their momentum / Adam moments cleared. Under
        torch.distributed the masks of rank 0 are broadcast, so every rank holds identical masks.
        """
        changed_any = False
        before_total = self.count()
        flips = 0
        for name, mask in new_masks.items():
            mask = mask.to(device=self.masks[name].device, dtype=torch.bool)
            _broadcast_from_rank0(mask)
            pattern = self.patterns.get(name, UNSTRUCTURED)
            if not pattern.holds(mask):
                raise RuntimeError(f"{reason} at step {step}: the new mask of {name} breaks its pattern "
                                   f"{pattern.name!r}")
            changed = mask ^ self.masks[name]
            n_changed = int(changed.sum())
            if n_changed == 0:
                continue
            changed_any = True
            flips += n_changed
            if reset is not None and name in reset:
                restart = reset[name].to(changed.device)
                _broadcast_from_rank0(restart)
                changed = changed | restart
            weight = self.weights[name]
            if self.apply_to_weights:
                weight.masked_fill_(changed, 0.0)
                if optimizer is not None:
                    _clear_optimizer_state(optimizer, weight, changed)
            self.masks[name] = mask
            self._multipliers[name].copy_(mask)
        self.apply()
        if changed_any:
            parent = self._hash
            self._hash = self.content_hash()
            self.events.append(
                MaskEvent(
                    step=step,
                    reason=reason,
                    density=self.density(),
                    churn=flips / max(before_total[1], 1),
                    hash=self._hash,
                    parent_hash=parent,
                    packed=self.pack(),
                )
            )

    def mark(self, *, step: int, reason: str, weights_hash: str = "") -> None:
        """An event without a change (churn 0, hash == parent hash): a checkpoint records the
        masks (and weights) it holds, a resumed run the ones it continues from, so the lineage
        shows they are the same."""
        self.events.append(MaskEvent(step=step, reason=reason, density=self.density(), churn=0.0,
                                     hash=self._hash, parent_hash=self._hash, packed=self.pack(),
                                     weights_hash=weights_hash))

    def drain_events(self) -> list[MaskEvent]:
        events, self.events = self.events, []
        return events

    # ---- reporting ------------------------------------------------------------------------
    def count(self) -> tuple[int, int]:
        """(kept, total) over all prunable weights."""
        kept = sum(int(m.sum()) for m in self.masks.values())
        return kept, sum(m.numel() for m in self.masks.values())

    def density(self) -> float:
        kept, total = self.count()
        return kept / total

    def layer_density(self) -> dict[str, float]:
        return {n: int(m.sum()) / m.numel() for n, m in self.masks.items()}

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: m.clone() for n, m in self.masks.items()}

    def churn_since(self, snapshot: dict[str, torch.Tensor]) -> float:
        """Fraction of mask entries that differ from ``snapshot``."""
        flips = sum(int((m ^ snapshot[n]).sum()) for n, m in self.masks.items())
        return flips / self.count()[1]

    # ---- serialization --------------------------------------------------------------------
    def pack(self) -> bytes:
        """Bit-packed masks: a JSON header line (names, shapes) then 1 bit per weight."""
        return pack_masks(self.masks)

    def content_hash(self) -> str:
        return masks_hash(self.masks)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: m.cpu().clone() for n, m in self.masks.items()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != set(self.masks):
            raise ValueError(f"mask names differ: checkpoint {sorted(state)} vs model {sorted(self.masks)}")
        for name, mask in state.items():
            device = self.masks[name].device
            self.masks[name] = mask.to(device=device, dtype=torch.bool).clone()
            self._multipliers[name].copy_(self.masks[name])
        self._hash = self.content_hash()
        self.apply()


def pack_masks(masks: dict[str, torch.Tensor]) -> bytes:
    names = list(masks)
    header = json.dumps({"names": names, "shapes": [list(masks[n].shape) for n in names]})
    flat = np.concatenate([masks[n].detach().cpu().numpy().ravel().astype(bool) for n in names])
    return header.encode() + b"\n" + np.packbits(flat).tobytes()


def unpack_masks(blob: bytes) -> dict[str, torch.Tensor]:
    header, _, bits = blob.partition(b"\n")
    meta = json.loads(header)
    sizes = [int(np.prod(s)) for s in meta["shapes"]]
    flat = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=sum(sizes)).astype(bool)
    masks, offset = {}, 0
    for name, shape, size in zip(meta["names"], meta["shapes"], sizes):
        masks[name] = torch.from_numpy(flat[offset : offset + size].reshape(shape).copy())
        offset += size
    return masks


def masks_hash(masks: dict[str, torch.Tensor]) -> str:
    """sha256 of the packed masks: equal hashes mean identical masks (names, shapes, bits)."""
    return hashlib.sha256(pack_masks(masks)).hexdigest()


def _clear_optimizer_state(optimizer: torch.optim.Optimizer, weight: torch.Tensor, where: torch.Tensor) -> None:
    state = optimizer.state.get(weight, {})
    for key in _OPTIMIZER_STATE_KEYS:
        buf = state.get(key)
        if isinstance(buf, torch.Tensor) and buf.shape == weight.shape:
            buf.masked_fill_(where, 0.0)


def _broadcast_from_rank0(mask: torch.Tensor) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        as_bytes = mask.to(torch.uint8)
        torch.distributed.broadcast(as_bytes, src=0)
        mask.copy_(as_bytes.bool())
