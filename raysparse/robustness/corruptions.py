"""Judging pruned networks beyond test accuracy ("Lost in Pruning", Liebenwein et al. 2021,
https://arxiv.org/abs/2103.03014): CIFAR-10-C style corruptions at severities 1-5 (Hendrycks & Dietterich 2019,
https://arxiv.org/abs/1903.12261), re-implemented in torch to run on the fly at any image size and not quantized
to uint8 like the published files; the noise ball x + 2*eps*(u - 0.5); calibration error; excess error.

Images are in [0, 1], shape (N, C, H, W), C = 1 or 3. The project's datasets are normalized, so the caller
un-normalizes first (``x * std + mean``), corrupts, and normalizes again (``(x - mean) / std``)."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from raysparse.errors import ConfigError, unknown_choice

# One value per severity 1..5: CIFAR-10-C's (make_cifar_c.py in hendrycks/robustness) unless noted.
SEVERITY_PARAMETERS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # std of additive N(0, std)
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity: Poisson(x * rate) / rate
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of values set to 0 or 1 (salt and pepper)
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),  # std of multiplicative noise: x + x * N(0, std)
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma in pixels
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),  # (disk radius, anti-alias sigma)
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on each channel's deviation from its mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to the HSV value
    # (factor, offset) on the HSV saturation. Adapted: CIFAR-10-C's (0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1),
    # (2.5, 0.2) desaturates at 1-2 and oversaturates at 3-5, so its strength is not ordered by severity
    # (x1.5 changes an image less than x0.1). We keep its 3-5 and put milder oversaturation at 1-2.
    "saturate": ((1.2, 0.0), (1.35, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),  # PIL JPEG quality
    # fraction of each side kept before scaling back up. Adapted: CIFAR-10-C resizes to int(32 * f); we use
    # int(side * f), so 8x8 images go through 7, 7, 6, 6, 5 pixels.
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}

Corruption = Callable[[Tensor, int, torch.Generator], Tensor]
CORRUPTIONS: dict[str, Corruption] = {}
# corruptions that draw from the generator; the others ignore it
RANDOM_CORRUPTIONS = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})


def _register(function: Callable[[Tensor, object, torch.Generator], Tensor]) -> Corruption:
    """Registers ``function(images, parameter, generator)`` behind validation, table lookup and a clip to [0, 1]."""
    name = function.__name__

    @functools.wraps(function)
    def corruption(images: Tensor, severity: int, generator: torch.Generator) -> Tensor:
        if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
            raise ConfigError("severity", f"must be an integer in 1..5, got {severity!r}")
        if images.dim() != 4 or images.shape[1] not in (1, 3) or not images.is_floating_point():
            raise ConfigError("images", f"expected a float batch (N, C, H, W) with C = 1 or 3, got {images.dtype} "
                                        f"{tuple(images.shape)}")
        return function(images, SEVERITY_PARAMETERS[name][severity - 1], generator).clamp(0, 1)

    CORRUPTIONS[name] = corruption
    return corruption


def _draw(sampler, images: Tensor, generator: torch.Generator) -> Tensor:
    # drawn on the generator's device, so a CPU seed gives the same noise whatever device the images are on
    noise = sampler(images.shape, generator=generator, device=generator.device, dtype=images.dtype)
    return noise.to(images.device)


@_register
def gaussian_noise(images: Tensor, std: float, generator: torch.Generator) -> Tensor:
    return images + std * _draw(torch.randn, images, generator)


@_register
def shot_noise(images: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    photons = torch.poisson(images.clamp(0, 1).to(generator.device) * rate, generator=generator)
    return photons.to(images.device) / rate


@_register
def impulse_noise(images: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    hit = _draw(torch.rand, images, generator) < amount
    salt = (_draw(torch.rand, images, generator) < 0.5).to(images.dtype)
    return torch.where(hit, salt, images)


@_register
def speckle_noise(images: Tensor, std: float, generator: torch.Generator) -> Tensor:
    return images + images * std * _draw(torch.randn, images, generator)


def _filter_each_channel(images: Tensor, kernel: Tensor) -> Tensor:
    """Every channel correlated with ``kernel``; edges repeat (as skimage) so small images do not darken there."""
    n, c, h, w = images.shape
    pad_h, pad_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    flat = F.pad(images.reshape(n * c, 1, h, w), (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    return F.conv2d(flat, kernel.to(images)[None, None]).reshape(n, c, h, w)


def _gaussian_1d(sigma: float, radius: int) -> Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


@_register
def gaussian_blur(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    # separable: a row pass then a column pass; 4 sigma of support, like scipy/skimage's default truncate
    weights = _gaussian_1d(sigma, radius=math.ceil(4 * sigma))
    return _filter_each_channel(_filter_each_channel(images, weights[None, :]), weights[:, None])


@_register
def defocus_blur(images: Tensor, radius_and_alias_sigma: tuple[float, float], generator: torch.Generator) -> Tensor:
    radius, alias_sigma = radius_and_alias_sigma
    # a hard disk of the lens radius, softened by a 3x3 Gaussian because a pixel-grid disk is aliased
    half = math.floor(radius)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).double()
    soften = _gaussian_1d(alias_sigma, radius=1)
    kernel = F.conv2d(F.pad(disk / disk.sum(), (2, 2, 2, 2))[None, None], torch.outer(soften, soften)[None, None])
    return _filter_each_channel(images, kernel[0, 0])


def _scale_about_mean(images: Tensor, factor: float) -> Tensor:
    means = images.mean(dim=(2, 3), keepdim=True)  # per image and channel, as CIFAR-10-C
    return means + factor * (images - means)


@_register
def contrast(images: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    return _scale_about_mean(images, factor)


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> hue, saturation, value in [0, 1]."""
    value, brightest = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    red, green, blue = (rgb / chroma.clamp_min(1e-12)[:, None]).unbind(dim=1)  # gray pixels: hue set to 0 below
    sextant = torch.where(brightest == 0, (green - blue) % 6,
                          torch.where(brightest == 1, blue - red + 2, red - green + 4))
    hue = torch.where(chroma > 0, sextant / 6, 0.0)
    return torch.stack([hue, torch.where(value > 0, chroma / value.clamp_min(1e-12), 0.0), value], dim=1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    hue, saturation, value = hsv.unbind(dim=1)
    # each channel drops from value by value*saturation on the part of the hue circle away from its own
    # primary; n = 5, 3, 1 place red, green, blue at hue 0, 1/3, 2/3
    ramps = [(n + 6 * hue) % 6 for n in (5, 3, 1)]
    return torch.stack([value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1) for k in ramps], dim=1)


def _change_hsv(images: Tensor, channel: int, change: Callable[[Tensor], Tensor]) -> Tensor:
    hsv = _rgb_to_hsv(images.clamp(0, 1))
    hsv[:, channel] = change(hsv[:, channel]).clamp(0, 1)
    return _hsv_to_rgb(hsv)


@_register
def brightness(images: Tensor, shift: float, generator: torch.Generator) -> Tensor:
    if images.shape[1] == 1:  # a gray image is its own HSV value
        return images + shift
    return _change_hsv(images, 2, lambda value: value + shift)


@_register
def saturate(images: Tensor, factor_and_offset: tuple[float, float], generator: torch.Generator) -> Tensor:
    """RGB: scales the HSV saturation. Gray images have none, so their deviation from the image mean is
    stretched by the same factor instead (a contrast increase, growing with severity); no offset there."""
    factor, offset = factor_and_offset
    if images.shape[1] == 1:
        return _scale_about_mean(images, factor)
    return _change_hsv(images, 1, lambda saturation: saturation * factor + offset)


@_register
def jpeg_compression(images: Tensor, quality: int, generator: torch.Generator) -> Tensor:
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="JPEG", quality=quality)
        decoded.append(np.asarray(Image.open(buffer)).reshape(image.shape))
    restored = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2)
    return restored.to(device=images.device, dtype=images.dtype) / 255


def _box_filter(side: int, blocks: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """PIL's BOX resize on one axis: each pixel's block (by its centre) and the (blocks, side) averaging matrix."""
    block_of_pixel = (2 * torch.arange(side, device=like.device) + 1) * blocks // (2 * side)
    members = F.one_hot(block_of_pixel, blocks).T.to(like)
    return block_of_pixel, members / members.sum(dim=1, keepdim=True)


@_register
def pixelate(images: Tensor, kept_fraction: float, generator: torch.Generator) -> Tensor:
    # CIFAR-10-C's BOX down, BOX (= nearest) up: each pixel takes its block's mean. Not F.interpolate's "area":
    # its bins overlap at non-integer ratios, blurring even at 0.95, so its error stops growing with severity.
    height, width = images.shape[2:]
    rows, row_means = _box_filter(height, max(1, int(height * kept_fraction)), images)
    cols, col_means = _box_filter(width, max(1, int(width * kept_fraction)), images)
    small = row_means @ images @ col_means.T
    return small[:, :, rows][:, :, :, cols]


def corrupt(images: Tensor, name: str, severity: int, *, seed: int = 0) -> Tensor:
    """``images`` (N, C, H, W) in [0, 1] under corruption ``name`` at ``severity`` 1..5, in [0, 1]; the
    random corruptions draw only from a generator seeded with ``seed``."""
    if name not in CORRUPTIONS:
        raise unknown_choice("corruption", "corruption", name, CORRUPTIONS)
    return CORRUPTIONS[name](images, severity, torch.Generator().manual_seed(seed))


def noise_ball(images: Tensor, eps: float, *, generator: torch.Generator) -> Tensor:
    """x + 2*eps*(u - 0.5) with u ~ U[0, 1) per element: a uniform draw from the L-inf ball of radius eps
    ("Lost in Pruning"). Not clipped to [0, 1], as in the paper's definition."""
    if eps < 0:
        raise ConfigError("eps", f"must be >= 0, got {eps!r}")
    return images + 2 * eps * (_draw(torch.rand, images, generator) - 0.5)


def expected_calibration_error(probabilities: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE: sum over equal-width confidence bins (lo, hi] of (bin size / N) * |accuracy - mean confidence|,
    confidence being the top class probability of each row of ``probabilities`` (N, K)."""
    if bins < 1:
        raise ConfigError("bins", f"must be >= 1, got {bins!r}")
    if probabilities.dim() != 2 or labels.shape != probabilities.shape[:1] or len(labels) == 0:
        raise ValueError(f"expected probabilities (N, K) and labels (N,), N > 0; got {tuple(probabilities.shape)} "
                         f"and {tuple(labels.shape)}")
    confidence, predicted = probabilities.double().max(dim=1)
    correct = (predicted == labels.to(predicted.device)).double()
    bin_index = (confidence * bins).ceil().long().clamp(1, bins) - 1
    # (n_b / N) * |acc_b - conf_b| = |sum of (correct - confidence) over bin b| / N
    per_bin = torch.bincount(bin_index, weights=correct - confidence, minlength=bins)
    return float(per_bin.abs().sum() / len(labels))


def excess_error(pruned_err_shifted: float, pruned_err_clean: float, dense_err_shifted: float,
                 dense_err_clean: float) -> float:
    """How much more the pruned network loses under the shift D -> D' than the dense one:
    (l(pruned, D') - l(pruned, D)) - (l(dense, D') - l(dense, D)). Positive: pruning cost robustness."""
    return float((pruned_err_shifted - pruned_err_clean) - (dense_err_shifted - dense_err_clean))
