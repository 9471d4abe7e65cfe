"""Judging pruned networks beyond test accuracy ("Lost in Pruning", Liebenwein et al. 2021,
https://arxiv.org/abs/2103.03014): CIFAR-10-C style corruptions (Hendrycks & Dietterich 2019,
https://arxiv.org/abs/1903.12261), the noise ball, calibration and excess error. Inputs are images in
[0, 1]: the caller un-normalizes before and normalizes again after."""

__all__ = [
    "CORRUPTIONS", "RANDOM_CORRUPTIONS", "SEVERITY_PARAMETERS", "corrupt", "excess_error",
    "expected_calibration_error", "noise_ball",
]


def __getattr__(name: str):
    # the corruptions load torch (~4 s here); ``raysparse potential`` only needs potential.py
    if name in __all__:
        from raysparse.robustness import corruptions

        return getattr(corruptions, name)
    raise AttributeError(f"module 'raysparse.robustness' has no attribute {name!r}")
