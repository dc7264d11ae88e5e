"""A run under torchrun whose processes fail (processes.py): another process lost told from other errors, before,
during and after training; torchrun's summary of a failed process giving its line; a line every process meets said
once; the process group closed before a process exits on a user's error."""
import sys

import pytest
import torch

import engine
import processes
import train
import utils
from script_runs import FAST
from utils import UserError


def test_a_process_that_died_under_torchrun_is_told_from_other_errors():
    """What the others' next collective raises when a process of the run died (torchrun then also sends them
    SIGTERM): one line that says so and how to resume, where the traceback of gloo's socket read was."""
    gloo = RuntimeError("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
                        "[127.0.0.1]:1232: Connection reset by peer. This is typically caused by a remote worker")
    assert processes.lost_another_process(gloo)
    assert processes.lost_another_process(torch.distributed.DistBackendError("NCCL error: remote process exited"))
    assert not processes.lost_another_process(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not processes.lost_another_process(torch.distributed.DistBackendError("NCCL error: invalid usage"))
    assert not processes.lost_another_process(ConnectionResetError("Connection reset by peer"))  # a loader worker's


def test_a_process_lost_once_the_run_had_trained_its_epochs_says_nothing_of_the_training_is_lost(
        flowers, tmp_path, monkeypatch):
    """Under torchrun, a process that dies after the last epoch was saved (killed as the first writes the report)
    breaks the others' last collectives: the agreement on a stop after the last epoch's save, the barrier after the
    report. Their line said the steps since last.pth were lost and gave a resume that had nothing to train; the
    training is done and saved (and the report written, where it got that far): the line says so, and gives the
    command that writes the report where it may be missing."""
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:27058. This is typically caused by a remote worker crashing.")
    agreed, calls = engine.stop_agreed, []

    def lost_after_the_last_save(stop, device):
        calls.append(1)
        if len(calls) == 2:  # the first at the epoch's last step, the second after its last.pth: the run's last
            raise gloo
        return agreed(stop, device)
    monkeypatch.setattr(engine, "stop_agreed", lost_after_the_last_save)
    monkeypatch.setattr(train, "distributed", lambda: True)
    run = tmp_path / "a"
    with pytest.raises(UserError) as told:
        train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path,
                                     "--name", "a"]])
    assert str(told.value) == (
        f"{processes.ANOTHER_ENDED} after the run's last epoch, 1, was saved in {run}: nothing of the training "
        f"is lost. Where its report is missing, python train.py --eval-only --resume {run / 'best.pth'} writes the "
        f"report, in {run / 'eval_val'}")
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1 and not (run / "report.html").exists()

    monkeypatch.setattr(engine, "stop_agreed", agreed)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: (_ for _ in ()).throw(gloo))  # after the report
    with pytest.raises(UserError) as told:
        train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path,
                                     "--name", "b"]])
    assert str(told.value) == (f"{processes.ANOTHER_ENDED} after the run had finished, trained, saved and reported "
                               f"in {tmp_path / 'b'}: nothing is lost")


def test_a_process_lost_before_training_began_is_one_line_too(monkeypatch, capsys):
    """Another machine's process that failed at its start (its data folder missing there) breaks the connection
    in this one's setup, before the training loop's own message: run_cli says it in one line, status 2; any
    other error keeps its traceback."""
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:27058. This is typically caused by a remote worker crashing.")

    def raises(err):
        def main():
            raise err
        return main
    monkeypatch.setattr(utils, "distributed", lambda: True)
    with pytest.raises(SystemExit) as stopped:
        utils.run_cli(raises(gloo))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("error: another process of this run ended (its own message, or torchrun's "
                                       "summary, says why) and the connection to it broke\n")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        utils.run_cli(raises(RuntimeError("CUDA error: an illegal memory access was encountered")))
    monkeypatch.setattr(utils, "distributed", lambda: False)  # not under torchrun: a bug, with its traceback
    with pytest.raises(RuntimeError, match="Connection closed"):
        utils.run_cli(raises(gloo))


def test_torchrun_s_summary_of_a_failed_process_shows_its_error(monkeypatch, tmp_path, capsys):
    """torchrun ends with a summary of the processes that failed: each one's error file (TORCHELASTIC_ERROR_FILE),
    read by torch's own ProcessFailure, gives the line it printed, or a bug's traceback, not a documentation link."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def raises(err):
        def main():
            raise err
        return main

    def summary(error_file):
        failure = ProcessFailure(local_rank=0, pid=1, exitcode=2, error_file=str(error_file))
        return ChildFailedError("train.py", {0: failure}).format_msg()
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "0.json"))
    with pytest.raises(SystemExit):
        utils.run_cli(raises(UserError("checkpoint not found: runs/x/best.pth")))
    assert capsys.readouterr().err == "error: checkpoint not found: runs/x/best.pth\n"
    assert "traceback : error: checkpoint not found: runs/x/best.pth\n" in summary(tmp_path / "0.json")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "1.json"))
    with pytest.raises(ZeroDivisionError):
        utils.run_cli(raises(ZeroDivisionError("a bug")))
    shown = summary(tmp_path / "1.json")
    assert "Traceback (most recent call last)" in shown and "ZeroDivisionError: a bug" in shown
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "no" / "such" / "folder.json"))
    with pytest.raises(SystemExit):  # an error file that cannot be written: the line all the same
        utils.run_cli(raises(UserError("bad path")))
    assert capsys.readouterr().err == "error: bad path\n"


def test_an_error_every_process_meets_under_torchrun_is_said_once(monkeypatch, tmp_path):
    """torchrun's processes share its stderr: a line that each meets (a missing --data-path, a mistyped flag, a
    Ctrl-C before training) was printed once per process. The first to meet it says it; the others end with the
    same status, silent, and every process's error file (torchrun's summary) still gives it. A line of its own, or a
    stream of its own (torchrun --redirects), is said."""
    import json
    attempt = tmp_path / "run" / "attempt_0"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")

    def process(local_rank, error, stream="stderr", status=2):
        (attempt / str(local_rank)).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(attempt / str(local_rank) / "error.json"))
        with open(tmp_path / stream, "a") as f:
            monkeypatch.setattr(sys, "stderr", f)

            def main():
                if isinstance(error, list):  # a flag argparse refuses
                    train.build_parser().parse_args(error)
                raise error
            with pytest.raises(SystemExit) as ended:
                utils.run_cli(main)
        assert ended.value.code == status
        if status != 2:  # a stop: torchrun's summary names the signal
            return None
        return json.loads((attempt / str(local_rank) / "error.json").read_text())["message"]["message"]

    for rank in (0, 1):
        assert process(rank, UserError("data path not found: nowhere")) == "error: data path not found: nowhere"
    assert (tmp_path / "stderr").read_text() == "error: data path not found: nowhere\n"
    process(1, UserError("only here"))
    process(0, UserError("data path not found: nowhere"), stream="rank0.log")
    assert (tmp_path / "stderr").read_text() == "error: data path not found: nowhere\nerror: only here\n"
    assert (tmp_path / "rank0.log").read_text() == "error: data path not found: nowhere\n"
    for rank in (0, 1):
        said = process(rank, ["--epochs", "0"], stream="flags")
        assert said.endswith(": error: argument --epochs: must be >= 1, not 0")  # the program's name: argv[0]'s
    assert (tmp_path / "flags").read_text().count("error: argument --epochs") == 1
    for rank in (0, 1):  # torchrun hands a Ctrl-C to every process: one that stops them at once, said once
        process(rank, KeyboardInterrupt(), stream="stops", status=130)
    assert (tmp_path / "stops").read_text() == "\nstopped at once by Ctrl-C\n"
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE")  # not under torchrun: each says its line
    with open(tmp_path / "alone", "a") as f:
        monkeypatch.setattr(sys, "stderr", f)
        for _ in range(2):
            with pytest.raises(SystemExit):
                utils.run_cli(lambda: (_ for _ in ()).throw(UserError("data path not found: nowhere")))
    assert (tmp_path / "alone").read_text().count("error:") == 2


def test_an_error_under_torchrun_closes_the_process_group_before_the_process_exits(tmp_path, capsys):
    """A user's error met after the processes joined their group (a wrong --num-classes, an empty --data-path):
    left open to the interpreter's exit, gloo's threads at times aborted the process after its line
    (`terminate called without an active exception`, SIGABRT, which torchrun's summary gave as the cause)."""
    import torch.distributed as dist

    def fails():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
        raise UserError("--num-classes 4 was given, but data has 5 class folders")
    try:
        with pytest.raises(SystemExit) as stopped:
            utils.run_cli(fails)
        assert stopped.value.code == 2 and not dist.is_initialized()
        assert capsys.readouterr().err == "error: --num-classes 4 was given, but data has 5 class folders\n"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
