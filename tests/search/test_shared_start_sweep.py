"""A per-layer allocation search over a pretrained LM, as issue 25 asks: post-training trials
(``epochs: 0``) of a tiny Llama (GQA), one level per block, the evolutionary sampler; the dense
weights and Wanda's calibration statistics computed once and read by every trial from one object
in Ray's object store.

(Named to sort after test_cluster.py: this module starts the package's local Ray runtime; run
before the two-node cluster test, with that runtime still up, the cluster's `raysparse submit`
fails with "No available agent to submit job", reproduced with both modules in that order.)"""

import csv
import json
import tempfile
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raysparse.errors import ConfigError
from raysparse.search import run_sweep
from tests.search.test_layerwise import llama_sweep


def test_an_evolutionary_allocation_sweep_shares_one_start_and_meets_the_budget(ray_runtime, home, text_file):
    raw = llama_sweep(text_file, group="block").raw
    raw["base"].update(epochs=0)
    raw["base"]["sparsity"].update(prune_start=0, prune_end=0)
    raw.update(name="evolve", sampler="evolutionary", num_samples=4, max_concurrent=2, log_weights=False)
    result = run_sweep(raw, home=home, verbose=False)
    trials = result.to_dataframe()
    assert sorted(trials["status"]) == ["FINISHED"] * 4
    client = MlflowClient(result.tracking_uri)
    runs = [client.get_run(run_id) for run_id in trials["run_id"]]
    shared = {run.data.tags.get("raysparse.shared_start") for run in runs}
    assert len(shared) == 1 and None not in shared  # every trial read the same object
    assert {run.data.tags["raysparse.shared_start_read_only"] for run in runs} == {"true"}  # in place, no copy
    assert client.get_run(result.parent_run_id).data.metrics["shared_start_mb"] > 0
    with tempfile.TemporaryDirectory() as tmp:
        references = json.loads(Path(client.download_artifacts(result.parent_run_id, "allocations.json", tmp))
                                .read_text())
    assert set(references) == {"layer_sizes", "uniform", "owl"}
    sizes = references["layer_sizes"]
    for name in ("uniform", "owl"):  # the heuristics the report draws the best against, at the same budget
        assert sum(references[name][n] * sizes[n] for n in sizes) == pytest.approx(0.4 * sum(sizes.values()))
    assert result.report["allocation"].stat().st_size > 0  # the best allocation against depth
    with pytest.raises(ConfigError, match=r"logged its masks but no weights \(its sweep's log_weights: false\)"):
        result.load_model()

    prefix = "sparsity.layer_densities."
    allocations = [{k.removeprefix(prefix): float(v) for k, v in run.data.params.items() if k.startswith(prefix)}
                   for run in runs]  # the trial's allocation, logged as its params
    for allocation in allocations:
        assert len(allocation) == 3 * 7
        levels = {(n.split(".")[2], v) for n, v in allocation.items()}
        assert len(levels) == 3  # one level per block
    assert any(all(v == pytest.approx(0.4) for v in a.values()) for a in allocations)  # the uniform start
    assert any(all(a[n] == pytest.approx(v, abs=1e-6) for n, v in references["owl"].items())
               for a in allocations)  # and OWL's
    assert len({tuple(sorted(a.items())) for a in allocations}) >= 2  # and children that move weights
    for run in runs:
        with tempfile.TemporaryDirectory() as tmp:
            with open(client.download_artifacts(run.info.run_id, "layer_density.csv", tmp)) as table:
                rows = [r for r in csv.DictReader(table) if r["kept"]]
            names = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
            names |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
        kept, total = sum(int(r["kept"]) for r in rows), sum(int(r["total"]) for r in rows)
        assert kept == round(0.4 * total)  # the budget, exactly
        assert "model/state_dict.pt" not in names and "model/config.json" in names  # log_weights: false
        assert "plots/allocation.png" in names  # density by block and matrix type
        assert Path(client.download_artifacts(run.info.run_id, "masks/final.bin", tempfile.mkdtemp())).stat().st_size


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_optunas_samplers_start_from_the_same_heuristics(ray_runtime, home, text_file, sampler):
    raw = llama_sweep(text_file, group="block").raw
    raw["base"].update(epochs=0)
    raw["base"]["sparsity"].update(prune_start=0, prune_end=0)
    raw.update(name=f"{sampler}_starts", sampler=sampler, num_samples=3, max_concurrent=1, log_weights=False)
    result = run_sweep(raw, home=home, verbose=False)
    client = MlflowClient(result.tracking_uri)
    prefix = "sparsity.layer_densities."
    first = [{k.removeprefix(prefix): float(v) for k, v in client.get_run(r).data.params.items()
              if k.startswith(prefix)} for r in result.to_dataframe().sort_values("start_time")["run_id"]]
    with tempfile.TemporaryDirectory() as tmp:
        owl = json.loads(Path(client.download_artifacts(result.parent_run_id, "allocations.json", tmp))
                         .read_text())["owl"]
    assert all(v == pytest.approx(0.4) for v in first[0].values())
    assert all(first[1][n] == pytest.approx(v, abs=1e-6) for n, v in owl.items())
    assert first[2] != first[0] and first[2] != first[1]  # then the sampler's own proposal
