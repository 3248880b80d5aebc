"""Reading and writing weights, safely (no arbitrary unpickling).

Three inputs are understood:

* ``published``: an FBIL training checkpoint (``{'epoch', 'state_dict', 'optimizer', ...}``,
  keys ``module.backbone.module.*`` / ``module.head.module.*`` from DistributedDataParallel);
* ``backbone``: a bare SlowFast pretrain file (keys of the SlowFast module), backbone only;
* ``fbil``: our format, a safetensors file whose metadata embeds the config, labels and
  preprocessing (:class:`ModelMetadata`, stored as :mod:`fbil.model.artifact` says), so one
  file is enough to serve. A torch file holding
  ``backbone.*``/``head.*`` keys is also read as ``fbil`` (without embedded metadata).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor, nn

from fbil.model import artifact
from fbil.model.config import FBILConfig, load_config
from fbil.model.detector import FBILDetector
from fbil.model.labels import ava_v22
from fbil.model.metadata import ModelMetadata

log = logging.getLogger(__name__)

# (source prefix, our prefix), first match wins: the one explicit remapping table
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("module.backbone.module.", "backbone."),
    ("module.head.module.", "head."),
    ("module.", ""),
)


class CheckpointError(ValueError):
    """A weights file that cannot be read or does not fit the model."""


@dataclass(frozen=True)
class CheckpointInfo:
    kind: str  # "published" | "backbone" | "fbil"
    metadata: ModelMetadata | None = None
    ignored_keys: tuple[str, ...] = ()


def remap_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename checkpoint keys to ours with :data:`KEY_PREFIXES` (pure; unknown keys kept)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        for src, dst in KEY_PREFIXES:
            if key.startswith(src):
                key = dst + key[len(src) :]
                break
        out[key] = value
    return out


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a weights file: ``(state_dict, safetensors metadata or {})``.

    Torch files are loaded with ``weights_only=True``; the inner ``state_dict``/``model`` dict
    is picked when present.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if artifact.is_safetensors(path):
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), meta
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickler_reason(e)
        if not _looks_pickled(path):  # garbage bytes, not a forbidden object
            raise CheckpointError(
                f"{path} is not a readable checkpoint (no safetensors, torch or pickle file): "
                f"{reason}"
            ) from e
        raise CheckpointError(
            f"{path} is not a checkpoint of plain weights: it holds objects or pickle opcodes "
            f"other than tensors and plain containers; refusing to unpickle it ({reason})"
        ) from e
    except Exception as e:  # torch.load raises many types on foreign bytes
        raise CheckpointError(f"{path} is not a readable checkpoint: {e!r}") from e
    if isinstance(obj, dict):
        for inner in ("state_dict", "model"):
            if isinstance(obj.get(inner), dict):
                obj = obj[inner]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds no state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entries that are not tensors: {bad[:5]}")
    return obj, {}


def _looks_pickled(path: Path) -> bool:
    """A torch zip archive (``PK``) or a pickle of protocol 2 or later (``PROTO`` opcode)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"PK" or head[:1] == b"\x80"


def _unpickler_reason(e: pickle.UnpicklingError) -> str:
    """What torch's safe unpickler refused, without its advice to load unsafely instead."""
    paragraphs = str(e).split("Check the documentation")[0].split("\n\n")
    kept = [p for p in paragraphs if p.strip() and not p.startswith("Weights only load failed")]
    return " ".join(" ".join(kept or paragraphs).split())[:300]


def _kind(state: dict[str, Tensor]) -> str:
    keys = list(state)
    if any(k.startswith("module.backbone.module.") or k.startswith("module.head.") for k in keys):
        return "published"
    if all(k.startswith(("backbone.", "head.")) for k in keys):
        return "fbil"
    return "backbone"


def _format_problems(missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    def part(title: str, items: list[str]) -> str:
        more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
        return f"\n  {title} ({len(items)}): {', '.join(items[:10])}{more}" if items else ""

    return (
        part("missing keys", missing)
        + part("unexpected keys", unexpected)
        + part("mis-shaped keys", shapes)
    )


def load_into(
    module: nn.Module,
    state: dict[str, Tensor],
    *,
    strict: bool = True,
    ignore_unexpected: bool = False,
    what: str = "checkpoint",
) -> list[str]:
    """``load_state_dict`` with an error listing missing, unexpected and mis-shaped keys.

    Returns the unexpected keys that were ignored (only with ``ignore_unexpected``).
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    fatal_unexpected = [] if ignore_unexpected else unexpected
    if shapes or (strict and (missing or fatal_unexpected)):
        raise CheckpointError(
            f"{what} does not fit the model:" + _format_problems(missing, fatal_unexpected, shapes)
        )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if missing:
        log.warning("%s: %d model keys left at their initial values", what, len(missing))
    return unexpected


def load_checkpoint(
    detector: FBILDetector, path: str | os.PathLike, *, strict: bool = True
) -> CheckpointInfo:
    """Load any supported weights file into ``detector`` (see the module docstring)."""
    state, meta = read_weights(path)
    kind = _kind(state)
    state = remap_keys(state)
    if kind == "backbone":
        ignored = load_into(
            detector.backbone,
            state,
            strict=strict,
            ignore_unexpected=True,
            what=f"backbone pretrain {path}",
        )
        if ignored:
            log.info("backbone pretrain %s: ignored %d non-backbone keys", path, len(ignored))
        return CheckpointInfo(kind, None, tuple(ignored))
    load_into(detector, state, strict=strict, what=f"checkpoint {path}")
    doc = artifact.document_from_entries(meta, path)
    return CheckpointInfo(kind, None if doc is None else artifact.to_metadata(doc, path))


def load_model(
    path: str | os.PathLike,
    config: FBILConfig | str | os.PathLike | None = None,
    *,
    strict: bool = True,
) -> tuple[FBILDetector, ModelMetadata]:
    """Build a detector and load weights: the config embedded in the file, else ``config``."""
    embedded = artifact.read_safetensors_metadata(path)
    if isinstance(config, (str, os.PathLike)):
        config = load_config(config)
    if config is None and embedded is None:
        read_weights(path)  # a file that is no checkpoint at all (or an unsafe pickle) says so
        raise CheckpointError(
            f"{path} embeds no config; pass the model's YAML config (e.g. --config)"
        )
    if embedded is not None and (config is None or config == embedded.config):
        metadata = embedded
    else:
        assert config is not None
        metadata = ModelMetadata(config=config, labels=ava_v22(), source_sha256=sha256_file(path))
    detector = FBILDetector(metadata.config, num_pose=metadata.labels.num_pose).eval()
    load_checkpoint(detector, path, strict=strict)
    return detector, metadata


def save_model(detector: FBILDetector, metadata: ModelMetadata, path: str | os.PathLike) -> None:
    """Write our servable format: safetensors weights + embedded metadata JSON."""
    state = {k: v.detach().contiguous().cpu() for k, v in detector.state_dict().items()}
    save_file(state, str(path), metadata=artifact.safetensors_metadata(metadata))
