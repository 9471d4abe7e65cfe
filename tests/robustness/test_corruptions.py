"""CIFAR-10-C style corruptions, the noise ball, ECE and excess error (raysparse/robustness/corruptions.py)."""

import pytest
import torch
import torch.nn.functional as F

from raysparse.errors import ConfigError
from raysparse.robustness import (
    CORRUPTIONS,
    RANDOM_CORRUPTIONS,
    SEVERITY_PARAMETERS,
    corrupt,
    excess_error,
    expected_calibration_error,
    noise_ball,
)
from raysparse.robustness.corruptions import _hsv_to_rgb, _rgb_to_hsv

REQUIRED = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "gaussian_blur", "defocus_blur",
            "contrast", "brightness", "saturate", "jpeg_compression", "pixelate"}
SHAPES = [(1, 8), (3, 8), (1, 32), (3, 32)]  # (channels, side)


def smooth_images(channels: int, side: int, count: int = 16) -> torch.Tensor:
    """Natural-looking stand-ins: white noise smoothed by a Gaussian (sigma 1.5 px), so neighbouring pixels
    correlate and blurs, pixelation and JPEG have something to remove. Not upsampled low-resolution noise: that
    leaves a grid pattern, and pixelation's error would then depend on where its blocks fall on the grid."""
    margin = 5
    noise = torch.randn(count * channels, 1, side + 2 * margin, side + 2 * margin,
                        generator=torch.Generator().manual_seed(7))
    offsets = torch.arange(-margin, margin + 1, dtype=torch.float32)
    weights = torch.exp(-0.5 * (offsets / 1.5) ** 2)
    weights = weights / weights.sum()
    smooth = F.conv2d(F.conv2d(noise, weights.reshape(1, 1, 1, -1)), weights.reshape(1, 1, -1, 1))
    return (0.5 + 0.2 * smooth / smooth.std()).clamp(0, 1).reshape(count, channels, side, side)


def test_registry_holds_the_required_corruptions_each_with_five_severities():
    assert REQUIRED <= set(CORRUPTIONS)
    assert set(SEVERITY_PARAMETERS) == set(CORRUPTIONS)
    assert all(len(values) == 5 for values in SEVERITY_PARAMETERS.values())
    assert RANDOM_CORRUPTIONS <= set(CORRUPTIONS)


@pytest.mark.parametrize("channels,side", SHAPES)
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_contract_shape_range_and_seeding(name, channels, side):
    images = smooth_images(channels, side)
    for severity in range(1, 6):
        out = corrupt(images, name, severity, seed=3)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(images, name, severity, seed=3))
        direct = CORRUPTIONS[name](images, severity, torch.Generator().manual_seed(3))
        assert torch.equal(out, direct)
        other_seed = corrupt(images, name, severity, seed=4)
        # randomness comes only from the seed: the random ones change with it, the others must not
        assert torch.equal(out, other_seed) == (name not in RANDOM_CORRUPTIONS)


@pytest.mark.parametrize("channels,side", SHAPES)
@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_grows_with_severity(name, channels, side):
    images = smooth_images(channels, side)
    distances = [float((corrupt(images, name, s) - images).abs().mean()) for s in range(1, 6)]
    assert all(later >= earlier for earlier, later in zip(distances, distances[1:])), distances
    assert distances[4] > distances[0], distances


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "contrast", "pixelate"])
def test_filters_keep_a_flat_gray_image(name):
    flat = torch.full((2, 3, 8, 8), 0.4)
    for severity in range(1, 6):
        torch.testing.assert_close(corrupt(flat, name, severity), flat)


def test_blurs_smooth_an_edge_more_with_severity():
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    for name in ("gaussian_blur", "defocus_blur"):
        near_edge = [float(corrupt(edge, name, s)[0, 0, 0, 3]) for s in range(1, 6)]
        assert 0 < near_edge[0] < near_edge[4] < 0.5, (name, near_edge)


def test_hsv_round_trip_and_primaries():
    rgb = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_hsv_to_rgb(_rgb_to_hsv(rgb)), rgb, atol=1e-5, rtol=0)
    primaries = torch.eye(3).reshape(3, 3, 1, 1)  # red, green, blue
    hsv = _rgb_to_hsv(primaries)[..., 0, 0]
    torch.testing.assert_close(hsv, torch.tensor([[0.0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1]]))
    gray = _rgb_to_hsv(torch.full((1, 3, 1, 1), 0.5))[0, :, 0, 0]
    torch.testing.assert_close(gray, torch.tensor([0.0, 0.0, 0.5]))


def test_saturate_leaves_gray_pixels_gray_and_brightness_raises_value():
    gray = torch.full((1, 3, 4, 4), 0.3)
    torch.testing.assert_close(corrupt(gray, "saturate", 3), gray)  # zero saturation times 1.5 is still zero
    torch.testing.assert_close(corrupt(gray, "brightness", 5), gray + 0.3)


@pytest.mark.parametrize("bad", ["fog_of_war", "gaussian_nosie"])
def test_unknown_corruption_names_the_field_and_the_choices(bad):
    with pytest.raises(ConfigError, match=r"^corruption: unknown corruption .*available: brightness, ") as info:
        corrupt(smooth_images(3, 8), bad, 1)
    assert info.value.field == "corruption"
    if bad == "gaussian_nosie":
        assert "did you mean 'gaussian_noise'" in str(info.value)


@pytest.mark.parametrize("severity", [0, 6, 2.5, True])
def test_severity_outside_one_to_five_is_refused(severity):
    images = smooth_images(3, 8)
    with pytest.raises(ConfigError, match="severity: must be an integer in 1..5") as info:
        corrupt(images, "contrast", severity)
    assert info.value.field == "severity"
    with pytest.raises(ConfigError):  # the registry entries check too, not only corrupt()
        CORRUPTIONS["contrast"](images, severity, torch.Generator())


def test_images_must_be_a_float_batch_with_one_or_three_channels():
    with pytest.raises(ConfigError, match="images"):
        corrupt(torch.rand(2, 4, 8, 8), "contrast", 1)
    with pytest.raises(ConfigError, match="images"):
        corrupt(torch.rand(3, 8, 8), "contrast", 1)


def test_noise_ball_stays_within_eps_with_zero_mean_and_is_not_clipped():
    images = torch.zeros(64, 3, 32, 32)
    noisy = noise_ball(images, 0.1, generator=torch.Generator().manual_seed(0))
    deviation = noisy - images
    assert deviation.abs().max() <= 0.1
    assert deviation.abs().max() > 0.099  # fills the ball, not a smaller one
    assert abs(float(deviation.mean())) < 0.002
    assert noisy.min() < 0  # the paper's definition: no clip to [0, 1]
    assert torch.equal(noisy, noise_ball(images, 0.1, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(noise_ball(images, 0.0, generator=torch.Generator()), images)
    with pytest.raises(ConfigError, match="eps"):
        noise_ball(images, -0.1, generator=torch.Generator())


def test_ece_is_zero_for_confident_correct_one_hot_predictions():
    labels = torch.tensor([0, 2, 1, 2])
    assert expected_calibration_error(F.one_hot(labels, 3).float(), labels) == 0.0


def test_ece_by_hand():
    # bins of width 0.2: (0.4, 0.6] holds 0.55 (right): |1 - 0.55| = 0.45; (0.6, 0.8] holds 0.7 (wrong) and
    # 0.7 (right): |0.5 - 0.7| = 0.2; (0.8, 1] holds 0.9 (right): 0.1.  ECE = (0.45 + 2 * 0.2 + 0.1) / 4
    probabilities = torch.tensor([[0.9, 0.1], [0.7, 0.3], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0])
    assert expected_calibration_error(probabilities, labels, bins=5) == pytest.approx(0.2375)
    # always 80% sure, right half the time: 0.3 whatever the binning
    overconfident = torch.tensor([[0.8, 0.2]] * 4)
    assert expected_calibration_error(overconfident, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.3)


def test_ece_refuses_bad_input():
    with pytest.raises(ConfigError, match="bins"):
        expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), bins=0)
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(torch.tensor([[1.0, 0.0]]), torch.tensor([0, 1]))


def test_excess_error_by_hand():
    # pruned loses 0.20 under the shift, dense loses 0.17: pruning cost 0.03 of robustness
    assert excess_error(0.30, 0.10, 0.25, 0.08) == pytest.approx(0.03)
    assert excess_error(0.20, 0.10, 0.25, 0.10) == pytest.approx(-0.05)
