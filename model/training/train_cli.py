"""``fbil-train``: train FBIL from a published-format YAML config (see :mod:`.train_config`).

Usage::

    fbil-train --config CONFIG.yaml [--resume [STATE]] [--result-path DIR] [--device cpu|cuda]
    fbil-train --config CONFIG.yaml --labels MY_CLASSES.pbtxt --init-from MODEL \
        [--freeze-backbone | --backbone-lr-mult 0.1]     # fine-tune on your own classes
    torchrun --nproc_per_node N -m fbil.model.training.train_cli --config CONFIG.yaml
    fbil-train synth ...            # synthetic AVA-format dataset (model.training.synth)

``--resume`` without a path continues from the newest ``checkpoints/epoch_NNN.state.pth`` in
the result path; with a path, from that state file or a published training checkpoint.
Exit codes: 0 done, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fbil.model.config import ConfigError

PROG = "fbil-train"
AUTO = "auto"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train the FBIL action detector.",
        epilog="fbil-train synth --help: write a synthetic AVA-format dataset.",
    )
    p.add_argument("--config", "-c", type=Path, required=True, help="training config YAML")
    p.add_argument(
        "--resume",
        nargs="?",
        const=AUTO,
        default=None,
        metavar="STATE",
        help="continue a run: the newest state in the result path, or this file",
    )
    p.add_argument("--result-path", type=Path, help="override the config's result_path")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument(
        "--evaluate", action="store_true", help="only validate (the published 'evaluate: True')"
    )
    p.add_argument("--labels", type=Path, help="label map (.pbtxt/.json): the model's classes")
    p.add_argument(
        "--init-from",
        type=Path,
        metavar="CHECKPOINT",
        help="fine-tune from any checkpoint fbil loads ('demo': the bundled demo model); "
        "the classifier of other classes is new",
    )
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument(
        "--backbone-lr-mult", type=float, metavar="X", help="backbone learning rate multiplier"
    )
    return p


def overrides(args: argparse.Namespace) -> dict[str, object]:
    """The config keys the command line sets."""
    values = {
        "labels": args.labels,
        "init_from": args.init_from,
        "freeze_backbone": args.freeze_backbone or None,
        "backbone_lr_mult": args.backbone_lr_mult,
    }
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "synth":
        # PyAV and the drawing code: only this subcommand needs them
        from fbil.model.training import synth  # noqa: PLC0415

        return int(synth.main(args_list[1:]) or 0)
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    # torch and PyAV start here, after parsing (the config's data specs and the trainer import
    # them), so --help and usage errors answer at once
    import torch.distributed as dist  # noqa: PLC0415

    from fbil.model.training.train import Trainer, init_distributed  # noqa: PLC0415
    from fbil.model.training.train_config import load_train_config  # noqa: PLC0415

    try:
        cfg = load_train_config(args.config, overrides(args))
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.result_path is not None:
        cfg = replace(cfg, result_path=args.result_path)

    ctx = init_distributed(args.device)
    logging.basicConfig(
        level=logging.INFO if ctx.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {ctx.rank}] %(levelname)s %(message)s",
    )
    try:
        trainer = Trainer(cfg, ctx)
        if args.resume is not None:
            state = trainer.latest_state() if args.resume == AUTO else Path(args.resume)
            if state is None:
                print(f"{PROG}: error: nothing to resume in {trainer.ckpt_dir}", file=sys.stderr)
                return 2
            trainer.resume(state)
        if args.evaluate or cfg.evaluate_only:
            trainer.validate()
        else:
            trainer.fit()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
