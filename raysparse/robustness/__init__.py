"""Judging pruned networks beyond test accuracy ("Lost in Pruning", Liebenwein et al. 2021,
https://arxiv.org/abs/2103.03014): CIFAR-10-C style corruptions (Hendrycks & Dietterich 2019,
https://arxiv.org/abs/1903.12261), the noise ball, calibration and excess error. Inputs are images in
[0, 1]: the caller un-normalizes before and normalizes again after."""

from raysparse.robustness.corruptions import (
    CORRUPTIONS,
    RANDOM_CORRUPTIONS,
    SEVERITY_PARAMETERS,
    corrupt,
    excess_error,
    expected_calibration_error,
    noise_ball,
)

__all__ = [
    "CORRUPTIONS", "RANDOM_CORRUPTIONS", "SEVERITY_PARAMETERS", "corrupt", "excess_error",
    "expected_calibration_error", "noise_ball",
]
