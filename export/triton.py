"""A Triton Inference Server model repository for the exported ONNX file."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx

_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.INT32: "TYPE_INT32",
}


def _tensor_entries(values) -> list[str]:  # type: ignore[no-untyped-def]
    entries = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [str(d.dim_value) if d.HasField("dim_value") else "-1" for d in tensor.shape.dim]
        entries.append(
            "  {\n"
            f'    name: "{value.name}"\n'
            f"    data_type: {_TYPES[tensor.elem_type]}\n"
            f"    dims: [ {', '.join(dims)} ]\n"
            "  }"
        )
    return entries


def config_pbtxt(onnx_path: str | Path, name: str, instances: int = 1) -> str:
    """``config.pbtxt`` naming the ONNX file's real inputs/outputs, types and (dynamic) dims.

    ``max_batch_size: 0``: the rois axis is not a batch axis, so Triton must not batch requests
    itself (dims carry the full shapes, -1 = dynamic).
    """
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return (
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        "max_batch_size: 0\n"
        "input [\n" + ",\n".join(_tensor_entries(graph.input)) + "\n]\n"
        "output [\n" + ",\n".join(_tensor_entries(graph.output)) + "\n]\n"
        f"instance_group [\n  {{\n    count: {instances}\n    kind: KIND_GPU\n  }}\n]\n"
    )


def write_triton_repository(onnx_path: str | Path, repo_dir: str | Path, name: str) -> Path:
    """Write ``<repo_dir>/<name>/config.pbtxt`` and ``<repo_dir>/<name>/1/model.onnx``."""
    model_dir = Path(repo_dir) / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(config_pbtxt(onnx_path, name))
    return model_dir
