"""What runs on a GPU, in one command (under 5 minutes; not part of the test run).

1. The zoo's GPT (causal_lm, byte text) through ``fit`` on ``cuda``.
2. A Llama block (transformers, grouped-query attention, tied head) in bf16 through ``fit`` on ``cuda``.
3. A sweep of one trial with ``resources: {workers: 1, gpus_per_worker: 1}`` (local Ray, the
   embedded MLflow server): the trial runs on the GPU Ray gives it.
4. ``raysparse.deploy`` of a 2:4-masked MLP: its Linear layers on the semi-structured kernels
   where they measure faster, outputs checked against the masked model.

Prints what ran and the figures; exits 1 when no GPU is present.
Run: .venv/bin/python benchmarks/gpu_check.py
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import torch

import raysparse
from raysparse.train import fit

WORDS = "the cat sat on a mat and the dog ran to the park while birds sang in old green trees".split()


def corpus(folder: Path) -> str:
    rng = random.Random(0)
    path = folder / "corpus.txt"
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(3000)))
    return str(path)


def lm(text: str, model: dict) -> dict:
    return {"task": "causal_lm", "device": "cuda", "epochs": 2, "measure_latency": True, "model": model,
            "data": {"name": "text", "path": text, "block_size": 128, "batch_size": 32},
            "optimizer": {"name": "adamw", "lr": 0.001, "weight_decay": 0.0},
            "sparsity": {"method": "rigl", "final_sparsity": 0.8, "prune_end": 1, "update_frequency": 20}}


def timed(label: str, run) -> dict:
    start = time.perf_counter()
    out = run()
    print(f"{label}: {time.perf_counter() - start:.1f} s")
    return out


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        text = corpus(Path(folder))
        gpt = timed("gpt through fit on cuda", lambda: fit(lm(text, {"name": "gpt", "depth": 4, "width": 256,
                                                                     "heads": 8})))
        print(f"  val_perplexity {gpt['val_perplexity']:.2f}, density {gpt['density']:.3f}, "
              f"latency b1 {gpt['latency_ms_b1']:.2f} ms, b64 {gpt['latency_ms_b64']:.2f} ms")
        llama = {"name": "hf", "dtype": "bfloat16", "config": {
            "model_type": "llama", "hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8,
            "num_key_value_heads": 2, "intermediate_size": 768, "tie_word_embeddings": True}}
        result = timed("Llama block in bf16 through fit on cuda", lambda: fit(lm(text, llama)))
        print(f"  val_perplexity {result['val_perplexity']:.2f}, density {result['density']:.3f}")
        sweep = {"name": "gpu_check", "base": {**lm(text, {"name": "gpt", "depth": 2, "width": 128, "heads": 4}),
                                               "device": "auto"},
                 "space": {}, "num_samples": 1, "sampler": "random", "early_stopping": False,
                 "objectives": {"val_perplexity": "min"},
                 "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}}
        found = timed("a workers: 1 GPU trial", lambda: raysparse.sweep(sweep, home=folder, verbose=False).best())
        print(f"  trial {found['trial_id']}: val_perplexity {found['metrics']['val_perplexity']:.2f}")
    mlp = torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048)).cuda().half()
    with torch.no_grad():
        for layer in (mlp[0], mlp[2]):  # 2:4: the two largest of every four weights of a row
            groups = layer.weight.view(-1, 4)
            keep = groups.abs().topk(2, dim=1).indices
            layer.weight.copy_(torch.zeros_like(groups).scatter(1, keep, groups.gather(1, keep)).view_as(layer.weight))
    x = torch.randn(64, 2048, device="cuda", dtype=torch.half)
    deployed = raysparse.deploy(mlp, x)
    print("deploy of a 2:4 MLP at batch 64:")
    print(deployed.plan)
    error = (deployed(x) - mlp(x)).abs().max().item()
    print(f"  largest difference to the masked model: {error:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
