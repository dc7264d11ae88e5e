"""stopping.py's handling of signals, apart from a training run: a script's stop signals (run_cli's one line and
status), the run's stop request (said once, under torchrun by the first process; a second Ctrl-C at once; a signal
started ignored stays so), signals held while loader workers start, the resource tracker kept out of a signal to
the group, and a Ctrl-C while torch imports. How a run itself ends on them: test_stops.py."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import stopping
import utils
from script_runs import ROOT


TRACKER = """
import multiprocessing, os, signal, sys, time
sys.path.insert(0, {root!r})
multiprocessing.set_start_method({method!r}, force=True)
import stopping
from multiprocessing import resource_tracker
stopping.ScriptSignals()
lock = multiprocessing.Lock()  # as tqdm's first progress bar makes one: the tracker is up
pid = resource_tracker._resource_tracker._pid
os.kill(pid, signal.SIGHUP)
os.kill(pid, signal.SIGUSR1)
time.sleep(0.5)
print(os.waitpid(pid, os.WNOHANG) == (0, 0))  # still running
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver and the signal mask: Linux")
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_the_resource_tracker_of_workers_started_afresh_outlives_a_signal_to_the_group(method):
    """Where workers start afresh (forkserver: Linux's default from Python 3.14), multiprocessing's resource tracker
    ignores only SIGINT and SIGTERM: a SIGHUP or SIGUSR1 to the process group killed it, and a stopped run ended
    with a traceback for each lock. A script starts it with the stop signals blocked."""
    out = subprocess.run([sys.executable, "-c", TRACKER.format(root=str(ROOT), method=method)], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "True" and out.returncode == 0, out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP])
def test_a_stop_signal_that_nothing_takes_is_one_line_and_its_status(signum, capsys, monkeypatch):
    """Outside train.py's training loop (which finishes its step and saves), as the images are checked before it:
    a scheduler's SIGTERM (or SLURM's SIGUSR1 ahead of a time limit, a closed terminal's SIGHUP) ends the script at
    once, saying so, where its default ended it without a word."""
    def main():
        os.kill(os.getpid(), signum)
        time.sleep(10)
    monkeypatch.delenv("RANK", raising=False)
    before = signal.getsignal(signum)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as ended:
        utils.run_cli(main)
    assert ended.value.code == 128 + signum and capsys.readouterr().err == f"\nstopped by {signum.name}\n"
    assert time.perf_counter() - start < 5 and signal.getsignal(signum) is before


def test_a_second_sigterm_keeps_the_first_stop_and_a_second_ctrl_c_stops_at_once(capsys):
    """Under torchrun a second Ctrl-C reaches the processes as SIGTERM, and so does SLURM's signal, which
    torchrun hands on after it reached them: the stop under way goes on, said once."""
    stop = stopping.StopSignal()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested == "SIGINT" and capsys.readouterr().err.count("received") == 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()


def test_a_ctrl_c_once_the_run_has_saved_and_is_ending_changes_nothing(capsys):
    """As it ends its workers after a stop, a second Ctrl-C said "stopped at once by Ctrl-C", without the last.pth
    just saved or the command that resumes: once settled, the run's stop goes on as it was, said once."""
    stop = stopping.StopSignal()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        stop.settle()
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt
        assert stop.requested == "SIGINT" and capsys.readouterr().err.count("received") == 1
    finally:
        stop.restore()


@pytest.mark.parametrize("rank, signum, said", [
    ("0", signal.SIGTERM, "SIGTERM received: finishing this step, then saving last.pth (a second Ctrl-C: torchrun"),
    ("1", signal.SIGTERM, ""),
    (None, signal.SIGINT, "SIGINT received: finishing this step, then saving last.pth (Ctrl-C again to stop at once)"),
    (None, signal.SIGTERM, "SIGTERM received: finishing this step, then saving last.pth\n"),
    (None, signal.SIGHUP, "SIGHUP received: finishing this step, then saving last.pth\n"),  # a closed terminal
    (None, signal.SIGUSR1, "SIGUSR1 received: finishing this step, then saving last.pth\n"),  # SLURM's warning
    (None, signal.SIGUSR2, "SIGUSR2 received: finishing this step, then saving last.pth\n")])
def test_a_stop_is_said_by_the_first_process_only_with_what_a_second_would_do(rank, signum, said, monkeypatch,
                                                                               capsys):
    """torchrun hands Ctrl-C to every process of the run: one notice, not one a process; it turns a second into
    SIGTERM, which changes nothing here, and kills the processes after its --shutdown-timeout."""
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    stop = stopping.StopSignal()
    try:
        os.kill(os.getpid(), signum)
        assert stop.requested == signal.Signals(signum).name
    finally:
        stop.restore()
    err = capsys.readouterr().err
    assert (said in err if said else "received" not in err), err


def test_a_signal_the_process_was_started_ignoring_stays_ignored_and_each_stop_has_its_status():
    """nohup's SIGHUP: a run started under it goes on when the terminal closes. The status of a stop by a signal
    is a shell's for a process that the signal ended."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        stop = stopping.StopSignal()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and callable(signal.getsignal(signal.SIGTERM))
        stop.restore()
    finally:
        signal.signal(signal.SIGHUP, before)
    statuses = {}
    for requested in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "--stop-after-epochs 2",
                      "a stop on another process"):
        stop.requested = requested
        statuses[requested] = stop.exit_status()
    assert list(statuses.values()) == [130, 143, 129, 138, 140, 0, 0]


def test_signals_while_loader_workers_start_are_held_then_raised_once_they_have():
    """A stop signal while the workers fork would reach one before it ignores it, or the training process inside
    fork's hooks, where Python drops what the handler raises: held, it arrives once they are up."""
    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with stopping.held_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert seen == []
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_ctrl_c_while_torch_imports_ends_the_script_as_a_shell_command_ends():
    """No traceback of the import it broke into: the process ends by the signal, status 130 in a shell."""
    started = ("import runpy, sys; sys.argv = ['predict.py', '--help']; print('starting', file=sys.stderr, "
               "flush=True); runpy.run_path('predict.py', run_name='__main__')")  # predict.py, said as it starts
    proc = subprocess.Popen([sys.executable, "-c", started], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline() == "starting\n"
    time.sleep(0.3)  # into the imports: torch, torchvision and timm take a second or more on any machine
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGINT and "Traceback" not in err, (proc.returncode, err)


def test_a_file_refused_by_its_permissions_is_one_line_that_says_where_to_look(capsys, tmp_path):
    """An error about a file that no script says more of (a read-only --output, another user's run folder): the path
    and why, as a shell tool says it, and for permissions the command that shows them; another errno, the path and
    why alone."""
    import errno

    def refused():
        raise PermissionError(errno.EPERM, "Operation not permitted", str(tmp_path / "runs/my run/.lock"))
    with pytest.raises(SystemExit) as exited:
        utils.run_cli(refused)
    assert exited.value.code == 2  # not there, nor its folder: ls -ld of them would say nothing
    assert capsys.readouterr().err == f"error: {tmp_path}/runs/my run/.lock: Operation not permitted (the " \
                                      f"permissions of the folder it goes in: ls -ld {tmp_path})\n"

    def refused_here():
        raise PermissionError(errno.EACCES, "Permission denied", __file__)
    with pytest.raises(SystemExit):
        utils.run_cli(refused_here)
    here = Path(__file__)
    assert capsys.readouterr().err == f"error: {here}: Permission denied (its permissions, or its folder's: ls -ld " \
                                      f"{here} {here.parent})\n"

    def gone():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/runs/x")
    with pytest.raises(SystemExit):
        utils.run_cli(gone)
    assert capsys.readouterr().err == "error: /runs/x: No such file or directory\n"


def test_the_exit_status_of_a_stop_is_the_shells():
    """128 + the signal's number, as a shell gives a process its signal ended (130 for a Ctrl-C): a script or a
    scheduler tells a stop from a run that finished; --stop-after-epochs is a finish."""
    assert stopping.exit_status("Ctrl-C") == 130
    assert stopping.exit_status("SIGTERM") == 128 + signal.SIGTERM
    assert stopping.exit_status("--stop-after-epochs 2") == 0 and stopping.exit_status(None) == 0


@pytest.mark.parametrize("code", ["EPIPE", "EIO"])  # a pipe's reader gone; a terminal gone
def test_a_stream_whose_reader_has_gone_takes_the_stops_notice_without_raising(code, tmp_path):
    """Raised in the signal handler, the write would end the run before its save."""
    import errno
    number = getattr(errno, code)

    class Gone:
        def __init__(self):
            self.file, self.failed = open(tmp_path / "out", "w"), False

        def write(self, text):
            if not self.failed:
                self.failed = True
                raise OSError(number, os.strerror(number))
            return self.file.write(text)

        def flush(self):
            self.file.flush()

        def fileno(self):
            return self.file.fileno()

    gone = Gone()
    try:
        assert stopping.OutlivedReader(gone).write("a stop's notice\n") == len("a stop's notice\n")
    finally:
        gone.file.close()


def test_held_signals_raise_the_first_signal_caught():
    """Signals held while workers start are handled once they are up, the first one first: the stop it asked."""
    caught = []
    before = {sig: signal.signal(sig, lambda number, frame: caught.append(number))
              for sig in (signal.SIGUSR1, signal.SIGUSR2)}
    try:
        with stopping.held_signals():
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)
        assert caught == [signal.SIGUSR1]
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_an_agreed_stop_keeps_the_signal_received_here():
    """Under torchrun, a process that got the SIGTERM itself says so and exits 143; another stops as asked by it."""
    with stopping.StopSignal() as stop:
        stop.requested = "SIGTERM"
        assert stop.agreed(True) and stop.requested == "SIGTERM" and stop.exit_status() == 128 + signal.SIGTERM
    with stopping.StopSignal() as stop:
        assert stop.agreed(True) and stop.requested == "a stop on another process" and stop.exit_status() == 0


def test_a_closed_terminal_keeps_the_files_the_output_goes_to(tmp_path, monkeypatch):
    """After a SIGHUP a terminal's output goes to /dev/null; a file's (python train.py > train.log) is kept."""
    out, err = open(tmp_path / "out", "w"), open(tmp_path / "err", "w")
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    stopping.quiet_closed_terminal()
    out.write("kept\n"), err.write("kept too\n")
    out.close(), err.close()
    assert (tmp_path / "out").read_text() == "kept\n" and (tmp_path / "err").read_text() == "kept too\n"
