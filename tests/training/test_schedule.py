"""The published warm-up + step schedule."""

from __future__ import annotations

import pytest
import torch

from fbil.model.training.schedule import WarmupStepLR, build_step_schedule, cumulative_mults

PUBLISHED_STATE = {  # the scheduler of the published checkpoint after a 25-step warm-up epoch
    "base_lr": 0.0015,
    "warmup_steps": 25,
    "warmup_lr": 0.012,
    "base_lrs": [0.0015],
    "last_iter": 24,
    "milestones": [100, 150],
    "lr_mults": [1.0, 0.1, 0.010000000000000002],
}


def published_schedule() -> tuple[torch.optim.SGD, WarmupStepLR]:
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.SGD(params, lr=0.0015, momentum=0.9, weight_decay=1e-7, nesterov=True)
    sched = build_step_schedule(
        opt,
        base_lr=0.0015,
        warmup_lr=0.012,
        warmup_epochs=1,
        milestone_epochs=[4, 6],
        lr_mults=[0.1, 0.1],
        iters_per_epoch=25,
    )
    return opt, sched


def test_published_checkpoint_numbers_after_warmup_epoch() -> None:
    opt, sched = published_schedule()
    for _ in range(25):
        sched.step()
    assert sched.state_dict() == PUBLISHED_STATE
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01158, abs=1e-15)
    assert opt.param_groups[0]["initial_lr"] == 0.0015


def test_warmup_is_linear_from_base_lr_then_steps() -> None:
    opt, sched = published_schedule()
    lrs = []
    for _ in range(160):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.0015)  # iteration 0 runs at base_lr
    assert lrs[10] == pytest.approx(0.0015 + 0.0105 * 10 / 25)
    assert lrs[25] == pytest.approx(0.012)  # warm-up done
    assert lrs[99] == pytest.approx(0.012)
    assert lrs[100] == pytest.approx(0.0012)  # milestone epoch 4
    assert lrs[149] == pytest.approx(0.0012)
    assert lrs[150] == pytest.approx(0.00012)  # milestone epoch 6


def test_loads_published_state_and_continues() -> None:
    opt, sched = published_schedule()
    sched.load_state_dict(dict(PUBLISHED_STATE, last_iter=99))
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0012)


def test_no_warmup_and_validation() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = WarmupStepLR(
        opt, base_lr=0.1, warmup_lr=0.5, warmup_steps=0, milestones=[2], lr_mults=[0.1]
    )
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # warmup_lr ignored without warm-up
    with pytest.raises(ValueError, match="increasing"):
        WarmupStepLR(
            opt, base_lr=0.1, warmup_lr=0.1, warmup_steps=0, milestones=[3, 2], lr_mults=[0.1, 0.1]
        )
    assert cumulative_mults([0.1, 0.1]) == [1.0, 0.1, 0.010000000000000002]
