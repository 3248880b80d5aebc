"""``fbil-export``: ONNX / TorchScript artifacts (+ Triton repository) from a checkpoint."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fbil.export import check
from fbil.export.onnx_export import DEFAULT_OPSET, export_onnx
from fbil.export.torchscript_export import export_torchscript
from fbil.export.triton import write_triton_repository
from fbil.model import artifact
from fbil.model.checkpoint import CheckpointError, load_model, sha256_file
from fbil.model.config import ConfigError
from fbil.model.detector import FBILDetector
from fbil.model.labels import read_label_map
from fbil.model.metadata import ModelMetadata

FORMATS = ("onnx", "torchscript", "all")


def exporter_version() -> str:
    try:
        return version("fbil")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fbil-export",
        description="Export an FBIL checkpoint to ONNX and/or TorchScript, with metadata.",
    )
    p.add_argument("--checkpoint", required=True, type=Path, help="any checkpoint fbil loads")
    p.add_argument("--config", type=Path, help="YAML config (if the checkpoint embeds none)")
    p.add_argument(
        "--labelmap",
        type=Path,
        metavar="FILE",
        help="the model's classes (.pbtxt/.json), in output order; default: the embedded ones, "
        "else the AVA classes of a 60- or 80-class checkpoint",
    )
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--fp16", action="store_true", help="half-precision network (GPU serving)")
    p.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare the artifact with the eager model on random inputs (default: on)",
    )
    p.add_argument("--triton", action="store_true", help="also write a Triton model repository")
    p.add_argument("--name", help="model name (default: the checkpoint's metadata name)")
    return p


def _step(message: str) -> float:
    print(f"[fbil-export] {message} ...", flush=True)
    return time.perf_counter()


def _done(start: float) -> None:
    print(f"[fbil-export]   done in {time.perf_counter() - start:.1f} s", flush=True)


def _report(kind: str, results: list[check.CheckResult], tolerance: float) -> None:
    for r in results:
        print(
            f"[fbil-export]   {kind}: clips={r.num_clips} actors={r.num_rois} "
            f"size={r.size[0]}x{r.size[1]} max|logits diff|={r.logits_diff:.2e} "
            f"max|scores diff|={r.scores_diff:.2e} (limit {tolerance:g})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = _step(f"loading {args.checkpoint}")
    try:
        args.labels = read_label_map(args.labelmap) if args.labelmap else None
        detector, metadata = _load(args)
    except (CheckpointError, ConfigError) as e:
        print(f"fbil-export: error: {e}", file=sys.stderr)
        return 2
    _done(start)
    if args.name:
        metadata = type(metadata)(**{**metadata.__dict__, "name": args.name})
    extra = {
        "exporter": {"name": "fbil-export", "version": exporter_version(), "opset": args.opset},
        "fp16": args.fp16,
        "source_sha256": metadata.source_sha256 or sha256_file(args.checkpoint),
        "inputs": {"clips": "float32 (B,3,T,H,W)", "rois": "float32 (N,5)"},
        "outputs": {"logits": "float32 (N,C)", "scores": "float32 (N,C)"},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tolerance = check.FP16_TOLERANCE if args.fp16 else check.FP32_TOLERANCE
    written: list[Path] = []
    try:
        if args.format in ("onnx", "all"):
            start = _step(f"exporting ONNX (opset {args.opset})")
            path = export_onnx(
                detector, metadata, args.out / "model.onnx", opset=args.opset, fp16=args.fp16,
                extra_metadata=extra,
            )  # fmt: skip
            written.append(path)
            _done(start)
            if args.check:
                _check(args, detector, "onnx", partial(check.onnx_runner, path), tolerance)
            if args.triton:
                name = re.sub(r"[^A-Za-z0-9_-]", "_", metadata.name)
                written.append(
                    write_triton_repository(path, args.out / "triton", name, metadata.labels)
                )
        if args.format in ("torchscript", "all"):
            start = _step("exporting TorchScript")
            path = export_torchscript(
                _fresh(args, detector), metadata, args.out / "model.torchscript.pt",
                fp16=args.fp16, extra_metadata=extra,
            )  # fmt: skip
            written.append(path)
            _done(start)
            if args.check:
                runner = partial(check.torchscript_runner, path)
                _check(args, detector, "torchscript", runner, tolerance)
    except check.CheckFailed as e:
        print(f"fbil-export: check failed: {e}", file=sys.stderr)
        return 1
    written.append(artifact.write_sidecar(args.out, metadata, extra))
    for path in written:
        print(f"[fbil-export] wrote {path}")
    return 0


CHECKED_WITH = {"onnx": "ONNX with onnxruntime (CPU)", "torchscript": "TorchScript"}


def _check(
    args: argparse.Namespace,
    detector: FBILDetector,
    kind: str,
    runner: Callable[[], check.Runner],
    tolerance: float,
) -> None:
    """Compare the artifact ``runner()`` runs with an fp32 eager copy; print the differences."""
    start = _step(f"checking {CHECKED_WITH[kind]} against eager")
    eager = _fresh(args, detector)
    frames = eager.config.preprocess.num_frames
    results = check.compare(eager, runner(), num_frames=frames, tolerance=tolerance)
    _report(kind, results, tolerance)
    _done(start)


def _fresh(args: argparse.Namespace, detector: FBILDetector) -> FBILDetector:
    """An fp32 eager copy (fp16 export casts the module it is given in place)."""
    if not args.fp16:
        return detector
    fresh, _ = _load(args)
    return fresh


def _load(args: argparse.Namespace) -> tuple[FBILDetector, ModelMetadata]:
    return load_model(
        args.checkpoint, args.config, labels=args.labels, labels_option="--labelmap FILE"
    )


if __name__ == "__main__":
    raise SystemExit(main())
