"""The processes of a run: the command that starts (or resumes) one as this one was started (python, or torchrun with
as many processes), the torchrun process group (joined, known, left), what the processes share (each collective
here works in a single process too, where it does nothing), and what a process that fails under torchrun tells
torchrun and the others (a broken connection to another process, a line said once on a machine, the error file).

torch is imported inside the functions that use it, as in utils.py, which imports this module: split_data.py,
which needs none of them, starts in a fraction of a second.
"""
from __future__ import annotations  # annotations name torch types without importing torch

import datetime
import hashlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: torch is imported where it is used
    import torch


# --- The command that starts a run ---

def resume_command(run_dir, world: int | None = None, local: int | None = None) -> str:
    """The command that goes on with a run, started as it was (or as launcher's world and local say): python, or
    torchrun with as many processes (a run stopped mid-epoch must go on so: its place in the epoch is counted in each
    process's batches); the folder quoted for a shell."""
    return f"{launcher(world, local)} {train_script()} --resume {shlex.quote(str(run_dir))}"


def start_again_command(run: Path) -> str:
    """The command that starts a run again in its folder from the config.yaml it wrote as it started."""
    return f"{launcher()} {train_script()} --config {shlex.quote(str(run / 'config.yaml'))} --output " \
           f"{shlex.quote(str(run.parent))} --name {shlex.quote(run.name)}"


def go_on(run: Path) -> str:
    """How a message that stopped a run ends ("Make room, then ..."): the command that resumes it, from its best.pth
    where a stop as its first epoch was saved left only that, or that starts it again where it saved nothing."""
    if (run / "last.pth").is_file():
        return f"resume: {resume_command(run)}"
    if (run / "best.pth").is_file():
        return f"go on from its best.pth: {resume_command(run / 'best.pth')}"
    return f"start it again: {start_again_command(run)}" if (run / "config.yaml").is_file() else "start it again"


def train_script() -> str:
    """train.py as it was typed, quoted for a shell: a command said to a user who started python ../swin/train.py
    from another folder works there (python ../swin/predict.py: its train.py beside it)."""
    typed = Path(sys.argv[0])
    return shlex.quote(str(typed.with_name("train.py")) if typed.name in ("train.py", "predict.py", "split_data.py")
                       else "train.py")


def launcher(world: int | None = None, local: int | None = None) -> str:
    """What starts train.py as this process was started (or with `world` processes, `local` on each machine): python,
    or torchrun with as many processes, on as many machines."""
    if world is None:
        world, local = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    local = world if local is None else local
    if world == 1:
        return "python"
    nodes = f"--nnodes {world // local} --node_rank N --master_addr HOST " if world > local else ""
    return f"torchrun {nodes}--nproc_per_node {local}"


# --- The process group, and what the processes share ---

def init_distributed(device_name: str) -> tuple:
    """(rank, world_size, local_rank, device): torchrun's environment and this process's --device.
    Under torchrun, even with one process, starts the process group on the device's backend: NCCL for
    GPUs, gloo for a CPU (--device cpu on a GPU machine too: NCCL cannot reduce CPU tensors)."""
    import torch
    from utils import select_device  # here, not above: utils imports this module
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = select_device(device_name, local_rank)  # under torchrun, cuda means this process's GPU
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:  # plain python: one process, no group
        return 0, 1, 0, device
    # NCCL's collectives time out after 10 minutes (gloo's after 30) and end the process: the others wait at a barrier
    # while the first process downloads the tutorial's photos or the official weights (on_first_process)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                         timeout=datetime.timedelta(minutes=30))
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank, device


def launched_first() -> bool:
    """Whether this is the first process torchrun started (or no torchrun started it): known before the process group
    is joined, from the RANK torchrun sets."""
    return os.environ.get("RANK", "0") == "0"


def distributed() -> bool:
    """Whether this process is one of a torchrun group (init_distributed started it)."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def on_first_process(action, each_machine: bool = False) -> None:
    """action() in the first process while the others wait for it: a download that all then read; with
    `each_machine`, in each machine's first process (LOCAL_RANK 0), for a disk the other machines may not see (on a
    shared one, each writes a whole file and renames it into place)."""
    import torch.distributed as dist
    if not distributed() or (int(os.environ.get("LOCAL_RANK", "0")) if each_machine else dist.get_rank()) == 0:
        action()
    if distributed():
        dist.barrier()


def any_process(flag: bool, device) -> bool:
    """Whether `flag` holds in any process (a collective under torchrun)."""
    import torch
    import torch.distributed as dist
    if not distributed():
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def reduce_sums(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor of counts over all processes, in place (as it is in a single process)."""
    import torch.distributed as dist
    if distributed():
        dist.all_reduce(tensor)
    return tensor


def process_rank() -> int:
    """This process's rank in its group under torchrun, 0 alone (or before the group is joined)."""
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


def from_first_process(value):
    """The first process's `value`, in every process (a collective under torchrun; `value` as it is alone)."""
    import torch.distributed as dist
    if not distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, 0)
    return box[0]


def decided_by_first_process(decide):
    """decide() in the first process, and what it returned in every process; what it raised, the others say in
    their line (status 2) before it ends the run: a check that the others must not make themselves (the first may
    hold already what they would find taken)."""
    import torch.distributed as dist
    from utils import say_error  # here, not above: utils imports this module
    if not distributed():
        return decide()
    outcome = None
    if dist.get_rank() == 0:
        try:
            outcome = (True, decide())
        except Exception as err:  # the others told first, or they would wait for the first process until timeout
            from_first_process((False, str(err)))
            dist.barrier()  # and have said it: once this process ends, torchrun stops them, said or not
            raise
    done, value = from_first_process(outcome)
    if not done:
        say_error(value)
        dist.barrier()
        sys.exit(2)
    return value


def from_all_processes(value) -> list:
    """`value` from every process, in rank order: [value] in a single process."""
    import torch.distributed as dist
    if not distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


# --- A process that fails under torchrun ---

# what a process says when another of its run has ended under torchrun (run_cli, run_log.failure_explained)
ANOTHER_ENDED = "another process of this run ended (its own message, or torchrun's summary, says why) and the " \
                "connection to it broke"


def lost_another_process(err: Exception) -> bool:
    """Whether `err` is what a collective raises in a process of a torchrun run when another has died: a broken
    connection, in gloo's words (a RuntimeError) or NCCL's (a DistBackendError), or a DistNetworkError."""
    import torch.distributed as dist
    said = ("by peer", "Connection closed", "Connection reset", "Broken pipe", "Socket closed", "remote process exited")
    return isinstance(err, dist.DistNetworkError) or (
        isinstance(err, RuntimeError) and any(words in str(err) for words in said))


def leave_process_group() -> None:
    """Under torchrun, the process group closed before a script exits on an error (a UserError after the processes
    met, a second Ctrl-C): left to the interpreter's exit, gloo's threads at times (1 in 5 to 10) ended the process
    with `terminate called without an active exception` and SIGABRT after its error line, which torchrun's summary
    then gave as the cause. Local: it waits on no other process."""
    if "torch.distributed" not in sys.modules:  # never started one (split_data.py, plain python before torch)
        return
    import torch.distributed as dist
    try:
        # gloo's alone (CPU runs): NCCL's teardown with a collective still pending can wait for it, and is untried
        if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
            dist.destroy_process_group()
    except Exception:  # a group whose connections broke (another process died): the exit goes on all the same
        pass


def said_by_another_process(line: str) -> bool:
    """Under torchrun, whether another process of this machine has said `line` to the same stderr (a terminal, a
    pipe, a log) already; if not, it is this process's to say, and the others' lines the same are not. The first
    process to meet it claims it, by a file made exclusively in torchrun's folder of this attempt (the parent of
    every process's error file, `<run>/attempt_<n>/<local rank>/error.json`), named by the line and the stream: the
    others, which meet the same error at about the same time, say nothing. Where there is no such folder to write
    (no torchrun, another launcher) or each process has a log of its own (torchrun --redirects), every process says
    its lines."""
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not error_file or int(os.environ.get("LOCAL_WORLD_SIZE", "1")) < 2:
        return False
    try:
        stream = os.fstat(sys.stderr.fileno())
        key = hashlib.sha256(f"{stream.st_dev}:{stream.st_ino}:{line}".encode(errors="surrogateescape"))
        os.close(os.open(Path(error_file).parent.parent / f"said-{key.hexdigest()[:20]}",
                         os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return True
    except (OSError, ValueError, AttributeError):  # a stderr without a descriptor (a test's), a folder not there
        return False
    return False


def tell_torchrun(why: str) -> None:
    """Under torchrun, why this process fails, for its summary of the failed processes: it shows what each
    process wrote to its error file (the path in TORCHELASTIC_ERROR_FILE, in the JSON torch's own
    errors.record writes), and a link to its documentation where there is none."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    record = {"message": why.strip(), "extraInfo": {"py_callstack": why.strip(), "timestamp": str(int(time.time()))}}
    try:
        with open(path, "w") as f:
            json.dump({"message": record}, f)
    except OSError:  # the summary shows its link instead: nothing lost
        pass
