"""engine.py: the recipe's pieces one by one."""

import pytest
import torch

import compiling
import engine
import evaluation
import optim
from data import build_normalize
from model import create_model


def micro(version=1):
    return create_model("swin_micro_patch4_window4_128", num_classes=5, version=version)


def uint8_batches(count: int) -> list:
    """`count` batches of 4 noise images, 32 px, as the loader hands them over (uint8, labels, paths, failed)."""
    generator = torch.Generator().manual_seed(1)
    return [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator),
             torch.randint(0, 5, (4,), generator=generator), ["a", "b", "c", "d"], []) for _ in range(count)]


def test_ema_follows_float_weights_and_leaves_integer_buffers():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = engine.ModelEma(net, decay=0.9)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].num_batches_tracked += 7
    before = ema.module[0].weight.clone()
    ema.update(net, num_updates=1000)  # past the warm-up: decay 0.9
    assert torch.allclose(ema.module[0].weight, 0.9 * before + 0.1 * net[0].weight)
    assert ema.module[1].num_batches_tracked.item() == 0
    assert not any(p.requires_grad for p in ema.module.parameters())
    # early on, the decay is lower so that a short run still moves the average: (1 + 0) / (10 + 0)
    before = ema.module[0].weight.clone()
    ema.update(net, num_updates=0)
    assert torch.allclose(ema.module[0].weight, 0.1 * before + 0.9 * net[0].weight)


@pytest.mark.parametrize("decay", [0.9998, 0.999, 0.9, 0.5])
def test_ema_ramp_decides_the_decay_until_ramp_updates(decay):
    """--ema-decay takes effect only from ModelEma.ramp_updates: before it the ramp (1 + n) / (10 + n) is lower,
    which the run's notice and --help say (a run of a few thousand steps never reaches 0.9998)."""
    n = engine.ModelEma.ramp_updates(decay)
    assert (1 + n) / (10 + n) >= decay - 1e-12 and (n == 0 or n / (9 + n) < decay)
    assert engine.ModelEma.ramp_updates(0.9998) == 44990


def test_the_start_says_when_ema_decay_is_never_reached(capsys):
    import argparse
    import run_log
    cfg = argparse.Namespace(ema=True, ema_decay=0.9998, epochs=30, warmup_epochs=1, lr=1e-4, warmup_lr=1e-7,
                             min_lr=1e-6, compile=False)
    run_log.notice_settings(cfg, "swin_micro_patch4_window4_128", torch.device("cpu"), False, 0, 92, fresh=True)
    # 2,760 steps: the last update, n = 2,759, at 2,760 / 2,769 (the notice gave 2,761 / 2,770)
    assert "reached at step 44,991; this run's 2,760 steps end at 0.9967, so --ema-decay does not change it" in \
        capsys.readouterr().out
    cfg.ema_decay = 0.99
    run_log.notice_settings(cfg, "swin_micro_patch4_window4_128", torch.device("cpu"), False, 0, 92, fresh=True)
    assert "EMA" not in capsys.readouterr().out


def training_losses(amp, device: str = "cpu", steps: int = 8, size: int = 96, version: int = 1,
                    cuda_graphs: bool = False):
    """Losses, final weights and state of train.py's step on one fixed batch, from the same start
    (tests/test_cuda.py runs it on the GPU)."""
    import train
    torch.manual_seed(0)
    net = create_model("swin_micro_patch4_window4_128", num_classes=5, drop_path_rate=0.0, version=version).to(device)
    cfg = train.build_parser().parse_args(["--lr", "1e-3", "--warmup-epochs", "0", "--epochs", "1"]
                                          + ["--cuda-graphs"] * cuda_graphs)
    runner = compiling.CudaGraphed(net) if cuda_graphs else net
    state = engine.build_train_state(cfg, net, runner, torch.device(device), amp, steps, [1] * 5)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, size, size), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 5, (16,), generator=generator).to(device)
    losses = [engine.train_step(state, images, labels, cfg)[1].item() for _ in range(steps)]
    return losses, torch.cat([p.detach().flatten() for p in net.parameters()]), state


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
def test_mixed_precision_steps_track_fp32_on_the_cpu(amp, version):
    """The GPU's step (autocast; for fp16 a GradScaler) is device-independent code: run here, where CI runs."""
    fp32_losses, fp32_weights, _ = training_losses(None, steps=5, size=64, version=version)
    losses, weights, state = training_losses(amp, steps=5, size=64, version=version)
    assert state.scaler.is_enabled() == (amp == torch.float16)  # loss scaling for fp16 only
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] * 0.8, losses
    assert abs(losses[0] - fp32_losses[0]) < 0.01 * fp32_losses[0], (losses, fp32_losses)
    assert abs(losses[-1] - fp32_losses[-1]) < 0.1 * fp32_losses[0], (losses, fp32_losses)
    assert ((weights - fp32_weights).norm() / fp32_weights.norm()).item() < 0.02
    assert not torch.equal(weights, fp32_weights)  # close, not the same: the step did run in `amp`


def test_accumulated_steps_average_their_batches_the_epochs_shorter_last_one_too(monkeypatch):
    """--accum-steps 2 over an epoch of 3 batches: the first step averages two batches' gradients, the
    last one takes its single batch at full weight (not halved)."""
    import train
    cfg = train.build_parser().parse_args(["--accum-steps", "2", "--warmup-epochs", "0", "--epochs", "1"])
    torch.manual_seed(0)
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 2, [1] * 5)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=generator),
                torch.randint(0, 5, (2,), generator=generator), ["a", "b"], []) for _ in range(3)]

    def gradients():
        return torch.cat([p.grad.flatten() for p in net.parameters()]).clone()

    alone = []
    for images, labels, _, _ in batches:  # each batch's own gradient, at the same weights
        net.zero_grad()
        engine.loss_fn(net(state.normalize(images)).float(), labels, cfg.label_smoothing).backward()
        alone.append(gradients())
    net.zero_grad()
    stepped = []
    monkeypatch.setattr(engine, "optimizer_step", lambda state, cfg: stepped.append(gradients()) or net.zero_grad())
    engine.train_one_epoch(state, batches, cfg, show_progress=False)
    assert len(stepped) == 2
    assert torch.allclose(stepped[0], (alone[0] + alone[1]) / 2, atol=1e-6)
    assert torch.allclose(stepped[1], alone[2], atol=1e-6)


@pytest.mark.parametrize("clip, scale", [(1.0, 100.0), (1.0, 1e-4), (0.0, 100.0)])  # norms of some 120, 0.12, 120
def test_gradients_are_clipped_by_their_global_norm(clip, scale, monkeypatch):
    """--clip-grad C: the optimizer steps on the gradients scaled as one vector to a norm of at most C (their
    direction kept, as the official recipe's clip_grad_norm_); 0 leaves them as they are."""
    import train
    cfg = train.build_parser().parse_args(["--clip-grad", str(clip), "--warmup-epochs", "0", "--epochs", "1"])
    torch.manual_seed(0)
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 2, [1] * 5)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * scale
    before = torch.cat([p.grad.flatten() for p in net.parameters()]).clone()
    stepped, real_step = [], state.scaler.step
    monkeypatch.setattr(state.scaler, "step", lambda optimizer: stepped.append(
        torch.cat([p.grad.flatten() for p in net.parameters()]).clone()) or real_step(optimizer))
    engine.optimizer_step(state, cfg)
    want = before * min(1.0, clip / before.norm().item()) if clip else before
    torch.testing.assert_close(stepped[0], want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


def test_an_epochs_training_top5_counts_the_label_among_the_five_highest(monkeypatch):
    """The epoch's training top-1 and top-5 (its line, metrics.csv): labels ranked 1st, 4th, 5th and 6th of 7."""
    import train
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 1, [1] * 5)
    ranked, labels = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1]]).expand(4, -1), torch.tensor([0, 3, 4, 5])
    monkeypatch.setattr(engine, "train_step", lambda state, images, labels_, *rest: (ranked, torch.tensor(1.0), labels))
    batches = [(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), labels, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [])]
    result = engine.train_one_epoch(state, batches, cfg, show_progress=False)
    assert result["acc1"] == 0.25 and result["acc5"] == 0.75


def test_a_host_copy_holds_the_values_of_its_time():
    """engine.HostCopy, which the progress bar's sums take before the next batches add to them in place."""
    sums = torch.zeros(3, dtype=torch.float64)
    copy = engine.HostCopy(sums)
    sums += 1
    assert copy.read() == [0.0, 0.0, 0.0] and engine.HostCopy(torch.tensor(2.5)).read() == 2.5


def test_weights_are_finite_only_if_every_float_tensor_is():
    """checkpoints.all_finite, checked before each checkpoint is saved: integer tensors are not looked at."""
    import checkpoints
    assert checkpoints.all_finite({}) and checkpoints.all_finite({"w": torch.ones(3), "n": torch.arange(3)})
    assert not checkpoints.all_finite({"w": torch.ones(3), "v": torch.tensor([1.0, float("inf")])})


def test_the_progress_bar_shows_the_epochs_figures_in_a_short_epoch_too(monkeypatch):
    """The bar's loss and top-1 come from copies read once they have arrived (at once on a CPU): in an epoch of
    3 batches, as the demo's 5, the bar shows them, and its last figures are the epoch's."""
    import train
    from tqdm import tqdm
    shown = []

    class Bar(tqdm):
        def set_postfix(self, **figures):
            shown.append(figures)
    monkeypatch.setattr(engine, "tqdm", Bar)
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 3, [1] * 5)
    batches = uint8_batches(3)
    result = engine.train_one_epoch(state, batches, cfg, show_progress=True)
    assert len(shown) == 3 and float(shown[-1]["loss"]) == pytest.approx(result["loss"], abs=1e-4)
    assert float(shown[-1]["acc"]) == pytest.approx(result["acc1"], abs=1e-3)


def test_the_progress_bars_are_drawn_on_a_terminal_only(capsys):
    """Piped (| tee log, > file) the epoch's and evaluation's bars wrote their frames, carriage return by carriage
    return, into the log, as predict.py's never did: on a terminal only, as tqdm's disable=None decides."""
    import train
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 2, [1] * 5)
    batches = uint8_batches(2)
    engine.train_one_epoch(state, batches, cfg, show_progress=True)
    evaluation.evaluate(net, batches, build_normalize(), 5, torch.device("cpu"), None, show_progress=True)
    assert capsys.readouterr().err == ""  # pytest's capture is no terminal


def test_the_flags_are_read_after_the_backward_pass_and_a_batch_without_images_adds_nothing(monkeypatch):
    """A step waits for the device once, reading its flags when the backward pass is already queued (on a GPU
    the forward pass is then no longer a point where the GPU runs dry); a batch whose files all failed has
    had its backward pass too, with a zeroed loss: the gradients of the step's window stay as they were, and
    as the window's last batch it still takes the step with them (not leaving them to the next window's)."""
    import train
    cfg = train.build_parser().parse_args(["--accum-steps", "2", "--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    seen, read_flags = [], engine.read_flags
    monkeypatch.setattr(engine, "read_flags", lambda state, flags, stop=None: seen.append(
        [p.grad is not None for p in net.parameters()]) or read_flags(state, flags, stop))
    images, labels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    assert engine.train_step(state, images, labels, cfg, step_now=False) is not None
    assert len(seen) == 1 and all(seen[0])  # the gradients were there when the flags were read
    grads = [p.grad.clone() for p in net.parameters()]
    stepped, optimizer_step = [], engine.optimizer_step
    monkeypatch.setattr(engine, "optimizer_step", lambda state, cfg: stepped.append(
        [p.grad.clone() for p in net.parameters()]) or optimizer_step(state, cfg))
    assert engine.train_step(state, images[:0], labels[:0], cfg, step_now=True) is None and state.step == 1
    assert len(stepped) == 1 and all(torch.equal(a, b) for a, b in zip(grads, stepped[0]))
    assert all(p.grad is None for p in net.parameters())  # taken: nothing left over for the next window
    # a window of nothing but a batch without images changes no weight, and the schedule goes on with the epoch
    weights, lr = [p.detach().clone() for p in net.parameters()], optim.current_lr(state.optimizer)
    assert engine.train_step(state, images[:0], labels[:0], cfg, step_now=True) is None and state.step == 2
    assert len(stepped) == 1 and all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    assert optim.current_lr(state.optimizer) < lr


def test_a_step_taken_by_a_batch_without_images_is_seen_by_on_step():
    """train.py's on_step (the periodic --save-every-steps save, the per-step loss) follows the steps taken,
    one whose batch had no image too (with no loss to log)."""
    import train
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    images, labels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    batches = [(images, labels, ["a", "b"], []), (images[:0], labels[:0], [], ["c", "d"])]
    seen = []
    engine.train_one_epoch(state, batches, cfg, on_step=lambda state, loss: seen.append((state.step, loss is None)),
                           show_progress=False)
    assert seen == [(1, False), (2, True)]


def agreement_process(rank: int, init_file: str) -> None:
    """One of two DDP processes (gloo, CPU) that meet, in turn, batches with no image on one or both, a
    non-finite fp16 loss on process 0, the same within a window of --accum-steps 2, and a stop requested on
    process 1; they agree in one all-reduce a step."""
    import datetime
    import torch.distributed as dist
    import train
    from stopping import StopSignal
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))  # a process left waiting fails, not hangs
    torch.manual_seed(0)
    model = micro()
    net = torch.nn.parallel.DistributedDataParallel(model)
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    state = engine.build_train_state(cfg, model, net, torch.device("cpu"), torch.float16, 10, [1] * 5)
    images, labels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    nothing = (images[:0], labels[:0])
    real_loss, real_all_reduce, reduced = engine.loss_fn, dist.all_reduce, []
    dist.all_reduce = lambda *args, **kwargs: reduced.append(1) or real_all_reduce(*args, **kwargs)

    def step(batch, step_now=True, overflow_on=None, stop=None):
        engine.loss_fn = lambda *a, **k: real_loss(*a, **k) * (float("inf") if rank == overflow_on else 1)
        try:
            return engine.train_step(state, *batch, cfg, step_now=step_now, stop=stop)
        finally:
            engine.loss_fn = real_loss

    # a first step, after which DDP's forward pass talks to the other processes (it rebuilds its buckets)
    assert step((images, labels)) is not None and state.step == 1
    scale = state.scaler.get_scale()
    # every file of process 1's batch failed: both take the step, with process 0's gradients
    assert (step(nothing if rank == 1 else (images, labels)) is None) == (rank == 1)
    assert state.step == 2 and state.skipped_steps == 0 and state.scaler.get_scale() == scale
    # every file of both processes' batches: nothing is stepped but the schedule
    weights = [p.detach().clone() for p in model.parameters()]
    assert step(nothing) is None and state.step == 3
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters()))
    # process 0's loss overflows: both skip the step and halve their loss scales alike
    assert step((images, labels), overflow_on=0) is None  # counted as a step, the schedule moved on
    assert state.step == 4 and state.skipped_steps == 1 and state.scaler.get_scale() == scale / 2
    # --accum-steps 2: process 0's loss overflows in the window's first batch; both skip its step, told once
    reduced.clear()
    assert (step((images, labels), step_now=False, overflow_on=0) is None) == (rank == 0)
    assert state.step == 4 and state.skipped_steps == 1 and not reduced  # not yet: no all-reduce but the step's
    assert step((images, labels)) is None  # a skipped step's batches leave the figures, on both
    assert state.step == 5 and state.skipped_steps == 2 and state.scaler.get_scale() == scale / 4 and reduced == [1]
    # a window with no image on process 1 but some on process 0: both take its step
    assert (step(nothing if rank == 1 else (images, labels), step_now=False) is None) == (rank == 1)
    assert (step(nothing if rank == 1 else (images, labels)) is None) == (rank == 1)
    assert state.step == 6 and state.skipped_steps == 0
    # a stop requested on process 1 within a window: taken at its step, by both
    stop = StopSignal()
    stop.restore()  # the flag, not the handlers
    stop.requested = "SIGTERM" if rank == 1 else None
    assert step((images, labels), step_now=False, stop=stop) is not None and state.stopping == (rank == 1)
    assert step((images, labels), stop=stop) is not None
    assert state.step == 7 and state.stopping and stop.requested == ("SIGTERM" if rank == 1 else
                                                                    "a stop on another process")
    dist.all_reduce = real_all_reduce
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    spread = torch.stack([weights.sum(), -weights.sum()])
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    assert spread.sum().item() == 0  # the same weights on both
    # DDP's reducer gone and both processes here before the group goes: one that ended first once left the other
    # aborting in gloo's teardown ("terminate called without an active exception", once in a run of the suite)
    net = state = None
    dist.barrier()
    dist.destroy_process_group()


def random_streams_process(rank: int, init_file: str) -> None:
    """One of two DDP processes (gloo): each epoch's randomness its own, and a checkpoint midway giving each its own
    back."""
    import datetime
    import types
    import torch.distributed as dist
    from utils import epoch_seed, seed_everything
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))

    def everywhere(draw):
        draws = [None, None]
        dist.all_gather_object(draws, draw)
        return draws
    seed_everything(epoch_seed(0, 1, rank))  # train.py's at an epoch's start
    first, second = everywhere(torch.rand(4))
    assert not torch.equal(first, second)  # mixup's, erasing's and drop-path's draws differ between processes
    rngs = engine.rng_states_everywhere(types.SimpleNamespace(batches_done=3))  # saved midway
    assert len(rngs) == 2
    expected = torch.rand(4)
    torch.rand(10)
    engine.restore_rng({"rng": rngs[0], "rngs": rngs}, 5, 3)
    assert torch.equal(torch.rand(4), expected)  # each goes on with its own stream, exactly
    engine.restore_rng({"rng": rngs[0]}, 5, 3)  # a checkpoint with the first process's state alone
    first, second = everywhere(torch.rand(4))
    assert torch.equal(first, expected) if rank == 0 else True
    assert not torch.equal(first, second)
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_processes_draw_their_own_randomness_and_resume_it(tmp_path):
    """Every process was seeded alike and resumed with the first process's random state: an 8-GPU run drew one
    mixup lambda, one erasing box and one drop-path mask a step for all eight, where the official code seeds each
    rank apart."""
    torch.multiprocessing.start_processes(random_streams_process, args=(str(tmp_path / "init"),), nprocs=2,
                                          start_method="spawn")


def test_ddp_processes_skip_and_stop_together(tmp_path):
    """Under DDP a process that skipped a batch or stopped alone would leave the others waiting for
    its gradients (or, worse, averaging them with another step's): they decide together."""
    torch.multiprocessing.start_processes(agreement_process, args=(str(tmp_path / "init"),), nprocs=2,
                                          start_method="spawn")


def test_a_non_finite_loss_is_skipped_under_fp16_and_stops_the_run_otherwise(monkeypatch):
    """fp16 loss scaling skips a step whose loss overflowed, halving the scale, and stops after 25 in a
    row; without scaling the first non-finite loss stops the run. Either way the weights stay finite."""
    import train
    poisoned = {"on": True}
    real_loss = engine.loss_fn
    monkeypatch.setattr(engine, "loss_fn", lambda *a, **k: real_loss(*a, **k) * (float("inf") if poisoned["on"] else 1))
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    images, labels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), torch.float16, 10, [1] * 5)
    before, scale = [p.detach().clone() for p in net.parameters()], state.scaler.get_scale()
    assert engine.train_step(state, images, labels, cfg) is None
    # counted, the schedule moved on, as a step GradScaler skips for its gradients is
    assert state.skipped_steps == 1 and state.step == 1 and state.scaler.get_scale() == scale / 2
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    poisoned["on"] = False
    assert engine.train_step(state, images, labels, cfg) is not None and state.step == 2 and state.skipped_steps == 0
    poisoned["on"] = True
    with pytest.raises(engine.TrainingDiverged, match="26 steps in a row"):
        for _ in range(26):
            engine.train_step(state, images, labels, cfg)
    full = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    with pytest.raises(engine.TrainingDiverged, match="the loss became inf"):
        engine.train_step(full, images, labels, cfg)
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_a_schedule_stepped_before_the_optimizer_by_design_gives_no_pytorch_warning(recwarn):
    """A run's first optimizer step may take none: a window whose files all failed to load, or a resume of a run
    stopped before its first step. The schedule still moves on, which PyTorch warns of as a schedule stepped
    first (the order of calls before PyTorch 1.1): a warning a user could do nothing about."""
    import train
    import utils
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    images, labels = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    before = [p.detach().clone() for p in net.parameters()]
    assert engine.train_step(state, images[:0], labels[:0], cfg) is None  # every file of the batch failed
    assert state.step == 1 and all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    fresh = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    fresh.resume_from({"optimizer": fresh.optimizer.state_dict(), "scheduler": fresh.scheduler.state_dict(),
                       "scaler": {}, "epoch": 0, "step": 0, "batches_done": 0, "best_acc": 0.0,
                       "rng": utils.rng_state()})
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


def test_a_stop_at_an_epochs_last_step_ends_the_epoch_and_an_empty_epoch_has_no_figures():
    """A stop taken at the epoch's last step is no interruption: the epoch is validated and saved as a whole,
    so that a resume does not start an epoch with no batches left. An epoch with none (a run killed while
    validating, after a step's save at its last batch) reports the figures its checkpoint carried, or none
    (not zeros) from a checkpoint without them."""
    import train
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 2, [1] * 5)
    batches = [(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]), ["a", "b"], [])] * 2
    state.stopping = True  # agreed before the epoch's first step: taken there, one batch short of its end
    assert engine.train_one_epoch(state, batches, cfg, show_progress=False)["interrupted"]
    assert state.batches_done == 1
    result = engine.train_one_epoch(state, batches[1:], cfg, show_progress=False)  # the rest: its last step
    assert not result["interrupted"] and state.batches_done == 2 and result["images"] == 2
    assert result["loss"] is not None and state.epoch_sums[3].item() == 4  # both calls' batches: the whole epoch
    empty = engine.train_one_epoch(state, [], cfg, show_progress=False)  # the same epoch: its sums, no speed
    assert empty["images"] == 0 and empty["loss"] == result["loss"] and not empty["interrupted"]
    state.epoch_sums = None  # as a checkpoint from before 2026-11-29 leaves it
    empty = engine.train_one_epoch(state, [], cfg, show_progress=False)
    assert empty["images"] == 0 and empty["loss"] is None and empty["acc1"] is None and not empty["interrupted"]


def test_a_run_resumed_in_another_layout_keeps_its_schedule(monkeypatch):
    """Two processes took 5 steps an epoch; resumed in one, an epoch is 10 steps: from an epoch's end the
    schedule goes on from the epochs done (half of 4 here), not from the step count; midway it is refused."""
    import train
    from utils import UserError
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # the checkpoints below, as torchrun's two processes write them
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "4", "--lr", "1e-3"])
    cpu = torch.device("cpu")
    two = engine.build_train_state(cfg, micro(), micro(), cpu, None, 5, [1] * 5)
    two.layout = {"processes": 2, "images": 20, "batch_size": 2, "batches_per_epoch": 5, "steps_per_epoch": 5}
    for _ in range(10):  # two epochs
        two.optimizer.step()
        two.scheduler.step()
    two.epoch, two.step = 2, 10

    def resumed(layout, checkpoint):
        state = engine.build_train_state(cfg, micro(), micro(), cpu, None, layout["steps_per_epoch"], [1] * 5)
        state.layout = layout
        return state, state.resume_from(checkpoint, folder="runs/my run")
    alone = {"processes": 1, "images": 20, "batch_size": 2, "batches_per_epoch": 10, "steps_per_epoch": 10}
    one, relaid = resumed(alone, two.checkpoint())
    assert relaid and one.scheduler.last_epoch == 20 and one.step == 10  # the steps taken still count on from 10
    assert optim.current_lr(one.optimizer) == pytest.approx(optim.current_lr(two.optimizer))  # both halfway
    assert optim.current_lr(one.optimizer) == pytest.approx(1e-3 * optim.lr_factor(20, 40, 0, 1e-4, 1e-3))
    same, relaid = resumed(dict(two.layout), two.checkpoint())
    assert not relaid and same.step == 10
    two.batches_done = 3
    with pytest.raises(UserError, match=r"stopped in epoch 3, after 3 batches of 20 training images in batches of "
                                        r"2 in 2 process\(es\), 5 optimizer steps an epoch; here it is 20 .* in 1 process.*torchrun --nproc_per_node 2 train.py "
                                        r"--resume 'runs/my run' --stop-after-epochs 1"):
        resumed(alone, two.checkpoint())
    with pytest.raises(UserError, match=r"torchrun --nnodes 2 --node_rank N --master_addr HOST --nproc_per_node 1 "
                                        r"train.py --resume 'runs/my run' --stop-after-epochs 1"):
        resumed(alone, {**two.checkpoint(), "processes_per_node": 1})  # on two machines: finished on two
    with pytest.raises(UserError, match=r"torchrun --nproc_per_node 2 train.py"):  # a checkpoint that does not say
        resumed(alone, {key: value for key, value in two.checkpoint().items() if key != "processes_per_node"})
    with pytest.raises(UserError, match=r"here it is 20 training images in batches of 3 in 2"):  # the batches alone
        resumed(dict(two.layout, batch_size=3), two.checkpoint())
    # only the images changed midway (removed, or no longer decoding, since the stop): no layout finishes the epoch
    # as it ran, so it ends at the stop, to be validated, and the schedule goes on from its end
    cut, said = resumed(dict(two.layout, images=18), two.checkpoint())
    assert said.startswith("the training images changed since the stop (20 then, 18 now: files removed, added or no "
                           "longer decoding), so epoch 3 cannot go on as it ran: it ends at the stop, after 3 of its 5")
    assert cut.epoch == 2 and cut.batches_done == 5 and cut.scheduler.last_epoch == 15 and cut.step == 10
    with pytest.raises(UserError, match=r"here it is 20 .* 3 optimizer steps an epoch.*Finish the epoch as it ran"):
        resumed(dict(two.layout, steps_per_epoch=3), two.checkpoint())  # the same images, other steps (--accum-steps)
    # the same layout, another order midway (--seed, --balance sampler): refused; at an epoch's end it is the next's
    two.order = {"seed": 0, "sampler": "shuffled"}

    def reordered(order, checkpoint):
        state = engine.build_train_state(cfg, micro(), micro(), cpu, None, 5, [1] * 5)
        state.layout, state.order = dict(two.layout), order
        return state.resume_from(checkpoint, folder="runs/a")
    for order, said in (({"seed": 1, "sampler": "shuffled"}, r"--seed 1, the images shuffled \(--balance off or "
                                                             r"loss\),"),
                        ({"seed": 0, "sampler": "balanced"}, "--seed 0, --balance sampler,")):
        with pytest.raises(UserError, match=rf"after 3 batches of an epoch drawn with --seed 0, the images shuffled "
                                            rf"\(--balance off or loss\); here it is {said} "
                                            r"whose epoch draws other images.*torchrun --nproc_per_node 2 train.py "
                                            r"--resume runs/a --stop-after-epochs 1, without the change"):
            reordered(order, two.checkpoint())
    assert reordered(dict(two.order), two.checkpoint()) == ""
    assert reordered({"seed": 1, "sampler": "shuffled"}, {**two.checkpoint(), "order": None}) == ""  # before orders
    # stopped at the epoch's last step, saved before validating: an epoch's end in any layout (and any order)
    two.batches_done = 5
    assert reordered({"seed": 1, "sampler": "balanced"}, two.checkpoint()) == ""
    one, relaid = resumed(alone, two.checkpoint())
    assert relaid and one.epoch == 2 and one.batches_done == 10 and one.scheduler.last_epoch == 30 and one.step == 10
    # and in its own layout again, the schedule goes on from where it was, not from the step count
    again, relaid = resumed(alone, one.checkpoint())
    assert not relaid and again.scheduler.last_epoch == 30 and again.step == 10


def test_a_batch_left_with_one_image_is_skipped_under_mixup_not_taken_for_a_diverged_loss():
    """Mixup pairs images: a batch that failed images left with one cannot be mixed, and its empty remainder's
    loss would be NaN, stopping the run as if it had diverged. It is skipped as a batch without images is."""
    import train
    cfg = train.build_parser().parse_args(["--mixup", "0.2", "--warmup-epochs", "0", "--epochs", "1"])
    net = micro()
    state = engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5)
    one = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    weights = [p.detach().clone() for p in net.parameters()]
    assert engine.train_step(state, one, torch.tensor([3]), cfg) is None and state.step == 1  # the schedule's
    assert all(torch.equal(a, b) for a, b in zip(weights, net.parameters()))
    two = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert engine.train_step(state, two, torch.tensor([3, 1]), cfg) is not None and state.step == 2


def test_an_lr_typed_on_resuming_counts_and_a_regrouping_is_refused():
    """--lr and --weight-decay typed with --resume take over from the next step (the optimizer's moments go
    on); --freeze-layers typed then sorts the parameters into other groups, which the optimizer's saved
    state cannot follow: one line that says so, not a ValueError from deep in torch."""
    import train
    from utils import UserError
    parse = train.build_parser().parse_args
    cpu = torch.device("cpu")
    before = engine.build_train_state(parse(["--warmup-epochs", "0", "--epochs", "2"]), micro(), micro(), cpu,
                                      None, 10, [1] * 5)
    for _ in range(5):
        before.optimizer.step()
        before.scheduler.step()
    before.step = 5
    cfg = parse(["--warmup-epochs", "0", "--epochs", "2", "--lr", "1e-3", "--weight-decay", "0.5"])
    after = engine.build_train_state(cfg, micro(), micro(), cpu, None, 10, [1] * 5)
    after.resume_from(before.checkpoint())
    assert after.step == 5 and after.scheduler.last_epoch == 5
    assert optim.current_lr(after.optimizer) == pytest.approx(1e-3 * optim.lr_factor(5, 20, 0, 1e-4, 1e-3))
    assert {group["weight_decay"] for group in after.optimizer.param_groups} == {0.0, 0.5}
    # --weight-decay 0 too (its groups as any other value's), and from 0 back to a decay
    zero = engine.build_train_state(parse(["--warmup-epochs", "0", "--epochs", "2", "--weight-decay", "0"]), micro(),
                                    micro(), cpu, None, 10, [1] * 5)
    zero.resume_from(before.checkpoint())
    assert {group["weight_decay"] for group in zero.optimizer.param_groups} == {0.0}
    after.resume_from(zero.checkpoint())
    assert {group["weight_decay"] for group in after.optimizer.param_groups} == {0.0, 0.5}
    # a run at 0 from before then, its parameters in one group: said so, not blamed on flags not typed
    old = zero.checkpoint()
    groups = old["optimizer"]["param_groups"]
    old["optimizer"]["param_groups"] = [{**groups[0], "params": [i for group in groups for i in group["params"]]}]
    with pytest.raises(UserError, match=r"a run at --weight-decay 0 before 2026-11-30 grouped its parameters in fewer"):
        after.resume_from(old)
    import weights
    net = micro()
    weights.freeze_all_but_the_head(net)  # --freeze-layers: two groups still, of the head's tensors only
    frozen = engine.build_train_state(cfg, net, net, cpu, None, 10, [1] * 5)
    with pytest.raises(UserError, match=r"optimizer holds \d+ tensors in 2 groups and this run's 2 in 2: --freeze"):
        frozen.resume_from(before.checkpoint())
    deeper = engine.build_train_state(parse(["--layer-decay", "0.9"]), micro(), micro(), cpu, None, 10, [1] * 5)
    with pytest.raises(UserError, match=r"in 2 groups and this run's \d+ in \d+: --freeze-layers or --layer-decay"):
        deeper.resume_from(before.checkpoint())


def test_the_per_step_loss_is_the_mean_of_the_steps_since_the_last_point():
    """loss/train_step every 10th step: the mean of the ten steps' losses, not the tenth step's alone; a step with
    no loss (no image in its last batch) is left out of the mean."""
    import run_log

    class Writer:
        def __init__(self):
            self.points = []

        def add_scalar(self, tag, value, step):
            self.points.append((tag, value, step))
    writer = Writer()
    losses = run_log.StepLoss(writer)
    for step in range(1, 21):
        losses.add(step, None if step == 15 else torch.tensor(float(step)))
    losses.write()
    assert writer.points == [("loss/train_step", pytest.approx(5.5), 10),
                             ("loss/train_step", pytest.approx((sum(range(11, 21)) - 15) / 9), 20)]


def test_the_per_step_loss_goes_on_across_a_resume():
    """A checkpoint saved between two points carries the steps since the last one (StepLoss.partial): the resumed
    run's first point is the mean of its ten steps, as the uninterrupted run's, not of the steps since the resume."""
    import run_log

    class Writer:
        def __init__(self):
            self.points = []

        def add_scalar(self, tag, value, step):
            self.points.append((tag, value, step))
    whole, before, after = Writer(), Writer(), Writer()
    losses = run_log.StepLoss(whole)
    for step in range(1, 21):
        losses.add(step, torch.tensor(float(step)))
    losses.write()
    stopped = run_log.StepLoss(before)
    for step in range(1, 18):
        stopped.add(step, torch.tensor(float(step)))
    stopped.write()
    resumed = run_log.StepLoss(after, stopped.partial())  # saved at step 17: steps 11 to 17
    for step in range(18, 21):
        resumed.add(step, torch.tensor(float(step)))
    resumed.write()
    assert before.points + after.points == whole.points
    assert run_log.StepLoss(after, [0.0, 0]).partial() == [0.0, 0]  # a save on a point: nothing carried


def test_the_training_loop_waits_for_the_device_only_at_the_epochs_end(monkeypatch):
    """tests/test_cuda.py's test of the waits, on a CPU (host_waits: a CPU spelled cpu:0 stands for the device):
    train_one_epoch with EMA and mixup, and evaluate, wait for the device per run, not per batch. Found on the
    H200 first: batch_flags' flags[0] = 1.0, a blocking copy of a host number, twice a batch (before 0c46edc)."""
    import train
    from host_waits import DEVICE, Reads, Waits
    torch.manual_seed(0)
    net = micro()
    cfg = train.build_parser().parse_args(["--ema", "--mixup", "0.8", "--cutmix", "1.0", "--warmup-epochs", "0",
                                           "--epochs", "1"])
    state = engine.build_train_state(cfg, net, net, DEVICE, None, 30, [1] * 5)
    waits = Waits([*net.state_dict().values(), *state.ema.module.state_dict().values()])  # and their aliases

    class HostCopy(engine.HostCopy):  # on CUDA its copy is queued into pinned memory; read() waits for an event
        def __init__(self, tensor):
            waits.allowed += 1
            try:
                super().__init__(tensor)
            finally:
                waits.allowed -= 1
    monkeypatch.setattr(engine, "HostCopy", HostCopy)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=generator),
                torch.randint(0, 5, (8,), generator=generator), [f"{i}.jpg" for i in range(8)], [])
               for _ in range(4)]
    settings = (build_normalize(), 5, DEVICE, None)

    def found(run, *args):
        waits.found.clear()
        with Reads(waits), waits:
            run(*args)
        return waits.found.copy()

    found(engine.train_one_epoch, state, batches[:1], cfg)  # the optimizer's state made once
    few, more = (found(engine.train_one_epoch, state, batches[:n], cfg) for n in (1, 4))
    assert few == more and few, f"waits in every batch: {more - few}"
    few, more = (found(evaluation.evaluate, net, batches[:n], *settings) for n in (1, 3))
    assert few == more and few, f"waits in every batch: {more - few}"


def train_state(argv: list) -> tuple:
    """(train.py's training state of the micro variant on a CPU, its settings), for `argv`."""
    import train
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "2", *argv])
    net = micro()
    return engine.build_train_state(cfg, net, net, torch.device("cpu"), None, 10, [1] * 5), cfg


def test_the_ema_goes_on_across_a_checkpoint_and_resume():
    """A resumed --ema run goes on averaging from the EMA it saved, not again from the weights."""
    before, _ = train_state(["--ema"])
    with torch.no_grad():
        before.ema.module.head.weight.fill_(0.25)
    before.optimizer.step()
    before.scheduler.step()
    before.step = 1
    after, _ = train_state(["--ema"])
    after.resume_from(before.checkpoint())
    assert torch.equal(after.ema.module.head.weight, torch.full_like(after.ema.module.head.weight, 0.25))


def test_the_first_steps_ema_update_is_the_ramps_first():
    """The ramp (1 + n) / (10 + n) starts at update n = 0, after the first optimizer step: a decay of 0.1."""
    state, cfg = train_state(["--ema", "--ema-decay", "0.9998", "--lr", "0.1", "--min-lr", "0"])
    start = state.ema.module.head.weight.clone()
    for p in state.model.parameters():
        p.grad = torch.ones_like(p)
    engine.optimizer_step(state, cfg)
    assert state.step == 1
    moved = state.model.head.weight.detach()
    assert (moved - start).abs().min() > 0.05  # Adam's first step moves each weight by about --lr
    torch.testing.assert_close(state.ema.module.head.weight, 0.1 * start + 0.9 * moved, rtol=0, atol=1e-4)
