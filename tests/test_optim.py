"""optim.py: the recipe's optimizer (AdamW, its groups, layer-wise lr decay) and its warmup-then-cosine schedule."""
import argparse

import pytest
import torch

import optim
from utils import UserError
from test_engine import micro


@pytest.mark.parametrize("version", [1, 2])
def test_no_weight_decay_on_norms_biases_and_position_bias(version):
    net = micro(version)
    decayed = {id(p) for g in optim.param_groups(net, 0.05) if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in net.named_parameters():
        exempt = (p.ndim <= 1 or "norm" in name or name.endswith(".bias") or "relative_position_bias_table" in name
                  or "cpb_mlp" in name or "logit_scale" in name or name.endswith(("q_bias", "v_bias")))
        assert (id(p) in decayed) != exempt, name
    assert any("cpb_mlp.0.weight" in n for n, _ in net.named_parameters()) == (version == 2)
    # without layer decay two groups, not one per depth: each costs host time every step
    assert [g["lr_scale"] for g in optim.param_groups(net, 0.05)] == [1.0, 1.0]


def test_layer_decay_scales_early_layers_least():
    net = micro()
    groups = optim.param_groups(net, 0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    embed = scale[id(net.patch_embed.proj.weight)]
    first_block = scale[id(net.layers[0].blocks[0].mlp.fc1.weight)]
    last_block = scale[id(net.layers[3].blocks[0].mlp.fc1.weight)]
    head = scale[id(net.head.weight)]
    assert head == 1.0 and embed < first_block < last_block < head
    assert first_block == 0.5 ** 5  # 5 blocks in all: the first is 5 steps below the head
    assert len({scale[id(p)] for p in net.parameters()}) == 7  # embed, 5 blocks, head
    for stage in net.layers[:3]:  # patch merging, at a stage's end (the official layout): its last block's scale
        assert scale[id(stage.downsample.reduction.weight)] == scale[id(stage.blocks[-1].mlp.fc1.weight)]
    # the lr shown and logged is the head's, the schedule's own, not the patch embedding's
    cfg = argparse.Namespace(weight_decay=0.05, layer_decay=0.5, lr=1e-3)
    assert optim.current_lr(optim.build_optimizer(net, cfg)) == 1e-3


def test_adamw_is_fused_on_the_cpu_and_steps_as_the_default_loop_does():
    """One kernel for all parameters on a CPU too, with the recipe's groups (layer-wise lr, no decay on
    norms and biases) stepped as PyTorch's default per-parameter loop steps them."""
    cfg = argparse.Namespace(weight_decay=0.05, layer_decay=0.5, lr=1e-2)
    nets = [micro(), micro()]
    nets[1].load_state_dict(nets[0].state_dict())
    fused = optim.build_optimizer(nets[0], cfg)
    assert fused.defaults["fused"]
    params = dict(nets[1].named_parameters())
    loop = torch.optim.AdamW([{"params": [params[n] for n in names], "lr": g["lr"], "weight_decay": g["weight_decay"]}
                              for g, names in zip(fused.param_groups, groups_by_name(nets[0], fused))],
                             betas=(0.9, 0.999), eps=1e-8, foreach=False)
    assert not any(g["fused"] for g in loop.param_groups) and len(loop.param_groups) > 2
    start = nets[0].head.weight.detach().clone()
    torch.manual_seed(0)
    for _ in range(3):
        for (_, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        fused.step()
        loop.step()
    for (name, a), (_, b) in zip(nets[0].named_parameters(), nets[1].named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert (nets[0].head.weight - start).abs().mean() > 1e-3  # Adam moves each weight by about lr a step


def groups_by_name(net, optimizer) -> list:
    """The parameter names of each of the optimizer's groups."""
    name = {id(p): n for n, p in net.named_parameters()}
    return [[name[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def test_warmup_then_cosine_per_step():
    steps = [optim.lr_factor(s, total_steps=100, warmup_steps=10, warmup_ratio=0.01, min_ratio=0.001)
             for s in range(101)]
    assert steps[0] == pytest.approx(0.01) and steps[10] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(steps[:10], steps[1:11]))  # rising through warmup
    assert all(a >= b for a, b in zip(steps[10:], steps[11:]))  # then falling
    assert steps[55] == pytest.approx(0.001 + 0.999 * 0.5)  # half way down the cosine
    assert steps[100] == pytest.approx(0.001)
    # past the end (a step the schedule did not count: the last epoch's partial batch): it stays down, not back up
    assert optim.lr_factor(130, total_steps=100, warmup_steps=10, warmup_ratio=0.01, min_ratio=0.001) == \
        pytest.approx(0.001)


def test_a_warmup_longer_than_the_run_rises_to_lr_at_its_end():
    """--warmup-epochs past --epochs: the warmup spans the whole run and reaches --lr at its last step (its notice
    says so), not half way there."""
    cfg = argparse.Namespace(lr=1e-3, epochs=1, warmup_epochs=2, warmup_lr=1e-6, min_lr=1e-5)
    factor = optim.lr_schedule(cfg, steps_per_epoch=10)
    assert factor(0) == pytest.approx(1e-3) and factor(10) == pytest.approx(1.0)
    assert all(factor(step) < factor(step + 1) for step in range(10))


def test_a_warmup_lr_above_lr_is_refused_only_while_warmup_is_ahead():
    """--warmup-lr above --lr would lower the lr as it "warms up": refused; a run resumed past its warmup with a lower
    --lr typed has none left, and goes on."""
    cfg = argparse.Namespace(lr=1e-5, min_lr=1e-6, warmup_lr=1e-4, warmup_epochs=1)
    with pytest.raises(UserError, match=r"^--warmup-lr 0.0001 is above --lr 1e-05"):
        optim.check_schedule(cfg, epochs_done=0)
    optim.check_schedule(cfg, epochs_done=1)
    optim.check_schedule(cfg, epochs_done=3)


def test_scheduler_is_stepped_per_optimizer_step():
    net = micro()
    cfg = argparse.Namespace(weight_decay=0.05, layer_decay=1.0, lr=1e-3, epochs=2, warmup_epochs=1,
                             warmup_lr=1e-6, min_lr=1e-5)
    optimizer = optim.build_optimizer(net, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, steps_per_epoch=4)
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-6) and lrs[4] == pytest.approx(1e-3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_layer_decay_lowers_the_lr_each_group_starts_and_schedules_with():
    """--layer-decay 0.5: each layer below the head trains at half the rate of the one above, from the first step."""
    net = micro()
    cfg = argparse.Namespace(weight_decay=0.05, layer_decay=0.5, lr=1e-3, epochs=2, warmup_epochs=0,
                             warmup_lr=1e-6, min_lr=1e-5)
    optimizer = optim.build_optimizer(net, cfg)
    scheduler = optim.build_scheduler(optimizer, cfg, steps_per_epoch=4)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(net.head.weight)] == pytest.approx(1e-3)
    assert lr_of[id(net.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5 ** 6)  # 5 blocks + head above it
    assert lr_of[id(net.layers[0].blocks[0].mlp.fc1.weight)] == pytest.approx(1e-3 * 0.5 ** 5)
    optimizer.step()
    scheduler.step()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(net.patch_embed.proj.weight)] / lr_of[id(net.head.weight)] == pytest.approx(0.5 ** 6)
