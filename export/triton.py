"""A Triton Inference Server model repository for the exported ONNX file."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

from fbil.model.labels import LabelMap

LABELS_FILE = "labels.txt"  # class names, one a line in output order (Triton label_filename)

_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def _tensor_entries(values, label_file: str | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """``input``/``output`` entries; ``label_file`` is named on the per-class outputs."""
    entries = []
    for value in values:
        labels = f'    label_filename: "{label_file}"\n' if label_file else ""
        tensor = value.type.tensor_type
        dims = [str(d.dim_value) if d.HasField("dim_value") else "-1" for d in tensor.shape.dim]
        entries.append(
            "  {\n"
            f'    name: "{value.name}"\n'
            f"    data_type: {_TYPES[tensor.elem_type]}\n"
            f"    dims: [ {', '.join(dims)} ]\n" + labels + "  }"
        )
    return entries


def config_pbtxt(
    onnx_path: str | Path, name: str, instances: int = 1, label_file: str | None = None
) -> str:
    """``config.pbtxt`` naming the ONNX file's real inputs/outputs, types and (dynamic) dims;
    with ``label_file`` the outputs name the class-name file (Triton's classification
    extension), whose line ``i`` names class ``i``.

    ``max_batch_size: 0``: the rois axis is not a batch axis, so Triton must not batch requests
    itself (dims carry the full shapes, -1 = dynamic).
    """
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        "max_batch_size: 0\n"
        "input [\n" + ",\n".join(_tensor_entries(graph.input)) + "\n]\n"
        "output [\n" + ",\n".join(_tensor_entries(graph.output, label_file)) + "\n]\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_GPU\n  }}\n]\n"
    )


def write_triton_repository(
    onnx_path: str | Path, repo_dir: str | Path, name: str, labels: LabelMap | None = None
) -> Path:
    """Write ``<repo_dir>/<name>/config.pbtxt`` and ``<repo_dir>/<name>/1/model.onnx``, and
    with ``labels`` the class names ``<repo_dir>/<name>/labels.txt`` the outputs refer to."""
    model_dir = Path(repo_dir) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    label_file = None
    if labels is not None:
        label_file = LABELS_FILE
        (model_dir / LABELS_FILE).write_text("".join(f"{c.name}\n" for c in labels))
    (model_dir / "config.pbtxt").write_text(config_pbtxt(onnx_path, name, label_file=label_file))
    return model_dir
