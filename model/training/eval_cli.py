"""``fbil-eval``: AVA frame-mAP@0.5IoU from CSV files.

Usage::

    fbil-eval [csv] --labelmap L.pbtxt --groundtruth G.csv --detections D.csv \\
        [--exclusions E.csv] [--json OUT.json]
    fbil-eval checkpoint --checkpoint MODEL --data-config TRAIN.yaml [--split val|train] \\
        --out DETECTIONS.csv [--config MODEL.yaml] [--gt-boxes] [--json OUT.json]

``csv`` is the default subcommand, so it may be left out. ``checkpoint`` runs a model (our
safetensors, or a published checkpoint with ``--config``) over the keyframes of a split of a
training config (proposals when the split has them, else ground-truth boxes), writes the
detections CSV and scores it against the split's ground truth (``eval_mAP`` or its
annotations/labelmap/exclusions). Prints one line per label-map class
and the mAP; ``--json`` also writes the metrics (NaN as ``null``). Exit code 0 on success, 2 for
bad arguments or missing/malformed input files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fbil.model.training.ava_data import AvaFormatError
from fbil.model.training.ava_eval import FrameMapResult, evaluate_csv

__all__ = ["build_parser", "format_table", "main"]

PROG = "fbil-eval"
EXIT_OK = 0
EXIT_USAGE = 2
SUBCOMMANDS = frozenset({"csv", "checkpoint"})


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; each subcommand sets ``handler`` (a function of the namespace)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="AVA frame-mAP@0.5IoU, computed as the official AVA evaluator does."
    )
    sub = parser.add_subparsers(dest="command", metavar="{csv,checkpoint}")
    csv_cmd = sub.add_parser(
        "csv", help="score a detections CSV (default)", description=_csv_description()
    )
    csv_cmd.add_argument("--labelmap", "-l", type=Path, required=True, help="label map .pbtxt")
    csv_cmd.add_argument("--groundtruth", "-g", type=Path, required=True, help="ground-truth CSV")
    csv_cmd.add_argument("--detections", "-d", type=Path, required=True, help="detections CSV")
    csv_cmd.add_argument("--exclusions", "-e", type=Path, help="excluded-timestamps CSV")
    csv_cmd.add_argument("--json", type=Path, help="write the metrics to this JSON file")
    csv_cmd.set_defaults(handler=_run_csv)

    ck = sub.add_parser("checkpoint", help="run a model on a dataset split, write and score CSV")
    ck.add_argument("--checkpoint", type=Path, required=True, help="model weights")
    ck.add_argument("--config", type=Path, help="model config YAML (if the file embeds none)")
    ck.add_argument(
        "--data-config", type=Path, help="training YAML with the split (default: --config)"
    )
    ck.add_argument("--split", choices=("val", "train"), default="val")
    ck.add_argument("--out", type=Path, required=True, help="detections CSV to write")
    ck.add_argument("--gt-boxes", action="store_true", help="ground-truth boxes, not proposals")
    ck.add_argument("--batch-size", type=int, help="override the split's batch size")
    ck.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    ck.add_argument("--json", type=Path, help="write the metrics to this JSON file")
    ck.set_defaults(handler=_run_checkpoint)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fbil-eval``; returns the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in SUBCOMMANDS | {"-h", "--help"}:
        args_list.insert(0, "csv")
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def format_table(result: FrameMapResult) -> str:
    """Per-class table (id, ground-truth count, detections, AP, name) and the mAP line."""
    lines = [f"{'id':>4}  {'num_gt':>6}  {'num_det':>7}  {'AP':>8}  name"]
    for c in result.per_class:
        ap = "nan" if math.isnan(c.ap) else f"{c.ap:.6f}"
        lines.append(f"{c.class_id:>4}  {c.num_gt:>6}  {c.num_detections:>7}  {ap:>8}  {c.name}")
    counted = sum(not math.isnan(c.ap) for c in result.per_class)
    lines.append(
        f"mAP@0.5IOU = {result.mean_ap!r} "
        f"({counted} of {len(result.per_class)} classes have ground truth)"
    )
    return "\n".join(lines)


def _run_csv(args: argparse.Namespace) -> int:
    try:
        result = evaluate_csv(args.labelmap, args.groundtruth, args.detections, args.exclusions)
    except OSError as exc:
        return _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except (AvaFormatError, UnicodeDecodeError) as exc:
        return _fail(str(exc))
    print(format_table(result))
    return _write_json(result, args.json)


def _write_json(result: FrameMapResult, path: Path | None) -> int:
    if path is not None:
        try:
            path.write_text(json.dumps(result.to_json_dict(), indent=2, allow_nan=False) + "\n")
        except OSError as exc:
            return _fail(f"cannot write {exc.filename}: {exc.strerror}")
    return EXIT_OK


def _run_checkpoint(args: argparse.Namespace) -> int:
    from fbil.model.training.checkpoint_eval import run_checkpoint  # noqa: PLC0415 (torch import)

    data_config = args.data_config or args.config
    if data_config is None:
        return _fail("checkpoint mode needs --data-config (or --config) naming the split")
    try:
        result = run_checkpoint(
            args.checkpoint,
            data_config,
            split=args.split,
            out=args.out,
            model_config=args.config,
            gt_boxes=args.gt_boxes,
            batch_size=args.batch_size,
            device=args.device,
        )
    except OSError as exc:
        return _fail(f"cannot read {exc.filename}: {exc.strerror}")
    except (ValueError, AvaFormatError) as exc:  # ConfigError, CheckpointError are ValueErrors
        return _fail(str(exc))
    print(f"wrote {args.out}")
    if result is None:
        print("the split has no ground truth configured: detections not scored")
        return EXIT_OK
    print(format_table(result))
    return _write_json(result, args.json)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _csv_description() -> str:
    return (
        "Score detections (video_id,timestamp,x1,y1,x2,y2,action_id,score) against ground truth "
        "(video_id,timestamp,x1,y1,x2,y2,action_id,person_id): label-map whitelist, excluded "
        "timestamps, at most 50 detections per frame, greedy IoU>=0.5 matching, VOC all-point AP."
    )


if __name__ == "__main__":
    sys.exit(main())
