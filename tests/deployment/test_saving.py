"""A deployed network saved as data (weights, plan, the model's spec) and loaded back: for every kind
of model deploy takes (the zoo's, torchvision's, an HF model, a class of the user's) the loaded
network runs the same kernels and computes what the deployed one did, in this process and in a
fresh one; a file that is anything else is refused in one line, and runs nothing it names."""

import collections
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from raysparse.deployment import build_deployed, load_deployed, save_deployed
from raysparse.deployment import planner as planner_module
from raysparse.sparsity.masks import weight_slots
from raysparse.tasks import logits_of
from raysparse.zoo.user_code import build_network
from tests.zoo.test_hf import LLAMA

ROOT = Path(__file__).resolve().parents[2]
DIGITS = {"input_shape": [1, 8, 8], "num_classes": 10}
TEXT = {"vocab_size": 50, "block_size": 16}


class ConvNet(nn.Module):
    """A user's classifier (a convolution with BatchNorm, then Linears), built by class or factory."""

    def __init__(self, input_shape, num_classes, *, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(input_shape[0], width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.hidden = nn.Linear(width * input_shape[1] * input_shape[2], 64)
        self.out = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.relu(self.bn(self.conv(x))).flatten(1))))


def conv_net(input_shape, num_classes, width: int = 8) -> nn.Module:
    return ConvNet(input_shape, num_classes, width=width)


USER = "tests.deployment.test_saving:"
# id -> (model block, data info, forced kernels: the first pattern that matches a layer wins), and
# what load_deployed is given as model= (None: the file alone)
CASES = {
    "mlp": ({"name": "mlp", "hidden": [64, 32]}, DIGITS, {"1": "bsr4x4", "*": "csr"}, None),
    "lenet5": ({"name": "lenet5"}, DIGITS, {"0.*": "unfold-csr", "*": "csr"}, None),
    "resnet20": ({"name": "resnet20"}, {"input_shape": [3, 8, 8], "num_classes": 10}, {"*": "unfold-csr"}, None),
    "vit": ({"name": "vit", "depth": 1, "width": 16, "heads": 2}, DIGITS, {"patches": "unfold-csr", "*": "csr"}, None),
    # only out_proj sparse: the deployed attention holds its packed q/k/v as a dense Linear
    "vit-out-proj": ({"name": "vit", "depth": 1, "width": 16, "heads": 2}, DIGITS, {"*out_proj": "csr", "*": "dense"},
                     None),
    "gpt": ({"name": "gpt", "depth": 1, "width": 32, "heads": 2}, {"vocab_size": 64, "block_size": 16}, {"*": "csr"},
            None),
    "torchvision": ({"name": "torchvision:resnet18"}, {"input_shape": [3, 32, 32], "num_classes": 10},
                    {"*": "unfold-csr"}, None),
    "hf": ({"name": "hf", "config": LLAMA}, TEXT, {"*": "csr"}, None),
    "user-class": ({"python": USER + "ConvNet", "width": 6}, DIGITS, {"conv": "unfold-csr", "*": "csr"}, ConvNet),
    "user-factory": ({"factory": USER + "conv_net", "width": 6}, DIGITS, {"conv": "unfold-csr", "*": "csr"}, conv_net),
    "user-instance": ({"python": USER + "ConvNet", "width": 6}, DIGITS, {"conv": "unfold-csr", "*": "csr"}, "instance"),
}


def masked(spec: dict, info: dict) -> nn.Module:
    """The model the block builds, every matmul weight but the last keeping a random 10% (the
    last: 4x4 blocks of it, so a BSR kernel fits), random BatchNorm statistics (fresh ones fold into
    nothing)."""
    torch.manual_seed(0)
    model = build_network(spec, info, given=ConvNet if "python" in spec else None).eval()
    with torch.no_grad():
        for module, attribute in list(weight_slots(model).values())[:-1]:
            weight = getattr(module, attribute)
            if weight.dim() == 2 and weight.shape[0] % 4 == 0 and weight.shape[1] % 4 == 0:
                keep = torch.rand(weight.shape[0] // 4, weight.shape[1] // 4) < 0.1
                weight.mul_(keep.repeat_interleave(4, 0).repeat_interleave(4, 1))
            else:
                weight.mul_(torch.rand_like(weight) < 0.1)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


def example(info: dict, batch: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if "vocab_size" in info:
        return torch.randint(0, info["vocab_size"], (batch, info["block_size"]), generator=generator)
    return torch.randn(batch, *info["input_shape"], generator=generator)


def outputs(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(network(x))


def given(case: str):
    spec, info, _, model = CASES[case]
    return build_network({k: v for k, v in spec.items() if k != "python"}, info, given=ConvNet) \
        if model == "instance" else model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every case deployed on its forced kernels and saved: id -> (deployed network, path)."""
    folder = tmp_path_factory.mktemp("deployed")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    result = {}
    for case, (spec, info, kernels, _) in CASES.items():
        deployed = build_deployed(masked(spec, info), example(info), kernels=kernels)
        result[case] = deployed, save_deployed(deployed, folder / f"{case}.pt", model=spec, data_info=info)
    torch.set_num_threads(before)
    return result


@pytest.mark.parametrize("case", CASES)
def test_a_saved_network_loads_back_on_its_kernels_and_computes_the_same(saved, case):
    deployed, path = saved[case]
    assert deployed.plan.sparse_layers() >= 1  # else the round trip would prove nothing about the kernels
    model = given(case)
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    loaded = load_deployed(path, model=model)
    assert torch.equal(torch.get_rng_state(), rng)  # the architecture's random weights leave no trace
    x = example(CASES[case][1], batch=3)
    torch.testing.assert_close(outputs(loaded, x), outputs(deployed, x))
    assert loaded.plan == deployed.plan and str(loaded.plan) == str(deployed.plan)
    kinds = [(name, type(m).__name__) for name, m in loaded.named_modules()]
    assert kinds == [(name, type(m).__name__) for name, m in deployed.named_modules()]
    sparse = {n: t.layout for n, t in loaded.state_dict().items() if t.layout != torch.strided}
    assert sparse == {n: t.layout for n, t in deployed.state_dict().items() if t.layout != torch.strided}


def test_saved_networks_load_in_a_fresh_process(saved, tmp_path):
    """Nothing of the saving process is needed: a new interpreter loads every file."""
    paths = {case: str(path) for case, (_, path) in saved.items()}
    script = f"""
import json, sys, torch
from raysparse.deployment import load_deployed
from raysparse.tasks import logits_of
from tests.deployment.test_saving import CASES, example, given
torch.set_num_threads(1)
result = {{}}
for case, path in json.loads(sys.argv[1]).items():
    with torch.no_grad():
        result[case] = logits_of(load_deployed(path, model=given(case))(example(CASES[case][1], batch=3)))
torch.save(result, {str(tmp_path / "outputs.pt")!r})
"""
    done = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    fresh = torch.load(tmp_path / "outputs.pt", weights_only=True)
    for case, (deployed, _) in saved.items():
        torch.testing.assert_close(fresh[case], outputs(deployed, example(CASES[case][1], batch=3)))


def test_an_hf_model_from_a_directory_is_saved_by_its_config_and_loads_without_it(tmp_path):
    torch.manual_seed(0)
    masked({"name": "hf", "config": LLAMA}, TEXT).save_pretrained(tmp_path / "llama")
    spec = {"name": "hf", "path": str(tmp_path / "llama")}
    deployed = build_deployed(masked(spec, TEXT), example(TEXT), kernels={"*": "csr"})
    path = save_deployed(deployed, tmp_path / "model.pt", model=spec, data_info=TEXT)
    for file in (tmp_path / "llama").iterdir():
        file.unlink()
    (tmp_path / "llama").rmdir()
    loaded = load_deployed(path)
    torch.testing.assert_close(outputs(loaded, example(TEXT)), outputs(deployed, example(TEXT)))
    assert "path" not in json.loads(_contents(path)["model"])


def test_without_a_spec_an_hf_model_is_saved_by_its_config_and_any_other_by_its_class(saved, tmp_path):
    deployed, _ = saved["hf"]
    loaded = load_deployed(save_deployed(deployed, tmp_path / "hf.pt"))
    torch.testing.assert_close(outputs(loaded, example(TEXT)), outputs(deployed, example(TEXT)))
    deployed, _ = saved["user-class"]
    path = save_deployed(deployed, tmp_path / "user.pt")
    with pytest.raises(ValueError, match="was deployed from your model 'tests.deployment.test_saving:ConvNet'"):
        load_deployed(path)
    loaded = load_deployed(path, model=ConvNet(DIGITS["input_shape"], 10, width=6))
    torch.testing.assert_close(outputs(loaded, example(DIGITS)), outputs(deployed, example(DIGITS)))


def test_a_zoo_model_is_not_saved_without_its_data_info(saved, tmp_path):
    with pytest.raises(ValueError, match=r"^data_info: got None for model 'mlp'; allowed: what the data told"):
        save_deployed(saved["mlp"][0], tmp_path / "model.pt", model={"name": "mlp", "hidden": [64, 32]})


@pytest.mark.parametrize("case", ["user-class", "user-factory"])
def test_a_users_model_is_built_only_from_what_the_caller_passes(saved, case):
    with pytest.raises(ValueError) as refused:
        load_deployed(saved[case][1])
    named = CASES[case][0].get("python", CASES[case][0].get("factory"))
    assert f"was deployed from your model {named!r}; pass it as model=" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_file_naming_code_to_run_runs_nothing(saved, tmp_path):
    marker = tmp_path / "ran"
    spec = {"factory": "os:system", "command": f"touch {marker}"}
    path = save_deployed(saved["mlp"][0], tmp_path / "model.pt", model=spec, data_info=DIGITS)
    with pytest.raises(ValueError, match="was deployed from your model 'os:system'; pass it as model="):
        load_deployed(path)
    assert not marker.exists()


class _Foreign(nn.Module):
    def forward(self, x):
        return x


def _contents(path: Path) -> dict:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Validating sparse tensor invariants.*")
        return torch.load(path, weights_only=True)


def _rewritten(path: Path, out: Path, change) -> Path:
    """The saved file with ``change`` applied to what it holds, written again."""
    saved = _contents(path)
    change(saved)
    torch.save(saved, out)
    return out


def _with_attribute(saved):
    tensor = saved["weights"]["1.weight"]
    tensor.forward = "anything"  # torch.load(weights_only=True) keeps a tensor's instance attributes


def _plan_with(**row_changes):
    def change(saved):
        plan = json.loads(saved["plan"])
        for index, value in row_changes.items():
            plan["rows"][0][int(index[1:])] = value
        saved["plan"] = json.dumps(plan)
    return change


def _bad_csr_indices(saved):
    weight = saved["weights"]["3.weight"]  # layer 1 is BSR, layer 3 CSR
    columns = weight.col_indices().clone()
    columns[0] = weight.shape[1] + 5
    saved["weights"]["3.weight"] = torch.sparse_csr_tensor(weight.crow_indices(), columns, weight.values(),
                                                           weight.shape, check_invariants=False)


def _crafted(kind: str, path: Path, tmp: Path, deployed) -> Path:
    out = tmp / "crafted.pt"
    if kind == "pickled module":  # the form before: torch.save of the module
        torch.save(deployed, out)
    elif kind == "replaced forward":  # the attack on the old form: an instance attribute over a method
        deployed.network.forward = torch.nn.functional.relu
        torch.save(deployed, out)
        del deployed.network.forward
    elif kind == "foreign class":
        _rewritten(path, out, lambda saved: saved["weights"].update(extra=_Foreign()))
    elif kind == "tensor attribute":
        _rewritten(path, out, _with_attribute)
    elif kind == "attributed dict":
        def change(saved):
            saved["weights"] = collections.OrderedDict(saved["weights"])
            saved["weights"].forward = "anything"
        _rewritten(path, out, change)
    elif kind == "not deployed":
        torch.save({"weights": {}}, out)
    elif kind == "plan of other layers":
        _rewritten(path, out, _plan_with(i0="encoder.evil"))
    elif kind == "kernel its layer cannot take":
        _rewritten(path, out, _plan_with(i3="unfold-csr"))
    elif kind == "plan not rows":
        _rewritten(path, out, _plan_with(i1="64x64"))
    elif kind == "weights of another shape":
        _rewritten(path, out, lambda saved: saved["weights"].update({"5.bias": torch.zeros(11)}))
    elif kind == "sparse indices out of range":
        _rewritten(path, out, _bad_csr_indices)
    return out


REFUSALS = {
    "pickled module": "names raysparse.deployment.model.DeployedModel; load_deployed loads no pickled classes",
    "replaced forward": "names raysparse.deployment.model.DeployedModel; load_deployed loads no pickled classes",
    "foreign class": "names tests.deployment.test_saving._Foreign; load_deployed loads no pickled classes",
    "tensor attribute": "holds weights that are not plain tensors by name (an object or attribute besides them)",
    "attributed dict": "holds weights that are not plain tensors by name",
    "not deployed": "is not a deployed network written by raysparse.deployment.save_deployed(",
    "plan of other layers": "holds a plan of layers encoder.evil, 3, 5, not the model's 1, 3, 5",
    "kernel its layer cannot take": "runs layer '1' (Linear) on kernel 'unfold-csr', which it cannot take",
    "plan not rows": "holds a plan that is not rows of (layer, shape, density, kernel, timings)",
    "weights of another shape": "holds 5.bias as [11] torch.float32 torch.strided on cpu; the model's is [10]",
    "sparse indices out of range": "does not load: `0 <= col_indices < ncols` is not satisfied",
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_file_that_is_not_weights_plan_and_spec_is_refused_in_one_line(saved, tmp_path, kind):
    deployed, path = saved["mlp"]
    crafted = _crafted(kind, path, tmp_path, deployed)
    with pytest.raises(ValueError) as refused:
        load_deployed(crafted)
    message = str(refused.value)
    assert message.startswith(repr(str(crafted))) and REFUSALS[kind] in message, message
    assert "\n" not in message and len(message) <= 1000


def test_a_semi_structured_layer_saves_its_weight_dense_and_compresses_it_again_on_load(monkeypatch, tmp_path):
    """The state path of the 2:4 kernel on a CPU: torch's compression (CUDA only) stubbed by a copy,
    so what is checked is that the weight travels (a kernel whose weight were lost computes zeros)."""
    monkeypatch.setattr(torch.sparse, "to_sparse_semi_structured", lambda weight: weight.clone(), raising=False)
    monkeypatch.setattr(planner_module, "semi_structured_available", lambda device: True)
    spec = {"name": "mlp", "hidden": [64, 32]}
    model = masked(spec, DIGITS)
    with torch.no_grad():  # 2 of every 4 consecutive inputs kept: the 2:4 pattern
        for module, _ in list(weight_slots(model).values())[:-1]:
            module.weight.mul_(torch.tensor([1.0, 0.0, 1.0, 0.0]).repeat(module.weight.shape[1] // 4))
            module.weight.add_(torch.tensor([0.5, 0.0, 0.0, 0.0]).repeat(module.weight.shape[1] // 4))
    deployed = build_deployed(model, example(DIGITS), kernels={"*": "semi-structured-2:4"})
    assert deployed.plan.sparse_layers() == 2
    loaded = load_deployed(save_deployed(deployed, tmp_path / "model.pt", model=spec, data_info=DIGITS))
    torch.testing.assert_close(outputs(loaded, example(DIGITS)), outputs(deployed, example(DIGITS)))
    assert type(loaded.network[1]).__name__ == "SemiStructuredLinear"
