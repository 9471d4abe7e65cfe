"""Models by name: MLPs, LeNets, CIFAR ResNets and VGGs, a small ViT, and any torchvision classifier.

A factory names what it needs of the data (its ``info``) as parameters: the classifiers take
``input_shape = (C, H, W)`` and ``num_classes``, language models ``vocab_size`` (and
``block_size``); then its own options by keyword. The classifiers work on 8x8 inputs and on any
channel count, so the same sweep runs on ``digits`` in seconds and on CIFAR for real.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from raysparse.errors import ConfigError, did_you_mean, unknown_choice
from raysparse.zoo.registry import Registry, check_options, keyword_options

MODELS: Registry = Registry("model")
TORCHVISION_PREFIX = "torchvision:"


def model_names() -> list[str]:
    """Names accepted by ``build_model``, for ``raysparse list``."""
    return MODELS.names() + [f"{TORCHVISION_PREFIX}<name>"]


DATA_INFO = ("input_shape", "num_classes", "vocab_size", "block_size")  # what data may describe itself by


def build_model(spec: Mapping | str | nn.Module, info: Mapping | Sequence[int], num_classes: int | None = None,
                field: str = "model") -> nn.Module:
    """Build the model described by ``spec``, e.g. ``{"name": "mlp", "hidden": [64, 32]}``.

    A bare name is the same as ``{"name": name}``; an ``nn.Module`` is returned as is, so the
    Python API accepts any user model. Bad names, unknown options and bad option values raise a
    ConfigError naming ``<field>.name`` or ``<field>.<option>``. The caller seeds torch first.
    """
    if num_classes is not None:  # a classifier's two facts given directly: build_model(spec, (1, 8, 8), 10)
        info = {"input_shape": tuple(info), "num_classes": num_classes}
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(field, f"expected a mapping with a 'name' or an nn.Module, got {spec!r}")
    options = dict(spec)
    name = options.pop("name", None)
    if name is None:
        raise ConfigError(f"{field}.name", f"missing; available: {', '.join(model_names())}")
    if isinstance(name, str) and name.startswith(TORCHVISION_PREFIX):
        factory = _torchvision_factory(name.removeprefix(TORCHVISION_PREFIX), f"{field}.name")
    elif isinstance(name, str) and name in MODELS:
        factory = MODELS.get(name, f"{field}.name")
    else:
        raise unknown_choice(f"{field}.name", "model", name, model_names())
    allowed = keyword_options(factory, skip=DATA_INFO)
    check_options(options, allowed, field, f"model {name!r}")
    arguments = _data_arguments(factory, info, name, field)
    try:
        return factory(**arguments, **options)
    except ConfigError as error:
        # Factories only know their option's name; the caller's field gives the full path.
        message = str(error).removeprefix(f"{error.field}: ")
        raise ConfigError(f"{field}.{error.field}", message) from None


def _data_arguments(factory, info: Mapping, name: str, field: str) -> dict:
    """The entries of the data's ``info`` the factory names; one it requires that the data does
    not give (a language model on images) is an error naming the model."""
    arguments = {}
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.name not in DATA_INFO:
            continue
        if parameter.name in info:
            value = info[parameter.name]
            arguments[parameter.name] = tuple(value) if parameter.name == "input_shape" else value
        elif parameter.default is inspect.Parameter.empty:
            gives = ", ".join(sorted(info)) or "nothing"
            raise ConfigError(f"{field}.name", f"model {name!r} needs {parameter.name} from the data, which "
                              f"gives {gives}; a model for this data, or data for this model")
    return arguments


def _positive_int_list(value: object, option: str) -> list[int]:
    is_list = isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    if not is_list or not all(
        isinstance(item, int) and not isinstance(item, bool) and item > 0 for item in value
    ):
        raise ConfigError(option, f"expected a list of positive integers, got {value!r}")
    return list(value)


@MODELS.register("mlp")
def mlp(input_shape, num_classes, *, hidden: Sequence[int] = (256, 128)) -> nn.Module:
    """Flatten, then Linear+ReLU per entry of ``hidden``, then a Linear classifier."""
    widths = [math.prod(input_shape), *_positive_int_list(hidden, "hidden")]
    layers: list[nn.Module] = [nn.Flatten()]
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


@MODELS.register("lenet300")
def lenet300(input_shape, num_classes) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998), the classic pruning benchmark MLP."""
    return mlp(input_shape, num_classes, hidden=(300, 100))


@MODELS.register("lenet5")
def lenet5(input_shape, num_classes) -> nn.Module:
    """LeNet-5 with ReLU and max pooling: conv 6, conv 16 (5x5), fc 120, 84.

    A 5x5 conv is padded by 2 (size-preserving) only when its input is smaller than in the
    original 32x32 network (32 for conv1, 14 for conv2). So 32x32 inputs get the original
    architecture, MNIST's 28x28 the usual padded conv1, and 8x8 inputs pad both convs
    (8 -> 4 -> 2). The classifier's input size comes from a dummy forward pass.
    """
    channels, height, width = input_shape
    conv1_padding = 2 if min(height, width) < 32 else 0
    after_pool1 = (min(height, width) + 2 * conv1_padding - 4) // 2
    conv2_padding = 2 if after_pool1 < 14 else 0
    # ceil_mode keeps odd and 1-pixel maps alive instead of collapsing them to zero size.
    features = nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=conv1_padding), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(6, 16, 5, padding=conv2_padding), nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat_size = features(torch.zeros(1, *input_shape)).shape[1]
    return nn.Sequential(
        features,
        nn.Linear(flat_size, 120), nn.ReLU(inplace=True),
        nn.Linear(120, 84), nn.ReLU(inplace=True),
        nn.Linear(84, num_classes),
    )


def _positive_int(value: object, option: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(option, f"expected a positive integer, got {value!r}")
    return value


class ViT(nn.Module):
    """A Vision Transformer (Dosovitskiy et al. 2021, https://arxiv.org/abs/2010.11929) on
    nn.TransformerEncoderLayer: patches by a strided convolution, learned positions, pre-norm blocks
    and the mean of the tokens as the image summary (no class token; Beyer et al. 2022,
    https://arxiv.org/abs/2205.01580).

    Positions are an nn.Embedding rather than a bare nn.Parameter: torch-pruning then knows which
    dimension is the width, and embeddings are never masked. The head is registered last, so it is
    the classifier HAP keeps and ``dense_layers: [last]`` names.
    """

    def __init__(self, input_shape, num_classes, *, patch_size, depth, width, heads, mlp_ratio, dropout):
        super().__init__()
        channels, height, side = input_shape
        self.patches = nn.Conv2d(channels, width, patch_size, stride=patch_size)
        tokens = (height // patch_size) * (side // patch_size)
        self.position = nn.Embedding(tokens, width)
        self.register_buffer("token_index", torch.arange(tokens), persistent=False)
        block = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=round(mlp_ratio * width), dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2) + self.position(self.token_index)
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))


@MODELS.register("vit")
def vit(
    input_shape, num_classes, *, patch_size: int = 2, depth: int = 2, width: int = 32, heads: int = 4,
    mlp_ratio: float = 2.0, dropout: float = 0.0,
) -> nn.Module:
    """A small ViT: ``depth`` blocks of ``heads``-head self-attention and an MLP of
    ``mlp_ratio * width`` hidden units over ``patch_size`` x ``patch_size`` patches (8x8 digits at
    the defaults: 16 tokens, about 18k parameters)."""
    patch_size, depth = _positive_int(patch_size, "patch_size"), _positive_int(depth, "depth")
    width, heads = _positive_int(width, "width"), _positive_int(heads, "heads")
    _, height, side = input_shape
    if height % patch_size or side % patch_size:
        raise ConfigError("patch_size", f"{patch_size} must divide the image sides ({height}x{side})")
    if width % heads:
        raise ConfigError("heads", f"{heads} must divide width={width} (each head gets width / heads dimensions)")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or round(mlp_ratio * width) < 1:
        raise ConfigError("mlp_ratio", f"expected a number > 0 giving at least one MLP unit, got {mlp_ratio!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError("dropout", f"expected a number in [0, 1), got {dropout!r}")
    return ViT(input_shape, num_classes, patch_size=patch_size, depth=depth, width=width, heads=heads,
               mlp_ratio=mlp_ratio, dropout=dropout)


def _torchvision_factory(name: str, field: str):
    # torchvision costs ~2 s to import; only pay for it when a torchvision model is asked for.
    import torchvision.models

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ConfigError(
            field,
            f"unknown torchvision classifier {name!r}; names come from torchvision.models."
            f"list_models(module=torchvision.models){did_you_mean(name, available)}",
        )

    def factory(input_shape, num_classes) -> nn.Module:
        # torchvision's ViTs fix their image size at construction (224 unless told)
        options = {"image_size": input_shape[-1]} if name.startswith("vit_") else {}
        try:
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
        except AssertionError as error:  # torchvision checks image sizes with assertions
            size = f"{input_shape[1]}x{input_shape[2]}"
            raise ConfigError("name", f"torchvision:{name} on {size} inputs: {error}") from None
        if input_shape[0] != 3:
            _replace_first_conv(model, input_shape[0])
        return model

    return factory


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d (in registration order, which is the input layer for every
    torchvision classifier) for one taking ``in_channels``; all other settings are kept."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_path, _, attribute = path.rpartition(".")
            parent = model.get_submodule(parent_path)
            setattr(parent, attribute, nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, stride=module.stride,
                padding=module.padding, dilation=module.dilation, groups=module.groups,
                bias=module.bias is not None, padding_mode=module.padding_mode,
            ))
            return
    raise ValueError(f"{type(model).__name__} has no Conv2d to adapt to {in_channels} channels")


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers with a residual connection (He et al. 2016).

    Where the shape changes, the shortcut is a 1x1 conv+BN projection rather than the paper's
    zero-padding "option A": a real module lets torch-pruning's dependency graph follow the
    channels when structured pruning compacts them later.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def cifar_resnet(input_shape, num_classes, blocks_per_stage: int) -> nn.Module:
    """The 6n+2-layer CIFAR ResNet: stages of 16/32/64 channels, global average pooling."""
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
    ]
    in_channels = 16
    for stage, out_channels in enumerate((16, 32, 64)):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(in_channels, out_channels, stride))
            in_channels = out_channels
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    model = nn.Sequential(*layers)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


@MODELS.register("resnet20")
def resnet20(input_shape, num_classes) -> nn.Module:
    """ResNet-20 for CIFAR (He et al. 2016, https://arxiv.org/abs/1512.03385), ~0.27M weights."""
    return cifar_resnet(input_shape, num_classes, blocks_per_stage=3)


@MODELS.register("resnet32")
def resnet32(input_shape, num_classes) -> nn.Module:
    """ResNet-32 for CIFAR (He et al. 2016), ~0.47M weights."""
    return cifar_resnet(input_shape, num_classes, blocks_per_stage=5)


@MODELS.register("resnet56")
def resnet56(input_shape, num_classes) -> nn.Module:
    """ResNet-56 for CIFAR (He et al. 2016), ~0.86M weights."""
    return cifar_resnet(input_shape, num_classes, blocks_per_stage=9)


VGG_LAYOUTS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
              512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(input_shape, num_classes, layout: Sequence[int | str]) -> nn.Module:
    """VGG with BatchNorm (Simonyan & Zisserman 2015) in its CIFAR form: one Linear(512) head.

    Pools use ceil_mode, so a 1x1 map survives the later pools; inputs down to 8x8 work, and
    the adaptive average pool is a no-op on 32x32.
    """
    layers: list[nn.Module] = []
    in_channels = input_shape[0]
    for entry in layout:
        if entry == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        else:
            layers += [
                nn.Conv2d(in_channels, entry, 3, padding=1, bias=False),
                nn.BatchNorm2d(entry),
                nn.ReLU(inplace=True),
            ]
            in_channels = entry
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


@MODELS.register("vgg11")
def vgg11(input_shape, num_classes) -> nn.Module:
    """VGG-11 with BatchNorm (https://arxiv.org/abs/1409.1556)."""
    return vgg(input_shape, num_classes, VGG_LAYOUTS["vgg11"])


@MODELS.register("vgg16")
def vgg16(input_shape, num_classes) -> nn.Module:
    """VGG-16 with BatchNorm (https://arxiv.org/abs/1409.1556)."""
    return vgg(input_shape, num_classes, VGG_LAYOUTS["vgg16"])
