"""The optimizer and learning-rate schedule of the official Swin recipe (Liu et al. 2021, Sec. 4.1 and the
repo's configs): AdamW without weight decay on norms, biases and position-bias parameters, optionally with
layer-wise lr decay for fine-tuning; linear warmup then cosine, stepped per optimizer step, its flags
checked before a run starts (check_schedule). The step that uses them is engine.py's.
"""
import math

import torch
import torch.nn as nn

from utils import UserError


def no_weight_decay(name: str, param: nn.Parameter) -> bool:
    """Norms, biases and position-bias parameters are not decayed (official Swin recipe)."""
    return param.ndim <= 1 or any(k in name for k in ("relative_position_bias_table", "cpb_mlp", "logit_scale"))


def layer_id(name: str, depths) -> int:
    """0 for the patch embedding, 1.. for the blocks in order, len(blocks) + 1 for norm and head."""
    if name.startswith("patch_embed"):
        return 0
    if name.startswith("layers."):
        stage, rest = int(name.split(".")[1]), name.split(".")[2:]
        if rest[0] == "blocks":
            return sum(depths[:stage]) + int(rest[1]) + 1
        return sum(depths[:stage + 1])  # patch merging goes with the stage's last block
    return sum(depths) + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list:
    """AdamW groups: with and without weight decay; with layer_decay < 1 also by depth, a block's lr scaled
    by layer_decay ** (its depth from the top), so fine-tuning moves the pretrained early layers least.
    Only then by depth: each group costs the optimizer and the schedule host time every step (swin_tiny by
    depth has 28), which a GPU waits on."""
    depths = [len(stage.blocks) for stage in model.layers]
    top = sum(depths) + 1
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = no_weight_decay(name, param)
        depth = layer_id(name, depths) if layer_decay < 1 else top
        # by exemption, not by the decay's value: --weight-decay 0 keeps the groups, so that a run resumed with
        # another --weight-decay (0 or from 0) finds the optimizer state's groups as they were saved
        key = (depth, exempt)
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if exempt else weight_decay,
                           "lr_scale": layer_decay ** (top - depth)}
        groups[key]["params"].append(param)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.layer_decay)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_scale"]
    # fused: one kernel for all parameters, where the default launches several per parameter: on a GPU,
    # and on a CPU too (the demo variant's step 9.2 -> 2.7 ms on the 2-core EPYC: docs/gpu.md, Optimizer)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = devices in ({"cuda"}, {"cpu"})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr the next step takes: the head's, the largest (layer decay scales the lower layers' down from it)."""
    return max(group["lr"] for group in optimizer.param_groups)


def lr_factor(step: int, total_steps: int, warmup_steps: int, warmup_ratio: float, min_ratio: float) -> float:
    """Linear warmup from warmup_ratio to 1, then cosine down to min_ratio (of each group's lr)."""
    if step < warmup_steps:
        return warmup_ratio + (1 - warmup_ratio) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_schedule(cfg, steps_per_epoch: int):
    """The run's lr factor of each optimizer step (of --lr, and of each group's lr)."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(int(cfg.warmup_epochs * steps_per_epoch), total)
    return lambda step: lr_factor(step, total, warmup, cfg.warmup_lr / cfg.lr, cfg.min_lr / cfg.lr)


def check_schedule(cfg, epochs_done: int = 0) -> None:
    """A schedule that would go the other way than its flags say, refused before any work: a cosine that climbs
    from --lr to --min-lr, or a warmup that lowers the lr to --lr (its notice said "rises"). A run resumed past its
    warmup has none left to refuse."""
    if cfg.min_lr > cfg.lr:
        raise UserError(f"--min-lr {cfg.min_lr:g} is above --lr {cfg.lr:g}: the schedule would raise the lr over the "
                        f"run instead of lowering it. Give a --min-lr below --lr (such as {cfg.lr / 100:g})")
    if cfg.warmup_lr > cfg.lr and epochs_done < cfg.warmup_epochs:
        raise UserError(f"--warmup-lr {cfg.warmup_lr:g} is above --lr {cfg.lr:g}: the warmup would lower the lr to "
                        f"--lr instead of raising it. Give a --warmup-lr below --lr (such as {cfg.lr / 1000:g}), or "
                        "--warmup-epochs 0 for none")


def build_scheduler(optimizer, cfg, steps_per_epoch: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg, steps_per_epoch))
