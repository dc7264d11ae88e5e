"""Checkpoints on disk: each written whole or not at all (files.put_in_place), beside the training
(CheckpointWriter), as plain data that is read back without unpickling code (load_checkpoint). What a checkpoint
holds: engine.TrainState.checkpoint and train.py; weights from elsewhere: weights.py.
"""
import os
import pickletools
import re
import shutil
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from files import put_in_place
from utils import UserError


def save_checkpoint(obj: dict, path) -> None:
    """Write `obj` to a temporary file, sync it, then rename it over `path` (put_in_place)."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    put_in_place(Path(path), write)


class CheckpointWriter:
    """save_checkpoint on a thread of its own, so that training goes on while a checkpoint is written (330 MB
    for swin_tiny with its optimizer state, half a second or more with the sync; an epoch of the tutorial's
    flower_photos on a GPU trains in a second or two: bench/bench_checkpoint.py). save() copies the
    checkpoint's tensors to the host first, since the live ones change at the next step, then returns;
    writes run one at a time, in order, each as save_checkpoint makes it (whole or not at all); a write
    that has not started takes the newest checkpoint of its file, so that saves faster than the disk
    (--save-every-steps 1) hold at most two snapshots of a file in memory, the one being written and
    the newest. copy() gives a file what another one holds once written (last.pth what best.pth holds,
    when the best weights are the last ones) without a second snapshot or write. A write that failed is
    raised, as save_checkpoint's UserError, by the next save(), copy(), check() or close(), and the writes
    queued before it was raised are not made: their errors (a copy of the file that failed) hid the one that
    says what happened; close() waits for the writes, so a run that ends, stops or fails leaves its
    checkpoints written."""

    def __init__(self):
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self.writes = []  # futures of the writes not yet checked, in order
        self.newest = {}  # path -> [the newest snapshot for it], until its write starts
        self.lock = threading.Lock()
        self.failed = False  # a write has failed: those queued before its error is raised are not made

    def submit(self, task, *args) -> None:
        def run():
            if self.failed:
                return
            try:
                task(*args)
            except BaseException:
                self.failed = True
                raise
        self.writes.append(self.thread.submit(run))

    def save(self, obj: dict, path) -> None:
        self.check()
        snapshot = host_copy(obj)
        with self.lock:
            if path in self.newest:
                self.newest[path][0] = snapshot
                return
            self.newest[path] = box = [snapshot]
        self.submit(self.write, path, box)

    def write(self, path, box: list) -> None:
        with self.lock:
            snapshot = box.pop()
            if self.newest.get(path) is box:
                del self.newest[path]
        save_checkpoint(snapshot, path)

    def copy(self, source, path) -> None:
        """`path` as `source` is once the writes queued so far are done. Writes of either file queued before
        no longer take later saves, which queue writes of their own, after the copy."""
        self.check()
        with self.lock:
            self.newest.pop(source, None)
            self.newest.pop(path, None)
        self.submit(link_checkpoint, source, path)

    def check(self) -> None:
        """Raise the error of a write that has failed; forget those that are done."""
        while self.writes and self.writes[0].done():
            self.result(self.writes.pop(0))

    def wait(self) -> None:
        """Until every write asked for is on disk; raises the error of one that failed."""
        while self.writes:
            self.result(self.writes.pop(0))

    def result(self, write) -> None:
        """A write's end; where it failed, the writes queued after it (not made) ended too, then its error raised:
        the saves after that are made again."""
        if write.exception() is None:
            return
        for later in self.writes:
            later.result()
        self.writes.clear()
        with self.lock:  # the snapshots those writes would have taken: a later save of their file queues its own
            self.newest.clear()
        self.failed = False
        write.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.thread.shutdown()


def link_checkpoint(source, path) -> None:
    """`path` becomes a second name of the file `source` (a hard link: nothing is written; a copy where the
    file system has none), put in place as save_checkpoint puts a file. Saving `source` later writes a new
    file under its name, so `path` keeps what it holds now."""

    def link(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (some network and FAT file systems)
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    put_in_place(Path(path), link)


def host_copy(value):
    """`value` with each tensor in it copied to the host, in dicts, lists and tuples rebuilt: a snapshot that
    the training steps after it do not change. From a GPU the copies are queued into pinned memory and waited
    for once, where copies one by one would each wait (swin_tiny's checkpoint holds some 870 tensors)."""
    gpus = set()

    def copy(item):
        if isinstance(item, torch.Tensor):
            if item.is_cuda:
                gpus.add(item.device)
            return item.detach().to("cpu", copy=True, non_blocking=item.is_cuda)
        if isinstance(item, dict):
            return {key: copy(part) for key, part in item.items()}
        if isinstance(item, (list, tuple)):
            return type(item)(copy(part) for part in item)
        return item
    snapshot = copy(value)
    for gpu in gpus:
        torch.cuda.current_stream(gpu).synchronize()
    return snapshot


def load_checkpoint(path, mmap: bool = False):
    """torch.load with weights_only=True, and errors a person can act on; `mmap` reads tensors only when used (in a
    file of torch.save's zip format; one saved in its legacy format, which torch.load cannot map, is read whole)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "a pipe, a socket or a device"
        raise UserError(f"{path} is no checkpoint file: {what}" if path.exists() else f"checkpoint not found: {path}")
    if path.stat().st_size == 0:  # torch.load's EOFError read as "not a PyTorch checkpoint"
        raise cut_short(path, "an empty file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except OSError:  # a file it cannot read (no permission): said as the file system says it (run_cli)
            raise
        except Exception as err:  # safetensors' own errors (SafetensorError) have no common base with others
            raise UserError(f"{path} is not a safetensors file of tensors ({err})") from None
    if is_torchscript(path):  # torch.load would warn and hand it to torch.jit.load, which runs its code
        raise UserError(f"{path} is a TorchScript program, not a checkpoint: torch.jit.load runs it. Give a "
                        "checkpoint or state dict (predict.py also runs .onnx and .pt2 programs)")
    mmap = mmap and zipfile.is_zipfile(path)
    # torch.load checks no checksum: bytes changed inside a whole file loaded as other weights (a mapped file's
    # tensors are read when used, after this: its checksums go unchecked)
    why = not_whole(path, checksums=not mmap)
    if why:
        raise cut_short(path, why)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # a file that is no checkpoint raises anything from KeyError to RuntimeError
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        # a pickle (torch.save's zip, or a bare pickle, which opens with its protocol byte): a text file whose
        # first letter is c reads as pickle's GLOBAL opcode too
        with open(path, "rb") as file:
            start = file.read(4)
        pickled = zipfile.is_zipfile(path) or start[:1] == b"\x80"
        if found and pickled and pickles_a_model(path):  # torch.save(model): a module, not a dict that holds weights
            raise UserError(
                f"{path} holds a whole pickled model ({found.group(1)}), not its weights, and loading it could run "
                "code, so it is refused. If you trust the file, re-save only its weights, where the code of its "
                "class can be imported: torch.save(torch.load(f, weights_only=False).state_dict(), 'clean.pth')") \
                from None
        if found and pickled:
            raise UserError(
                f"{path} holds pickled Python objects besides tensors ({found.group(1)}), and loading it "
                "could run code, so it is refused. If you trust the file, re-save only its weights: "
                "torch.save(torch.load(f, weights_only=False)['model'], 'clean.pth') (or the key that holds its "
                "weights, such as 'state_dict')") from None
        raise UserError(f"{path} is not a PyTorch checkpoint (torch.load could not read it: {type(err).__name__}): "
                        "give a file that torch.save wrote (train.py's checkpoints, official or timm weights) or a "
                        ".safetensors file") from None


def pickles_a_model(path: Path) -> bool:
    """Whether a torch.save file holds an object of a class at its top (torch.save(model)) rather than a dict or a
    list: its pickle's first operation after the protocol names a class, read without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            pickle = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            ops = pickletools.genops(archive.read(pickle)) if pickle else iter(())
            first, arg = next(((op.name, arg) for op, arg, _ in ops if op.name not in ("PROTO", "FRAME")),
                              (None, None))
    except Exception:  # a damaged archive or pickle: not known to be a model, the general advice stands
        return False
    # a class named at the top, but not a state_dict's own OrderedDict (model.state_dict() with a non-tensor in it)
    if first == "GLOBAL":
        return arg != "collections OrderedDict"
    return first in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and arg != "collections"


def cut_short(path: Path, why: str) -> UserError:
    """A checkpoint file that is not whole, as not_whole says why."""
    also = ", or a disk's fault" if why.endswith(CHECKSUM_FAILS) else ""  # bytes changed rather than ended early
    return UserError(f"{path} is cut short or damaged ({why}): a copy or download that did not finish{also}? Copy or "
                     "download it again")


CHECKSUM_FAILS = "fails its checksum"


def not_whole(path: Path, checksums: bool = True) -> str | None:
    """Why a torch.save file is not whole (empty, its zip's end missing, a member failing its checksum: read through
    once, without unpickling, where `checksums`); None for a whole one, or one that is no zip (its legacy format:
    torch.load says)."""
    if path.stat().st_size == 0:
        return "an empty file"
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            return "its end missing" if file.read(4) == b"PK\x03\x04" else None
    damaged = damaged_member(path) if checksums else None
    return f"{damaged} {CHECKSUM_FAILS}" if damaged else None


def damaged_member(path: Path) -> str | None:
    """The first file inside a torch.save zip whose bytes fail its CRC (a second read of the file: 0.1 s for
    swin_tiny's weights), or whose header no longer reads; None for a whole one, one saved without checksums
    (torch.utils.serialization.config.save.compute_crc32 = False writes 0 for each), or a file that is not a zip
    whose directory reads (torch.load says what it is)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError):
        return None
    with archive:
        if all(info.CRC == 0 for info in archive.infolist() if info.file_size):
            return None
        try:
            return archive.testzip()
        except Exception as err:  # a name or header changed (UnicodeDecodeError, BadZipFile, zlib.error ...)
            return f"a file in it ({type(err).__name__})"


def is_run_checkpoint(checkpoint) -> bool:
    """train.py's checkpoints carry their model, classes and config (describe_for_checkpoint); other weights
    files do not."""
    return isinstance(checkpoint, dict) and all(key in checkpoint for key in ("class_names", "variant", "model"))


# what a run's checkpoint holds beside its model for the run to go on (TrainState.checkpoint): one made smaller by hand
# (its optimizer state dropped, the usual cut) still classifies, and starts a new run, but cannot resume one
TRAINING_STATE = ("config", "optimizer", "scheduler", "scaler", "epoch", "step", "batches_done", "best_acc", "rng")


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/__torch__/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):  # a damaged directory: torch.load says so
        return False


def all_finite(state_dict: dict) -> bool:
    finite = [t.isfinite().all() for t in state_dict.values() if t.is_floating_point()]
    return bool(torch.stack(finite).all()) if finite else True  # read once: on a GPU each read waits for it
