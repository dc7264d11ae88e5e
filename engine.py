"""The training engine behind train.py: weight EMA, the training state and its checkpoint, one step and
one epoch of training. The optimizer and its schedule are optim.py's; which images each step gets, in
what order, is loaders.py's; compiling and CUDA graphs, which wrap the model a step runs, are
compiling.py's; evaluation and its metrics are evaluation.py's.

The recipe is the official Swin one (Liu et al. 2021, Sec. 4.1 and the repo's configs): AdamW
without weight decay on norms, biases and position-bias parameters; linear warmup then cosine,
stepped per optimizer step; label smoothing, mixup/cutmix, gradient clipping at 5.0,
stochastic depth; plus layer-wise lr decay for fine-tuning and an EMA of the weights.
"""
import copy
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data import build_mixup, build_normalize, to_device
from optim import build_optimizer, build_scheduler, current_lr
from precision import autocast, forget_held_casts
from checkpoints import all_finite
from processes import any_process, distributed, from_all_processes, process_rank, reduce_sums, resume_command
from utils import UserError, epoch_seed, rng_state, seed_everything, set_rng_state


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


class ModelEma:
    """Exponential moving average of the weights: ema = decay * ema + (1 - decay) * weights.

    The decay at update n is min(decay, (1 + n) / (10 + n)), so that on a small dataset (a few
    hundred steps in all) the average leaves its starting point. The ramp sets it until update
    ramp_updates(decay), 44,990 at 0.9998: a shorter run averages about its last n / 9 steps, whatever
    --ema-decay says. Only floating-point tensors are averaged; integer buffers are left as they are.
    """

    @staticmethod
    def ramp_updates(decay: float) -> int:
        """The update from which `decay`, not the ramp (1 + n) / (10 + n), is the EMA's decay."""
        return max(0, math.ceil((10 * decay - 1) / (1 - decay) - 1e-6))  # (1 + n) / (10 + n) >= decay

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        if not hasattr(self, "_pairs"):  # the same tensors every step: pair them once
            ema, current = self.module.state_dict(), model.state_dict()
            floats = [k for k, v in ema.items() if v.is_floating_point()]
            self._pairs = ([ema[k] for k in floats], [current[k] for k in floats])
        torch._foreach_lerp_(*self._pairs, 1 - decay)


# --- Training ---

@dataclass
class TrainState:
    """Everything a training step uses or changes; checkpoints save the changing part."""
    model: nn.Module  # the bare model: what checkpoints hold
    net: nn.Module  # what runs the forward pass: the model, its DistributedDataParallel wrapper, compiled or not
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    normalize: object  # the loader's uint8 batch, on the device -> the model's input (data.Normalize)
    amp: torch.dtype = None  # autocast dtype, None for full precision
    ema: ModelEma = None
    mixup: object = None
    class_weights: torch.Tensor = None  # --balance loss: one weight per class, on the device
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    batches_done: int = 0  # batches of the current epoch done (a mid-epoch checkpoint)
    best_acc: float = -1.0
    skipped_steps: int = 0  # fp16 steps skipped for a non-finite loss, in a row
    lr: float = None  # the lr of the latest optimizer step (the head's): what an epoch's line and TensorBoard show
    window_batches: int = 0  # batches with images here whose gradients the next optimizer step takes (--accum-steps)
    window_non_finite: bool = False  # a loss of the next step's window was not finite here: the step is skipped
    # the epoch's loss and top-1 and top-5 hits summed and its images, on the device, this process's: a mid-epoch
    # checkpoint carries them (all processes' in one), so that a resumed epoch's figures are the whole epoch's
    epoch_sums: torch.Tensor = None
    stopping: bool = False  # a stop that every process has agreed on: taken at the next optimizer step
    # gradients zeroed, not freed, after each step (--cuda-graphs): a CUDA graph's backward hands them over in
    # buffers it overwrites on its next replay, which the parameters would otherwise take as their .grad, and a
    # second backward before the step (--accum-steps) would overwrite the first's (pytorch/pytorch#181723)
    keep_grads: bool = False
    compiled: bool = False  # net is compiled (--compile, or where it pays: compiling.compile_pays)
    # how an epoch divides here: {"processes", "images", "batch_size", "batches_per_epoch" (a process's),
    # "steps_per_epoch"}; a checkpoint carries it, so that a run resumed in another layout keeps its schedule
    layout: dict = None
    # what orders an epoch's images: {"seed", "sampler": "shuffled" or "balanced" (--balance sampler)}; a checkpoint
    # carries it, so that an epoch resumed midway with another is refused (the rest would draw other images)
    order: dict = None

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=not self.keep_grads)

    def checkpoint(self, weights: dict = None, epoch_sums: list = None, rngs: list = None) -> dict:
        """What changes, as a run's checkpoint holds it beside its meta and config: plain data (it loads
        with weights_only=True), from the bare model, or `weights` (best.pth's), never NaN ones; midway
        through an epoch, its sums so far over every process (epoch_sums_everywhere)."""
        weights = weights if weights is not None else self.model.state_dict()
        if not all_finite(weights):
            raise TrainingDiverged("the weights are no longer finite numbers; not saving them")
        return {"model": weights, "ema": self.ema.module.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": self.epoch, "step": self.step,
                "batches_done": self.batches_done, "best_acc": self.best_acc, "rng": rng_state(), "rngs": rngs,
                "layout": self.layout, "order": self.order, "epoch_sums": epoch_sums, "lr": self.lr,
                "processes_per_node": int(os.environ.get("LOCAL_WORLD_SIZE", 1))}

    def resume_from(self, checkpoint: dict, metric: str = "acc1", folder="runs/NAME") -> str:
        """Go on where `checkpoint` stopped (its model weights are loaded with the model), under this run's
        settings: a --lr, --weight-decay or --min-lr typed on resuming counts from the next step. Its best so
        far counts if it is of `metric`, the figure that now chooses best.pth (--balance may have changed it).
        Returns "" in the layout it was saved in; where the epoch divides otherwise here (other processes, batch
        size or images) the clause that says so: at an epoch's end the schedule goes on from the epochs done.
        Midway, with only the images changed (removed, added or no longer decoding since the stop), the epoch
        as it ran cannot be finished in any layout: it ends at the stop, and is validated; with other processes
        or batches it is a UserError whose command, with the run's `folder`, finishes it as it ran."""
        settings = [{key: group[key] for key in ("initial_lr", "weight_decay", "lr_scale")}
                    for group in self.optimizer.param_groups]
        saved = [len(group["params"]) for group in checkpoint["optimizer"]["param_groups"]]
        sizes = [len(group["params"]) for group in self.optimizer.param_groups]
        # the same tensors in half the groups, none decayed: by depth alone, as runs at 0 were grouped
        if len(sizes) == 2 * len(saved) and sum(saved) == sum(sizes) and \
                all(group["weight_decay"] == 0 for group in checkpoint["optimizer"]["param_groups"]):
            raise UserError(f"the checkpoint's optimizer holds its tensors in {len(saved)} groups and this run's in "
                            f"{len(sizes)}: a run at --weight-decay 0 before 2026-11-30 grouped its parameters in "
                            "fewer, and its optimizer state cannot go on here. Resume it with the train.py that wrote "
                            "it, or start a new run from its weights (--weights FILE --name NEW)")
        if saved != sizes:
            raise UserError(f"the checkpoint's optimizer holds {sum(saved)} tensors in {len(saved)} groups and "
                            f"this run's {sum(sizes)} in {len(sizes)}: --freeze-layers or --layer-decay, typed on "
                            "resuming, sorts the parameters otherwise, and the optimizer's state cannot go on. "
                            "Resume without it, or start a new run from the checkpoint's weights (--weights FILE "
                            "--name NEW). (Runs without --layer-decay before 2026-11-29 grouped by depth as well, and "
                            "runs at --weight-decay 0 before 2026-11-30 in fewer groups: resume those with the "
                            "train.py that wrote them.)")
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group, own in zip(self.optimizer.param_groups, settings):
            group.update(own)  # the moments are the checkpoint's; the lr and weight decay this run's
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scheduler.base_lrs = [group["initial_lr"] for group in self.optimizer.param_groups]
        if checkpoint["scaler"]:  # empty from a run without fp16 scaling: a resumed fp16 run starts its own scale
            self.scaler.load_state_dict(checkpoint["scaler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.module.load_state_dict(checkpoint["ema"])
        for key in ("epoch", "step", "batches_done", "best_acc"):
            setattr(self, key, checkpoint[key])
        self.lr = checkpoint.get("lr")
        if checkpoint.get("epoch_sums") and self.batches_done:  # the first process carries them, the others add theirs
            first = not distributed() or dist.get_rank() == 0
            self.epoch_sums = torch.tensor(checkpoint["epoch_sums"] if first else [0.0] * 4, dtype=torch.float64,
                                           device=self.device)
        if checkpoint.get("best_metric", "acc1") != metric:
            self.best_acc = -1.0
        restore_rng(checkpoint, self.step, self.batches_done)
        was = checkpoint.get("layout")  # None: a checkpoint from before layouts
        relaid = was is not None and self.layout is not None and was != self.layout
        # every batch of the epoch trained, not yet validated (a stop at its last step): the epoch's end here too
        trained = relaid and self.batches_done == was["batches_per_epoch"]
        images_only = relaid and was["images"] != self.layout["images"] and \
            all(was[key] == self.layout[key] for key in ("processes", "batch_size"))
        # midway, only the images changed: the epoch ends at the stop (what is said of it, "" where it does not)
        cut = (f"the training images changed since the stop ({was['images']} then, {self.layout['images']} now: "
               f"files removed, added or no longer decoding), so epoch {self.epoch + 1} cannot go on as it ran: "
               f"it ends at the stop, after {self.batches_done} of its {was['batches_per_epoch']} batches, and is "
               "validated; the schedule goes on from the epochs done") \
            if images_only and 0 < self.batches_done < was["batches_per_epoch"] else ""
        if trained or cut:
            self.batches_done = self.layout["batches_per_epoch"]
        # the command that finishes the epoch as it ran: on as many machines (checkpoints before 2026-11-30 did not
        # say how many: one)
        processes = (was or {}).get("processes", 1)
        per_node = checkpoint.get("processes_per_node", processes)
        finish = f"{resume_command(folder, processes, per_node)} --stop-after-epochs 1"
        if relaid and self.batches_done and not (trained or cut):
            def divided(layout: dict) -> str:  # the optimizer steps too: --accum-steps changes them alone
                return (f"{layout['images']} training images in batches of {layout['batch_size']} in "
                        f"{layout['processes']} process(es), {layout['steps_per_epoch']} optimizer steps an epoch")
            raise UserError(
                f"the checkpoint stopped in epoch {self.epoch + 1}, after {self.batches_done} batches of "
                f"{divided(was)}; here it is {divided(self.layout)}, so its place in the epoch does not carry over. "
                f"Finish the epoch as it ran ({finish}, with its "
                "--batch-size, --accum-steps and images), then go on as you like: from an epoch's end the schedule "
                "follows")
        ordered = checkpoint.get("order")  # None: a checkpoint from before 2026-11-30
        per_epoch = (was or self.layout or {}).get("batches_per_epoch", self.batches_done + 1)
        midway = 0 < self.batches_done < per_epoch and not (trained or cut)
        if midway and None not in (ordered, self.order) and ordered != self.order:
            def drawn(order: dict) -> str:
                return f"--seed {order['seed']}, " + ("--balance sampler" if order["sampler"] == "balanced" else
                                                       "the images shuffled (--balance off or loss)")
            raise UserError(
                f"the checkpoint stopped in epoch {self.epoch + 1}, after {self.batches_done} batches of an epoch "
                f"drawn with {drawn(ordered)}; here it is {drawn(self.order)}, whose epoch draws other images: the "
                f"rest of this one would train on some twice and others never. Finish the epoch as it ran "
                f"({finish}, without the change), then go on as you like")
        # the schedule's place: the steps it took, or in another layout the epochs done; the step count (TensorBoard's
        # steps, --save-every-steps) goes on as it was, so that no point logged before is overwritten
        place = (self.epoch + bool(trained or cut)) * self.layout["steps_per_epoch"] if relaid else \
            self.scheduler.last_epoch
        self.scheduler.last_epoch = place - 1
        step_schedule(self.scheduler)  # the lrs of this step, by this run's schedule
        if not relaid:
            return ""
        return cut or (f"{self.layout['steps_per_epoch']} steps an epoch here, {was['steps_per_epoch']} before: the "
                       "schedule goes on from the epochs done")


METRIC_NAMES = {"acc1": "top-1", "balanced_acc": "balanced accuracy"}


def best_metric(cfg) -> str:
    """The validation figure that chooses best.pth: top-1, or under --balance the balanced accuracy
    (mean per-class recall), which is what balancing the classes is for."""
    return "balanced_acc" if cfg.balance != "off" else "acc1"


def build_train_state(cfg, model, net, device, amp, steps_per_epoch: int, class_counts: list) -> TrainState:
    """What a training step uses: the optimizer and schedule of the recipe, loss scaling for fp16,
    normalisation (and erasing) of the uint8 batch on the device, EMA, mixup, class weights."""
    optimizer = build_optimizer(model, cfg)
    state = TrainState(
        model=model, net=net, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, steps_per_epoch),
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16), device=device, amp=amp,
        normalize=build_normalize(train=True, recipe=cfg.recipe),
        ema=ModelEma(model, cfg.ema_decay) if cfg.ema else None,
        mixup=build_mixup(cfg.mixup, cfg.cutmix, cfg.label_smoothing, len(class_counts), cfg.batch_size),
        class_weights=inverse_frequency_weights(class_counts).to(device) if cfg.balance == "loss" else None,
        keep_grads=cfg.cuda_graphs)
    if state.keep_grads:  # gradient tensors of the parameters' own from the start (after EMA's copy, which needs none)
        for param in model.parameters():
            if param.requires_grad and param.grad is None:
                param.grad = torch.zeros_like(param)
    return state


def train_one_epoch(state: TrainState, batches, cfg, stop=None, on_step=None, show_progress: bool = True) -> dict:
    """One epoch: a loader's batches, or this epoch's (the rest of it, after a resume) from the endless
    iterator of train.py's loader (Take). Returns loss, top-1 and top-5 (on the unmixed labels, over the whole
    epoch: a resumed one's carried sums too), the images trained and seconds taken here (its speed; "whole":
    whether here is the whole epoch, not the part after a resume), the seconds spent waiting for the loader, the
    images loaded (trained on or not), the paths of images that failed to load (in the workers or, with --decode
    device, on the device; in every process), and whether a stop signal ended it early."""
    state.net.train()
    # loss, top-1 and top-5 hits and images, summed on the device (from a resumed epoch's checkpoint, if any); the
    # progress bar shows them from a copy (HostCopy) once it has arrived, on a GPU a batch late: read at once they
    # would make the CPU wait for the GPU to finish the step
    if state.batches_done == 0 or state.epoch_sums is None:
        state.epoch_sums = torch.zeros(4, dtype=torch.float64, device=state.device)
    sums, seen, loaded, failed, shown = state.epoch_sums, 0, 0, [], None
    start, interrupted, waits = time.perf_counter(), False, {"seconds": 0.0}
    whole, last_batch = state.batches_done == 0, state.batches_done + len(batches)
    # on a terminal only, as predict.py's (disable=None): piped (| tee log, > file) its frames filled the log
    bar = tqdm(batches, desc=f"epoch {state.epoch + 1}/{cfg.epochs}", disable=None if show_progress else True,
               dynamic_ncols=True, leave=False)
    for images, labels, paths, failed_paths in timed_batches(bar, waits):
        state.batches_done += 1
        step_now = state.batches_done % cfg.accum_steps == 0 or state.batches_done == last_batch
        # the epoch's last step may gather fewer batches: each then weighs more, as timm's train.py has it
        window = cfg.accum_steps if state.batches_done <= last_batch - last_batch % cfg.accum_steps \
            else last_batch % cfg.accum_steps
        images, labels, failed_here = to_device(images, labels, paths, state.device)
        failed += failed_paths + failed_here
        loaded += len(labels)  # trained on or not (a non-finite loss's batch is not)
        steps_before = state.step
        result = train_step(state, images, labels, cfg, step_now, stop, window)
        if result is not None:  # None: a batch skipped (no image loaded, or a non-finite loss under fp16)
            logits, loss, labels = result
            with torch.no_grad():
                hits = logits.topk(min(5, logits.shape[-1]), dim=-1).indices == labels[:, None]
                sums[:3] += torch.stack([loss.detach() * len(labels), hits[:, 0].sum(), hits.any(-1).sum()]).double()
                sums[3] += len(labels)
            seen += len(labels)
            if show_progress:
                shown = shown or HostCopy(sums)
                if shown.arrived():  # on a CPU at once; on a GPU once the step it follows has run
                    loss_sum, correct, _, images_then = shown.read()
                    bar.set_postfix(loss=f"{loss_sum / images_then:.4f}", acc=f"{correct / images_then:.3f}",
                                    lr=f"{state.lr if state.lr is not None else current_lr(state.optimizer):.2e}",
                                    img_s=f"{seen / (time.perf_counter() - start):.1f}", refresh=False)
                    shown = None
        if state.step > steps_before and on_step is not None:  # a step taken, if by a batch without images too
            on_step(state, loss.detach() if result is not None else None)
        if step_now and state.stopping and state.batches_done < last_batch:  # after the last: validated first
            interrupted = True
            break
    bar.close()
    totals = reduce_sums(torch.cat([sums, torch.tensor([seen, loaded], dtype=torch.float64, device=state.device)]
                                   )).tolist()
    failed = [path for part in from_all_processes(failed) for path in part]  # said by the first process
    # None, not 0, for an epoch with nothing trained (one resumed after its last batch from a checkpoint without sums)
    loss, acc1, acc5 = (total / totals[3] if totals[3] else None for total in totals[:3])
    return {"loss": loss, "acc1": acc1, "acc5": acc5, "images": int(totals[4]), "loaded": int(totals[5]),
            "seconds": time.perf_counter() - start, "whole": whole,
            "data_seconds": waits["seconds"], "failed": failed, "interrupted": interrupted}


def epoch_sums_everywhere(state: TrainState) -> list | None:
    """The epoch's sums so far over every process, for a checkpoint saved midway (None at an epoch's end). Under
    DDP a collective: train.py's mid-epoch saves come at the same step on every process."""
    if not state.batches_done or state.epoch_sums is None:
        return None
    return reduce_sums(state.epoch_sums.clone()).tolist()


def rng_states_everywhere(state: TrainState) -> list | None:
    """Every process's random state, a list by rank, for a checkpoint saved midway under torchrun (None alone or at
    an epoch's end, where the next epoch seeds each process: utils.epoch_seed): each goes on with its own stream,
    where the first process's was given to all and their mixup, erasing and drop-path draws became the same. A
    collective, at the same step on every process, as epoch_sums_everywhere."""
    if not state.batches_done or not dist.is_initialized():
        return None
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def restore_rng(checkpoint: dict, step: int, batches_done: int) -> None:
    """This process's random state as the checkpoint saved it: its own under torchrun (rng_states_everywhere); where
    it holds the first process's alone (a checkpoint from before, another layout), that one for the first and a
    stream of their own for the others."""
    rank = process_rank()
    per_rank = checkpoint.get("rngs") or []
    set_rng_state(per_rank[rank] if rank < len(per_rank) else checkpoint["rng"])
    if rank and rank >= len(per_rank):
        seed_everything(epoch_seed(step, batches_done, rank))


def timed_batches(loader, waits: dict):
    """The loader's batches, adding the time spent waiting for each to waits["seconds"]: the share of
    an epoch that the training process waited for data (TensorBoard's data/wait_share). On a GPU the
    backward pass queued before the wait may still be running through part of it, so this bounds the
    GPU's idle time from above; images/s against the bare step (bench/bench_train.py) is the measure."""
    batches = iter(loader)
    while True:
        begin = time.perf_counter()
        batch = next(batches, None)
        waits["seconds"] += time.perf_counter() - begin
        if batch is None:
            return
        yield batch


def train_step(state: TrainState, images: torch.Tensor, labels: torch.Tensor, cfg, step_now: bool = True,
               stop=None, window: int = None):
    """One batch already on the device: normalise (uint8 from the loader), mix, forward, loss,
    backward, and with step_now the optimizer step. `window` is the number of batches whose gradients
    this optimizer step averages (default --accum-steps). Returns (logits, loss, labels), labels as many
    as the logits' rows (mixup may drop one image), or None for a batch without images or with a non-finite
    loss (and the window's later batches after one: its step is skipped; see batch_flags)."""
    empty = len(labels) < (2 if state.mixup is not None else 1)  # mixup pairs images: one alone cannot be mixed
    if empty:
        # every file of the batch failed to load (or all but one, which mixup cannot pair): two blank images stand
        # in, so that this process's forward pass, in which DDP may talk to the other processes, keeps in step
        # with theirs; their loss is zeroed
        size = state.model.img_size
        images = torch.zeros(2, 3, size, size, dtype=torch.uint8, device=state.device)
        labels = torch.zeros(2, dtype=torch.long, device=state.device)
    images = state.normalize(images)
    targets = labels
    if state.mixup is not None:
        images, targets = state.mixup(images, labels)
        labels = labels[:len(images)]
    smoothing = 0.0 if state.mixup is not None else cfg.label_smoothing  # mixup smooths its own targets
    # DDP: average gradients across processes only on the batch that completes a step
    no_sync = state.net.no_sync() if (not step_now and hasattr(state.net, "no_sync")) else nullcontext()
    with no_sync:
        with autocast(state.device, state.amp):
            logits = state.net(images)
        loss = loss_fn(logits.float(), targets, smoothing, class_weights=state.class_weights)
        flags = batch_flags(loss, stop, state.window_batches > 0 or not empty, state.window_non_finite, step_now)
        on_host = HostCopy(flags)  # queued before the backward pass, so reading it waits for the forward pass only
        state.scaler.scale((loss * 0.0 if empty else loss) / (window or cfg.accum_steps)).backward()
    images_in_window, non_finite = read_flags(state, on_host, stop)
    state.window_batches += not empty
    state.window_non_finite = non_finite
    if not step_now:  # the window's later batches and its step decide; a non-finite loss leaves the figures
        return None if empty or non_finite else (logits, loss, labels)
    if non_finite:  # NaN must not reach the weights: the step's gradients go, on every process
        skip_non_finite(state, loss)
    elif images_in_window:  # on any process: all take the step, the others' gradients averaged with zeros here
        optimizer_step(state, cfg)
    else:  # a window without an image changes no weight, and the schedule goes on: it ends with the epochs
        advance_schedule(state)
    state.window_batches, state.window_non_finite = 0, False
    return None if empty or non_finite else (logits, loss, labels)


def batch_flags(loss: torch.Tensor, stop=None, images: bool = True, non_finite_before: bool = False,
                agree: bool = True) -> torch.Tensor:
    """Three flags on the loss's device (NCCL reduces GPU tensors): the step's window of batches had an image
    (`images`: not all of its files failed), its loss was not finite (this batch's, or one before in the window),
    a stop was requested. With `agree`, on the batch that completes an optimizer step, each is 1 if on any
    process: under DDP the processes decide together, in one all-reduce a step, whether to take it and whether to
    stop, since one that skipped it or stopped alone would leave the others waiting in backward's gradient
    all-reduce for it (the batches before, under no_sync, do not talk to the others).

    They are read (read_flags) once the backward pass is queued, from a copy queued before it (HostCopy):
    read at once, the CPU would wait for the forward pass and the GPU then for the CPU to launch the
    backward pass's first kernels, the small ones of the last stages, faster run than launched (an H200
    eager at batch 128 ran 43 ms of kernels in a 50 ms step with the read there); read by a plain copy
    after the backward pass, the CPU would wait for the whole of it, and the GPU then for the optimizer
    step and the next batch to be launched. So the GPU has the backward pass to run while the CPU waits
    and then queues the rest of the step and the start of the next."""
    # each flag made on the device and stacked: `flags[0] = 1.0` into a CUDA tensor copies the number from the host
    # and waits for everything queued (the previous step) before it, twice a batch where HostCopy waits once
    non_finite = torch.isfinite(loss).logical_not().float().clamp_min(float(non_finite_before))
    stopping = float(stop is not None and stop.requested is not None)
    flags = torch.stack([non_finite.new_full((), float(images)), non_finite, non_finite.new_full((), stopping)])
    if agree and distributed():
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


class HostCopy:
    """A device tensor's values on their way to the host: the copy is queued now, behind the work that makes
    them and ahead of what is queued later, so read() waits for that work only, where .tolist() would wait
    for everything queued before it. The values are those of the tensor when the copy was made, whatever
    changes it in place after (the progress bar's sums); elsewhere than on CUDA the copy is made at once."""

    def __init__(self, tensor: torch.Tensor):
        cuda = tensor.device.type == "cuda"
        # on CUDA into pinned memory, which the copy fills without the CPU waiting
        self.values = tensor.detach().to("cpu", non_blocking=cuda, copy=True)
        self.ready = torch.cuda.Event() if cuda else None
        if cuda:
            self.ready.record()

    def arrived(self) -> bool:
        """Whether read() would return at once."""
        return self.ready is None or self.ready.query()

    def read(self):
        """The values as .tolist() gives them: a list, or a number for a 0-d tensor."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.values.tolist()


def read_flags(state: TrainState, flags: HostCopy, stop=None) -> tuple[bool, bool]:
    """(images, non_finite) from batch_flags' flags, the batch's one wait for the device; a stop requested on
    any process is recorded in state.stopping."""
    images, non_finite, stopping = (value > 0 for value in flags.read())
    if stop is not None:
        stop.agreed(stopping)
    state.stopping = state.stopping or stopping
    return images, non_finite


def skip_non_finite(state: TrainState, loss: torch.Tensor) -> None:
    """Under fp16 scaling a non-finite loss skips the step and lowers the scale; otherwise, or
    when it keeps happening, the run stops (before any NaN reaches the weights)."""
    if not state.scaler.is_enabled():
        became = loss.item() if not torch.isfinite(loss) else "non-finite in the step's window or on another process"
        raise TrainingDiverged(f"the loss became {became} at epoch {state.epoch + 1}, step {state.step}")
    state.skipped_steps += 1
    if state.skipped_steps > 25:
        raise TrainingDiverged(f"{state.skipped_steps} steps in a row had a non-finite loss "
                               f"(epoch {state.epoch + 1}, step {state.step})")
    state.zero_grad()
    lower = state.scaler.get_scale() / 2
    state.scaler.scale(loss)  # the scaler makes its scale tensor at its first scale(): this may be the first step
    state.scaler.update(lower)
    # counted and the schedule moved on, as a step GradScaler skips for its gradients is: each left an epoch a step
    # short, its cosine ending above --min-lr
    advance_schedule(state)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor, smoothing: float,
            class_weights: torch.Tensor = None) -> torch.Tensor:
    """Cross-entropy on class indices (with label smoothing) or on mixed soft targets.

    With class_weights, each sample's loss is scaled by the expected class weight under its
    target distribution, sum_c target_c * weight_c: its class's weight for a plain label, lam * w_a
    + (1 - lam) * w_b for a mixed pair, moved a share `smoothing` toward the mean weight by label
    smoothing. Index targets are smoothed into that same distribution first, so a mixup batch at
    lam = 1 gives exactly the unmixed loss. The batch loss is the plain mean of the weighted
    per-sample losses, not divided by the batch's total weight as F.cross_entropy(weight=) does:
    every image counts by its class's weight whatever else shares its batch, and with weights
    averaging 1 over the training set (inverse_frequency_weights) the loss keeps its usual scale.
    """
    if class_weights is None:
        if targets.dtype.is_floating_point:
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)
    if not targets.dtype.is_floating_point:
        num_classes = logits.shape[-1]
        targets = F.one_hot(targets, num_classes).to(logits.dtype) * (1 - smoothing) + smoothing / num_classes
    per_sample = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1)
    return (per_sample * (targets @ class_weights.to(targets.dtype))).mean()


def inverse_frequency_weights(counts: list[int]) -> torch.Tensor:
    """Class weights total / (classes * count): inverse to each class's share of the training images,
    and 1 on average over those images, so a balanced dataset gets all ones; 0 for a class with none."""
    counts = torch.tensor(counts, dtype=torch.float32)
    present = counts > 0  # a class with no training image (its photos gone since a resume): no weight, not total/C
    return torch.where(present, counts.sum() / (present.sum() * counts.clamp_min(1)), 0.0)


def optimizer_step(state: TrainState, cfg) -> None:
    if cfg.clip_grad:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip_grad)
    state.scaler.step(state.optimizer)
    forget_held_casts()  # fused AdamW moves no version counter: casts held from a validation went stale
    state.scaler.update()
    state.zero_grad()
    advance_schedule(state)
    state.skipped_steps = 0
    if state.ema is not None:
        state.ema.update(state.model, state.step - 1)


def advance_schedule(state: TrainState) -> None:
    """The step counted and the schedule moved on, the lr the step took kept (state.lr): after an optimizer step,
    and after a window without images, which takes none."""
    state.lr = current_lr(state.optimizer)
    step_schedule(state.scheduler)
    state.step += 1


def step_schedule(scheduler) -> None:
    """The schedule's next step, without PyTorch's warning when a schedule's first step comes before any of
    the optimizer's (it takes that for the calls of PyTorch before 1.1 in the old order). Here it is by design:
    a first window without images takes no optimizer step, and a run stopped before its first step resumes with
    a schedule that has taken none either. (fp16's skipped steps do not warn: GradScaler still calls a fused
    AdamW's step, which skips the update itself.)"""
    if scheduler._step_count != 1:  # PyTorch checks the order at a schedule's first step only: not every step's cost
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
        scheduler.step()


def stop_agreed(stop, device) -> bool:
    """Whether any process was asked to stop, between epochs (within one: batch_flags): all stop
    together, or the others would wait forever in the next epoch's first all-reduce."""
    return stop.agreed(any_process(stop.requested is not None, device))  # a signal from now on: the next check
