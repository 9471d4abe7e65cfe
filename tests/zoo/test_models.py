import copy
import inspect
import io

import pytest
import torch
from torch import nn

from raysparse.errors import ConfigError
from raysparse.zoo import MODELS, Registry, build_model, model_names
from raysparse.zoo.models import BasicBlock

SHAPES = [(1, 8, 8), (3, 32, 32)]
# the image classifiers: the zoo's language models (gpt, hf) take vocab_size, tested in their own files
CLASSIFIERS = [n for n in MODELS.names() if "num_classes" in inspect.signature(MODELS[n]).parameters]


def test_the_classifiers_are_every_model_but_the_language_models():
    assert set(MODELS.names()) - set(CLASSIFIERS) == {"gpt", "hf"}


@pytest.mark.parametrize("input_shape", SHAPES, ids=["1x8x8", "3x32x32"])
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_model_builds_and_classifies(name, input_shape):
    model = build_model({"name": name}, input_shape, num_classes=10)
    logits = model(torch.randn(2, *input_shape))  # train mode: BatchNorm sees a real batch
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_construction_depends_only_on_the_torch_seed(name):
    torch.manual_seed(3)
    first = build_model({"name": name}, (1, 8, 8), 10).state_dict()
    torch.manual_seed(3)
    second = build_model({"name": name}, (1, 8, 8), 10).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_resnet20_has_about_027m_parameters():
    model = build_model({"name": "resnet20"}, (3, 32, 32), 10)
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6


def test_resnet_uses_projection_modules_and_can_be_copied_and_saved():
    model = build_model({"name": "resnet20"}, (3, 32, 32), 10)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    projections = [b for b in blocks if isinstance(b.shortcut, nn.Sequential)]
    assert len(blocks) == 9 and len(projections) == 2
    assert all(isinstance(b.shortcut[0], nn.Conv2d) for b in projections)
    copy.deepcopy(model)
    torch.save(model, io.BytesIO())  # a lambda shortcut would fail here


@pytest.mark.parametrize("name", ["resnet20", "vgg11", "lenet5"])
def test_conv_models_accept_any_channel_count(name):
    model = build_model({"name": name}, (5, 8, 8), 3)
    assert model(torch.randn(2, 5, 8, 8)).shape == (2, 3)


def test_lenet5_keeps_the_classic_layout_on_32x32_and_pads_small_inputs():
    def classifier_inputs(shape):
        model = build_model("lenet5", shape, 10)
        return next(m for m in model.modules() if isinstance(m, nn.Linear)).in_features

    assert classifier_inputs((3, 32, 32)) == 16 * 5 * 5
    assert classifier_inputs((1, 28, 28)) == 16 * 5 * 5
    assert classifier_inputs((1, 8, 8)) == 16 * 2 * 2


def test_mlp_hidden_widths():
    model = build_model({"name": "mlp", "hidden": [64, 32]}, (1, 8, 8), 10)
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert widths == [(64, 64), (64, 32), (32, 10)]


def test_torchvision_model_with_one_input_channel():
    model = build_model({"name": "torchvision:resnet18"}, (1, 32, 32), 7)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_a_module_instance_is_returned_as_is():
    module = nn.Linear(3, 2)
    assert build_model(module, (1, 1, 3), 2) is module


def test_model_names_list_registry_and_torchvision():
    assert set(MODELS.names()) < set(model_names())
    assert "torchvision:<name>" in model_names()


@pytest.mark.parametrize(
    ("spec", "field", "bad_value"),
    [
        ({"name": "resnt20"}, "model.name", "resnt20"),
        ({"name": "torchvision:resnet1"}, "model.name", "resnet1"),
        ({"name": "mlp", "hidden": [-3]}, "model.hidden", "-3"),
        ({"name": "mlp", "hidden": "abc"}, "model.hidden", "abc"),
        ({"name": "mlp", "hidden": [1.5]}, "model.hidden", "1.5"),
        ({"name": "mlp", "hiden": [3]}, "model.hiden", "hiden"),
        ({"name": "resnet20", "width": 2}, "model.width", "width"),
        ({}, "model.name", "missing"),
        (7, "model", "7"),
    ],
)
def test_bad_specs_name_the_field_and_value(spec, field, bad_value):
    with pytest.raises(ConfigError) as excinfo:
        build_model(spec, (1, 8, 8), 10)
    assert excinfo.value.field == field
    assert field in str(excinfo.value) and bad_value in str(excinfo.value)


def test_errors_list_what_is_allowed():
    with pytest.raises(ConfigError, match=r"available: .*resnet20.*did you mean 'resnet20'"):
        build_model({"name": "resnt20"}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"allowed: hidden \(did you mean 'hidden'\?\)"):
        build_model({"name": "mlp", "hiden": [3]}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match=r"list_models"):
        build_model({"name": "torchvision:resnet1"}, (1, 8, 8), 10)


def test_field_prefix_is_the_callers():
    with pytest.raises(ConfigError) as excinfo:
        build_model({"name": "mlp", "hidden": [0]}, (1, 8, 8), 10, field="teacher")
    assert excinfo.value.field == "teacher.hidden"


def test_registry_rejects_duplicates_and_suggests_names():
    registry = Registry("widget")
    registry.register("sprocket")(object)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("sprocket")(object)
    with pytest.raises(ConfigError, match="unknown widget 'sprockt'.*did you mean 'sprocket'"):
        registry.get("sprockt", field="widget.name")
    assert "sprocket" in registry and registry.names() == ["sprocket"]
