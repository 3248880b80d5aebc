"""Training configuration: the published YAML format plus our extensions.

Published keys read as published: ``result_path``, ``manual_seed``, ``print_freq``,
``evaluate`` (validate only), ``model.freeze_bn``, ``model.backbone.learnable``,
``model.backbone.pretrain.path``, ``model.neck.kwargs.bbox_jitter.scale``,
``loss.kwargs.pose_softmax``; ``train``/``val``: ``root_path``, ``annotation_path`` (the
published pickle), ``batch_size``, ``workers``, ``augmentation`` (``Scale.resize``,
``RandomHorizontalFlip``, ``TemporalCenterCrop.size/step``, ``Normalize``), ``with_label``,
``eval_mAP.{labelmap, groundtruth, exclusions}``; ``train``: ``n_epochs``, ``val_freq``,
``save_freq``, ``optimizer.{type: SGD, kwargs}``, ``scheduler.{type: step, milestone_epochs,
lr_mults, base_lr, warmup_lr, warmup_epochs}``. The model part is read by
:func:`model.config.config_from_published` (with its ``layers``/``width``/``reduce_dim``/``head``
extensions).

Our extensions (all optional)::

    train:                       # and val:
      data:                      # replaces root_path/annotation_path
        kind: video | frames | pickle
        root: PATH               # videos, frame folders, or published frame root
        annotations: CSV | PKL   # AVA annotation CSV (or the published pickle)
        labelmap: PBTXT          # restrict to these classes (default: the 60 model classes)
        exclusions: CSV          # excluded timestamps
        proposals: CSV           # val: person detections instead of ground-truth boxes
        min_score: 0.0           # val: proposal threshold
        frame_pattern: img_{:05d}.jpg   # frames: str.format or printf pattern
        frame_fps: 30            # frames: extraction rate
        first_timestamp: 900     # frames: timestamp of the first frame
        index_base: 1            # frames: number of the first frame file
        video_ext: [mp4, ...]    # video: extensions tried for <root>/<video_id>.<ext>
        time_offset: 0           # video: seconds subtracted from CSV timestamps
      grad_accum: 1              # optimizer step every N batches
      amp: false                 # float16 autocast + GradScaler (CUDA only)
      loss: pose_softmax | sigmoid   # default: loss.kwargs.pose_softmax
      max_steps_per_epoch: null  # cut epochs short (smoke tests)
    metadata: {name, version, description, demo}   # embedded in every saved model
    labels: PBTXT | JSON         # the model's classes (model.training: any label set); default:
                                 # the built-in AVA map of model.head.kwargs.num_classes (60, 80)
    init_from: PATH | demo       # fine-tune: any checkpoint fbil loads (published, ours,
                                 # backbone); "demo": the bundled demo model's weights
    freeze_backbone: false       # same as model.backbone.learnable: False
    backbone_lr_mult: 1.0        # backbone learning rate = this x the scheduled one

With ``labels``, the head's class count is the label map's. ``init_from`` loads every weight that
fits and freshly initialises the classifier when the label set differs (see
:func:`fbil.model.checkpoint.init_from_checkpoint`).

Relative paths are relative to the working directory, as published. Without ``eval_mAP``, a
CSV val split is scored against its own annotations/labelmap/exclusions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from fbil.model.checkpoint import DEMO, demo_weights_path
from fbil.model.config import ConfigError, FBILConfig, config_from_published, parse_augmentation
from fbil.model.labels import LabelMap, default_labels, read_label_map
from fbil.model.preprocess import PreprocessSpec
from fbil.model.training.ava_data import FrameLayout
from fbil.model.training.datasets import VIDEO_EXTENSIONS, DataSpec
from fbil.model.training.loss import LossKind


@dataclass(frozen=True)
class EvalFiles:
    """What validation detections are scored against."""

    labelmap: Path
    groundtruth: Path
    exclusions: Path | None = None


@dataclass(frozen=True)
class SplitConfig:
    data: DataSpec
    batch_size: int
    workers: int
    preprocess: PreprocessSpec
    flip: bool = False
    with_label: bool = True
    eval_files: EvalFiles | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    base_lr: float
    warmup_lr: float
    warmup_epochs: float = 0.0
    milestone_epochs: tuple[float, ...] = ()
    lr_mults: tuple[float, ...] = ()


@dataclass(frozen=True)
class TrainConfig:
    model: FBILConfig
    train: SplitConfig
    val: SplitConfig | None
    schedule: ScheduleConfig
    optimizer: dict[str, Any] = field(default_factory=dict)
    result_path: Path = Path("experiments/FBIL")
    seed: int = 1
    print_freq: int = 20
    evaluate_only: bool = False
    n_epochs: int = 1
    val_freq: int = 1
    save_freq: int = 1
    freeze_bn: bool = True
    backbone_learnable: bool = True
    pretrain: Path | None = None
    box_jitter: float = 0.0
    loss: LossKind = "pose_softmax"
    grad_accum: int = 1
    amp: bool = False
    max_steps_per_epoch: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: LabelMap = field(default_factory=lambda: default_labels(60))
    init_from: Path | None = None
    backbone_lr_mult: float = 1.0


LABELS_OPTION = "'labels: FILE' in the training config (or fbil-train --labels FILE)"


def with_labels(model: FBILConfig, labels: LabelMap) -> FBILConfig:
    """``model`` with as many classes as ``labels`` (the label map defines the count)."""
    return replace(model, head=replace(model.head, num_classes=len(labels)))


def load_train_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a training config YAML (published format + extensions, see the module docstring);
    ``overrides`` replace top-level keys (``labels``, ``init_from``, ... from the command line)."""
    try:
        doc = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read training config {path}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} does not hold a config mapping")
    return train_config_from_dict({**doc, **(overrides or {})})


def train_config_from_dict(doc: dict[str, Any]) -> TrainConfig:
    try:
        return _parse(doc)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"invalid training config: {e!r}") from e


def _parse(doc: dict[str, Any]) -> TrainConfig:
    model_cfg = config_from_published(doc)
    train = doc.get("train") or {}
    if not train:
        raise ConfigError("the config has no train section")
    loss_kw = (doc.get("loss") or {}).get("kwargs") or {}
    loss: str = train.get("loss", "pose_softmax" if loss_kw.get("pose_softmax") else "sigmoid")
    if loss not in ("pose_softmax", "sigmoid"):
        raise ConfigError(f"train.loss must be pose_softmax or sigmoid, got {loss!r}")
    model_cfg = replace(model_cfg, pose_softmax=loss == "pose_softmax")

    model = doc["model"]
    backbone = model.get("backbone") or {}
    pretrain = (backbone.get("pretrain") or {}).get("path")
    neck_kw = (model.get("neck") or {}).get("kwargs") or {}
    jitter = float((neck_kw.get("bbox_jitter") or {}).get("scale", 0.0))

    opt = train.get("optimizer") or {}
    if str(opt.get("type", "SGD")) != "SGD":
        raise ConfigError(f"only the SGD optimizer is supported, got {opt.get('type')!r}")
    sched = train.get("scheduler") or {}
    if str(sched.get("type", "step")) != "step":
        raise ConfigError(f"only the step scheduler is supported, got {sched.get('type')!r}")
    schedule = ScheduleConfig(
        base_lr=float(sched["base_lr"]),
        warmup_lr=float(sched.get("warmup_lr", sched["base_lr"])),
        warmup_epochs=float(sched.get("warmup_epochs", 0)),
        milestone_epochs=tuple(float(v) for v in sched.get("milestone_epochs") or ()),
        lr_mults=tuple(float(v) for v in sched.get("lr_mults") or ()),
    )
    grad_accum = int(train.get("grad_accum", 1))
    if grad_accum < 1:
        raise ConfigError("train.grad_accum must be >= 1")
    val = doc.get("val")
    max_steps = train.get("max_steps_per_epoch")
    if doc.get("labels"):
        labels = read_label_map(doc["labels"])
        model_cfg = with_labels(model_cfg, labels)
    else:
        labels = default_labels(model_cfg.head.num_classes, LABELS_OPTION)
    lr_mult = float(doc.get("backbone_lr_mult", 1.0))
    if lr_mult < 0:
        raise ConfigError(f"backbone_lr_mult must be >= 0, got {lr_mult}")
    learnable = bool(backbone.get("learnable", True)) and not doc.get("freeze_backbone", False)
    return TrainConfig(
        model=model_cfg,
        train=_split(train, model_cfg.preprocess, training=True),
        val=_split(val, model_cfg.preprocess, training=False) if val else None,
        schedule=schedule,
        optimizer=dict(opt.get("kwargs") or {}),
        result_path=Path(doc.get("result_path", "experiments/FBIL")),
        seed=int(doc.get("manual_seed", 1)),
        print_freq=int(doc.get("print_freq", 20)),
        evaluate_only=bool(doc.get("evaluate", False)),
        n_epochs=int(train.get("n_epochs", 1)),
        val_freq=int(train.get("val_freq", 1)),
        save_freq=int(train.get("save_freq", 1)),
        freeze_bn=bool(model.get("freeze_bn", False)),
        backbone_learnable=learnable,
        pretrain=Path(pretrain) if pretrain else None,
        box_jitter=jitter,
        loss=loss,  # type: ignore[arg-type]
        grad_accum=grad_accum,
        amp=bool(train.get("amp", False)),
        max_steps_per_epoch=int(max_steps) if max_steps is not None else None,
        metadata=dict(doc.get("metadata") or {}),
        labels=labels,
        init_from=_init_from(doc.get("init_from")),
        backbone_lr_mult=lr_mult,
    )


def _path(value: Any) -> Path | None:
    return Path(value) if value not in (None, "") else None


def _init_from(value: Any) -> Path | None:
    """``init_from``: a path, or ``demo`` for the bundled demo model's weights."""
    return demo_weights_path() if value == DEMO else _path(value)


def data_spec(section: dict[str, Any]) -> DataSpec:
    """The data of a train/val section: our ``data`` mapping, else the published
    ``root_path`` + ``annotation_path`` (a pickle of frame-folder records)."""
    data = section.get("data")
    if data is None:
        return DataSpec(
            kind="pickle",
            root=Path(section["root_path"]),
            annotations=Path(section["annotation_path"]),
        )
    layout = FrameLayout(
        pattern=str(data.get("frame_pattern", "img_{:05d}.jpg")),
        fps=int(data.get("frame_fps", 30)),
        first_timestamp=int(data.get("first_timestamp", 900)),
        index_base=int(data.get("index_base", 1)),
    )
    ext = data.get("video_ext", VIDEO_EXTENSIONS)
    return DataSpec(
        kind=data["kind"],
        root=Path(data["root"]),
        annotations=_path(data.get("annotations")),
        labelmap=_path(data.get("labelmap")),
        exclusions=_path(data.get("exclusions")),
        proposals=_path(data.get("proposals")),
        min_score=float(data.get("min_score", 0.0)),
        layout=layout,
        video_ext=(ext,) if isinstance(ext, str) else tuple(ext),
        time_offset=float(data.get("time_offset", 0.0)),
    )


def _split(section: dict[str, Any], base: PreprocessSpec, *, training: bool) -> SplitConfig:
    data = data_spec(section)
    pre, flip = parse_augmentation(section.get("augmentation"), base)
    eval_map = section.get("eval_mAP")
    eval_files = None
    if eval_map:
        eval_files = EvalFiles(
            Path(eval_map["labelmap"]),
            Path(eval_map["groundtruth"]),
            _path(eval_map.get("exclusions")),
        )
    elif data.kind != "pickle" and data.annotations is not None and data.labelmap is not None:
        eval_files = EvalFiles(data.labelmap, data.annotations, data.exclusions)
    return SplitConfig(
        data=data,
        batch_size=int(section.get("batch_size", 1)),
        workers=int(section.get("workers", 0)),
        preprocess=pre,
        flip=flip and training,
        with_label=bool(section.get("with_label", True)),
        eval_files=eval_files,
    )
