"""raysparse command line: ``raysparse train CONFIG.yaml``, ``raysparse list``.

Bad input exits with status 2 and one line naming the field, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from raysparse.errors import ConfigError
from raysparse.train.loop import TrainingDiverged


def _apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``--set optimizer.lr=0.05``: values parsed as YAML scalars/lists."""
    import yaml

    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"expected KEY=VALUE, got {item!r}")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{part!r} is not a mapping")
        node[leaf] = yaml.safe_load(text)
    return raw


def _print_epoch(metrics: dict, context) -> None:
    m = metrics
    print(
        f"epoch {m['epoch']:>3}  loss {m['train_loss']:.4f}  val {m['val_accuracy']:.4f}  "
        f"test {m['test_accuracy']:.4f}  density {m['density']:.4f}  churn {m['mask_churn']:.4f}  "
        f"lr {m['lr']:.4g}  {m['epoch_seconds']:.2f}s",
        flush=True,
    )


def cmd_train(args) -> int:
    from raysparse.config import load_config, read_yaml
    from raysparse.train import fit

    raw = _apply_overrides(read_yaml(args.config), args.set or [])
    config = load_config(raw)
    print(
        f"training {config.model['name']} on {config.data['name']} with {config.sparsity.method} "
        f"to sparsity {config.sparsity.final_sparsity:.0%} for {config.epochs} epochs",
        flush=True,
    )
    final = fit(config, _print_epoch, checkpoint_dir=args.checkpoint_dir, resume_from=args.resume)
    print(
        f"done: test accuracy {final['test_accuracy']:.4f} at density {final['density']:.4f} "
        f"(best val {final['best_val_accuracy']:.4f} at epoch {final['best_epoch']})"
    )
    return 0


def cmd_list(args) -> int:
    from raysparse.methods import METHODS
    from raysparse.sparsity.distributions import DISTRIBUTIONS
    from raysparse.zoo import DATASETS, MODELS

    rows = {
        "methods": [f"{n:<9} {METHODS[n].paper}" for n in sorted(METHODS)],
        "models": MODELS.names() + ["torchvision:<name>"],
        "datasets": DATASETS.names(),
        "distributions": sorted(DISTRIBUTIONS),
    }
    for title, items in rows.items():
        print(f"{title}:")
        for item in items:
            print(f"  {item}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysparse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one sparse network from a config file")
    train.add_argument("config", help="YAML config (see configs/)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    train.add_argument("--checkpoint-dir", help="write a checkpoint after every epoch")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint file or dir")
    train.set_defaults(handler=cmd_train)
    listing = sub.add_parser("list", help="registered methods, models, datasets, distributions")
    listing.set_defaults(handler=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"raysparse: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("raysparse: interrupted", file=sys.stderr)
        return 130
    except TrainingDiverged as err:
        print(f"raysparse: training stopped: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
