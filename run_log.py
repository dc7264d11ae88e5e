"""What a training run tells its user as it goes (its folder: runs.py): the line per epoch, TensorBoard's scalars
and pictures, metrics.csv, notices about its settings and warnings about its data (files left out, imbalanced
classes); and how it ends: its report, or what stopped it and the command that goes on."""
import csv
import errno
import math
import os
import random
import shlex
import shutil
import sys
import threading
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from PIL import Image

import engine
import evaluation
import optim
import plots
import report
import run_settings  # as a module: it imports this one
from workers import dead_loader_worker, usable_cores
from data import IMAGENET_MEAN, IMAGENET_STD, to_device
from images import UNREADABLE, open_image, why_it_failed
from splits import class_imbalance
from model import maps_of
from variants import NO_PRETRAINED_WEIGHTS, VARIANTS
from precision import amp_name, autocast
from files import put_in_place
from checkpoints import load_checkpoint
from config import plain
from processes import ANOTHER_ENDED, distributed, lost_another_process, resume_command, tell_torchrun, train_script
from utils import UserError, counted, out_of_memory, printable
from runs import SPLIT_FILE, checkpoint_of_run


FILES_NAMED = 10  # files a warning names one by one; the others are counted


class StepLoss:
    """TensorBoard's loss/train_step, every 10th optimizer step: the mean of the losses of the steps since the last
    point (each step's loss: with --accum-steps its last batch's), summed on the device, copied to the host at the
    10th (engine.HostCopy) and written at the next step or the run's end, the copy done by then; .item() at once
    would make the CPU wait for the GPU to finish the step."""

    def __init__(self, writer, carried: list | None = None):
        """carried: the steps since the last point that a checkpoint saved ([sum, count], see partial), so that
        a resumed run's first point is the mean of its 10 steps, as an uninterrupted run's."""
        self.writer, self.pending, self.sum, self.count = writer, None, None, 0
        if carried and carried[1]:
            self.sum, self.count = torch.tensor(float(carried[0])), int(carried[1])

    def partial(self) -> list:
        """[sum, count] of the losses since the last point, for a checkpoint (plain data)."""
        return [0.0 if self.sum is None else float(self.sum), self.count]

    def add(self, step: int, loss: torch.Tensor | None) -> None:
        """None: a step whose window's last batch had no image (its loss is not the step's)."""
        self.write()
        if self.writer is None:
            return
        if loss is not None:
            self.sum = loss.float() if self.sum is None else self.sum + loss.float()
            self.count += 1
        if step % 10 == 0 and self.count:
            self.pending = step, engine.HostCopy(self.sum / self.count)
            self.sum, self.count = None, 0

    def write(self) -> None:
        if self.pending is not None:
            step, loss = self.pending
            self.writer.add_scalar("loss/train_step", loss.read(), step)
            self.pending = None


def log_epoch(writer, run_dir: Path, state, train: dict, val: dict, ema_val, classes: list, improved: bool) -> None:
    # the lr the epoch's last step took (the next step's where none was taken since a resume)
    epoch, lr = state.epoch, state.lr if state.lr is not None else optim.current_lr(state.optimizer)
    trained = train["images"] > 0  # none in an epoch resumed after its last batch: its speed is left empty
    throughput = train["images"] / max(train["seconds"], 1e-9) if trained else None
    wait_share = train["data_seconds"] / max(train["seconds"], 1e-9) if trained else None
    scalars = {"loss/train": train["loss"], "loss/val": val["loss"], "acc1/train": train["acc1"],
               "acc5/train": train["acc5"], "acc1/val": val["acc1"], "balanced_acc/val": val["balanced_acc"],
               "acc5/val": val["acc5"], "lr": lr,
               # the epoch's time where this process ran it all: not one resumed midway, nor one with nothing to train
               "time/epoch_seconds": train["seconds"] if trained and train.get("whole", True) else None,
               "throughput/images_per_second": throughput, "data/wait_share": wait_share,
               "data/failed_images": len(train["failed"]) + len(val["failed"])}
    if ema_val is not None:  # each figure that may choose best.pth (balanced accuracy under --balance)
        scalars.update({"acc1/val_ema": ema_val["acc1"], "balanced_acc/val_ema": ema_val["balanced_acc"],
                        "loss/val_ema": ema_val["loss"]})
    if state.device.type == "cuda":  # the epoch's peak (training and validation): from the next, the next epoch's
        scalars["memory/gpu_max_gib"] = torch.cuda.max_memory_allocated(state.device) / 2**30
        torch.cuda.reset_peak_memory_stats(state.device)
    for key, value in scalars.items():
        if value is not None:
            writer.add_scalar(key, value, epoch)
    for (_, recall, _, _), name in zip(evaluation.per_class_metrics(val["confusion"]), classes):
        if recall is not None:  # None: no validation image of the class
            writer.add_scalar(f"class_recall/{name}", recall, epoch)
    if len(classes) <= report.MAX_CONFUSION_PICTURE:  # past it, a picture too large to read, drawn every epoch
        writer.add_image("val/confusion_matrix", plots.to_chw(plots.confusion_matrix_image(
            val["confusion"], classes, f"validation, epoch {epoch}")), epoch)
    writer.flush()
    row = {"epoch": epoch, "step": state.step,
           **{k.replace("/", "_"): "" if v is None else f"{v:.6g}" for k, v in scalars.items()}}  # an lr of 1e-7 too
    write_metrics_row(run_dir / "metrics.csv", row)
    failed = train["failed"] + val["failed"]
    for path in failed[:FILES_NAMED]:  # why, as it is now: a file changed or removed since it was listed
        print(f"warning: skipped an image that failed to load: {path}: {why_it_failed(path)}",
              file=sys.stderr)
    if len(failed) > FILES_NAMED:
        print(f"warning: and {len(failed) - FILES_NAMED} more images that failed to load in epoch {epoch}",
              file=sys.stderr)
    # the EMA's balanced accuracy too: under --balance it is the EMA's figure that may choose best.pth ("* best")
    ema = f"  ema top-1 {ema_val['acc1']:.4f} balanced {ema_val['balanced_acc']:.4f}" if ema_val is not None else ""
    figures = f"train loss {train['loss']:.4f} top-1 {train['acc1']:.4f}" if train["loss"] is not None else \
        "trained before the resume"
    since = "" if train.get("whole", True) else " since the resume"
    seconds = f"{train['seconds']:.{0 if train['seconds'] >= 10 else 1}f}s"  # a small run's epoch: 0.4s, not 0s
    # an epoch whose steps a killed run had all taken (its checkpoint saved after them, its row not written) has
    # no time here: not "0.0s"
    speed = f"  {seconds}{since} {throughput:.1f} img/s ({wait_share:.0%} waiting for data)" if trained else \
        "" if train["loss"] is None else "  its steps taken before the resume"
    top5 = f" top-5 {val['acc5']:.4f}" if len(classes) > report.TOP_K else ""  # of 5 classes or fewer: always 1
    print(f"epoch {epoch:3d}  {figures}  val loss {val['loss']:.4f} top-1 {val['acc1']:.4f} balanced "
          f"{val['balanced_acc']:.4f}{top5}{ema}  lr {lr:.2e}{speed}"
          f"{'  * best' if improved else ''}", flush=True)


def write_metrics_row(path: Path, row: dict) -> None:
    """metrics.csv with `row` as its last: one row per epoch, the epoch's latest training. Rows of the same epoch
    or later go (a run killed after its row but before last.pth trains the epoch again on resuming), and a column
    new since (EMA's, turned on when resuming) gets a header of its own: the file is written anew. A file that a
    spreadsheet saved again (a byte-order mark, which utf-8-sig reads past; a row edited) keeps its rows of earlier
    epochs; one it rewrote past reading (another separator) is kept aside as metrics.csv.bak, not trained over."""
    rows = []
    if path.exists():
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            table = csv.DictReader(f)
            header = table.fieldnames or []  # read here: an empty file's header is read from the file, while open
            rows = [old for old in table if (old.get("epoch") or "").isdecimal() and int(old["epoch"]) < row["epoch"]]
        if header and "epoch" not in header:
            path.replace(path.with_name(path.name + ".bak"))
            print(f"warning: {path} has no epoch column (saved again by another program?): kept as "
                  f"{path.name}.bak, and a new one written", file=sys.stderr)
    columns = list(dict.fromkeys([*row, *(key for old in rows for key in old)]))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:  # class names' columns
            out = csv.DictWriter(f, fieldnames=columns)
            out.writeheader()
            out.writerows([*rows, row])
    put_in_place(path, write)


def warn_unreadable(splits, recorded: set = None) -> None:
    """Files that do not decode are left out of the run, and the user is told which and why; so are the recorded
    validation files (recorded_split) that are no longer there (renamed, deleted)."""
    skipped = splits.skipped
    if recorded:
        found = {Path(path).relative_to(splits.root).as_posix() for path, _ in splits.val + skipped}
        if gone := len(recorded - found):  # a file renamed since is one the run never drew: a training photo now
            moved = ("if it was renamed or moved in the folder, it is a training photo now, under its new name: "
                     "give it back its name" if gone == 1 else "those renamed or moved in the folder are training "
                     "photos now, under their new names: give them back their names")
            print(f"warning: {gone} of the run's {len(recorded)} validation files {'is' if gone == 1 else 'are'} no "
                  f"longer in {splits.root}: it validates on the other {len(splits.val)}; {moved} (the run folder's "
                  f"{SPLIT_FILE} lists the names) to validate on {'it' if gone == 1 else 'them'} again",
                  file=sys.stderr)
    for path, reason in skipped[:FILES_NAMED]:
        print(f"warning: left out {printable(path)}: {reason}", file=sys.stderr)
    if (more := len(skipped) - FILES_NAMED) > 0:
        print(f"warning: and {counted(more, 'more file')} left out (the report.txt this run writes lists "
              "every one)", file=sys.stderr)


def say_started(run_dir: Path, cfg, splits, model, state, world_size: int, compiled: bool, images_per_process: int,
                resumed: bool) -> None:
    """The run's first line (where it writes, on what and how), then the notices about its settings and the warnings
    about its data."""
    device, classes = state.device, splits.classes
    compiling = "" if not compiled else (", compiled (the first step takes a minute or so)" if device.type != "cpu" else
                                         ", compiled (on a CPU, compiling the first steps takes minutes: drop "
                                         "--compile for a short run)")
    print(f"run folder {run_dir}: {len(splits.train)} training and "
          f"{counted(len(splits.val), 'validation image')}, "
          f"{len(classes)} classes, {model.variant} at {model.img_size} px on {device}"
          f"{f' x{world_size} (DDP, {torch.distributed.get_backend()})' if distributed() else ''}, "
          f"amp {amp_name(state.amp)}, {counted(cfg.workers, 'loader worker')}"
          f"{compiling}"
          f"{', CUDA graphs' if cfg.cuda_graphs else ''}")
    notice_settings(cfg, model.variant, device, compiled, images_per_process, state.layout["steps_per_epoch"],
                    fresh=state.epoch == 0 and state.batches_done == 0)
    notice_left_out(len(splits.train), state.layout["batches_per_epoch"], cfg.batch_size, world_size)
    if not resumed:  # said as a run starts, not again as it goes on
        warn_if_imbalanced(classes, splits.counts("train"), cfg.balance)
        notice_large_photos(splits, model.img_size, cfg.data_path, cfg.val_ratio)
    notice_letters_missing(classes)


def best_pth_figure(run_dir: Path, metric: str, chosen_by: str) -> float | None:
    """`metric` of the epoch best.pth holds (its metrics.csv row: the model's figure, or the EMA's where the EMA
    chose best.pth by `chosen_by`), for a run resumed with another --balance, which chooses best.pth by another
    figure: an epoch then replaces it only where it does better by that figure (one worse replaced it). None where
    the files do not say."""
    try:
        epoch = load_checkpoint(run_dir / "best.pth", mmap=True)["epoch"]
        row = next(row for row in report.read_metrics(run_dir / "metrics.csv") if row["epoch"] == epoch)
    except (UserError, OSError, UnicodeError, csv.Error, KeyError, StopIteration):
        return None
    ema = (row.get(f"{chosen_by}_val_ema") or -1.0) > (row.get(f"{chosen_by}_val") or -1.0)
    return row.get(f"{metric}_val_ema" if ema else f"{metric}_val")


def say_resumed(state, saved_metric: str, cfg, relaid: str) -> None:
    """Where a resumed run goes on, and its best so far: none where the figure that chooses best.pth is another
    than the checkpoint's (--balance typed on resuming), which is said rather than "not validated yet"."""
    metric = engine.best_metric(cfg)
    best = f"best {engine.METRIC_NAMES[metric]} so far {state.best_acc:.4f}" if state.best_acc >= 0 else \
        "not validated yet" if saved_metric == metric else \
        f"best {engine.METRIC_NAMES[metric]} not measured yet: --balance {cfg.balance} chooses best.pth by it now"
    print(f"resumed at epoch {state.epoch + 1}, step {state.step} ({best})" + (f"; {relaid}" if relaid else ""))


def notice_left_out(images: int, batches_per_epoch: int, batch_size: int, processes: int) -> None:
    """An epoch trains whole batches only, in every process (loaders.EpochBatches): on a small folder, under
    torchrun, that can leave out a large share of it each epoch (others each epoch, as the shuffles differ)."""
    trained = min(images, batches_per_epoch * batch_size * processes)
    if trained < 0.9 * images:
        across = f"{processes} processes x " if processes > 1 else ""
        print(f"notice: an epoch trains {trained} of the {images} training images, in {across}whole batches of "
              f"{batch_size} (each epoch leaves out others); a smaller --batch-size trains more of them")


def notice_settings(cfg, variant: str, device, compiled: bool, images_per_process: int, steps_per_epoch: int,
                    fresh: bool) -> None:
    """Settings that work but may not be what the user meant, or that cost time up front; said as the run starts."""
    if device.type == "cpu" and variant not in NO_PRETRAINED_WEIGHTS:
        print(f"notice: training {variant} on the CPU is slow (swin_tiny: a few images/s); "
              "configs/cpu_demo.yaml trains a small variant in minutes")
    if compiled and cfg.compile is None:
        print(f"compiling by default: {images_per_process:,} images to train pay for it (--no-compile skips it)")
    steps = cfg.epochs * steps_per_epoch
    if cfg.warmup_epochs >= cfg.epochs and fresh:  # said once, not again on resuming
        peak = cfg.lr * optim.lr_schedule(cfg, steps_per_epoch)(steps - 1)  # the last step's, short of --lr
        print(f"notice: --warmup-epochs {cfg.warmup_epochs:g} spans the whole run of {counted(cfg.epochs, 'epoch')}, "
              f"{counted(steps, 'step')}: the lr rises from --warmup-lr {cfg.warmup_lr:.1e} to {peak:.1e} at the last "
              f"step (--lr {cfg.lr:.1e} is never reached) and never decays; lower --warmup-epochs for a cosine decay")
    # the update of step k is n = k - 1: the decay is reached at step ramp + 1, and the last step's is n = steps - 1
    if cfg.ema and fresh and steps <= (ramp := engine.ModelEma.ramp_updates(cfg.ema_decay)):
        print(f"notice: the EMA's decay ramps as (1 + n) / (10 + n) to --ema-decay {cfg.ema_decay:g}, reached at step "
              f"{ramp + 1:,}; this run's {steps:,} steps end at "
              f"{steps / (9 + steps):.4f}, so --ema-decay does not change it")


def warn_if_imbalanced(classes: list, counts: list, balance: str) -> None:
    imbalance = class_imbalance(classes, counts)
    if imbalance:
        hint = f"--balance {balance} compensates" if balance != "off" else \
            "--balance sampler or --balance loss compensates (now off)"
        print(f"warning: in the training images, {imbalance}; {hint}", file=sys.stderr)


def notice_letters_missing(classes: list) -> None:
    """Class names in a script the machine's fonts lack (CJK, where only DejaVu is installed): the pictures would draw
    boxes for them, said once as the run starts with what to install."""
    notice = plots.letters_missing_notice(classes, "the pictures (confusion matrix, report, TensorBoard)")
    if notice:
        print(notice)


def notice_large_photos(splits, img_size: int, data_path, val_ratio: float) -> None:
    """Photos of many megapixels (a phone's 12) cost their decoding every epoch, most of what loading an image costs
    even at a reduced DCT scale (libjpeg still reads every byte): said with the command that makes smaller copies
    once. Judged on the median of a few, from their headers."""
    sample = random.Random(0).sample([path for path, _ in splits.train], min(32, len(splits.train)))
    sizes = []
    for path in sample:
        try:
            with open_image(path) as image:  # a phone's 200 MP JPEG too, past Pillow's limit
                sizes.append(image.size)
        except UNREADABLE:  # changed since listed
            pass
    if not sizes:
        return
    width, height = sorted(sizes, key=lambda size: size[0] * size[1])[(len(sizes) - 1) // 2]  # half are larger
    smaller = max(512, -(-2 * img_size // 64) * 64)  # twice the crop, as ImageNet's photos are to 224
    if width * height > 16 * smaller * smaller:
        how = (f"python split_data.py --data-path {shlex.quote(str(data_path))} --max-size {smaller} --val-ratio "
               f"{val_ratio:g}, then "
               "--data-path data" if splits.drawn else f"split_data.py --max-size {smaller} writes them from a "
               "folder of class folders")
        print(f"notice: the training photos are large, some {width}x{height} ({width * height / 1e6:.0f} MP, the "
              f"median of {len(sizes)}): decoding them is most of each epoch's loading; smaller copies, made once, "
              f"load many times faster: {how}")


class DataWaits:
    """Says once, on a GPU, when training waits for the loader for more than NOTICE_SHARE of an epoch, and what to
    do: the GPU idles for up to that long (the work queued before a wait may run through part of it). Not on a first
    epoch of the process, whose first batches wait for the workers to start, nor on a CPU, where the workers and the
    model share the cores."""
    NOTICE_SHARE = 0.2

    def __init__(self, cfg, device: torch.device):
        self.cfg, self.device, self.said = cfg, device, False

    def check(self, train: dict, epoch: int, first_of_process: bool) -> None:
        if self.said or first_of_process or self.device.type != "cuda" or train["images"] == 0:
            return
        share = train["data_seconds"] / max(train["seconds"], 1e-9)
        if share <= self.NOTICE_SHARE:
            return
        self.said = True
        cores = usable_cores()
        if self.cfg.decode == "workers":
            what = ("decode the JPEGs on the GPU (--decode device), or give the loader more workers (--workers "
                    f"N, now {self.cfg.workers} on {counted(cores, 'CPU core')})")
        else:
            what = (f"give the loader more workers (--workers N, now {self.cfg.workers} on "
                    f"{counted(cores, 'CPU core')}), or put the photos on a faster disk")
        print(f"notice: training waited for data {share:.0%} of epoch {epoch} (the GPU idle for up to that long): "
              f"the loader gives fewer images a second than the GPU trains on. To train faster, {what}.", flush=True)


def log_where_it_looks(writer, model, dataset, normalize, device, amp, classes: list, epoch: int,
                       count: int = 8) -> None:
    """TensorBoard's val/where_it_looks: the first validation photo of each class (at most `count`), the same every
    epoch, each tinted where the model saw the class it chose (model.forward_with_maps), captioned with its true
    class and that one."""
    firsts = {}
    for index, (_, label) in enumerate(dataset.samples):
        firsts.setdefault(label, index)
    crops = [(crop, label) for crop, label, _ in (dataset[i] for i in sorted(firsts.values())[:count])
             if crop is not None]
    if not crops:
        return
    images = torch.stack([crop for crop, _ in crops])
    with torch.no_grad(), autocast(device, amp):
        logits, maps = model.forward_with_maps(normalize(images.to(device)))
    chosen = logits.float().argmax(-1)
    heat = maps_of(maps, chosen).float().cpu()
    side = max(160, images.shape[-1])  # room for the captions under small crops
    pictures = [plots.heat_overlay(crop.permute(1, 2, 0).numpy(), h).resize((side, side), Image.BILINEAR)
                for crop, h in zip(images, heat)]
    captions = [(classes[label], f"> {classes[k]}") for (_, label), k in zip(crops, chosen.tolist())]
    writer.add_image("val/where_it_looks", plots.to_chw(plots.picture_grid(pictures, captions)), epoch)


def log_training_images(writer, batch, normalize, classes: list) -> None:
    """A grid of a batch of augmented training images with their labels, to check the input pipeline by eye."""
    images, labels, _ = to_device(*batch[:3], "cpu")  # --decode device: decoded here for the picture
    if len(labels):
        grid = plots.image_grid(normalize(images[:32]), [classes[i] for i in labels[:32]], IMAGENET_MEAN, IMAGENET_STD)
        writer.add_image("train/augmented_images", plots.to_chw(grid), 0)


def report_command(run_dir: Path) -> str:
    """The command that writes the report a finished run's end left unwritten, and where it goes."""
    return (f"python {train_script()} --eval-only --resume {shlex.quote(str(checkpoint_of_run(run_dir)))} writes the "
            f"report, in {run_dir / 'eval_val'}")


def say_finished(cfg, checkpoint: dict, run_dir: Path) -> None:
    """What resuming a run that has trained its --epochs says: how it ended, how to train on, and the command
    that writes its report where a stop while it was written left none."""
    name = engine.METRIC_NAMES[checkpoint.get("best_metric", "acc1")]
    done = f"finished its {cfg.epochs} epochs" if checkpoint["epoch"] == cfg.epochs else \
        f"trained {checkpoint['epoch']} epochs, more than --epochs {cfg.epochs}"
    print(f"{cfg.resume} has {done} (best {name} {checkpoint['best_acc']:.4f}): "
          f"nothing to train. To train on, add --epochs N, N above {checkpoint['epoch']}.")
    # report.html is written last: none in a run folder (config.yaml beside it), stopped before or while it was
    if (run_dir / "config.yaml").is_file() and not any((run_dir / where / "report.html").is_file()
                                                       for where in (".", "eval_val")):
        print(f"{run_dir / 'report.html'} was not written: {report_command(run_dir)}")


class DataGone(Exception):
    """An epoch none of whose images loaded (check_some_loaded), said by failure_explained: once the checkpoints
    being written are on disk, what they hold is known."""

    def __init__(self, said: str, saved_now: bool):
        super().__init__(said)
        self.saved_now = saved_now  # the epoch's training, saved as validation found the images gone


def check_some_loaded(result: dict, what: str, data_path, save=None, trained: dict = None) -> None:
    """Stop a run (DataGone) at an epoch's training or validation none of whose images loaded, its data folder
    moved, unmounted or made unreadable since the run began: going on would train on nothing and score 0%, and
    finish as a run does. `save`, given, saves the epoch's training first (validation found them gone), unless
    `trained`, that training's result, lost images too (the folder went midway): then the epoch trains again on
    resuming, not counted as trained on the part of its photos that loaded before they went."""
    if result.get("loaded", result["images"]) or not result["failed"]:  # evaluation's images: all it loaded
        return
    lost = len(trained["failed"]) if trained is not None else 0
    if save is not None and not lost:
        save("last.pth")
    first = result["failed"][0]
    also = (f" {lost} of its {lost + trained['loaded']} training images failed too: the epoch is not saved, and "
            "trains again on resuming;" if lost else "")
    raise DataGone(f"none of this epoch's {len(result['failed'])} {what} images loaded (the first, {first}: "
                   f"{why_it_failed(first)}): has {data_path} moved, been unmounted or become unreadable?{also}",
                   saved_now=save is not None and not lost)


def failure_explained(err: Exception, cfg, run_dir: Path, img_size: int, stop, distributed: bool,
                      ended: str | None = None) -> UserError | None:
    """The one line that says what stopped training, what was kept and what to do, for the failures a user can
    meet and act on; None for the others (a bug: its traceback). `ended`: how far the run had got past its last
    epoch, "saved" (its last.pth) or "reported" (its report written too), where a failure loses no training."""
    if isinstance(err, DataGone):
        kept = (f"this epoch's training is saved in {run_dir / 'last.pth'}" if err.saved_now else
                f"{run_dir / 'last.pth'} holds the run as of its last save" if (run_dir / "last.pth").is_file() else "")
        return UserError(f"{err} {kept}; once the photos are back: {resume_command(run_dir)}" if kept else
                         f"{err} nothing was saved; start again once the photos are back")
    if isinstance(err, OSError) and within(err.filename, run_dir) and not run_dir.is_dir():  # often TensorBoard's
        return UserError(f"{run_dir} was moved or deleted while the run wrote to it ({err.strerror or err}): the run "
                         f"stopped. Moved: put it back, then {resume_command(run_dir)} goes on from its last save; "
                         "deleted: its checkpoints went with it, start the run again")
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        # a full disk (a quota) met first by TensorBoard's writer, whose error names no file
        free = shutil.disk_usage(run_dir).free / 2**30 if run_dir.is_dir() else 0.0
        return UserError(f"could not write to {run_dir}: {err.strerror} ({free:.1f} GB free on its disk); "
                         + lost_since_saved(run_dir, "Make room, then "))
    if isinstance(err, engine.TrainingDiverged):  # what is on disk, as it is: no step after it went wrong is saved
        kept = (f"{run_dir / 'last.pth'} holds the run as of its last save, before it went wrong: "
                f"{resume_command(run_dir)} goes on from it" if (run_dir / "last.pth").is_file() else
                f"nothing was saved: {run_settings.nothing_to_resume(run_dir)}")
        return UserError(f"training stopped: {err}. Try a lower --lr, --clip-grad, or --amp off; {kept}")
    if out_of_memory(err):
        where = "GPU memory" if isinstance(err, torch.OutOfMemoryError) else "memory"
        return UserError(f"out of {where} at --batch-size {cfg.batch_size}, {img_size} px: try --batch-size "
                         f"{max(1, cfg.batch_size // 2)} --accum-steps {cfg.accum_steps * 2}, or --grad-checkpointing")
    if (died := dead_loader_worker(err)) is not None:
        return UserError(f"{died.strip().rstrip('.')}. A data loading process died, most often killed by the "
                         f"system for want of memory; " + lost_since_saved(
                             run_dir, f"Try fewer --workers (now {cfg.workers}) or a smaller --batch-size; "))
    if distributed and lost_another_process(err):
        if ended == "reported":  # the barrier that ends the run
            return UserError(f"{ANOTHER_ENDED} after the run had finished, trained, saved and reported in {run_dir}: "
                             f"nothing is lost")
        if ended == "saved":  # its resume would have nothing to train (the report is the first process's to write:
            # another process cannot tell whether it got that far)
            return UserError(f"{ANOTHER_ENDED} after the run's last epoch, {cfg.epochs}, was saved in {run_dir}: "
                             f"nothing of the training is lost. Where its report is missing, {report_command(run_dir)}")
        # torchrun's SIGTERM to the others may have come first
        return UserError(f"{ANOTHER_ENDED}{', before the stop could save' if stop.requested else ''}; "
                         f"{lost_since_saved(run_dir)}")
    return None


def within(filename, folder: Path) -> bool:
    """Whether an error's file (str, bytes as TensorBoard's writer gives it, or None) is `folder` or in it: under
    torchrun on machines that share no disk, another machine's processes have no run folder, and their errors are
    others."""
    if filename is None:
        return False
    path = Path(os.fsdecode(filename)).resolve()
    return folder.resolve() in (path, *path.parents)


def check_val_finite(val: dict, epoch: int, amp, main_process: bool = True) -> None:
    """A validation loss that is no finite number after a training epoch whose losses all were: weights that give
    NaN or infinite logits (too high an lr, weights grown past float range), which score as chance does and so could
    become best.pth. Under fp16 it can be one image's logit past fp16's range instead, which the loss scaling that
    trains in fp16 passes over: said, and the epoch not taken as the best."""
    if math.isfinite(val["loss"]):
        return
    if amp == torch.float16:  # the loss is every process's sum: each passes, the first says it
        if main_process:
            print(f"warning: the validation loss is {val['loss']} after epoch {epoch + 1}: some logits are past "
                  "fp16's range (--amp bf16 or off avoids that); the epoch is not taken as the best", file=sys.stderr)
        return
    raise engine.TrainingDiverged(f"the validation loss became {val['loss']} after epoch {epoch + 1}: the weights "
                                  "give logits that are no finite numbers; not saving them")


def lost_since_saved(run_dir: Path, advice: str = "") -> str:
    """What a run that ended at once has lost, `advice` (a sentence's start, ending in "; "), and the command that
    goes on (or starts it again, where it had saved nothing yet)."""
    if (run_dir / "last.pth").is_file():
        then = f"{advice}to go on" if advice else "To go on"
        return f"the steps since {run_dir / 'last.pth'} was saved are lost. {then}: {resume_command(run_dir)}"
    return advice[:1].lower() + advice[1:] + run_settings.nothing_to_resume(run_dir)


def say_stopped_at_once(run_dir: Path, trained: bool = False) -> None:
    """A second Ctrl-C stops a run at once: what is lost, and the command that goes on (or starts it again, where
    it had saved nothing yet: a first step that takes long, as a compiled one does). `trained`: the run had trained
    and saved its last epoch, and was writing its report, which the command given writes."""
    if trained:
        print(f"\nstopped at once by a second Ctrl-C as the report was written: the training is done and saved in "
              f"{run_dir}; {report_command(run_dir)}", file=sys.stderr)
        return
    print(f"\nstopped at once by a second Ctrl-C: {lost_since_saved(run_dir)}", file=sys.stderr)


def say_stopped(state, by: str, run_dir: Path, main_process: bool = True) -> None:
    """A run stopped before its last epoch: where, what was saved, and the command that goes on; said by the first
    process, and by every process to torchrun's summary, which lists a process that a signal stopped (its status
    128 + the signal's number) as failed, with a link to its documentation where it has no line of it."""
    where = f"after epoch {state.epoch}" if state.batches_done == 0 else \
        f"in epoch {state.epoch + 1} (batch {state.batches_done})"
    again = f" {by}" if by.startswith("--stop-after-epochs") else ""  # a job's time limit: each resume stops too
    said = (f"stopped by {by} {where}, step {state.step}; {run_dir / 'last.pth'} saved. "
            f"To go on:\n    {resume_command(run_dir)}{again}")
    if main_process:
        print(said)
    tell_torchrun(said)


HPARAMS_LEFT_OUT = ("resume", "output", "name", "config", "progress", "eval_only", "split", "stop_after_epochs",
                    "download_weights")


def write_hparams(writer, run_dir: Path, cfg, state, last_val: dict) -> None:
    """TensorBoard's HPARAMS tab, which takes its columns from one run's record: every run writes the same settings
    (resolved: the image size the model was built at, not None; one still unset as ""; a list as text) and the
    same figures, the best top-1 and balanced accuracy over its epochs (the model's or the EMA's, from metrics.csv;
    `best_metric` says which chose best.pth) and the last validation loss. In runs/<name>/hparams/, written anew at
    each end: a run resumed to more epochs showed its first end's settings beside its last end's figures."""
    model = state.model
    resolved = {**vars(cfg), "img_size": model.img_size, "num_classes": model.num_classes,  # what the flags left
                "window_size": model.layers[0].window_size,  # to the variant, as the model was built
                "drop_path_rate": {**VARIANTS[model.variant], **getattr(model, "overrides", {})}["drop_path_rate"],
                "compile": state.compiled}
    # a column per setting that tells runs apart, in every run (TensorBoard takes the columns from one run's record;
    # one still unset, --weights', is ""): not where a run was written, how it was started or shown
    settings = {k: "" if v is None else v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in plain(resolved).items() if k not in HPARAMS_LEFT_OUT}
    settings["best_metric"] = engine.best_metric(cfg)
    try:
        rows = report.read_metrics(run_dir / "metrics.csv")
    except (OSError, UnicodeError, csv.Error):  # a file edited past reading: the figure that chose best.pth alone
        rows = []
    best = {metric: max([row.get(key) for row in rows for key in (f"{metric}_val", f"{metric}_val_ema")
                         if row.get(key) is not None], default=-1.0) for metric in ("acc1", "balanced_acc")}
    best[engine.best_metric(cfg)] = max(best[engine.best_metric(cfg)], state.best_acc)
    figures = {"hparam/best_acc1": best["acc1"], "hparam/best_balanced_acc": best["balanced_acc"],
               "hparam/last_val_loss": last_val["loss"]}
    for old in (run_dir / "hparams").glob("events.out.tfevents.*"):
        old.unlink()
    writer.add_hparams(settings, figures, run_name="hparams", global_step=state.step)


def finish_run(writer, run_dir: Path, cfg, state, last_val: dict, best: tuple, splits, seen) -> None:
    """A run's end: its settings and figures in TensorBoard's HPARAMS tab, and the report of its best weights,
    `best` = (evaluate's result, which checkpoint it is of), its maps over the part of each photo validation showed
    the model (`seen`, data.seen_box)."""
    write_hparams(writer, run_dir, cfg, state, last_val)
    result, checkpoint = best
    report.write_evaluation(run_dir, result, splits.classes, checkpoint, state.model.variant, "val",
                            run_dir / "metrics.csv", splits.skipped, str(splits.root), seen)
    # the run's outcome last, where its reader looks: the weights predict.py takes from now on, and their figures
    print(f"best: {checkpoint}, validation top-1 {result['acc1']:.1%}, balanced accuracy {result['balanced_acc']:.1%}. "
          f"What it gets wrong, to open in a browser: {run_dir / 'report.html'}; to classify photos with it: python "
          f"predict.py --weights {shlex.quote(str(run_dir))} PHOTO ...")


def open_writers(run_dir: Path, state, resumed: bool) -> tuple:
    """TensorBoard's writers: (the per-epoch figures', numbered by epoch, in the run folder; the per-step loss's,
    numbered by step, in steps/). Resumed, what the run logged after its checkpoint (killed before the next one) is
    logged again, and TensorBoard drops the earlier points from there on; new, all of a run that stopped there before
    its first checkpoint. TensorBoard purges by one step number a folder, hence two (one purge of both left an epoch
    logged before a kill shown twice)."""
    quiet_event_writer_failures()
    if resumed and not (run_dir / "steps").is_dir() and any(run_dir.glob("events.out.tfevents.*")):
        # a run begun before steps/ (2026-11-30) logged both in its folder: purged by epoch, its earlier per-step
        # loss (steps 10, 20, ...) would be dropped from the epoch on; one writer, by step, as it ran
        writer = SummaryWriter(run_dir, purge_step=state.step + 1)
        return writer, writer
    return (SummaryWriter(run_dir, purge_step=state.epoch + 1 if resumed else 0),
            SummaryWriter(run_dir / "steps", purge_step=state.step + 1 if resumed else 0))


def close_writers(*writers) -> None:
    """TensorBoard's files closed as a run ends; where an error is ending it (a full disk), that error is said, not
    the writers' failure to flush their last events for the same reason."""
    stopping_error, failed = sys.exc_info()[1], None  # called in a finally: the error on its way out, if one is
    for writer in writers:  # each closed, whatever another's close raised
        try:
            writer.close()
        except OSError as err:
            failed = failed or err
    if failed is not None and stopping_error is None:
        raise failed


def quiet_event_writer_failures() -> None:
    """TensorBoard's writer thread prints the traceback of a write that failed (a full disk) as it ends; the
    training process meets the same error at its next flush, and says it in one line (failure_explained)."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread
    previous = threading.excepthook
    if getattr(previous, "quiets_event_writer", False):  # set by an earlier run in this process
        return

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            previous(args)
    hook.quiets_event_writer = True
    threading.excepthook = hook
