"""Bytes of a mask lineage: every update a full bit-packed snapshot (the format before deltas) against
deltas on a full snapshot every FULL_EVERY updates (raysparse/sparsity/lineage.py).

(a) a 1 M-weight mask (density 0.1) over ``--updates`` updates that each move ``churn`` of the
    positions (half pruned, half regrown: the density stays), for 1% and 5% churn;
(b) the digits quickstart's GraNet trial (search_spaces/quickstart.yaml's base), logged through a
    real TrialRun on an embedded MLflow server: the run's ``masks/`` folder (lineage.jsonl and every
    lineage file, the orphaned delta its end rewrites as a full snapshot included; final.bin, which
    both formats log, left out) against what the old format logged for the same events.

Run: .venv/bin/python benchmarks/lineage_size.py [--updates 50]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import yaml

from raysparse.sparsity.lineage import DELTA, FULL_EVERY, LineageEncoder
from raysparse.sparsity.masks import pack_masks

QUICKSTART = Path(__file__).resolve().parent.parent / "search_spaces" / "quickstart.yaml"


def synthetic(updates: int, churn: float, weights: int = 1_000_000, density: float = 0.1) -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(weights, generator=g) < density
    encoder, old, new, delta_bytes, deltas = LineageEncoder(), 0, 0, 0, 0
    started = time.perf_counter()
    for update in range(updates):
        kept, pruned = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        moved = int(churn * weights / 2)
        mask[kept[torch.randperm(kept.numel(), generator=g)[:moved]]] = False
        mask[pruned[torch.randperm(pruned.numel(), generator=g)[:moved]]] = True
        packed = pack_masks({"fc": mask.reshape(1000, weights // 1000)})
        encoded = encoder.encode(packed, full=update == updates - 1)  # the run's end: a full snapshot
        old, new = old + len(packed), new + len(encoded.blob)
        if encoded.encoding == DELTA:
            delta_bytes, deltas = delta_bytes + len(encoded.blob), deltas + 1
    seconds = time.perf_counter() - started
    print(f"  {churn:>5.0%} churn: old {old / 1e6:7.2f} MB  new {new / 1e6:6.2f} MB  ratio new/old {new / old:.3f}  "
          f"a delta {delta_bytes * 8 / deltas / weights:.3f} bits/weight  ({seconds:.1f} s for {updates} updates)")


def quickstart() -> None:
    from mlflow import MlflowClient

    from raysparse.tracking import SweepRun, TrialRun, download_lineage, ensure_local_server, stop_local_server
    from raysparse.train import fit

    config = yaml.safe_load(QUICKSTART.read_text())["base"]
    with tempfile.TemporaryDirectory() as home:
        uri = ensure_local_server(home)
        try:
            sweep = SweepRun.start(uri, "lineage-size", "quickstart", params={}, sweep_text="")
            run = TrialRun.open(uri, sweep.experiment_id, sweep.run_id, "t0", run_name="granet", params={})
            events = []

            def report(metrics, context):
                events.extend(context.mask_events)
                run.log_mask_events(context.mask_events)

            fit(config, report)
            run.log_final(packed_masks=events[-1].packed, layer_density={}, model_state={}, config=config)
            run.finish()
            sizes = {f.path: f.file_size for f in MlflowClient(uri).list_artifacts(run.run_id, "masks")}
            new = sum(size for path, size in sizes.items() if path != "masks/final.bin")
            rows = download_lineage(uri, run.run_id)
        finally:
            stop_local_server(home)
    old_rows = [{k: v for k, v in row.items() if k not in ("encoding", "base")} for row in rows]
    for row, event in zip(old_rows, events):
        row["file"] = f"masks/step_{event.step:08d}_{event.hash[:12]}.bin"
    old = sum(len(e.packed) for e in events) + sum(len(json.dumps(r)) + 1 for r in old_rows)
    weights = sum(int(torch.tensor(s).prod()) for s in json.loads(events[0].packed.partition(b"\n")[0])["shapes"])
    kinds = [row["encoding"] for row in rows]
    print(f"  {len(rows)} rows ({kinds.count(DELTA)} delta, {len(rows) - kinds.count(DELTA)} full), "
          f"{weights} weights: old {old / 1e3:.1f} kB  new {new / 1e3:.1f} kB  ratio new/old {new / old:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=50)
    args = parser.parse_args()
    print(f"(a) a 1 M-weight mask, {args.updates} updates, a full snapshot every {FULL_EVERY} and at the end:")
    for churn in (0.01, 0.05):
        synthetic(args.updates, churn)
    print("(b) the digits quickstart's GraNet trial, through a real MLflow server:")
    quickstart()


if __name__ == "__main__":
    main()
