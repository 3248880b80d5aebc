"""Typed, frozen model configuration, and the reader for the published YAML config format.

The published config names of the mask settings are crossed: ``local_beta``/``local_delta``
drive the *background* branch and ``global_beta``/``global_delta`` the *foreground* branch.
They are mapped to self-explanatory names once, here, in :func:`config_from_published`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml

from fbil.model.preprocess import PreprocessSpec

DEPTH_LAYERS: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}


class ConfigError(ValueError):
    """A config file or value that cannot describe a model."""


@dataclass(frozen=True)
class BackboneConfig:
    """SlowFast backbone. ``layers`` overrides the block counts implied by ``depth``."""

    depth: int = 101
    layers: tuple[int, int, int, int] | None = None
    alpha: int = 4
    beta: float = 0.125
    width: int = 64
    fuse_kernel: int = 5

    def __post_init__(self) -> None:
        if self.layers is None and self.depth not in DEPTH_LAYERS:
            raise ConfigError(f"backbone depth must be one of {sorted(DEPTH_LAYERS)}")
        if self.layers is not None and (len(self.layers) != 4 or min(self.layers) < 1):
            raise ConfigError(f"backbone layers must be 4 positive block counts: {self.layers}")
        if self.alpha < 1 or self.width < 1 or not 0 < self.beta <= 1:
            raise ConfigError(f"invalid backbone settings: {self}")
        if int(self.width * self.beta) < 1:
            raise ConfigError(f"width*beta must be >= 1 (width={self.width}, beta={self.beta})")

    @property
    def block_counts(self) -> tuple[int, int, int, int]:
        return tuple(self.layers) if self.layers is not None else DEPTH_LAYERS[self.depth]

    @property
    def slow_channels(self) -> int:
        return self.width * 32

    @property
    def fast_channels(self) -> int:
        return int(self.width * 8 * self.beta) * 4


@dataclass(frozen=True)
class MaskConfig:
    """Training-time random mask drops: the fraction of cells each branch may not attend to.

    At inference the foreground branch sees exactly the foreground cells and the background
    branch exactly the background cells.
    """

    fg_branch_fg_drop: float = 0.2  # published global_beta
    fg_branch_bg_drop: float = 1.0  # published global_delta
    bg_branch_fg_drop: float = 0.9  # published local_beta
    bg_branch_bg_drop: float = 0.2  # published local_delta

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{f.name} must be in [0, 1], got {v}")


@dataclass(frozen=True)
class HeadConfig:
    """FBIL head (published defaults: reduce_dim 1024, 8 heads, FFN 2048, attention dropout 0.1)."""

    in_channels: int = 2304
    roi_size: int = 7
    num_classes: int = 60
    reduce_dim: int = 1024
    num_heads: int = 8
    encoder_depth: int = 3  # published e_depth
    fg_depth: int = 3  # published l_depth (the "local_atten" branch)
    bg_depth: int = 3  # published c_depth (the "context_atten" branch)
    ffn_dim: int = 2048
    attn_dropout: float = 0.1
    fusion_act: Literal["softmax", "sigmoid"] = "softmax"
    dropout: float = 0.0
    classifier_bias: bool = False
    masks: MaskConfig = field(default_factory=MaskConfig)

    def __post_init__(self) -> None:
        if self.reduce_dim % self.num_heads:
            raise ConfigError(f"reduce_dim {self.reduce_dim} not divisible by {self.num_heads}")
        if self.reduce_dim % 4:
            raise ConfigError("reduce_dim must be a multiple of 4 (sine position embedding)")
        if self.fusion_act not in ("softmax", "sigmoid"):
            raise ConfigError(f"head act must be softmax or sigmoid, got {self.fusion_act!r}")
        if min(self.encoder_depth, self.fg_depth, self.bg_depth) < 0 or self.roi_size < 1:
            raise ConfigError(f"invalid head settings: {self}")


@dataclass(frozen=True)
class FBILConfig:
    """Everything needed to build a detector and prepare its inputs."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    pose_softmax: bool = True
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)

    def __post_init__(self) -> None:
        expected = self.backbone.slow_channels + self.backbone.fast_channels
        if self.head.in_channels != expected:
            raise ConfigError(
                f"head width {self.head.in_channels} does not match the backbone output "
                f"channels {expected} (slow {self.backbone.slow_channels} + fast "
                f"{self.backbone.fast_channels})"
            )

    @classmethod
    def tiny(
        cls,
        width: int = 8,
        reduce_dim: int = 16,
        num_heads: int = 2,
        ffn_dim: int = 32,
        preprocess: PreprocessSpec | None = None,
        **head: Any,
    ) -> FBILConfig:
        """A small model for tests and demos: one block a stage, depth-1 head branches, the
        head's input width derived from the backbone. ``head`` overrides other head fields."""
        backbone = BackboneConfig(layers=(1, 1, 1, 1), width=width)
        head_cfg = HeadConfig(
            in_channels=backbone.slow_channels + backbone.fast_channels,
            reduce_dim=reduce_dim,
            num_heads=num_heads,
            encoder_depth=1,
            fg_depth=1,
            bg_depth=1,
            ffn_dim=ffn_dim,
            **head,
        )
        return cls(backbone=backbone, head=head_cfg, preprocess=preprocess or PreprocessSpec())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the format embedded in our checkpoints)."""
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FBILConfig:
        try:
            bb = dict(d.get("backbone", {}))
            if bb.get("layers") is not None:
                bb["layers"] = tuple(int(v) for v in bb["layers"])
            head = dict(d.get("head", {}))
            head["masks"] = MaskConfig(**head.get("masks", {}))
            return cls(
                backbone=BackboneConfig(**bb),
                head=HeadConfig(**head),
                pose_softmax=bool(d.get("pose_softmax", True)),
                preprocess=PreprocessSpec.from_dict(d.get("preprocess", {})),
            )
        except TypeError as e:  # unknown keyword
            raise ConfigError(f"invalid config: {e}") from e


# published head kwarg -> (our HeadConfig field | MaskConfig field prefixed "masks.")
_PUBLISHED_HEAD_KEYS = {
    "width": "in_channels",
    "roi_spatial": "roi_size",
    "num_classes": "num_classes",
    "reduce_dim": "reduce_dim",
    "head": "num_heads",
    "e_depth": "encoder_depth",
    "l_depth": "fg_depth",
    "c_depth": "bg_depth",
    "act": "fusion_act",
    "dropout": "dropout",
    "bias": "classifier_bias",
    "global_beta": "masks.fg_branch_fg_drop",
    "global_delta": "masks.fg_branch_bg_drop",
    "local_beta": "masks.bg_branch_fg_drop",
    "local_delta": "masks.bg_branch_bg_drop",
}
_BACKBONE_KEYS = {"alpha", "beta", "layers", "width", "fuse_kernel_size"}


def _arch_depth(arch: str) -> int:
    m = re.fullmatch(r"slowfast(\d+)", str(arch).strip().lower())
    if not m or int(m.group(1)) not in DEPTH_LAYERS:
        raise ConfigError(f"unsupported backbone arch {arch!r}: expected slowfast50/101/152/200")
    return int(m.group(1))


class Augmentation(NamedTuple):
    """What a published ``augmentation`` section says: the clip preprocessing, and whether
    training flips clips horizontally."""

    preprocess: PreprocessSpec
    flip: bool


def parse_augmentation(aug: dict[str, Any] | None, base: PreprocessSpec) -> Augmentation:
    """A published ``augmentation`` section applied to ``base``: ``spatial`` ``Scale.resize``
    (short side), ``Normalize.mean/std`` and ``RandomHorizontalFlip``; ``temporal``
    ``TemporalCenterCrop.size/step`` (``size // step`` frames ``step`` apart). Other
    transforms leave the preprocessing as it is."""
    aug = aug or {}
    pre, flip = base, False
    try:
        for t in aug.get("spatial") or []:
            kw = t.get("kwargs") or {}
            if t.get("type") == "Scale" and "resize" in kw:
                pre = replace(pre, short_side=int(kw["resize"]))
            elif t.get("type") == "Normalize":
                mean, std = (tuple(float(v) for v in kw[k]) for k in ("mean", "std"))
                pre = replace(pre, mean=mean, std=std)
            elif t.get("type") == "RandomHorizontalFlip":
                flip = True
        temporal = aug.get("temporal") or {}
        if temporal.get("type") == "TemporalCenterCrop":
            kw = temporal.get("kwargs") or {}
            step = int(kw.get("step", 1))
            pre = replace(pre, num_frames=int(kw["size"]) // step, frame_interval=step)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"invalid augmentation {aug!r}: {e!r}") from e
    return Augmentation(pre, flip)


def _preprocess_from_published(cfg: dict[str, Any]) -> PreprocessSpec:
    """The preprocessing of the val (else train) augmentation section."""
    for section in ("val", "train"):
        aug = (cfg.get(section) or {}).get("augmentation")
        if aug:
            return parse_augmentation(aug, PreprocessSpec()).preprocess
    return PreprocessSpec()


def config_from_published(cfg: dict[str, Any]) -> FBILConfig:
    """Build an :class:`FBILConfig` from a parsed published-format YAML document."""
    try:
        model = cfg["model"]
        bb_cfg = model["backbone"]
        head_cfg = model["head"]
    except (KeyError, TypeError) as e:
        raise ConfigError(f"not a published FBIL config: missing model section {e}") from e
    if str(head_cfg.get("type", "fbil")).lower() != "fbil":
        raise ConfigError(f"head type {head_cfg.get('type')!r} is not 'fbil'")

    bb_kwargs = dict(bb_cfg.get("kwargs") or {})
    unknown = set(bb_kwargs) - _BACKBONE_KEYS
    if unknown:
        raise ConfigError(f"unknown backbone kwargs: {sorted(unknown)}")
    backbone = BackboneConfig(
        depth=_arch_depth(bb_cfg.get("arch", "slowfast101")),
        layers=tuple(bb_kwargs["layers"]) if "layers" in bb_kwargs else None,
        alpha=int(bb_kwargs.get("alpha", 4)),
        beta=float(bb_kwargs.get("beta", 0.125)),
        width=int(bb_kwargs.get("width", 64)),
        fuse_kernel=int(bb_kwargs.get("fuse_kernel_size", 5)),
    )

    head_kwargs = dict(head_cfg.get("kwargs") or {})
    unknown = set(head_kwargs) - set(_PUBLISHED_HEAD_KEYS)
    if unknown:
        raise ConfigError(f"unknown head kwargs: {sorted(unknown)}")
    head_values: dict[str, Any] = {}
    mask_values: dict[str, Any] = {}
    for key, value in head_kwargs.items():
        target = _PUBLISHED_HEAD_KEYS[key]
        if target.startswith("masks."):
            mask_values[target.removeprefix("masks.")] = float(value)
        else:
            head_values[target] = value
    head = HeadConfig(**head_values, masks=MaskConfig(**mask_values))

    loss_kwargs = (cfg.get("loss") or {}).get("kwargs") or {}
    return FBILConfig(
        backbone=backbone,
        head=head,
        pose_softmax=bool(loss_kwargs.get("pose_softmax", False)),
        preprocess=_preprocess_from_published(cfg),
    )


def load_config(path: str | Path) -> FBILConfig:
    """Read a config: the published YAML format, or our JSON (``FBILConfig.to_dict``)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if path.suffix == ".json":
        return FBILConfig.from_dict(json.loads(text))
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a config mapping")
    if "model" in doc:
        return config_from_published(doc)
    return FBILConfig.from_dict(doc)
