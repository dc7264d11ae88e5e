"""Loader worker processes: how many, their priority, what each keeps, how they stop, and how the training
process tells that one died.

    from workers import default_workers, dead_loader_worker
    cfg.workers = default_workers(device)         # the cores per GPU process, less one
    except (RuntimeError, EOFError, ConnectionError) as err:
        if (died := dead_loader_worker(err)) is not None: ...   # the out-of-memory killer: one line, not a traceback

loaders.build_loader starts each worker with start_loader_worker; collate_skipping_failures hands each stacked
batch to `hold`.
"""
import atexit
import collections
import multiprocessing
import os
import signal
import sys
import time

import torch

from images import set_image_checks
from stopping import STOP_SIGNALS


# A training batch is shared memory that the worker fills and the training process maps. Whichever process lets go
# of it last has the kernel free its pages, some 5 ms a batch of 128 at 224 px on the 2-core EPYC (bench_data.py):
# CPU time of the training process, which on a GPU has the step's work to launch. So a training loader's worker
# keeps its last HELD_BATCHES batches (start_loader_worker): a batch waits at most two more of its worker's in the
# loader's queue (prefetch_factor), so by the third the training process is done with it, and the worker frees it.
# That is one batch a worker more in shared memory, kept only where /dev/shm has room (batches_to_hold).
HELD_BATCHES = 3
_held = None  # in a worker of a training loader: its last HELD_BATCHES batches


def hold(batch) -> None:
    """Keep `batch`, in a worker of a training loader, until its HELD_BATCHES-th successor."""
    if _held is not None:
        _held.append(batch)


def batches_to_hold(workers: int, batch_bytes: int) -> int:
    """HELD_BATCHES where /dev/shm has room for twice what this machine's loaders then keep there (each worker's
    queued, made and held batches, for every training process of the machine); else 0."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (not Linux): PyTorch shares memory otherwise; nothing to weigh
        return 0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    kept = processes * workers * (2 + 1 + HELD_BATCHES) * batch_bytes
    return HELD_BATCHES if shm.f_bavail * shm.f_frsize >= 2 * kept else 0


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a container's or taskset's share, where the OS says)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(device: torch.device, processes: int = 1) -> int:
    """Loader workers per training process. With GPUs: the CPU cores this process may use, shared
    among the GPU processes of this machine, less one core for the process itself (it launches the GPU
    work). On a CPU the model needs the cores too: their count, at most 8."""
    cores = usable_cores()
    if device.type != "cuda":
        return min(8, cores)
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", min(processes, max(torch.cuda.device_count(), 1))))
    return max(1, cores // per_machine - 1)


# The process that launches a GPU's work needs a core the moment it has something to launch; the workers, whose
# batches wait in the loader's queue anyway, do not. With a worker per core but one (default_workers) and the
# pinning thread beside the training process, the cores are one short, and the kernel's scheduler would give the
# training process its share only: the GPU waits while a worker decodes. So workers run at a lower priority
# (a nice value of NICE): the training process goes first, and they take every cycle it leaves.
NICE = 10


def start_loader_worker(worker_id: int, held_batches: int = 0, nice: int = 0) -> None:
    """A loader worker lowers its priority by `nice` (NICE, above), and keeps its last `held_batches` batches
    (HELD_BATCHES, above). It ignores Ctrl-C, SIGTERM and the other stop signals (stopping.STOP_SIGNALS). A
    terminal, `timeout`, SLURM and `docker stop` signal the whole process group, and the training process alone
    decides what follows: it finishes its step, saves, then ends its workers (stopping.StopSignal). PyTorch's own
    SIGTERM handler in a worker
    ends it with the signal, which fails the step; a worker whose process has gone exits by itself.
    And it says nothing of a hand-over of a batch that the training process broke off: when another worker
    dies, the training process may drop, mid-handshake, its fetch of this worker's batch (the shared memory's
    file, which multiprocessing's resource sharer hands over), and the sharer's thread would print the
    traceback of that connection in the moment before the worker is ended (dead_loader_worker)."""
    global _held
    _held = collections.deque(maxlen=held_batches) if held_batches else None
    if nice and hasattr(os, "nice"):  # not on Windows
        os.nice(nice)
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked while the training process forked its workers (held_signals)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sys.excepthook = quiet_on_broken_connections(sys.excepthook)
    set_image_checks()  # a worker started afresh (spawn) has not inherited them


def stop_workers(*loaders) -> None:
    """End the worker processes of `loaders` (DataLoaders, or their iterators) now: a run ends them before it
    gives up its signal handling, since PyTorch's cleanup, when the loaders are collected as the process exits,
    prints its traceback for a Ctrl-C meanwhile. `_iterator`, `_shutdown_workers`: PyTorch's own names for a
    loader's persistent iterator and its cleanup (which may be called twice), looked up, not relied on."""
    for loader in loaders:
        shut_down = getattr(getattr(loader, "_iterator", loader), "_shutdown_workers", None)
        if shut_down is not None:
            shut_down()


def quiet_on_broken_connections(hook):
    """sys.excepthook `hook`, saying nothing of a connection that the other end broke off."""
    def excepthook(kind, value, traceback):
        if not issubclass(kind, (EOFError, ConnectionError, multiprocessing.AuthenticationError)):
            hook(kind, value, traceback)
    return excepthook


def dead_loader_worker(err: Exception) -> str | None:
    """PyTorch's words for a loader worker that has died (the out-of-memory killer, most often), when `err`
    is what that did to the training process: PyTorch's RuntimeError, or whatever the broken pipe to the
    worker raised first (an EOFError while a batch came through it), which PyTorch's record of its workers
    then confirms. None for any other error. Once one is found, or waited for, the process is ending, so
    PyTorch's SIGCHLD handler goes: it raises from whatever runs when a worker ends, which would be this
    wait, or what ends the other workers. Once one is found, the other workers are killed at once (the run
    is ending; they hold nothing to save): left up while the process waits for its checkpoints, one
    whose hand-over of a batch the dying worker's error broke off would print the traceback of it."""
    broken_pipe = isinstance(err, (EOFError, ConnectionError))
    if isinstance(err, RuntimeError) and str(err).startswith("DataLoader worker (pid"):
        words = str(err)
    else:  # a broken pipe can come before the worker's death is on record: two seconds are given for it
        if broken_pipe and hasattr(signal, "SIGCHLD"):
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        deadline = time.monotonic() + (2.0 if broken_pipe else 0.0)
        while (words := recorded_worker_death(broken_pipe)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    if words is not None:
        kill_remaining_workers()
    return words


def recorded_worker_death(broken_pipe: bool = False) -> str | None:
    """PyTorch's words for a loader worker of this process on record as dead, if any. PyTorch keeps that record from
    SIGCHLD, which a worker started by a forkserver (Python 3.14's default on Linux) sends to the forkserver, its
    parent, not to this process: where the error was the `broken_pipe` to a worker, a worker that multiprocessing
    knows has ended on a signal is said in the same words."""
    try:
        torch.utils.data._utils.signal_handling._error_if_any_worker_fails()
    except RuntimeError as found:
        return str(found)
    except AttributeError:  # a PyTorch without that record: only its own words are known
        pass
    # the processes this one started, the loaders' workers alone here; exitcode asks the forkserver how they ended
    for process in list(getattr(multiprocessing.process, "_children", ())) if broken_pipe else ():
        if process.exitcode is not None and process.exitcode < 0:
            return f"DataLoader worker (pid {process.pid}) is killed by signal: {signal.strsignal(-process.exitcode)}."
    return None


@atexit.register  # registered after multiprocessing's own exit handler, so it runs before it
def kill_remaining_workers() -> None:
    """A process that ends on an error, with its loader's workers still up, would wait for ever at exit:
    multiprocessing ends them with SIGTERM, which they ignore, then waits for them. They are killed first,
    once PyTorch's SIGCHLD handler, which would report each of them dying as an error, is gone."""
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for child in multiprocessing.active_children():
        child.kill()
