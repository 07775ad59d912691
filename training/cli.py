"""`axon train | export | models`: the command line of the training side.

Exit status: 0 on success, 2 on a user error (bad config, bad data, failed export),
with one line on stderr that says what to change.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from training.config import add_flags, build, flag_overrides
from training.errors import TrainingError


def _models_dir_default() -> str:
    return os.environ.get("AXON_MODELS_DIR", "exported_models")


def _parser() -> argparse.ArgumentParser:
    from training.pipelines.registry import FAMILIES

    p = argparse.ArgumentParser(prog="axon", description="Axon training and export")
    sub = p.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and export it to the repository")
    fams = train.add_subparsers(dest="family", required=True)
    for name, mod in FAMILIES.items():
        fp = fams.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        fp.add_argument("--config", type=Path, help="TOML or YAML file of options")
        fp.add_argument("--models-dir", type=Path, default=Path(_models_dir_default()))
        fp.add_argument("--version", type=int, help="version to write (default: next free)")
        fp.add_argument("--no-export", action="store_true", help="train and checkpoint only")
        if name == "forecaster":
            fp.add_argument(
                "--compare-cells",
                action="store_true",
                help="train rnn, lstm and gru on the same data and tabulate RMSE "
                "and gradient norms (nothing is exported)",
            )
            fp.add_argument("--report-dir", type=Path, default=Path("runs/compare-cells"))
        add_flags(fp, mod.CONFIG)

    exp = sub.add_parser("export", help="export a final.pt checkpoint to the repository")
    exp.add_argument("checkpoint", type=Path, help="e.g. runs/digits-cnn/final.pt")
    exp.add_argument("--models-dir", type=Path, default=Path(_models_dir_default()))
    exp.add_argument("--version", type=int)
    exp.add_argument("--name", help="publish under another model name")

    models = sub.add_parser("models", help="build the default model repository")
    models.add_argument(
        "--models-dir", "--out", dest="models_dir", type=Path, default=Path(_models_dir_default())
    )
    models.add_argument("--quick", action="store_true", help="tiny models for tests")
    models.add_argument("--force", action="store_true", help="rebuild even if present")
    models.add_argument("--checkpoint-dir", default="runs")
    return p


def run(argv: Sequence[str]) -> int:
    """Parse `argv` and run the command; raises `TrainingError` on user errors."""
    from training.distributed import barrier, init_distributed, shutdown
    from training.pipelines.defaults import build_defaults
    from training.pipelines.forecast import compare_cells, format_table
    from training.pipelines.registry import export_checkpoint, family

    args = _parser().parse_args(argv)
    if args.command == "models":
        build_defaults(
            args.models_dir, quick=args.quick, force=args.force, checkpoint_dir=args.checkpoint_dir
        )
        return 0
    if args.command == "export":
        path = export_checkpoint(args.checkpoint, args.models_dir, args.version, args.name)
        print(f"exported {path}")
        return 0
    mod = family(args.family)
    cfg = build(mod.CONFIG, args.config, flag_overrides(args))
    if getattr(args, "compare_cells", False):
        rows = compare_cells(cfg, args.report_dir)
        print(format_table(rows))
        print(f"\nreport: {args.report_dir}/compare-cells.json, grad_norm_by_cell.png")
        return 0
    ctx = init_distributed(cfg.device)  # a no-op unless started by torchrun
    try:
        ckpt = mod.train(cfg, args.models_dir)  # every rank trains its shard
        barrier(ctx)  # rank 0 has written final.pt
        if not ctx.is_main:
            return 0
        print(f"checkpoint: {ckpt}")
        if args.no_export:
            return 0
        path = export_checkpoint(ckpt, args.models_dir, args.version)
    finally:
        shutdown(ctx)
    meta = json.loads((path / "metadata.json").read_text())
    print(f"exported {path}")
    print(json.dumps(_headline(meta), indent=2))
    return 0


def _headline(meta: dict[str, object]) -> dict[str, object]:
    metrics = meta.get("metrics", {})
    assert isinstance(metrics, dict)
    keep = (
        "accuracy",
        "accuracy_without_augmentation",
        "rmse",
        "mae",
        "persistence",
        "arima",
        "generated",
        "real_held_out",
        "untrained_generator",
    )
    return {k: metrics[k] for k in keep if k in metrics}


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except TrainingError as exc:
        print(f"axon: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("axon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
