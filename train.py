"""Train a Swin Transformer classifier on a folder of photos, one subfolder per class.

    python train.py --data-path flower_photos --num-classes 5        # the tutorial's command
    python train.py --config configs/finetune_swin_tiny.yaml --data-path data --download-weights
    python train.py --model swinv2_tiny_patch4_window8_256 --weights weights/swinv2_tiny_patch4_window8_256.pth
    python train.py --resume runs/<name>                             # after a stop, Ctrl-C or a crash
    python train.py --eval-only --resume runs/<name>/best.pth --split test
    torchrun --nproc_per_node 4 train.py --data-path data            # 4 GPUs on one machine
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 train.py --data-path data
    tensorboard --logdir runs

--data-path is a folder of class folders (split 80/20 in memory, seed 0) or a split root with
train/ and val/ (and test/) as split_data.py writes it. Each run writes runs/<name>/: TensorBoard
events, last.pth (every epoch), best.pth (best validation top-1; balanced accuracy with --balance),
class_indices.json, config.yaml, metrics.csv, and at the end report.html (what the model got wrong:
open it in a browser) with misclassified.csv.
"""
import argparse
import itertools
import math
import os
import sys
from pathlib import Path

# stopping.py and utils.py import the standard library's modules only: set before torch's import, which takes
# seconds, and loads OpenMP, which reads its settings then
from stopping import StopSignal, ctrl_c_ends_quietly, held_signals, outlive_readers
from utils import threads_sleep_while_waiting
if __name__ == "__main__":
    ctrl_c_ends_quietly()
    threads_sleep_while_waiting()
import torch

import compiling
import download
import engine
import eval_only
import evaluation
import run_log
import runs
import run_settings
from config import (COUNT, FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_INT, folder_name, folder_path, plain,
                    ranged, weights_path, yes_no)
from data import build_normalize, build_transform, seen_box
from export import is_program, load_program
from loaders import Take, build_eval_loader, build_train_loader, training_batch_size
from variants import resolve_variant
from precision import amp_dtype
from checkpoints import CheckpointWriter
from files import remove_all_left_behind
from processes import (decided_by_first_process, distributed, from_first_process, init_distributed, launched_first,
                       process_rank)
from utils import ArgumentParser, UserError, epoch_seed, run_cli, seed_everything, tune_for
from runs import resumed_file
from weights import describe_for_checkpoint, model_for_run, run_preprocessing
from workers import default_workers, stop_workers


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of overrides (keys as below, with underscores)")
    g = p.add_argument_group("data")
    g.add_argument("--data-path", type=folder_path, default=Path("flower_photos"), help="default: flower_photos")
    g.add_argument("--val-ratio", type=FRACTION, default=0.2,
                   help="for a folder of class folders, split in memory (default: 0.2, as the tutorial's train.py)")
    g.add_argument("--num-classes", "--num_classes", type=POSITIVE_INT,  # the tutorial's spelling too
                   help="checked against the class folders (default: their count)")
    g.add_argument("--img-size", type=POSITIVE_INT, help="default: the variant's (224 for swin_tiny)")
    g.add_argument("--recipe", default="tutorial", choices=["tutorial", "official"],
                   help="augmentation: tutorial (crop + flip) or official (RandAugment, erasing) (default: tutorial)")
    g.add_argument("--balance", default="off", choices=["off", "sampler", "loss"],
                   help="imbalanced classes: 'sampler' draws every class equally often in each epoch, 'loss' "
                        "weights the loss by inverse class frequency (default: off)")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="per process (default: 8)")
    g.add_argument("--decode", default="workers", choices=["workers", "device"],
                   help="where training JPEGs are decoded: in the loader's worker processes, or batched on the "
                        "training device (nvJPEG on a GPU: for when the CPU cores cannot keep up; the workers then "
                        "only read files and choose crops; tutorial recipe) (default: workers)")
    g.add_argument("--workers", type=COUNT,
                   help="data loading processes per training process (default: with a GPU, the CPU cores per "
                        "GPU process, less one for the process itself; on a CPU, the core count, at most 8)")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="swin_tiny_patch4_window7_224",
                   help="any variant of model.py (default: swin_tiny_patch4_window7_224)")
    g.add_argument("--weights", type=weights_path,
                   help="pretrained weights (a file, or a run folder: its best.pth); 'none' (or '', as in the "
                        "tutorial) trains from scratch "
                        "(default: weights/<model>.pth if present)")
    g.add_argument("--download-weights", action=argparse.BooleanOptionalAction, default=False,
                   help="fetch the official weights into weights/<model>.pth first if missing (default: off)")
    g.add_argument("--freeze-layers", type=yes_no, nargs="?", const=True, default=False, metavar="BOOL",
                   help="train the classifier only; also as the tutorial types it, --freeze-layers True|False "
                        "(default: off; --no-freeze-layers to turn off a config's)")
    g.add_argument("--no-freeze-layers", dest="freeze_layers", action="store_false", help=argparse.SUPPRESS)
    g.add_argument("--drop-path-rate", type=FRACTION, help="stochastic depth (default: the variant's)")
    g.add_argument("--window-size", type=POSITIVE_INT, help="default: the variant's")
    g.add_argument("--grad-checkpointing", action=argparse.BooleanOptionalAction, default=False,
                   help="recompute activations in the backward pass: far less memory (default: off)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction,
                   help="torch.compile the model for training: a minute or so of compiling first, then faster "
                        "steps (default: on a GPU for runs of 350,000 training images or more, where that pays, "
                        "eager if it fails)")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=False,
                   help="replay each training step's forward and backward passes as CUDA graphs, so that the GPU "
                        "does not wait for Python to launch its kernels; with --compile, torch.compile's "
                        "reduce-overhead mode (default: off)")
    g = p.add_argument_group("optimization")
    g.add_argument("--epochs", type=POSITIVE_INT, default=10, help="default: 10")
    g.add_argument("--lr", type=POSITIVE, default=1e-4, help="AdamW learning rate (default: 1e-4)")
    g.add_argument("--weight-decay", type=NON_NEGATIVE, default=0.05, help="default: 0.05")
    g.add_argument("--warmup-epochs", type=NON_NEGATIVE, default=1.0, help="linear warmup, then cosine (default: 1)")
    g.add_argument("--warmup-lr", type=NON_NEGATIVE, default=1e-7, help="lr at the start of warmup (default: 1e-7)")
    g.add_argument("--min-lr", type=NON_NEGATIVE, default=1e-6, help="lr at the end of the cosine (default: 1e-6)")
    g.add_argument("--layer-decay", type=ranged(float, 0, 1, low_open=True), default=1.0,
                   help="layer-wise lr decay, 1 = off (default: 1)")
    g.add_argument("--label-smoothing", type=FRACTION, default=0.1, help="default: 0.1")
    g.add_argument("--mixup", type=NON_NEGATIVE, default=0.0, help="mixup alpha, 0 = off (default: 0)")
    g.add_argument("--cutmix", type=NON_NEGATIVE, default=0.0, help="cutmix alpha, 0 = off (default: 0)")
    g.add_argument("--clip-grad", type=NON_NEGATIVE, default=5.0, help="max gradient norm, 0 = off (default: 5.0)")
    g.add_argument("--accum-steps", type=POSITIVE_INT, default=1, help="batches per optimizer step (default: 1)")
    g.add_argument("--ema", action=argparse.BooleanOptionalAction, default=False,
                   help="keep and evaluate an EMA of the weights (default: off)")
    g.add_argument("--ema-decay", type=FRACTION, default=0.9998,
                   help="the EMA's decay once its ramp, (1 + n) / (10 + n) at update n (step n + 1), reaches it: "
                        "from step 44,991 at 0.9998; a shorter run averages about its last n / 9 steps "
                        "(default: 0.9998)")
    g.add_argument("--seed", type=COUNT, default=0, help="default: 0")
    g = p.add_argument_group("run")
    g.add_argument("--device", type=str, default="auto",
                   help="auto, cpu, cuda, cuda:N, a GPU index N or mps (default: auto)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="mixed precision; auto = bf16 where the GPU has it, else fp16 with loss scaling; on a "
                        "CPU bf16 where it computes in it, else off; off on a GPU runs TF32 matmuls (default: auto)")
    g.add_argument("--output", type=folder_path, default=Path("runs"), help="default: runs")
    g.add_argument("--name", type=folder_name, help="run folder name, in --output (default: <model>-<date>-<time>)")
    g.add_argument("--resume", type=Path, help="a checkpoint, or a run folder (uses its last.pth; with --eval-only, "
                   "its best.pth)")
    g.add_argument("--save-every-steps", type=COUNT, default=0, help="also save last.pth every N steps (default: off)")
    g.add_argument("--stop-after-epochs", type=COUNT, default=0,
                   help="stop after N epochs in this process, to resume later, e.g. within a job time limit "
                        "(default: off)")
    g.add_argument("--eval-only", action="store_true", help="evaluate a checkpoint (--resume or --weights), or an "
                   ".onnx or .pt2 that predict.py --export wrote (--weights), and stop")
    g.add_argument("--split", default="val", choices=["val", "test"], help="for --eval-only (default: val)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars (on a terminal: none in a file or pipe)")
    return p


def main(argv=None) -> None:
    outlive_readers()  # piped output (| tee) whose reader has gone: a stop still finishes its step and saves
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    default_val_ratio = parser.get_default("val_ratio")  # the parser's: parse_config makes a --config's its default
    cfg, checkpoint = run_settings.resolve(parser, argv)
    if checkpoint is not None and not cfg.eval_only and checkpoint["epoch"] >= cfg.epochs:
        # not an error: a job that resumes until done ends here (said once, under torchrun too)
        if launched_first():
            if (resumed_file(cfg).parent / "config.yaml").is_file():  # a run folder: a kill as its report was
                remove_all_left_behind(resumed_file(cfg).parent)  # written left their temporary files
            run_log.say_finished(cfg, checkpoint, resumed_file(cfg).parent)
        return
    if cfg.eval_only and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # before the processes meet; said once
        raise UserError("--eval-only runs in one process: start it with python, not torchrun")
    rank, world_size, local_rank, device = init_distributed(cfg.device)
    main_process = rank == 0
    if cfg.cuda_graphs and device.type != "cuda":
        raise UserError(f"--cuda-graphs needs a CUDA GPU, and this run is on {device}: run without it "
                        "(--no-cuda-graphs where a config or a resumed run sets it)")
    amp = amp_dtype(cfg.amp, device, training=True)  # --eval-only too: its figures as its run's validation gave them
    tune_for(device, tf32=amp is None)
    workers_asked = cfg.workers  # config.yaml keeps None, this machine's count decided again where it is reused
    if cfg.workers is None:
        cfg.workers = default_workers(device, world_size)
    # what predict.py --export wrote is evaluated as it ships, a model of its own with its own names
    evaluate_program = cfg.eval_only and checkpoint is None and is_program(cfg.weights)  # --resume comes first
    program = load_program(cfg.weights).to(device) if evaluate_program else None
    if program is not None:
        run_settings.val_ratio_of_program(cfg, program, parser, argv)

    splits, recorded = run_settings.load_data(cfg, checkpoint, program, default_val_ratio, main_process)
    classes = splits.classes

    # the variant resolved only for a download: an --eval-only's --model, said not used, may be no variant's name
    if cfg.download_weights and checkpoint is None:
        download.fetch_weights_asked(cfg.weights, cfg.model)
    if cfg.eval_only:
        return eval_only.evaluate_checkpoint(cfg, checkpoint, program, splits, device, amp, recorded)

    run_dir = decided_by_first_process(lambda: runs.run_folder(cfg, checkpoint, resolve_variant(cfg.model)))
    seed_everything(cfg.seed)  # the same initial weights on every rank and every run
    model = model_for_run(cfg, len(classes), checkpoint, main_process, classes)
    img_size = model.img_size
    model.to(device)
    # neither --compile nor --no-compile (None, saved so, decided again on resuming, for the epochs left):
    # where it pays, and eagerly if it fails
    epochs_left = cfg.epochs - (checkpoint["epoch"] if checkpoint is not None else 0)
    images_per_process = epochs_left * len(splits.train) // world_size
    compiled = cfg.compile if cfg.compile is not None else compiling.compile_pays(device, images_per_process)
    train_loader, epoch_batches = build_train_loader(cfg, splits.train, img_size, rank, world_size)
    net = compiling.training_net(model, cfg, compiled, training_batch_size(cfg, epoch_batches), device, amp,
                                 local_rank)

    # cropped and resized as it validates, recorded for predict.py in the checkpoints
    preprocessing = run_preprocessing(cfg, checkpoint, img_size)
    val_loader = build_eval_loader(splits.val, build_transform(img_size, train=False, **preprocessing), cfg, rank,
                                   world_size)
    steps_per_epoch = math.ceil(len(train_loader) / cfg.accum_steps)
    state = engine.build_train_state(cfg, model, net, device, amp, steps_per_epoch, splits.counts("train"))
    state.compiled = compiled
    state.layout = {"processes": world_size, "images": len(splits.train), "batch_size": cfg.batch_size,
                    "batches_per_epoch": len(train_loader), "steps_per_epoch": steps_per_epoch}
    state.order = {"seed": cfg.seed, "sampler": "balanced" if cfg.balance == "sampler" else "shuffled"}
    if checkpoint is not None:
        metric = engine.best_metric(cfg)
        relaid = state.resume_from(checkpoint, metric, run_dir)
        if (saved_metric := checkpoint.get("best_metric", "acc1")) != metric:  # --balance changed: best.pth's figure
            figure = from_first_process(run_log.best_pth_figure(run_dir, metric, saved_metric) if main_process
                                        else None)
            state.best_acc = -1.0 if figure is None else figure
        if main_process:
            run_log.say_resumed(state, checkpoint.get("best_metric", "acc1"), cfg, relaid)
    epoch_batches.start(state.epoch, state.batches_done)
    with held_signals():  # a signal while workers fork would reach one before it ignores it, or be lost
        batches = iter(train_loader)  # one iterator for the whole run: its workers never wait for an epoch to start
        iter(val_loader)  # its workers (persistent) started here too, not at the first validation

    writer = step_writer = run_lock = None
    if main_process:
        run_dir, run_lock = runs.make_run_folder(run_dir, named=checkpoint is not None or bool(cfg.name),
                                                 resumed=checkpoint is not None)
        runs.write_settings(run_dir, argparse.Namespace(**{**vars(cfg), "workers": workers_asked}), classes,
                            splits if recorded is None else None, resumed=checkpoint is not None)
        writer, step_writer = run_log.open_writers(run_dir, state, resumed=checkpoint is not None)
        run_log.say_started(run_dir, cfg, splits, model, state, world_size, compiled, images_per_process,
                            resumed=checkpoint is not None)
    if checkpoint is not None and state.best_acc >= 0 and from_first_process(main_process and
                                                                            runs.best_pth_lost(run_dir)):
        state.best_acc = -1.0  # the next epoch's weights are the best.pth it lost
    run_dir = from_first_process(run_dir)  # the folder it made (a -2 where another run took the name), in messages

    # data_root: the data's absolute path, for a resume from another folder than the run started in
    meta = {**describe_for_checkpoint(model, classes, preprocessing),
            "data_root": str(Path(cfg.data_path).resolve())}

    checkpoints = CheckpointWriter()  # written while training goes on
    step_loss = run_log.StepLoss(step_writer, checkpoint.get("step_loss") if checkpoint is not None else None)

    ended = None  # "saved" once the last epoch's last.pth is queued, "reported" once the report is written

    def save(name: str, weights=None, copy_of: str = None) -> None:
        nonlocal ended
        epoch_sums = engine.epoch_sums_everywhere(state)  # midway: from every process, before the first saves
        rngs = engine.rng_states_everywhere(state)  # and each one's random state
        if name == "last.pth" and state.epoch >= cfg.epochs and state.batches_done == 0:
            ended = "saved"  # a failure from now on loses no training (the writes are waited for however it ends)
        if not main_process:
            return
        if name == "last.pth":  # the points up to its step on disk: a resume from it drops those after only
            step_loss.write()
            step_writer.flush()
            writer.flush()
        if copy_of:
            checkpoints.copy(run_dir / copy_of, run_dir / name)
        else:
            checkpoints.save({**meta, **state.checkpoint(weights, epoch_sums, rngs),
                              "best_metric": engine.best_metric(cfg),
                              "config": plain(vars(cfg)), "step_loss": step_loss.partial()}, run_dir / name)

    def on_step(state: engine.TrainState, loss: torch.Tensor | None) -> None:
        step_loss.add(state.step, loss)
        checkpoints.check()  # a checkpoint that could not be written stops the run at once
        if cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
            save("last.pth")

    trained = False
    with StopSignal() as stop:  # its handlers given back however the run ends (StopSignal.__exit__)
        try:
            try:
                ending = run_epochs(state, cfg, batches, len(train_loader), val_loader, splits.classes, stop, on_step,
                                    save, writer, run_dir, main_process)
                step_loss.write()
                checkpoints.wait()  # the last epoch's checkpoints on disk before the report says the run is done
                trained = stop.trained = ending is not None  # a signal from now on ends nothing but the report
                if main_process and ending is not None:
                    run_log.finish_run(writer, run_dir, cfg, state, *ending, splits,
                                       seen_box(img_size, preprocessing))
                    ended = "reported"
            finally:
                try:
                    checkpoints.close()  # the last ones written before anything is said or the process ends
                finally:
                    if writer is not None:
                        run_log.close_writers(writer, step_writer)
            if distributed():  # together, once rank 0 has written its files: a signal then (torchrun's) changes nothing
                torch.distributed.barrier()
                torch.distributed.destroy_process_group()
        except Exception as err:
            explained = run_log.failure_explained(err, cfg, run_dir, img_size, stop, distributed(), ended)
            if explained is not None:
                raise explained from None
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: at once, without the step's end or a save
            if main_process:
                run_log.say_stopped_at_once(run_dir, trained)
            sys.exit(130)
        finally:
            stop.settle()  # its checkpoints on disk: a Ctrl-C as it ends changes nothing, not "stopped at once" unsaid
            stop_workers(batches, val_loader)  # now, not as the process exits: a Ctrl-C then printed PyTorch's cleanup
            if run_lock is not None:  # the folder free for the next start (in a process, the kernel lets go at exit)
                run_lock.close()
        if stop.requested and state.epoch < cfg.epochs:  # one at the last epoch's end found the run finished
            run_log.say_stopped(state, stop.requested, run_dir, main_process)
            sys.exit(stop.exit_status())


def run_epochs(state, cfg, batches, epoch_length: int, val_loader, classes, stop, on_step, save, writer,
               run_dir: Path, main_process: bool) -> tuple | None:
    """The epochs left: train on the next epoch_length batches of the loader's endless iterator (fewer
    in an epoch resumed midway), evaluate, log, save; stop on a signal or --stop-after-epochs. Returns, for
    the report, the last validation and the best's (its result, which checkpoint) when the run has trained its
    last epoch; None when it stopped before."""
    val, first_epoch, best = None, state.epoch, None
    metric = engine.best_metric(cfg)
    normalize = build_normalize()  # evaluation's: no erasing; its constants made once per device
    data_waits = run_log.DataWaits(cfg, state.device)
    if writer is not None and state.epoch == 0 and state.batches_done == 0:  # a new run: its first batch, as trained
        first = next(batches)
        run_log.log_training_images(writer, first, state.normalize, classes)
        batches = itertools.chain([first], batches)
    for epoch in range(state.epoch, cfg.epochs):
        if state.batches_done == 0:  # each epoch's randomness from (seed, epoch, rank): resuming is exact
            seed_everything(epoch_seed(cfg.seed, epoch, process_rank()))
        this_epoch = Take(batches, epoch_length - state.batches_done)
        train = engine.train_one_epoch(state, this_epoch, cfg, stop, on_step, cfg.progress and main_process)
        if train["interrupted"]:
            save("last.pth")
            return
        run_log.check_some_loaded(train, "training", cfg.data_path)
        stop.last_epoch = epoch + 1 == cfg.epochs  # a stop from now on finds the run done: said so
        if engine.stop_agreed(stop, state.device):  # at the epoch's last step: validated next, its training saved
            save("last.pth")  # first, since validating may outlast a kill (torchrun's, after its --shutdown-timeout)
        val = evaluation.evaluate(state.model, val_loader, normalize, len(classes), state.device, state.amp,
                                  cfg.progress and main_process)
        # saved as trained, not validated (its sums kept): the resume validates it, its metrics.csv row not lost
        run_log.check_some_loaded(val, "validation", cfg.data_path, save, train)
        run_log.check_val_finite(val, epoch, state.amp, main_process)  # NaN logits score chance: best.pth, once
        state.epoch, state.batches_done = epoch + 1, 0
        ema_val = None
        if state.ema is not None:
            ema_val = evaluation.evaluate(state.ema.module, val_loader, normalize, len(classes), state.device,
                                          state.amp, False)
        ema_best = ema_val is not None and ema_val[metric] > val[metric]
        acc, chosen = (ema_val[metric], (ema_val, ", EMA weights")) if ema_best else (val[metric], (val, ""))
        improved = acc > state.best_acc and math.isfinite(chosen[0]["loss"])  # fp16's overflow: check_val_finite
        state.best_acc = max(state.best_acc, acc)
        if main_process:
            run_log.log_epoch(writer, run_dir, state, train, val, ema_val, classes, improved)
            data_waits.check(train, state.epoch, epoch == first_epoch)
            run_log.log_where_it_looks(writer, state.model, val_loader.dataset, normalize, state.device, state.amp,
                                       classes, state.epoch)
        if improved:  # best.pth first: a kill before last.pth is written leaves the epoch to train again
            save("best.pth", state.ema.module.state_dict() if ema_best else None)
            best = (chosen[0], f"{run_dir / 'best.pth'} (epoch {state.epoch}{chosen[1]})")
        # the model's best weights are last.pth's checkpoint too: one snapshot and write, and a second name
        save("last.pth", copy_of="best.pth" if improved and not ema_best else None)
        if engine.stop_agreed(stop, state.device) and state.epoch < cfg.epochs:  # at the last: the run ends as done
            return
        if cfg.stop_after_epochs and epoch + 1 - first_epoch >= cfg.stop_after_epochs and state.epoch < cfg.epochs:
            stop.requested = f"--stop-after-epochs {cfg.stop_after_epochs}"
            return
    if val is not None and best is None:  # best.pth from before a resume: the report is of it all the same
        best = evaluation.evaluate_saved(state.model, run_dir / "best.pth", val_loader, normalize, len(classes),
                                         state.device, state.amp, main_process) \
            or (val, f"{run_dir / 'last.pth'} (epoch {state.epoch}; no best.pth beside it)")
    return None if val is None else (val, best)


if __name__ == "__main__":
    run_cli(main)
