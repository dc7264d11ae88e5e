"""workers.py: loader worker processes: how many, what each keeps, how they stop, how a death is told."""
import collections
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import torch
from torch.utils.data._utils import signal_handling

import workers
from script_runs import ROOT
from loaders import ImageDataset, build_loader, collate_skipping_failures


def test_default_workers_follow_the_cores_per_gpu_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert workers.default_workers(torch.device("cpu")) == 8
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert workers.default_workers(torch.device("cuda")) == 15  # one core left for the training process
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun, 4 GPUs on this machine
    assert workers.default_workers(torch.device("cuda", 2), processes=8) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)  # one core: a worker all the same
    assert workers.default_workers(torch.device("cuda")) == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert workers.default_workers(torch.device("cuda")) == 1


def test_a_training_loaders_worker_keeps_its_last_batches_where_shared_memory_has_room(monkeypatch):
    """A worker keeps its last HELD_BATCHES stacked batches, so that it, not the training process, frees their
    shared memory (bench_data.py: 7.2 ms of the training process's CPU a batch of 128 at 224 px, 1.6 held);
    kept only where /dev/shm has room for twice what the loaders of this machine then keep there."""
    monkeypatch.setattr(workers, "_held", collections.deque(maxlen=2))  # as start_loader_worker leaves a worker
    made = [collate_skipping_failures([(torch.full((3, 2, 2), i, dtype=torch.uint8), 0, "a.jpg")])[0]
            for i in range(3)]
    assert [id(t) for t in workers._held] == [id(t) for t in made[1:]]
    gib = 2 ** 30
    batch = 128 * 3 * 224 ** 2  # 19 MB: 15 workers keep 6 each, 1.7 GB, twice that 3.5 GB
    for free, processes, want in ((64 * gib, 1, workers.HELD_BATCHES), (3 * gib, 1, 0), (8 * gib, 4, 0)):
        monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result((4096, 4096, 0, 0, free // 4096,
                                                                          0, 0, 0, 0, 255)))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes))
        assert workers.batches_to_hold(15, batch) == want, (free, processes)
    loader = build_loader(ImageDataset([("a.jpg", 0)], None), 1, train=True, num_workers=1, held_batches=3)
    assert loader.worker_init_fn.func is workers.start_loader_worker and loader.worker_init_fn.keywords == \
        {"held_batches": 3, "nice": workers.NICE}


def test_a_worker_started_afresh_keeps_its_last_batches_outlives_stop_signals_and_refuses_bombs():
    """What start_loader_worker sets in a process of its own (as a spawned or forkserver worker starts): its last
    held_batches batches kept, no more (shared memory); a SIGTERM or Ctrl-C to the process group (`timeout`, SLURM,
    `docker stop`) ignored, the training process deciding what follows; Pillow's decompression-bomb warning an
    error, as where the folder was listed."""
    code = ("import os, signal, warnings, workers\n"
            "from PIL import Image\n"
            "workers.start_loader_worker(0, held_batches=2)\n"
            "for batch in range(5):\n"
            "    workers.hold(batch)\n"
            "print(list(workers._held))\n"
            "for sig in (signal.SIGTERM, signal.SIGINT):\n"
            "    os.kill(os.getpid(), sig)\n"
            "print('alive')\n"
            "try:\n"
            "    warnings.warn('a 100 MP image', Image.DecompressionBombWarning)\n"
            "except Image.DecompressionBombWarning:\n"
            "    print('refused')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.split("\n") == ["[3, 4]", "alive", "refused", ""], done.stderr[-2000:]


def test_a_broken_pipe_is_a_dead_worker_where_a_child_ended_on_a_signal_alone(monkeypatch):
    """Where PyTorch has no record (a forkserver's workers signal it, not this process), a worker that ended on a
    signal is found among this process's children; one that ended by itself is no death."""
    monkeypatch.setattr(signal_handling, "_error_if_any_worker_fails", lambda: None)
    for target, said in ((int, None), (time.sleep, "is killed by signal: Killed.")):
        child = multiprocessing.get_context("fork").Process(target=target, args=(60,) if target is time.sleep else ())
        child.start()
        try:
            if target is time.sleep:
                os.kill(child.pid, signal.SIGKILL)
            while child.exitcode is None:  # not joined: still among multiprocessing's children, as a worker is
                time.sleep(0.01)
            found = workers.recorded_worker_death(broken_pipe=True)
            assert found == said if said is None else found.endswith(said), found
            assert workers.recorded_worker_death(broken_pipe=False) is None
        finally:
            child.join()


class Priorities(torch.utils.data.Dataset):
    """Items that tell the priority (nice value) of the process that made them."""

    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.tensor(os.getpriority(os.PRIO_PROCESS, 0)), 0, f"{index}.jpg"


def test_loader_workers_run_below_the_training_process():
    """The training process, which launches the GPU's work, goes first when the cores are short; the workers
    take what it leaves (workers.NICE)."""
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    images, *_ = next(iter(build_loader(Priorities(), 2, train=False, num_workers=1)))
    assert workers.NICE > 0 and images.tolist() == [min(19, mine + workers.NICE)] * 2
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine


def test_a_dead_loader_worker_is_found_from_what_its_death_broke_first(monkeypatch):
    """PyTorch's RuntimeError names the worker; a pipe that broke first (EOFError, a reset connection) is
    confirmed by PyTorch's record of its workers, given a moment to show the death; other errors are not
    a worker's death. Once one is found, PyTorch's SIGCHLD handler is gone (it would raise again) and the
    other workers are killed (here a stand-in: this process's children are other tests')."""
    checks, killed = {"n": 0}, []
    monkeypatch.setattr(workers, "kill_remaining_workers", lambda: killed.append(True))

    def record(dead_after: int):
        def check():
            checks["n"] += 1
            if checks["n"] > dead_after:
                raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")
        return check

    handler = signal.getsignal(signal.SIGCHLD)
    try:
        monkeypatch.setattr(signal_handling, "_error_if_any_worker_fails", record(dead_after=10**9))
        assert workers.dead_loader_worker(ValueError("a bug")) is None  # nothing on record: not a death
        assert workers.dead_loader_worker(RuntimeError("a bug")) is None and not killed
        signal.signal(signal.SIGCHLD, lambda *args: None)
        checks["n"] = 0
        monkeypatch.setattr(signal_handling, "_error_if_any_worker_fails", record(dead_after=3))
        assert workers.dead_loader_worker(ConnectionResetError(104, "reset")).startswith("DataLoader worker (pid 7)")
        assert checks["n"] == 4 and signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL and killed == [True]
        assert workers.dead_loader_worker(RuntimeError("DataLoader worker (pid(s) 9) exited unexpectedly")) == \
            "DataLoader worker (pid(s) 9) exited unexpectedly"
    finally:
        signal.signal(signal.SIGCHLD, handler)


def test_a_worker_death_that_comes_during_the_wait_for_it_is_not_a_second_error(monkeypatch):
    """PyTorch's SIGCHLD handler raises its RuntimeError from whatever runs when a worker dies: after a
    broken pipe that is dead_loader_worker's own wait for the death's record, and it must not turn the
    run's one-line error into a traceback (seen once in test_stops' worker kill)."""
    checks = {"n": 0}

    def check():  # the death on record from the sixth look, some 250 ms in
        checks["n"] += 1
        if checks["n"] > 5:
            raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")

    def raising_handler(*args):  # what PyTorch's handler does when a worker has died
        raise RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. ")
    monkeypatch.setattr(signal_handling, "_error_if_any_worker_fails", check)
    monkeypatch.setattr(workers, "kill_remaining_workers", lambda: None)  # this process's children are other tests'
    handler = signal.signal(signal.SIGCHLD, raising_handler)
    child = subprocess.Popen(["sleep", "0.1"])  # its end signals SIGCHLD during the wait
    try:
        assert workers.dead_loader_worker(ConnectionResetError(104, "reset")).startswith("DataLoader worker (pid 7)")
    finally:
        child.wait()
        signal.signal(signal.SIGCHLD, handler)


def test_a_loader_worker_says_nothing_of_a_hand_over_broken_off(monkeypatch):
    """When a worker dies, the training process may break off its fetch of another worker's batch mid-handshake,
    whose resource-sharer thread then prints that connection's traceback through sys.excepthook just before the
    worker is ended (the test above failed so, once, on 2026-11-29): a worker's hook drops those, and only those."""
    seen = []
    hook = workers.quiet_on_broken_connections(lambda kind, value, traceback: seen.append(kind))
    for kind in (EOFError, ConnectionResetError, BrokenPipeError, multiprocessing.AuthenticationError, ValueError):
        hook(kind, kind(), None)
    assert seen == [ValueError]
    loader = build_loader([0], batch_size=1, train=False, num_workers=1)
    assert loader.worker_init_fn.func is workers.start_loader_worker
    # as a worker starts (here without lowering this process's priority): its hook in front of the one it had
    seen.clear()
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, traceback: seen.append(kind))
    monkeypatch.setattr(workers, "_held", None)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        workers.start_loader_worker(0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    sys.excepthook(EOFError, EOFError(), None)
    sys.excepthook(ValueError, ValueError(), None)
    assert seen == [ValueError]
