"""Beyond test accuracy, evaluated at the end of a run: accuracy under corruptions (CIFAR-10-C
style, generated on the fly), calibration (ECE), and agreement with a dense reference network
under the noise ball x + 2*eps*(u - 0.5) (Liebenwein et al. 2021, "Lost in Pruning")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raysparse.robustness.corruptions import CORRUPTIONS, corrupt, expected_calibration_error, noise_ball

# metrics that exist only in the final report (too costly per epoch): never an ASHA metric
FINAL_METRICS = ("mean_corrupted_accuracy", "ece", "noise_agreement", "noise_softmax_distance")


@dataclass(frozen=True)
class RobustnessConfig:
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    severities: tuple[int, ...] = (1, 3, 5)
    noise_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    reference: str | None = None  # state_dict of the dense reference network (noise-ball agreement)
    max_examples: int = 1000  # examples used (the first ones), to bound the cost
    split: str = "test"  # "val" to search on these metrics: test data never selects a model
    seed: int = 0


@torch.no_grad()
def robustness_metrics(model: nn.Module, split, cfg: RobustnessConfig, device: torch.device,
                       reference: nn.Module | None = None) -> dict:
    """Metrics on the test split (an in-memory TensorSplit: images are un-normalized to [0, 1],
    corrupted, and normalized again)."""
    model.eval()
    x, y = split.tensors()
    x, y = x[: cfg.max_examples], y[: cfg.max_examples]
    mean, std = split.mean, split.std
    clean = (x * std + mean).clamp(0, 1)

    def predict(net, images):
        return torch.softmax(net(((images - mean) / std).to(device)), dim=1).cpu()

    probabilities = predict(model, clean)
    metrics: dict = {"ece": expected_calibration_error(probabilities, y)}
    corrupted = {}
    for name in cfg.corruptions:
        for severity in cfg.severities:
            images = corrupt(clean, name, severity, seed=cfg.seed)
            corrupted[f"{name}_{severity}"] = float((predict(model, images).argmax(1) == y).float().mean())
    metrics["corrupted_accuracy"] = corrupted
    metrics["mean_corrupted_accuracy"] = sum(corrupted.values()) / max(len(corrupted), 1)
    if reference is not None:
        reference.eval()
        agreement, distance = [], []
        for eps in cfg.noise_eps:
            noisy = noise_ball(clean, eps, generator=torch.Generator().manual_seed(cfg.seed))
            ours, theirs = predict(model, noisy), predict(reference, noisy)
            agreement.append(float((ours.argmax(1) == theirs.argmax(1)).float().mean()))
            distance.append(float((ours - theirs).norm(dim=1).mean()))
        metrics["noise_agreement"] = sum(agreement) / len(agreement)
        metrics["noise_softmax_distance"] = sum(distance) / len(distance)
    return metrics
