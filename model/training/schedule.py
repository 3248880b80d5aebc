"""The published warm-up + step learning-rate schedule (ACAR-Net / FBIL lineage).

Counted in optimizer steps ("iterations"). :meth:`WarmupStepLR.step` is called *before* each
optimizer step, so the ``i``-th step (0-based) runs with ``last_iter = i``:

* warm-up, ``last_iter < warmup_steps``: ``lr = base_lr + (warmup_lr - base_lr) * last_iter /
  warmup_steps`` (a linear ramp that starts at ``base_lr``; after a 25-step warm-up epoch,
  ``last_iter = 24`` gives 0.01158 for 0.0015 -> 0.012, as in the published checkpoints);
* afterwards: ``lr = warmup_lr * lr_mults[bisect_right(milestones, last_iter)]``, with
  ``lr_mults`` the cumulative products ``[1, m1, m1*m2, ...]`` of the configured multipliers and
  ``milestones`` the milestone epochs times the iterations per epoch.

With several parameter groups each group scales by ``its initial lr / base_lr``. The state dict
is the published plain dict ``{base_lr, warmup_steps, warmup_lr, base_lrs, last_iter,
milestones, lr_mults}``, so published checkpoints resume and ours look familiar.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer

STATE_KEYS = (
    "base_lr",
    "warmup_steps",
    "warmup_lr",
    "base_lrs",
    "last_iter",
    "milestones",
    "lr_mults",
)


def cumulative_mults(lr_mults: Sequence[float]) -> list[float]:
    """``[0.1, 0.1] -> [1.0, 0.1, 0.010000000000000002]`` (published float arithmetic)."""
    out = [1.0]
    for m in lr_mults:
        out.append(out[-1] * float(m))
    return out


class WarmupStepLR:
    """Linear warm-up from ``base_lr`` to ``warmup_lr``, then step decay at ``milestones``."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        base_lr: float,
        warmup_lr: float,
        warmup_steps: int,
        milestones: Sequence[int],
        lr_mults: Sequence[float],
        last_iter: int = -1,
    ) -> None:
        if len(milestones) != len(lr_mults):
            raise ValueError("milestones and lr_mults need the same length")
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing: {list(milestones)}")
        if base_lr <= 0 or warmup_steps < 0:
            raise ValueError("base_lr must be > 0 and warmup_steps >= 0")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_lr = float(warmup_lr) if warmup_steps > 0 else float(base_lr)
        self.milestones = [int(m) for m in milestones]
        self.lr_mults = cumulative_mults(lr_mults)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        self.last_iter = int(last_iter)

    def lr_at(self, last_iter: int) -> list[float]:
        """Learning rate of each parameter group at iteration ``last_iter``."""
        if self.warmup_steps > 0 and last_iter < self.warmup_steps:
            lr = self.base_lr + (self.warmup_lr - self.base_lr) * last_iter / self.warmup_steps
        else:
            lr = self.warmup_lr * self.lr_mults[bisect_right(self.milestones, last_iter)]
        return [lr * group_lr / self.base_lr for group_lr in self.base_lrs]

    def step(self) -> None:
        """Advance one iteration and set the optimizer's learning rates."""
        self.last_iter += 1
        for group, lr in zip(self.optimizer.param_groups, self.lr_at(self.last_iter), strict=True):
            group["lr"] = lr

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "warmup_steps": self.warmup_steps,
            "warmup_lr": self.warmup_lr,
            "base_lrs": list(self.base_lrs),
            "last_iter": self.last_iter,
            "milestones": list(self.milestones),
            "lr_mults": list(self.lr_mults),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"scheduler state lacks {missing}")
        self.base_lr = float(state["base_lr"])
        self.warmup_steps = int(state["warmup_steps"])
        self.warmup_lr = float(state["warmup_lr"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.last_iter = int(state["last_iter"])
        self.milestones = [int(v) for v in state["milestones"]]
        self.lr_mults = [float(v) for v in state["lr_mults"]]


def build_step_schedule(
    optimizer: Optimizer,
    *,
    base_lr: float,
    warmup_lr: float,
    warmup_epochs: float,
    milestone_epochs: Sequence[float],
    lr_mults: Sequence[float],
    iters_per_epoch: int,
) -> WarmupStepLR:
    """The published ``scheduler: {type: step, ...}`` section, epochs turned into iterations."""
    return WarmupStepLR(
        optimizer,
        base_lr=base_lr,
        warmup_lr=warmup_lr,
        warmup_steps=round(warmup_epochs * iters_per_epoch),
        milestones=[round(e * iters_per_epoch) for e in milestone_epochs],
        lr_mults=lr_mults,
    )
