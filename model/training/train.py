"""The training loop: one process on CPU or a GPU, or DistributedDataParallel under torchrun.

Per epoch ``e`` (0-based) every random stream is derived from ``(manual_seed, e, rank)``: the
sampler order (``DistributedSampler(seed).set_epoch(e)``), the augmentation (per sample, see
:func:`augment.sample_rng`) and the torch/numpy/python generators used by the head's random
masks and dropout (re-seeded at the start of the epoch). Resuming after epoch ``e`` therefore
needs only the weights, the optimizer, the scheduler and the grad-scaler state, and gives the
same weights as an uninterrupted run (on the same hardware, threads and world size).

Outputs in ``result_path``: ``checkpoints/epoch_NNN.safetensors`` (servable: weights + config +
metadata), ``checkpoints/epoch_NNN.state.pth`` (the published checkpoint layout ``{epoch,
state_dict, optimizer, scheduler}`` plus ``scaler``), ``train.log``, ``tensorboard/`` and
``detections/epoch_NNN.csv`` from validation.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from fbil.model.checkpoint import (
    init_from_checkpoint,
    load_checkpoint,
    read_embedded_labels,
    remap_keys,
    save_model,
)
from fbil.model.detector import FBILDetector
from fbil.model.device import resolve_device
from fbil.model.labels import LabelMap
from fbil.model.metadata import ModelMetadata
from fbil.model.training.augment import TrainAugment
from fbil.model.training.ava_eval import evaluate_csv
from fbil.model.training.collate import Batch, collate
from fbil.model.training.datasets import KeyframeDataset, build_entries, clip_reader
from fbil.model.training.loss import ava_loss
from fbil.model.training.predict import Detection, forward_batch, predict, write_detections_csv
from fbil.model.training.schedule import WarmupStepLR, build_step_schedule
from fbil.model.training.train_config import SplitConfig, TrainConfig

log = logging.getLogger("fbil.train")
STATE_RE = re.compile(r"epoch_(\d+)\.state\.pth$")


# ------------------------------------------------------------------------ processes, seeds


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistContext:
    """Join the torchrun process group when launched by it (NCCL on GPUs, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank, world, dev)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for one rank's epoch, independent of the others."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and bytes of a state dict's tensors, in sorted key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# ------------------------------------------------------------------------ model setup


def configure_trainable(detector: FBILDetector, freeze_bn: bool, backbone_learnable: bool) -> None:
    """Published ``learnable: False`` freezes the backbone; ``freeze_bn`` freezes every
    BatchNorm: running statistics (eval mode, see :func:`set_train_mode`) and affine weights.

    Frozen parameters stay in the optimizer (its parameter indices keep the published layout);
    without gradients SGD leaves them untouched, weight decay included.
    """
    if not backbone_learnable:
        detector.backbone.requires_grad_(False)
    if freeze_bn:
        for m in detector.modules():
            if isinstance(m, _BatchNorm):
                m.requires_grad_(False)


def set_train_mode(detector: FBILDetector, freeze_bn: bool, backbone_learnable: bool) -> None:
    """``train()`` with frozen BatchNorm layers (and a frozen backbone) kept in eval mode."""
    detector.train()
    if not backbone_learnable:
        detector.backbone.eval()
    if freeze_bn:
        for m in detector.modules():
            if isinstance(m, _BatchNorm):
                m.eval()


# ------------------------------------------------------------------------ data


def make_dataset(
    split: SplitConfig, labels: LabelMap, *, training: bool, seed: int, jitter: float
) -> KeyframeDataset:
    entries = build_entries(split.data, labels, split.preprocess, use_proposals=not training)
    if training:
        entries = [e for e in entries if any(e.labels)]
    if not entries:
        raise ValueError(f"no keyframes with boxes in {split.data}")
    augment = TrainAugment(flip=split.flip, jitter_scale=jitter) if training else None
    return KeyframeDataset(
        entries, clip_reader(split.data, split.preprocess), len(labels), augment, seed
    )


def shard_loader(
    dataset: KeyframeDataset, split: SplitConfig, ctx: DistContext
) -> DataLoader[Batch]:
    """Validation loader over this rank's share (every ``world_size``-th keyframe, no padding
    duplicates, so gathered detections hold each keyframe once)."""
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    return DataLoader(
        torch.utils.data.Subset(dataset, indices),
        batch_size=split.batch_size,
        num_workers=split.workers,
        collate_fn=collate,
    )


# ------------------------------------------------------------------------ the trainer


class Trainer:
    """Builds everything from a :class:`TrainConfig` and runs epochs (see the module doc)."""

    def __init__(self, cfg: TrainConfig, ctx: DistContext | None = None) -> None:
        self.cfg, self.ctx = cfg, ctx or DistContext()
        self.labels = cfg.labels
        self.out = cfg.result_path
        self.ckpt_dir = self.out / "checkpoints"
        if self.ctx.is_main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.detector = FBILDetector(cfg.model, num_pose=self.labels.num_pose)
        if cfg.pretrain is not None:
            info = load_checkpoint(self.detector, cfg.pretrain, strict=False)
            log.info("loaded %s weights from %s", info.kind, cfg.pretrain)
        if cfg.init_from is not None:
            self.init_from(cfg.init_from)
        configure_trainable(self.detector, cfg.freeze_bn, cfg.backbone_learnable)
        self.detector.to(self.ctx.device)
        self.model: nn.Module = self.detector
        if self.ctx.distributed:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.detector, device_ids=ids)

        self.train_set = make_dataset(
            cfg.train, self.labels, training=True, seed=cfg.seed, jitter=cfg.box_jitter
        )
        self.sampler = DistributedSampler(
            self.train_set,
            num_replicas=self.ctx.world_size,
            rank=self.ctx.rank,
            shuffle=True,
            seed=cfg.seed,
        )
        self.loader = DataLoader(
            self.train_set,
            batch_size=cfg.train.batch_size,
            sampler=self.sampler,
            num_workers=cfg.train.workers,
            collate_fn=collate,
            pin_memory=self.ctx.device.type == "cuda",
        )
        self.steps_per_epoch = -(-len(self.loader) // cfg.grad_accum)
        if cfg.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_steps_per_epoch)

        optim_kw = {
            k: cfg.optimizer[k]
            for k in ("momentum", "weight_decay", "nesterov", "dampening")
            if k in cfg.optimizer
        }
        self.optimizer = torch.optim.SGD(self.param_groups(), lr=cfg.schedule.base_lr, **optim_kw)
        s = cfg.schedule
        self.scheduler: WarmupStepLR = build_step_schedule(
            self.optimizer,
            base_lr=s.base_lr,
            warmup_lr=s.warmup_lr,
            warmup_epochs=s.warmup_epochs,
            milestone_epochs=s.milestone_epochs,
            lr_mults=s.lr_mults,
            iters_per_epoch=self.steps_per_epoch,
        )
        self.amp = cfg.amp and self.ctx.device.type == "cuda"
        if cfg.amp and not self.amp:
            log.warning("train.amp needs a CUDA device; training in float32")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.epoch = 0
        self.writer: Any = None
        self._log_file: logging.Handler | None = None

    def init_from(self, path: Path) -> None:
        """Fine-tuning start: every weight of ``path`` that fits; the classifier fresh when
        it does not fit or was trained for other classes (logged)."""
        previous = read_embedded_labels(path)
        new_classes = previous is not None and previous != self.labels
        report = init_from_checkpoint(self.detector, path, new_classes=new_classes)
        log.info(
            "initialised from %s weights %s: %d tensors loaded, %d re-initialised: %s",
            report.kind,
            path,
            len(report.loaded),
            len(report.reinitialised),
            ", ".join(report.reinitialised) or "none",
        )

    def param_groups(self) -> list[dict[str, Any]]:
        """One group (the published layout), or backbone and head groups when the backbone
        trains at ``backbone_lr_mult`` times the learning rate."""
        mult = self.cfg.backbone_lr_mult
        if mult == 1.0:
            return [{"params": list(self.detector.parameters())}]
        base = self.cfg.schedule.base_lr
        return [
            {"params": list(self.detector.backbone.parameters()), "lr": base * mult},
            {"params": list(self.detector.head.parameters()), "lr": base},
        ]

    # -- state ----------------------------------------------------------------------------
    def metadata(self) -> ModelMetadata:
        m = self.cfg.metadata
        return ModelMetadata(
            config=self.cfg.model,
            labels=self.labels,
            name=str(m.get("name", "fbil-slowfast")),
            version=str(m.get("version", "unversioned")),
            description=str(m.get("description", "")) or f"fbil-train, epoch {self.epoch}",
            demo=bool(m.get("demo", False)),
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "state_dict": self.detector.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def save(self) -> Path:
        """Write this epoch's servable model and training state (rank 0)."""
        stem = self.ckpt_dir / f"epoch_{self.epoch:03d}"
        model_path = stem.with_suffix(".safetensors")
        if self.ctx.is_main:
            save_model(self.detector, self.metadata(), model_path)
            tmp = stem.with_suffix(".state.pth.tmp")
            torch.save(self.state_dict(), tmp)
            os.replace(tmp, stem.with_suffix(".state.pth"))
            log.info("saved %s", model_path)
        return model_path

    def resume(self, path: Path) -> None:
        """Continue from a state file of ours or a published training checkpoint."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.detector.load_state_dict(remap_keys(state["state_dict"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        log.info("resumed from %s after epoch %d", path, self.epoch)

    def latest_state(self) -> Path | None:
        found = [
            (int(m.group(1)), p)
            for p in self.ckpt_dir.glob("epoch_*.state.pth")
            if (m := STATE_RE.search(p.name))
        ]
        return max(found)[1] if found else None

    # -- loops ----------------------------------------------------------------------------
    def fit(self) -> None:
        """Train from ``self.epoch`` to ``n_epochs``, saving and validating as configured."""
        self._open_logs()
        try:
            while self.epoch < self.cfg.n_epochs:
                loss = self.train_epoch()
                self.epoch += 1
                log.info(
                    "epoch %d/%d: mean loss %.6f, lr %.6g",
                    self.epoch,
                    self.cfg.n_epochs,
                    loss,
                    self.scheduler.get_last_lr()[0],
                )
                self._scalar("train/epoch_loss", loss, self.epoch)
                if self.ctx.distributed:
                    self.check_replicas()
                if self.epoch % self.cfg.save_freq == 0 or self.epoch == self.cfg.n_epochs:
                    self.save()
                if self.cfg.val is not None and self.epoch % self.cfg.val_freq == 0:
                    self.validate()
        finally:
            self._close_logs()

    def _batches(self) -> Iterator[tuple[int, Batch]]:
        for i, batch in enumerate(self.loader):
            if i // self.cfg.grad_accum >= self.steps_per_epoch:
                return
            yield i, batch

    def train_epoch(self) -> float:
        """One epoch; returns the mean loss over all ranks and batches."""
        cfg, ctx = self.cfg, self.ctx
        seed_everything(epoch_seed(cfg.seed, self.epoch, ctx.rank))
        self.sampler.set_epoch(self.epoch)
        self.train_set.set_epoch(self.epoch)
        set_train_mode(self.detector, cfg.freeze_bn, cfg.backbone_learnable)
        num_batches = min(len(self.loader), self.steps_per_epoch * cfg.grad_accum)
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{cfg.n_epochs}",
            disable=not ctx.is_main,
            dynamic_ncols=True,
        )
        total, count = torch.zeros((), dtype=torch.float64), 0
        group_loss = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for i, batch in self._batches():
            group_start = i - i % cfg.grad_accum
            group_size = min(cfg.grad_accum, num_batches - group_start)
            if i == group_start:
                self.scheduler.step()
                group_loss = 0.0
            last = i == group_start + group_size - 1
            sync = self.model.no_sync() if ctx.distributed and not last else nullcontext()  # type: ignore[operator]
            batch = batch.to(ctx.device)
            with sync:
                with torch.autocast(ctx.device.type, enabled=self.amp):
                    logits = forward_batch(self.model, batch)
                loss = ava_loss(logits, batch.targets, cfg.loss, self.labels.num_pose)
                self.scaler.scale(loss / group_size).backward()
            value = float(loss.detach())
            total += value
            count += 1
            group_loss += value / group_size
            if last:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                step = self.scheduler.last_iter
                lr = self.scheduler.get_last_lr()[0]
                bar.set_postfix(loss=f"{group_loss:.4f}", lr=f"{lr:.3g}")
                bar.update()
                self._scalar("train/loss", group_loss, step)
                self._scalar("train/lr", lr, step)
                if ctx.is_main and (step + 1) % cfg.print_freq == 0:
                    log.info(
                        "epoch %d step %d: loss %.6f lr %.6g",
                        self.epoch + 1,
                        step + 1,
                        group_loss,
                        lr,
                    )
        bar.close()
        stats = torch.stack((total, torch.tensor(float(count), dtype=torch.float64)))
        if ctx.distributed:
            dist.all_reduce(stats)
        return float(stats[0] / stats[1])

    def check_replicas(self) -> None:
        """All ranks must hold the same weights after an epoch (logged on rank 0)."""
        digests: list[str] = [""] * self.ctx.world_size
        dist.all_gather_object(digests, weights_digest(self.detector.state_dict()))
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks disagree on the weights after epoch {self.epoch}: {digests}")
        log.info(
            "epoch %d: weights of all %d ranks agree, sha256 %s",
            self.epoch,
            self.ctx.world_size,
            digests[0],
        )

    def validate(self) -> float | None:
        """Detections of the val split (gathered on rank 0), written and scored when the split
        has ground truth; returns the mAP on rank 0."""
        val, ctx = self.cfg.val, self.ctx
        assert val is not None
        dataset = make_dataset(val, self.labels, training=False, seed=self.cfg.seed, jitter=0.0)
        rows = predict(
            self.detector, shard_loader(dataset, val, ctx), self.labels, ctx.device, amp=self.amp
        )
        gathered: list[list[Detection]] = [rows]
        if ctx.distributed:
            gathered = [[] for _ in range(ctx.world_size)]
            dist.all_gather_object(gathered, rows)
        if not ctx.is_main:
            return None
        all_rows = [r for part in gathered for r in part]
        csv_path = self.out / "detections" / f"epoch_{self.epoch:03d}.csv"
        write_detections_csv(all_rows, csv_path)
        if val.eval_files is None:
            log.info("wrote %s (no ground truth configured, not scored)", csv_path)
            return None
        e = val.eval_files
        result = evaluate_csv(e.labelmap, e.groundtruth, csv_path, e.exclusions)
        log.info("epoch %d: val mAP@0.5IOU %.4f (%s)", self.epoch, result.mean_ap, csv_path)
        self._scalar("val/mAP", result.mean_ap, self.epoch)
        return result.mean_ap

    # -- logs -----------------------------------------------------------------------------
    def _open_logs(self) -> None:
        if not self.ctx.is_main:
            return
        self._log_file = logging.FileHandler(self.out / "train.log")
        self._log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(self._log_file)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # the log file records progress whatever the console shows
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
        except ImportError:
            log.warning("tensorboard is not installed: no TensorBoard scalars")
            return
        self.writer = SummaryWriter(str(self.out / "tensorboard"))

    def _close_logs(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._log_file is not None:
            log.removeHandler(self._log_file)
            self._log_file.close()
            self._log_file = None

    def _scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)
