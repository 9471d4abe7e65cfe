"""Every registered task, and a user's task by import path, against the contract the loop relies on."""

import textwrap

import pytest
import torch
from torch.utils.data import TensorDataset

from raysparse.errors import ConfigError
from raysparse.imports import add_import_dirs
from raysparse.tasks import TASKS, build_task
from raysparse.train import fit
from raysparse.zoo import build_data, build_model
from tests.conftest import small_config


def classification_case(text_file):
    data = build_data({"name": "digits"}, seed=0)
    return data, build_model({"name": "mlp", "hidden": [16]}, data.info)


def causal_lm_case(text_file):
    data = build_data({"name": "text", "path": text_file, "block_size": 16}, seed=0)
    return data, build_model({"name": "gpt", "depth": 1, "width": 16, "heads": 2}, data.info)


CASES = {"classification": classification_case, "causal_lm": causal_lm_case}


def test_every_registered_task_has_a_case_here():
    assert set(TASKS) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_task_scores_batches_evaluates_its_metrics_and_feeds_real_examples(name, text_file):
    torch.manual_seed(0)
    task, (data, model) = build_task(name), CASES[name](text_file)
    assert task.metrics and set(task.metrics.values()) <= {"max", "min"}
    assert task.main_metric == next(iter(task.metrics))
    loader = torch.utils.data.DataLoader(data.train, batch_size=8)
    batch = next(iter(loader))
    loss, weight = task.loss(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss) and weight > 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    metrics = task.evaluate(model, torch.utils.data.DataLoader(data.val, batch_size=32), torch.device("cpu"))
    assert set(metrics) == set(task.metrics) and all(isinstance(v, float) for v in metrics.values())
    assert not model.training  # evaluated in eval mode
    example = task.example_input(data.val, 3, torch.device("cpu"))
    output = task.forward(model, task.example_batch(data.val, 3))
    task.check_output(output, task.example_batch(data.val, 3), data.info, "model")
    assert task.forward(model, task.example_batch(data.val, 3)).shape[0] == 3 == len(example)


USER_TASK = textwrap.dedent('''
    """A lab's regression task, written against raysparse's public API only."""
    from dataclasses import dataclass

    import torch

    from raysparse import Task, TaskOptions


    @dataclass(frozen=True)
    class HuberOptions(TaskOptions):
        delta: float = 1.0


    class Regression(Task):
        name = "regression"
        Options = HuberOptions
        metrics = {"mse": "min", "huber": "min"}

        def loss(self, model, batch):
            x, y = batch
            return torch.nn.functional.huber_loss(model(x).squeeze(-1), y, delta=self.options.delta), len(y)

        @torch.no_grad()
        def evaluate(self, model, loader, device):
            model.eval()
            squared = huber = count = 0.0
            for x, y in loader:
                out = model(x.to(device)).squeeze(-1)
                squared += float(((out - y.to(device)) ** 2).sum())
                huber += float(torch.nn.functional.huber_loss(out, y.to(device), reduction="sum",
                                                              delta=self.options.delta))
                count += len(y)
            return {"mse": squared / count, "huber": huber / count}


    def make_data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(300, 4, generator=g)
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        return {"train": torch.utils.data.TensorDataset(x[:240], y[:240]),
                "test": torch.utils.data.TensorDataset(x[240:], y[240:])}


    def make_net():
        return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
''')


@pytest.fixture(scope="module")
def user_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_task")
    (root / "lab_tasks.py").write_text(USER_TASK)
    add_import_dirs([root])


def regression_config(**task):
    cfg = small_config("gmp", final_sparsity=0.5)
    cfg.update(task={"name": "lab_tasks:Regression", **task}, measure_latency=False,
               model={"factory": "lab_tasks:make_net"}, data={"factory": "lab_tasks:make_data", "batch_size": 32},
               optimizer={"name": "adam", "lr": 0.01})
    return cfg


def test_a_users_task_by_import_path_trains_with_its_own_metrics_and_options(user_task):
    final = fit(regression_config(delta=0.5))
    assert {"val_mse", "val_huber", "test_mse", "best_val_mse"} <= set(final)
    assert "val_accuracy" not in final and final["density"] == pytest.approx(0.5, abs=0.01)
    assert final["val_mse"] < 13.25  # the variance of y: the model learned something
    with pytest.raises(ConfigError) as caught:
        fit(regression_config(delt=0.5))
    assert caught.value.field == "task.delt" and "delta" in caught.value.message


def test_a_task_object_is_given_to_train_and_not_a_task_is_refused(user_task):
    from lab_tasks import Regression

    import raysparse

    cfg = regression_config()
    del cfg["task"]
    final = raysparse.train(cfg, task=Regression)
    assert "val_mse" in final
    with pytest.raises(ConfigError) as caught:
        raysparse.train(cfg, task=TensorDataset)
    assert caught.value.field == "task" and "not a subclass of raysparse.Task" in caught.value.message
