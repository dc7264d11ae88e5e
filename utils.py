"""Shared helpers for the scripts: errors meant for people (run_cli), text as a terminal shows it (printable,
text_width, padded, counted), writable paths, devices, seeds and their states (a run's processes under torchrun and the
command that resumes a run: processes.py; signals: stopping.py; files written whole: files.py; configs and flags:
config.py; mixed precision: precision.py).

torch is imported inside the functions that use it, so that split_data.py, which needs none of
them, starts in a fraction of a second.
"""
from __future__ import annotations  # annotations name torch types without importing torch

import argparse
import codecs
import difflib
import os
import random
import re
import shlex
import signal
import sys
import tempfile
import traceback
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from processes import (ANOTHER_ENDED, distributed, leave_process_group, lost_another_process, said_by_another_process,
                       tell_torchrun)
from stopping import ScriptSignals, Terminated, to_devnull

if TYPE_CHECKING:  # for the annotations only: torch is imported where it is used
    import torch


class UserError(Exception):
    """A mistake the user can fix (a bad path, an unknown model name, a wrong checkpoint).

    Scripts print its message, without a traceback, and exit with status 2.
    """


def text_width(text: str) -> int:
    """The columns `text` takes in a terminal or a monospaced file: two for a wide character (CJK), none for a
    combining mark or a format character (a right-to-left mark, a zero-width joiner), one for the rest, where len()
    counts characters."""
    return sum(0 if unicodedata.combining(c) or unicodedata.category(c) in ("Me", "Cf") else
               2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def printable(text: str) -> str:
    """A file's name on one line of text (a warning, a listing, a table): its control characters (a line break, a
    tab) written as Python writes them, \\n and \\t, where they split the entry over two lines."""
    escapes = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
    breaking = ("Cc", "Zl", "Zp")  # controls, and Unicode's line and paragraph separators, which break lines too
    return "".join(escapes.get(c, f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}")
                   if unicodedata.category(c) in breaking else c for c in str(text))


# what gives text a right-to-left direction: its letters (Hebrew, Arabic) and the marks that embed or override one
RIGHT_TO_LEFT = ("R", "AL", "RLE", "RLO", "RLI", "LRE", "LRO", "LRI", "FSI", "PDF", "PDI")


def padded(text: str, width: int) -> str:
    """`text` filled with spaces after it to `width` columns (text_width), as a table's aligned columns need,
    class names in any script; one with right-to-left text isolated (U+2068 ... U+2069, no width), as the report's
    page isolates names: in a viewer that orders text by direction its figures came out reversed."""
    if any(unicodedata.bidirectional(c) in RIGHT_TO_LEFT for c in text):
        text = f"\u2068{text}\u2069"
    return text + " " * max(0, width - text_width(text))


def counted(number: int, noun: str) -> str:
    """The number and its noun, plural but for one, for the nouns the scripts count: "1 epoch", "5 steps"."""
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def first_line(error: BaseException) -> str:
    """An error's message, its first line (a compiler's can run to pages), or its type where it has none."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def name_bytes(error: UnicodeError):
    """The error handler of stdout and stderr (run_cli): a file name's bytes that are not UTF-8 (lone surrogates, as
    os.fsdecode holds them) written as those bytes, as ls writes them; any other character the stream's encoding
    lacks (a CJK name on a Windows code page, where a redirected stream is cp1252) escaped as \\u82b1, as Python's
    stderr escapes it, where surrogateescape alone raised: a traceback in place of the line."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return b"".join(bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF else
                    c.encode("ascii", "backslashreplace") for c in text), error.end


codecs.register_error("name_bytes", name_bytes)


def nearest_existing(path: Path) -> Path:
    """`path` where it is there, else the closest folder above it that is: where a file or folder not yet made goes."""
    return next(folder for folder in (path, *path.parents) if folder.exists() or folder == folder.parent)


def permissions_hint(path: Path) -> str:
    """Where to look when permissions refused `path`: its own and its folder's, or, where it is not there (a file or
    folder that could not be made), the folder that could not take it: ls -ld of one that is not there says nothing."""
    if os.path.lexists(path):
        return f" (its permissions, or its folder's: ls -ld {shlex.quote(str(path))} {shlex.quote(str(path.parent))})"
    return f" (the permissions of the folder it goes in: ls -ld {shlex.quote(str(nearest_existing(path.parent)))})"


def run_cli(main) -> None:
    """Run a script's `main()`, turning a UserError, or an OSError about a path (a folder that cannot be
    made, a file that cannot be written), into one line on stderr and exit status 2, a Ctrl-C that was
    not handled (train.py's second one) into one line and status 130, a SIGTERM that nothing takes into one
    line and status 143, and a reader of stdout that has
    gone (`| head`) into a quiet stop, as other command-line tools make it; under torchrun, the broken
    connection to a process of the run that ended into one line too. A file name whose bytes are not
    UTF-8 (old zips, Windows shares) is printed as those bytes, as ls prints it, not raised about."""
    for stream in (sys.stdout, sys.stderr):  # warnings name files too
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="name_bytes")
    script_signals = ScriptSignals()
    try:
        main()
        sys.stdout.flush()  # a closed pipe raises here, not at exit
    except Terminated as stop:
        say_once(f"stopped by {stop.name}")
        sys.exit(128 + stop.signum)
    except UserError as err:
        say_error(str(err))
        sys.exit(2)
    except KeyboardInterrupt:  # under torchrun, which hands a Ctrl-C to every process: said once
        say_once("stopped at once by Ctrl-C")
        sys.exit(130)
    except BrokenPipeError:
        if not stdout_reader_gone():  # another pipe (a worker's, a subprocess's): a real error
            raise
        # stdout to /dev/null, so that flushing it at exit raises nothing more
        to_devnull(sys.stdout.fileno())
        sys.exit(128 + signal.SIGPIPE)
    except OSError as err:
        if err.filename is None:  # not about a file or folder: kept with its traceback
            tell_torchrun(traceback.format_exc())
            raise
        # a folder that cannot be made, a file that cannot be written: the path and why, as a shell tool says it,
        # and where permissions refused it (a read-only or another user's folder), where to look
        import errno
        look = " (a file system mounted read-only: write elsewhere)" if err.errno == errno.EROFS else \
            permissions_hint(Path(os.fsdecode(err.filename))) if err.errno in (errno.EACCES, errno.EPERM) else ""
        say_error(f"{err.filename}: {err.strerror}{look}")
        sys.exit(2)
    except Exception as err:
        if out_of_memory(err):  # where no script said more (train.py says it with the run's settings)
            say_error(f"out of memory: {str(err).splitlines()[0]}. A smaller --batch-size or --img-size needs less")
            sys.exit(2)
        if not (distributed() and lost_another_process(err)):
            tell_torchrun(traceback.format_exc())
            raise
        # train.py's training loop says what was saved; before it (another machine's process failed to start)
        say_error(ANOTHER_ENDED)
        sys.exit(2)
    finally:
        leave_process_group()
        script_signals.restore()


def say_error(message: str) -> None:
    """One line on stderr, written at once: under torchrun the processes' lines do not run into each other, and a
    line that every process of a machine meets (a missing --data-path, a refused resume) is said once
    (said_by_another_process); each process's error file, torchrun's summary, still gives it."""
    if not said_by_another_process(f"error: {message}"):
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    tell_torchrun(f"error: {message}")


def say_once(line: str) -> None:
    """A stop's line on stderr, after a blank line (a progress bar's may be unfinished); under torchrun, where each
    process meets the same signal, once on a machine's stderr."""
    if not said_by_another_process(line):
        print(f"\n{line}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's, whose refusal of a flag (`train.py: error: ...`, status 2) comes under a one-line usage that
    points to --help, not argparse's usage of every flag (some 20 lines for train.py) above the line that matters;
    said under torchrun as run_cli says a UserError: once on a machine's stderr (said_by_another_process), and in
    each process's error file for torchrun's summary, which otherwise showed a link to its documentation."""

    def error(self, message):
        line = f"{self.prog}: error: {message}{self.suggestions(message)}"
        tell_torchrun(line)
        if said_by_another_process(line):
            sys.exit(2)
        self.exit(2, f"usage: {self.prog} [flags] ({self.prog} --help describes them)\n{line}\n")

    def suggestions(self, message: str) -> str:
        """For flags refused as unknown, the nearest ones that --help shows: `--top-k` or `--TopK` finds `--topk`,
        `--weigths` `--weights` (a prefix of one flag, `--epo`, argparse itself takes as that flag); and for a file
        or folder named as one (-photos), how to name it."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        flags = [flag for flag, action in self._option_string_actions.items()
                 if flag.startswith("--") and action.help != argparse.SUPPRESS]

        def plain(flag: str) -> str:
            return flag.lower().replace("_", "").replace("-", "")
        meant = []
        for word in message.split()[2:]:
            if word.startswith("-") and os.path.lexists(word):  # a file or folder whose name starts with -
                meant.append(f"{word} is a {'folder' if os.path.isdir(word) else 'file'} here: write "
                             f"./{word}, or put -- before it")
                continue
            if not word.startswith("--"):
                continue
            name = word.split("=", 1)[0]
            near = [f for f in flags if plain(f) == plain(name)] or difflib.get_close_matches(name, flags, 1, 0.75)
            meant += [f"{name}: did you mean {near[0]}?"] if near else []
        return f" ({'; '.join(meant)})" if meant else ""


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end has closed (poll reports an error on it)."""
    import select
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or stdout is no file
        return False


# --- Files: one that a command will write, checked before its work ---

def check_writable(path: Path, beside: bool = False) -> None:
    """Fail now, with the reason, for a file that could not be written later (a folder of that name, no
    permission), before the work whose results it is to hold. Makes its folder; leaves no file behind.
    `beside`: the file is written beside itself and renamed into place (files.put_in_place), so its folder
    must take a new file even where the file is there and writable (a read-only folder)."""
    above = nearest_existing(path.parent)
    if not above.is_dir():
        raise UserError(f"cannot write {path}: {above} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot write {path}: its folder {err.filename or path.parent} cannot be made "
                        f"({err.strerror or err})") from None
    existed = path.exists()
    try:
        open(path, "a").close()
    except OSError as err:
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    if beside:
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        except OSError as err:
            raise UserError(f"cannot write {path}: {err.strerror or err} (its folder {path.parent} takes no new "
                            "file)") from None
        os.close(fd)
        os.unlink(probe)
    if not existed:
        path.unlink()


# --- Random state: seeds, and the generators' states as plain data for resuming ---

def seed_everything(seed: int, gpus: bool = True) -> None:
    """Python's, NumPy's and torch's generators seeded; the GPUs' too unless not `gpus` (a loader's sample, in the
    main process: the training's GPU draws go on as they were)."""
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if gpus:
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of an epoch's randomness in the training process (mixup, erasing, drop-path; the loader's
    augmentation has its own, by image), a stream per process under torchrun: the first process's as alone."""
    return seed * 1000 + epoch + 1_000_003 * rank


def rng_state() -> dict:
    import numpy as np
    import torch
    version, state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached": cached},
        "torch": torch.get_rng_state(),
        # this process's GPU only (a run resumed where fewer GPUs are seen must still find its state), and only where it
        # uses one: asked in a --device cpu run on a GPU machine, CUDA would start a context on GPU 0 in every process
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_initialized():  # the model is on the GPU by now, where the run uses one
        torch.cuda.set_rng_state(state["cuda"][0])


# --- Devices ---

def select_device(name: str, local_rank: int = 0) -> torch.device:
    """--device: auto, cpu, cuda (this process's GPU under torchrun), cuda:N, or N, the tutorial's GPU index."""
    import torch
    name = name.strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.isdigit():
        name = f"cuda:{name}"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        several = " (several GPUs: torchrun --nproc_per_node N train.py ...)" if "," in name else ""
        raise UserError(f"--device {name!r} is not a device: use auto, cpu, cuda, cuda:N, a GPU index N or mps "
                        f"(Apple){several}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        why = ("install a CUDA build of torch" if torch.version.cuda is None else  # a CPU build
               "check that the GPU and its driver are seen here (nvidia-smi; CUDA_VISIBLE_DEVICES)")
        raise UserError(f"--device {name} was asked for, but this PyTorch sees no CUDA GPU "
                        f"(torch {torch.__version__}). Use --device cpu, or {why}.")
    if name == "mps" and not torch.backends.mps.is_available():  # Apple's GPUs, asked for by name only (untested here)
        raise UserError("--device mps was asked for, but this PyTorch sees no Apple GPU (MPS: macOS 12.3 or newer on "
                        "Apple silicon, a PyTorch built for it). Use --device cpu, or auto.")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda:"):
        index = int(name[5:])
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {counted(torch.cuda.device_count(), 'GPU')}, cuda:0 to "
                            f"cuda:{torch.cuda.device_count() - 1}")
        if "LOCAL_RANK" in os.environ and index != local_rank:
            raise UserError(f"--device {name} under torchrun: each process takes the GPU of its LOCAL_RANK; "
                            "use --device cuda (or CUDA_VISIBLE_DEVICES to choose the GPUs)")
        # the current device: where RNG states, memory figures and bf16 support are read without an index
        torch.cuda.set_device(index)
    return torch.device(name)


def reuse_freed_cpu_memory() -> None:
    """Big CPU tensors from the heap and back to it, where the next step takes them again (Linux, glibc).

    glibc's malloc maps every block past its mmap threshold (32 MB at most) fresh from the system and
    unmaps it when freed, so each large activation of every step is faulted in and zeroed again page by
    page: swin_tiny training at batch 16 took some 16,000 page faults an image on the 2-core EPYC. With
    maps off and the heap kept, those vanish once the heap has grown to a step's needs (a few steps):
    swin_tiny trains 1.18x as fast (batch 16) and infers 1.46x (batch 32, predict.py's), at 1.02x and
    1.15x the peak memory (bench/bench_heap.py), which the process holds until it ends.
    PyTorch's tuning guide says jemalloc or tcmalloc through LD_PRELOAD for this; here nothing is
    installed. Elsewhere (macOS, Windows, musl) it does nothing."""
    import ctypes
    import platform
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # malloc.h's mallopt parameters
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def threads_sleep_while_waiting() -> None:
    """For train.py and predict.py as they start, before torch is imported (OpenMP reads its settings as torch
    loads it): torch's threads sleep while they wait for each other, where by default each spins for some 3 ms.
    Beside another process at work on the same cores (a second run, a notebook, the tests) a spinning thread holds
    the core that the thread it waits for needs, at every one of a step's thousands of parallel operations: the
    demo trained at 5 to 46 img/s beside a 2-thread torch process on the 2-core Xeon, 61 with threads that sleep;
    alone, as fast either way (bench/bench_threads.py). OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user are kept."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def tune_for(device, tf32: bool = False) -> None:
    """What train.py, predict.py and the benchmarks set for `device` before they run (process-wide): on a
    GPU, cuDNN's search for the fastest kernel of each input size (one size here: one search) and, with
    `tf32` (training in fp32), TF32 matmuls on the tensor cores; on a CPU, reuse_freed_cpu_memory."""
    import torch
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    elif device.type == "cpu":
        reuse_freed_cpu_memory()


def out_of_memory(err: BaseException) -> bool:
    """Whether `err` is torch's want of memory: a GPU's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    torch = sys.modules.get("torch")  # not imported here: split_data.py, which needs none, meets neither
    return torch is not None and (isinstance(err, torch.OutOfMemoryError) or
                                  isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def read_split_data(root: str, val_rate: float = 0.2):
    """The tutorial's utils.read_split_data, for scripts written against it: (train paths, train labels, val paths,
    val labels) of a folder of class folders, split as train.py splits it (the tutorial's picks), and
    ./class_indices.json written as the tutorial writes it. train.py itself uses splits.load_splits."""
    from images import write_class_indices
    from splits import load_splits
    splits = load_splits(root, val_rate, 0)
    write_class_indices(Path("class_indices.json"), splits.classes)
    train, val = splits.train, splits.val
    return [p for p, _ in train], [c for _, c in train], [p for p, _ in val], [c for _, c in val]
