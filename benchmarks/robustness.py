"""What the robustness suite costs at the end of a trial: the full suite (11 corruptions x
severities 1, 3, 5, the noise ball at 3 eps, ECE, a dense reference for agreement and excess
error) on 1,000 test images, against one training epoch of the same model, interleaved round
by round, median seconds. The suite runs once per trial, so its cost is to be set against the
whole trial (epochs x one epoch).

Run: .venv/bin/python benchmarks/robustness.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from raysparse.robustness.evaluate import RobustnessConfig, robustness_metrics
from raysparse.train import fit
from raysparse.zoo import build_data, build_model

CASES = {
    "mlp [256, 128], digits 8x8": {"model": {"name": "mlp", "hidden": [256, 128]},
                                   "data": {"name": "digits", "batch_size": 64}},
    "resnet20, 32x32x3 (synthetic)": {"model": {"name": "resnet20"},
                                      "data": {"name": "synthetic", "shape": [3, 32, 32], "num_samples": 5000,
                                               "batch_size": 128}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    suite = RobustnessConfig(severities=(1, 3, 5), max_examples=1000)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(suite.corruptions)} corruptions x "
          f"{len(suite.severities)} severities, {len(suite.noise_eps)} eps, {suite.max_examples} images")
    print("| model | images judged | one epoch (s) | suite (s) | suite / epoch |")
    print("|---|---|---|---|---|")
    for name, case in CASES.items():
        cfg = {"epochs": 1, "measure_latency": False, **case,
               "sparsity": {"method": "gmp", "final_sparsity": 0.9, "prune_end": 1}}
        data = build_data(cfg["data"], 0)
        net = build_model(cfg["model"], data.info["input_shape"], data.info["num_classes"])
        reference = copy.deepcopy(net)
        epoch, judged = [], []
        for _ in range(args.rounds):  # an epoch of training (the loop's epoch_seconds), then the suite
            epoch.append(fit(cfg, model=net)["epoch_seconds"])
            started = time.perf_counter()
            robustness_metrics(net, data.test, suite, torch.device("cpu"), reference=reference)
            judged.append(time.perf_counter() - started)
        images = min(suite.max_examples, len(data.test.tensors()[1]))
        one, full = statistics.median(epoch), statistics.median(judged)
        print(f"| {name} | {images} | {one:.2f} | {full:.2f} | {full / one:.2f} |")

if __name__ == "__main__":
    main()
