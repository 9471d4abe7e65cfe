"""Beyond the test split, evaluated at the end of a run (Liebenwein et al. 2021, "Lost in Pruning",
https://arxiv.org/abs/2103.03014), for any task: the task's own metrics on other datasets
(``robustness.datasets``, reported as ``shift.<name>.<metric>``: does a sparse language model hold on
text it was not tuned on?). For an image classifier also: accuracy under corruptions (CIFAR-10-C
style, generated on the fly), calibration (ECE), accuracy in the noise ball x + 2*eps*(u - 0.5),
and against a dense reference network: agreement and softmax distance in the noise ball, and
excess error under each corruption."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from raysparse.errors import ConfigError, shown
from raysparse.robustness.corruptions import (
    CORRUPTIONS,
    corrupt,
    excess_error,
    expected_calibration_error,
    noise_ball,
)

# metrics that exist only in the final report (too costly per epoch): never an ASHA metric
FINAL_METRICS = ("mean_corrupted_accuracy", "ece", "noise_agreement", "noise_softmax_distance", "mean_excess_error")
# the ones compared with a dense reference network (robustness.reference)
REFERENCE_METRICS = ("noise_agreement", "noise_softmax_distance", "mean_excess_error")
_BATCH = 250


# the image suite's options and their defaults: an image classifier's only. None in a config means
# the default here; any other task refuses them when given (config.py)
IMAGE_DEFAULTS = {
    "corruptions": tuple(CORRUPTIONS),
    "severities": (1, 3, 5),
    "noise_eps": (0.05, 0.1, 0.2),
    "max_examples": 1000,  # examples used (the first ones), to bound the cost
    "seed": 0,  # of the random corruptions and the noise ball
}
# a robustness.datasets name: one MLflow metric-key part (shift.<name>.<metric>), so no dots
DATASET_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")


@dataclass(frozen=True)
class RobustnessConfig:
    """The ``robustness:`` block. ``datasets`` holds other evaluation sets, ``{name: <data block>}``
    (a zoo dataset such as ``{name: text, path: ..., block_size: 32}`` or ``{factory:
    "pkg.mod:fn", ...}``): each is evaluated by the task on its ``split`` and reported as
    ``shift.<name>.<metric>`` (``shift.wiki.perplexity``); names are letters, digits, ``_`` and
    ``-``. The image options (``IMAGE_DEFAULTS``; None: the default) and ``reference`` apply to
    image classifiers only."""

    corruptions: tuple[str, ...] | None = None
    severities: tuple[int, ...] | None = None
    noise_eps: tuple[float, ...] | None = None
    reference: str | None = None  # state_dict of the dense reference network (agreement, excess error)
    max_examples: int | None = None
    split: str = "test"  # "val" to search on these metrics: test data never selects a model
    seed: int | None = None
    datasets: dict[str, dict] = field(default_factory=dict)

    def given_image_options(self) -> list[str]:
        """The image options this block sets (not left to their default)."""
        return [name for name in IMAGE_DEFAULTS if getattr(self, name) is not None]

    def with_image_defaults(self) -> RobustnessConfig:
        return dataclasses.replace(self, **{k: v for k, v in IMAGE_DEFAULTS.items() if getattr(self, k) is None})


def refuse_image_options(cfg: RobustnessConfig, task_name: str) -> None:
    """A ConfigError on the first image option ``cfg`` sets: a task that is not an image classifier
    (a language model) is judged on ``datasets`` only."""
    for name in cfg.given_image_options():
        value = getattr(cfg, name)
        raise ConfigError(f"robustness.{name}", (
            f"got {shown(list(value) if isinstance(value, tuple) else value)}, but image corruptions, the noise "
            f"ball and calibration apply to image classifiers, not to task {task_name!r}; allowed for it: "
            "robustness.datasets (other evaluation sets) and robustness.split"))


@torch.no_grad()
def robustness_metrics(model: nn.Module, split, cfg: RobustnessConfig, device: torch.device,
                       reference: nn.Module | None = None) -> dict:
    """Metrics on one split (an in-memory TensorSplit: images are un-normalized to [0, 1],
    corrupted or moved in the noise ball, and normalized again):

    - ``corrupted_accuracy.<corruption>_<severity>`` and their mean, ``mean_corrupted_accuracy``;
    - ``noise_accuracy.eps_<eps>``: accuracy on x + 2*eps*(u - 0.5);
    - ``ece``: expected calibration error on the clean images;
    - with a dense ``reference``: ``noise_agreement`` / ``noise_softmax_distance`` (top-1 agreement
      and L2 distance of the softmax outputs, mean over eps; per eps under ``noise_ball.``), and
      ``excess_error.<corruption>_<severity>`` with their mean ``mean_excess_error``: how much more
      accuracy the pruned network loses under the corruption than the reference does.

    The image options ``cfg`` leaves unset take ``IMAGE_DEFAULTS``; ``cfg.datasets`` is the loop's."""
    cfg = cfg.with_image_defaults()
    x, y = split.tensors()
    x, y = x[: cfg.max_examples], y[: cfg.max_examples]
    mean, std = split.mean, split.std
    clean = (x * std + mean).clamp(0, 1)
    networks = {"model": model} if reference is None else {"model": model, "reference": reference}
    for net in networks.values():
        net.eval()

    def predict(images) -> dict[str, torch.Tensor]:
        # in batches: one forward pass over 1,000 CIFAR images takes 1.6x as long as four of 250 here
        batches = ((images - mean) / std).split(_BATCH)
        return {name: torch.cat([torch.softmax(net(b.to(device)), dim=1).cpu() for b in batches])
                for name, net in networks.items()}

    def accuracy(probabilities) -> float:
        return float((probabilities.argmax(1) == y).float().mean())

    on_clean = predict(clean)
    clean_accuracy = {name: accuracy(p) for name, p in on_clean.items()}
    metrics: dict = {"ece": expected_calibration_error(on_clean["model"], y)}
    corrupted, excess = {}, {}
    for name in cfg.corruptions:
        for severity in cfg.severities:
            outputs = predict(corrupt(clean, name, severity, seed=cfg.seed))
            corrupted[f"{name}_{severity}"] = accuracy(outputs["model"])
            if reference is not None:
                # excess error (l(pruned, D') - l(pruned, D)) - (l(dense, D') - l(dense, D)), l = 1 - accuracy
                excess[f"{name}_{severity}"] = excess_error(
                    1 - corrupted[f"{name}_{severity}"], 1 - clean_accuracy["model"],
                    1 - accuracy(outputs["reference"]), 1 - clean_accuracy["reference"])
    metrics["corrupted_accuracy"] = corrupted
    metrics["mean_corrupted_accuracy"] = _mean(corrupted.values())
    noise_accuracy, agreement, distance = {}, {}, {}
    for eps in cfg.noise_eps:
        outputs = predict(noise_ball(clean, eps, generator=torch.Generator().manual_seed(cfg.seed)))
        noise_accuracy[f"eps_{eps:g}"] = accuracy(outputs["model"])
        if reference is not None:
            ours, theirs = outputs["model"], outputs["reference"]
            agreement[f"agreement_eps_{eps:g}"] = float((ours.argmax(1) == theirs.argmax(1)).float().mean())
            distance[f"softmax_distance_eps_{eps:g}"] = float((ours - theirs).norm(dim=1).mean())
    metrics["noise_accuracy"] = noise_accuracy
    if reference is not None:
        metrics["excess_error"] = excess
        metrics["mean_excess_error"] = _mean(excess.values())
        metrics["noise_ball"] = {**agreement, **distance}
        metrics["noise_agreement"] = _mean(agreement.values())
        metrics["noise_softmax_distance"] = _mean(distance.values())
    return metrics


def _mean(values) -> float:
    values = list(values)
    return sum(values) / max(len(values), 1)
