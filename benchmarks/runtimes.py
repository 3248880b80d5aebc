"""Latency of the three runtimes on the same model: eager torch, TorchScript, onnxruntime.

Random weights; configs ``tiny`` (R50 depth with one block a stage, D=64), ``r50`` and ``r101``
(the paper's head). CPU here; on a GPU host pass ``--device cuda`` (ORT then uses the CUDA
provider). Prints one table with each runtime's ratio to eager.

    python -m benchmarks.runtimes [--configs tiny r50 r101] [--actors 1 4 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import median_seconds
from fbil import model
from fbil.export.onnx_export import export_onnx
from fbil.export.torchscript_export import export_torchscript
from fbil.export.wrapper import ExportedDetector, random_inputs
from fbil.model.config import BackboneConfig, FBILConfig, HeadConfig

CONFIGS: dict[str, FBILConfig] = {
    "tiny": FBILConfig(
        backbone=BackboneConfig(layers=(1, 1, 1, 1)),
        head=HeadConfig(reduce_dim=64, num_heads=4, encoder_depth=1, fg_depth=1, bg_depth=1),
    ),
    "r50": FBILConfig(backbone=BackboneConfig(depth=50)),
    "r101": FBILConfig(backbone=BackboneConfig(depth=101)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 341], metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device.type == "cuda"
        else ["CPUExecutionProvider"]
    )
    import onnxruntime as ort

    print(f"device {device}, threads {torch.get_num_threads()}, clip 1x3x{args.frames}x"
          f"{args.size[0]}x{args.size[1]}, ORT providers {providers}")  # fmt: skip
    header = f"{'config':>6} | {'actors':>6} | {'eager ms':>9} | {'torchscript ms':>14} | "
    header += f"{'ratio':>6} | {'onnxruntime ms':>14} | {'ratio':>6}"
    print(header)
    print("-" * len(header))
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            config = CONFIGS[name]
            torch.manual_seed(0)
            detector = model.build_detector(config)
            meta = model.ModelMetadata(config=config)
            onnx_path = export_onnx(detector, meta, Path(tmp) / f"{name}.onnx")
            ts_path = export_torchscript(detector, meta, Path(tmp) / f"{name}.pt")
            session = ort.InferenceSession(str(onnx_path), providers=providers)
            scripted = torch.jit.load(str(ts_path), map_location=device).eval()
            eager = ExportedDetector(detector).eval().to(device)
            for n in args.actors:
                clips, rois = random_inputs(1, n, args.frames, *args.size, gen)
                clips_d, rois_d = clips.to(device), rois.to(device)
                feed = {"clips": clips.numpy(), "rois": rois.numpy()}

                def run_eager(c=clips_d, r=rois_d, m=eager):
                    with torch.inference_mode():
                        m(c, r)
                    sync()

                def run_ts(c=clips_d, r=rois_d, m=scripted):
                    with torch.inference_mode():
                        m(c, r)
                    sync()

                t_eager = median_seconds(run_eager, args.repeats) * 1e3
                t_ts = median_seconds(run_ts, args.repeats) * 1e3
                t_ort = median_seconds(lambda f=feed, s=session: s.run(None, f), args.repeats) * 1e3
                print(
                    f"{name:>6} | {n:>6} | {t_eager:>9.1f} | {t_ts:>14.1f} | "
                    f"{t_eager / t_ts:>5.2f}x | {t_ort:>14.1f} | {t_eager / t_ort:>5.2f}x"
                )


if __name__ == "__main__":
    main()
