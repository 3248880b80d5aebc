"""One-shot GPU benchmark: the model per runtime and precision, and the CPU decoding that feeds it.

Prints markdown tables:

* matmul peak of the device per dtype (the ceiling the model rows are compared with);
* R50 and R101 (random weights, 32 frames at 256x341) at batch 1/4/8 x 1/8/16 actors a clip:
  eager fp32/fp16/bf16 (``torch.autocast``, as ``FBIL_PRECISION`` runs it), TorchScript,
  ``torch.compile``, ONNX Runtime CUDA and TensorRT (with the service's profile) where installed:
  clips/s, latency p50, peak GPU memory, achieved TFLOP/s and its share of the matmul peak, and
  the max score difference to eager fp32 on the same inputs (tolerance: the ``--fp16`` export's);
* the backbone/head split at 8 actors (what the FBIL head costs next to the backbone);
* CPU decoding: keyframe windows/s of ``fbil.model.video.decode_clips`` on 720p and 1080p H.264
  (made here with PyAV), one process pinned to one core, and one such process on every core; then
  "cores to feed the GPU" = best R101 clips/s / windows/s of one core.

Torch runtimes get device-resident inputs (the host->device copy of a batch is its own line); ONNX
Runtime rows include the copy. A runtime that cannot run here (not installed, no CUDA, TensorRT
libraries missing) is listed with the reason. ``--budget-s`` bounds the model rows: cells left
when it runs out are reported as skipped, so the run ends in time (default: about 8 minutes).

    python -m benchmarks.gpu                               # GPU host, the full run
    python -m benchmarks.gpu --device cpu --configs r101 --batches 1 --actors 8 \\
        --runtimes eager:fp32                             # the CPU figures of docs/performance.md
    python -m benchmarks.gpu --smoke                       # CPU, tiny model, seconds (tests)
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.timing import Stopwatch
from fbil.export.check import FP16_TOLERANCE
from fbil.export.wrapper import ExportedDetector, random_inputs
from fbil.model import ModelMetadata, build_detector
from fbil.model.config import BackboneConfig, FBILConfig
from fbil.model.preprocess import PreprocessSpec
from fbil.service.runtimes import (
    TENSORRT,
    RuntimeLoadError,
    TensorRTProfile,
    autocast_dtype,
    tensorrt_options,
)

CONFIGS = {
    "r50": FBILConfig(backbone=BackboneConfig(depth=50)),
    "r101": FBILConfig(backbone=BackboneConfig(depth=101)),
    "tiny": FBILConfig.tiny(preprocess=PreprocessSpec(num_frames=8, short_side=64)),
}
RUNTIMES = [  # in order of priority: the budget cuts the last ones first
    "eager:fp32", "eager:fp16", "eager:bf16", "torchscript:fp32", "torchscript:fp16",
    "ort:fp32", "compile:fp32", "compile:fp16", "ort-trt:fp16",
]  # fmt: skip
SMOKE_RUNTIMES = ["eager:fp32", "eager:bf16", "eager:fp16", "torchscript:fp32", "ort:fp32"]
DECODE_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}


class Skip(Exception):
    """This runtime cannot run here; the message says why."""


@dataclass
class Cell:
    config: str
    runtime: str
    batch: int
    actors: int
    p50_ms: float | None = None
    peak_mib: float | None = None
    tflops: float | None = None
    peak_share: float | None = None
    score_diff: float | None = None
    note: str = ""


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.extend(text.splitlines())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def p50_seconds(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median of ``repeats`` synchronised calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    runs = []
    for _ in range(repeats):
        watch = Stopwatch()
        fn()
        sync(device)
        runs.append(watch.elapsed())
    return statistics.median(runs)


# ---- matmul peak -------------------------------------------------------------------------------


def matmul_peaks(device: torch.device, n: int, repeats: int) -> dict[str, float]:
    """TFLOP/s of an ``n x n`` matmul per dtype (fp32 with TF32 off and on, on CUDA)."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if device.type == "cuda":
        dtypes["fp16"] = torch.float16
    peaks = {}
    for name, dtype in dtypes.items():
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        seconds = p50_seconds(lambda a=a, b=b: a @ b, device, 2, repeats)
        peaks[name] = 2 * n**3 / seconds / 1e12
    if device.type == "cuda":
        allow = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        peaks["tf32"] = 2 * n**3 / p50_seconds(lambda: a @ b, device, 2, repeats) / 1e12
        torch.backends.cuda.matmul.allow_tf32 = allow
    return peaks


def flops_per_clip(detector: torch.nn.Module, spec: PreprocessSpec, size: tuple[int, int]) -> int:
    """FLOPs of one clip with one actor (``torch.utils.flop_counter``: convolutions, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    gen = torch.Generator().manual_seed(0)
    clips, rois = random_inputs(1, 1, spec.num_frames, *size, gen)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        detector(clips.to(next(detector.parameters()).device), rois.to(clips.device))
    return counter.get_total_flops()


# ---- runtimes -----------------------------------------------------------------------------------

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def torch_predict(module: Callable, device: torch.device, precision: str) -> Predict:
    """Scores of ``module(clips, rois) -> (logits, scores)`` under the precision's autocast."""
    try:
        dtype = autocast_dtype(precision, device)
    except RuntimeLoadError as e:
        raise Skip(str(e)) from e

    def predict(clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            return module(clips, rois)[1]

    return predict


def build_runtime(
    name: str,
    precision: str,
    wrapper: ExportedDetector,
    metadata: ModelMetadata,
    device: torch.device,
    folder: Path,
    args: argparse.Namespace,
) -> Predict:
    """The predict function of runtime ``name`` at ``precision``, or :class:`Skip`."""
    if name == "eager":
        return torch_predict(wrapper, device, precision)
    if name == "torchscript":
        from fbil.export.torchscript_export import export_torchscript

        path = folder / f"{metadata.name}.torchscript"
        if not path.exists():
            export_torchscript(wrapper.detector.cpu(), metadata, path)
            wrapper.to(device)
        return torch_predict(torch.jit.load(str(path), map_location=device), device, precision)
    if name == "compile":
        if device.type != "cuda" and not args.compile_on_cpu:
            raise Skip("torch.compile on CPU needs a C++ toolchain and minutes: --compile-on-cpu")
        try:
            return torch_predict(torch.compile(wrapper), device, precision)
        except Exception as e:  # inductor raises many types
            raise Skip(f"torch.compile failed: {type(e).__name__}: {e}") from e
    if name in ("ort", "ort-trt"):
        return ort_predict(name, precision, wrapper, metadata, device, folder, args)
    raise Skip(f"unknown runtime {name}")


def ort_predict(
    name: str,
    precision: str,
    wrapper: ExportedDetector,
    metadata: ModelMetadata,
    device: torch.device,
    folder: Path,
    args: argparse.Namespace,
) -> Predict:
    try:
        import onnxruntime as ort

        from fbil.export.onnx_export import export_onnx
    except ImportError as e:
        raise Skip(f"not installed: {e.name} (pip install onnxruntime-gpu onnx onnxscript)") from e
    available = ort.get_available_providers()
    if device.type == "cuda":
        wanted = "CUDAExecutionProvider" if name == "ort" else TENSORRT
    else:
        if name == "ort-trt":
            raise Skip("TensorRT needs CUDA")
        if precision != "fp32":
            raise Skip("the CPU provider runs fp32 graphs")
        wanted = "CPUExecutionProvider"
    if wanted not in available:
        raise Skip(f"{wanted} not in this onnxruntime ({ort.__version__})")
    path = folder / f"{metadata.name}.onnx"
    if not path.exists():
        export_onnx(wrapper.detector.cpu(), metadata, path)
        wrapper.to(device)
    providers: list = [wanted]
    if wanted == TENSORRT:
        profile = TensorRTProfile(
            max_batch_size=max(args.batches),
            max_rois=max(args.batches) * max(args.actors),
            max_aspect=1.5,  # 256x341 frames; the service's default covers 2.4
            cache_path=folder / "trt-cache",
        )
        providers = [(TENSORRT, tensorrt_options(profile, metadata.preprocess, precision))]
    watch = Stopwatch()
    session = ort.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != wanted:
        raise Skip(f"{wanted} did not load (got {session.get_providers()})")
    print(f"  {name} session ready in {watch.elapsed():.0f} s", flush=True)

    def predict(clips: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        feeds = {"clips": clips.cpu().numpy(), "rois": rois.cpu().numpy()}
        return torch.from_numpy(session.run(["scores"], feeds)[0])

    return predict


# ---- the model table --------------------------------------------------------------------------


def model_rows(args: argparse.Namespace, device: torch.device, peaks: dict, report: Report):
    cells: list[Cell] = []
    split: list[str] = []
    deadline = time.monotonic() + args.budget_s
    size = tuple(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        for config_name in args.configs:
            torch.manual_seed(0)
            config = CONFIGS[config_name]
            detector = build_detector(config).eval().to(device)
            metadata = ModelMetadata(config=config, name=f"bench-{config_name}")
            spec = metadata.preprocess
            wrapper = ExportedDetector(detector).eval()
            per_clip = flops_per_clip(detector, spec, size)
            gen = torch.Generator().manual_seed(1)
            inputs = {
                (b, a): tuple(t.to(device) for t in random_inputs(b, b * a, spec.num_frames, *size,
                                                                  gen))
                for b in args.batches
                for a in args.actors
            }  # fmt: skip
            references: dict[tuple[int, int], torch.Tensor] = {}
            split.append(backbone_head_split(config_name, detector, inputs, device, args))
            for runtime in args.runtimes:
                name, precision = runtime.split(":")
                label = f"{name} {precision}"
                if time.monotonic() > deadline:
                    cells.append(Cell(config_name, label, 0, 0, note="skipped: time budget"))
                    continue
                try:
                    predict = build_runtime(
                        name, precision, wrapper, metadata, device, Path(tmp), args
                    )
                except Skip as e:
                    cells.append(Cell(config_name, label, 0, 0, note=f"skipped: {e}"))
                    continue
                for (b, a), (clips, rois) in inputs.items():
                    cell = Cell(config_name, label, b, a)
                    cells.append(cell)
                    if time.monotonic() > deadline:
                        cell.note = "skipped: time budget"
                        continue
                    try:
                        measure(cell, predict, clips, rois, device, args)
                    except Exception as e:  # a runtime failing on one shape: say so, go on
                        cell.note = f"failed: {type(e).__name__}: {str(e)[:120]}"
                        continue
                    scores = predict(clips, rois).float().cpu()
                    if label == "eager fp32":
                        references[b, a] = scores
                    if (b, a) in references:
                        cell.score_diff = (scores - references[b, a]).abs().max().item()
                    cell.tflops = per_clip * b / (cell.p50_ms / 1e3) / 1e12
                    # fp32 convolutions run in TF32 on CUDA (cuDNN's default in torch)
                    fp32 = "tf32" if device.type == "cuda" else "fp32"
                    peak = peaks.get(fp32 if precision == "fp32" else precision)
                    cell.peak_share = cell.tflops / peak if peak else None
            del detector, wrapper, inputs
            if device.type == "cuda":
                torch.cuda.empty_cache()
            report.add(f"{config_name}: {per_clip / 1e12:.3f} TFLOP a clip (1 actor)")
    return cells, split


def measure(cell: Cell, predict: Predict, clips, rois, device, args) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    seconds = p50_seconds(lambda: predict(clips, rois), device, args.warmup, args.repeats)
    cell.p50_ms = seconds * 1e3
    if device.type == "cuda":
        cell.peak_mib = (torch.cuda.max_memory_allocated(device) - base) / 2**20


def backbone_head_split(name: str, detector, inputs: dict, device: torch.device, args) -> str:
    """Backbone and head time (eager fp32) at batch 1 with the most actors below or at 8."""
    actors = max([a for _, a in inputs if a <= 8] or [min(a for _, a in inputs)])
    batch = min(b for b, _ in inputs)
    clips, rois = inputs[batch, actors]
    with torch.inference_mode():
        slow, fast = detector.backbone(clips)
        t_backbone = p50_seconds(lambda: detector.backbone(clips), device, 1, args.repeats)
        t_head = p50_seconds(lambda: detector.head(slow, fast, rois), device, 1, args.repeats)
    return (
        f"| {name} | {batch} | {actors} | {t_backbone * 1e3:.1f} "
        f"| {t_head * 1e3:.1f} | {t_head / t_backbone:.1%} |"
    )


# ---- CPU decoding -----------------------------------------------------------------------------


def make_video(path: Path, width: int, height: int, seconds: float, fps: int = 30) -> None:
    """H.264 (libx264 veryfast: CABAC and B-frames, as cameras and encoders send), a key frame
    every 2 s, moving gradients and noise so that it is not trivially compressible."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 64, (height, width, 3), dtype=np.uint8)
    ramp = np.linspace(0, 160, width, dtype=np.float32)[None, :, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(
            "libx264", rate=fps, options={"preset": "veryfast", "g": str(2 * fps)}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            img = (np.roll(ramp, 7 * i, axis=1) + np.roll(noise, 3 * i, axis=0)).astype(np.uint8)
            img = np.broadcast_to(img, (height, width, 3)).copy()
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


def decode_worker(path: str, spec_dict: dict, times: list[float], core: int | None) -> float:
    """Keyframe windows/s of ``decode_clips`` in this process, pinned to ``core``."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})  # FFmpeg sizes its thread pool from the affinity
    torch.set_num_threads(1)
    from fbil.model.video import VideoLimits, decode_clips

    spec, data = PreprocessSpec.from_dict(spec_dict), Path(path).read_bytes()
    limits = VideoLimits(max_duration_s=None)
    decode_clips(data, [times[0]], spec, limits)  # warm: codec, allocator
    watch = Stopwatch()
    for t in times:
        decode_clips(data, [t], spec, limits)
    return len(times) / watch.elapsed()


def decode_rates(args: argparse.Namespace, spec: PreprocessSpec, report: Report) -> dict:
    """windows/s of one core and of every core, per video size."""
    try:
        import av  # noqa: F401
    except ImportError:
        report.add("CPU decode: skipped (PyAV not installed: pip install av)")
        return {}
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [None]
    if args.decode_cores:
        cores = cores[: args.decode_cores]
    sizes = {"tiny": (128, 96)} if args.smoke else DECODE_SIZES
    window = spec.num_frames * spec.frame_interval / spec.base_fps
    seconds = args.decode_video_s
    times = [window / 2 + 0.1 + (seconds - window - 0.2) * k / max(1, args.windows - 1)
             for k in range(args.windows)]  # fmt: skip
    rates = {}
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (w, h) in sizes.items():
            path = Path(tmp) / f"{name}.mp4"
            watch = Stopwatch()
            make_video(path, w, h, seconds)
            mib = path.stat().st_size / 2**20
            print(f"  made {name} ({mib:.1f} MiB) in {watch.elapsed():.0f} s", flush=True)
            job = (str(path), spec.to_dict(), times)
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                one = pool.submit(decode_worker, *job, cores[0]).result()
            every = one
            if len(cores) > 1:
                with ProcessPoolExecutor(len(cores), mp_context=ctx) as pool:
                    jobs = [[part] * len(cores) for part in job]
                    every = sum(pool.map(decode_worker, *jobs, cores))
            rates[name] = (one, every, len(cores))
    return rates


# ---- main -------------------------------------------------------------------------------------


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "CPU"


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> Report:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, seconds (the tests)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--configs", nargs="+", default=["r50", "r101"], choices=list(CONFIGS))
    p.add_argument("--runtimes", nargs="+", default=RUNTIMES, help="NAME:PRECISION")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--actors", type=int, nargs="+", default=[1, 8, 16], help="a clip")
    p.add_argument("--size", type=int, nargs=2, default=[256, 341], metavar=("H", "W"))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=330.0, help="for the model rows")
    p.add_argument("--matmul-n", type=int, default=8192)
    p.add_argument("--compile-on-cpu", action="store_true")
    p.add_argument("--windows", type=int, default=12, help="keyframe windows a decode worker")
    p.add_argument("--decode-video-s", type=float, default=10.0)
    p.add_argument("--decode-cores", type=int, default=0, help="0: every core of this process")
    p.add_argument("--no-decode", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.device, args.configs, args.size = "cpu", ["tiny"], [64, 85]
        args.runtimes = [r for r in args.runtimes if r in SMOKE_RUNTIMES]
        args.batches, args.actors, args.warmup, args.repeats = [1, 2], [1, 2], 1, 2
        args.matmul_n, args.windows, args.decode_video_s, args.decode_cores = 256, 2, 2.0, 1
    device = torch.device(args.device)
    report = Report()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    report.add(
        f"fbil GPU benchmark, {time.strftime('%Y-%m-%d %H:%M')}, device {device} ({name}), "
        f"{cpus} CPU cores, torch {torch.__version__}, {platform.python_version()}"
    )
    peaks = matmul_peaks(device, args.matmul_n, args.repeats)
    report.add("\n| matmul | " + " | ".join(peaks) + " |")
    report.add("|---|" + "---|" * len(peaks))
    report.add("| TFLOP/s | " + " | ".join(f"{v:.3g}" for v in peaks.values()) + " |\n")

    cells, split = model_rows(args, device, peaks, report)
    report.add(
        f"\n| config | runtime | batch | actors a clip | clips/s | p50 ms | peak MiB | TFLOP/s "
        f"| of peak | max Δscore vs fp32 (≤ {FP16_TOLERANCE:g}) |"
    )
    report.add("|---|---|---|---|---|---|---|---|---|---|")
    for c in cells:
        if c.p50_ms is None:
            where = f"| {c.batch} | {c.actors} |" if c.batch else "| all | all |"
            report.add(f"| {c.config} | {c.runtime} {where} {c.note} | | | | | |")
            continue
        diff = fmt(c.score_diff, ".1e")
        if c.score_diff is not None and c.score_diff > FP16_TOLERANCE:
            diff += " OVER"
        report.add(
            f"| {c.config} | {c.runtime} | {c.batch} | {c.actors} | {c.batch / c.p50_ms * 1e3:.4g} "
            f"| {c.p50_ms:.4g} | {fmt(c.peak_mib, '.0f')} | {fmt(c.tflops, '.3g')} "
            f"| {fmt(c.peak_share, '.0%')} | {diff} |"
        )
    report.add("\n| config | batch | actors | backbone ms | head ms | head / backbone |")
    report.add("|---|---|---|---|---|---|")
    for line in split:
        report.add(line)
    if device.type == "cuda":
        spec = CONFIGS[args.configs[-1]].preprocess
        batch = torch.zeros(max(args.batches), 3, spec.num_frames, *args.size).pin_memory()
        ms = p50_seconds(lambda: batch.to(device), device, 1, args.repeats) * 1e3
        report.add(f"\nhost->device copy of a batch of {len(batch)} clips (pinned): {ms:.1f} ms")

    if args.no_decode:
        return report
    spec = CONFIGS[args.configs[-1]].preprocess
    rates = decode_rates(args, spec, report)
    best = max(
        (c.batch / c.p50_ms * 1e3 for c in cells if c.p50_ms and c.config == args.configs[-1]),
        default=None,
    )
    report.add(
        f"\nCPU decode (decode_clips, {spec.num_frames} frames every {spec.frame_interval}, "
        f"short side {spec.short_side}); best {args.configs[-1]} GPU clips/s: {fmt(best, '.1f')}"
    )
    report.add("\n| video | windows/s, 1 core | windows/s, all cores (n) | cores to feed the GPU "
               "| GPU clips/s / all-core windows/s |")  # fmt: skip
    report.add("|---|---|---|---|---|")
    for video, (one, every, n) in rates.items():
        need = fmt(best / one if best else None, ".3g")
        ratio = fmt(best / every if best else None, ".3g")
        report.add(f"| {video} | {one:.2f} | {every:.2f} ({n}) | {need} | {ratio} |")
    return report


if __name__ == "__main__":
    main()
