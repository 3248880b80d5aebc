"""What travels with the weights, and where each artifact keeps it.

The *document* is the :class:`~fbil.model.metadata.ModelMetadata` JSON
(:meth:`ModelMetadata.to_dict`), in exported artifacts merged with the exporter's extra keys
(``exporter``, ``fp16``, ``inputs``, ...). Every file format keeps it in one place:

* safetensors (our weights format): the header metadata entry ``"fbil"`` (compact JSON);
* ONNX: the ``metadata_props`` entry ``"fbil"`` (compact JSON), beside plain ``name`` and
  ``version`` entries that ONNX tools display;
* TorchScript: the extra file ``"fbil.json"`` (compact JSON);
* the sidecar ``model.json`` written next to exported files (indented JSON), which also
  describes an ONNX file that carries no ``metadata_props`` entry.

The writers return what a format's own saver takes (``save_file(metadata=...)``,
``metadata_props``, ``_extra_files``); the readers return the document as a dict, or ``None``
where the artifact carries none. Nothing here imports torch or onnx until a reader needs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fbil.model.config import ConfigError
from fbil.model.metadata import ModelMetadata

METADATA_KEY = "fbil"  # safetensors header entry and ONNX metadata_props entry
TORCHSCRIPT_FILE = "fbil.json"  # TorchScript extra file
SIDECAR = "model.json"  # the JSON file next to exported artifacts

Document = dict[str, Any]


class MetadataError(ConfigError):
    """An artifact whose FBIL metadata is unreadable or does not describe a model."""


def document(metadata: ModelMetadata, extra: Mapping[str, Any] | None = None) -> Document:
    """The metadata JSON of ``metadata``, with ``extra`` keys (exporter details) merged in."""
    return {**metadata.to_dict(), **(extra or {})}


def to_metadata(doc: Mapping[str, Any], source: object) -> ModelMetadata:
    """The :class:`ModelMetadata` a document describes; :class:`MetadataError` naming
    ``source`` (the artifact's path) when it describes none."""
    try:
        return ModelMetadata.from_dict(dict(doc))
    except (ValueError, KeyError, TypeError) as e:
        raise MetadataError(f"{source}: unreadable FBIL metadata: {e!r}") from e


def _parse(text: str, source: object) -> Document:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise MetadataError(f"{source}: FBIL metadata is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise MetadataError(f"{source}: FBIL metadata is not a JSON object")
    return doc


# --------------------------------------------------------------------------- writers


def safetensors_metadata(metadata: ModelMetadata) -> dict[str, str]:
    """The header metadata of our safetensors weights (``save_file(..., metadata=)``)."""
    return {METADATA_KEY: json.dumps(document(metadata))}


def onnx_metadata_props(
    metadata: ModelMetadata, extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The ``metadata_props`` entries of an exported ONNX file, in the order they are added."""
    return {
        METADATA_KEY: json.dumps(document(metadata, extra)),
        "name": metadata.name,
        "version": metadata.version,
    }


def torchscript_extra_files(
    metadata: ModelMetadata, extra: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The extra files saved with a TorchScript module (``save(..., _extra_files=)``)."""
    return {TORCHSCRIPT_FILE: json.dumps(document(metadata, extra))}


def write_sidecar(
    folder: str | os.PathLike, metadata: ModelMetadata, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write ``folder/model.json`` and return its path."""
    path = Path(folder) / SIDECAR
    path.write_text(json.dumps(document(metadata, extra), indent=2) + "\n")
    return path


# --------------------------------------------------------------------------- readers


def document_from_entries(entries: Mapping[str, str], source: object) -> Document | None:
    """The document in a key-value map: a safetensors header, ONNX ``metadata_props`` or
    ONNX Runtime's ``custom_metadata_map``."""
    text = entries.get(METADATA_KEY)
    return None if text is None else _parse(text, source)


def document_from_extra_files(files: Mapping[str, str], source: object) -> Document | None:
    """The document in TorchScript extra files as ``torch.jit.load(_extra_files=)`` filled them
    (ask with ``{TORCHSCRIPT_FILE: ""}``; an absent file stays empty)."""
    text = files.get(TORCHSCRIPT_FILE)
    return _parse(text, source) if text else None


def onnx_document(path: str | os.PathLike, entries: Mapping[str, str]) -> Document | None:
    """The document describing the ONNX file ``path`` whose ``metadata_props`` are ``entries``
    (e.g. ONNX Runtime's ``custom_metadata_map``): the ``"fbil"`` entry, else the sidecar next
    to the file."""
    doc = document_from_entries(entries, path)
    return doc if doc is not None else read_sidecar_document(Path(path).parent)


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts like a safetensors file (an 8-byte length, then a JSON header)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def read_safetensors_document(path: str | os.PathLike) -> Document | None:
    """The document in a safetensors file's header (None for other files)."""
    if not Path(path).is_file() or not is_safetensors(path):
        return None
    from safetensors import safe_open  # noqa: PLC0415 (the header only; no torch needed)

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
    return document_from_entries(header, path)


def read_safetensors_metadata(path: str | os.PathLike) -> ModelMetadata | None:
    """The metadata embedded in one of our safetensors files (None for other files)."""
    doc = read_safetensors_document(path)
    return None if doc is None else to_metadata(doc, path)


def read_onnx_document(path: str | os.PathLike) -> Document | None:
    """The document in an ONNX file's ``metadata_props`` (None without the entry)."""
    import onnx  # noqa: PLC0415 (heavy; only readers of ONNX files pay for it)

    proto = onnx.load(str(path), load_external_data=False)
    return document_from_entries({e.key: e.value for e in proto.metadata_props}, path)


def read_torchscript_document(path: str | os.PathLike) -> Document | None:
    """The document in a TorchScript file's extra file (None without it). Loads the module."""
    import torch  # noqa: PLC0415 (heavy; only readers of TorchScript files pay for it)

    files = {TORCHSCRIPT_FILE: ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return document_from_extra_files(files, path)


def read_sidecar_document(folder: str | os.PathLike) -> Document | None:
    """The document in ``folder/model.json`` (None when there is no such file)."""
    path = Path(folder) / SIDECAR
    return _parse(path.read_text("utf-8"), path) if path.is_file() else None
