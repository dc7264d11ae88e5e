"""Stopping a training run on a signal, after its step and saved: which signals (STOP_SIGNALS), the handler
that turns the first into a request (StopSignal), and the signals held back while loader workers start
(held_signals); a script's SIGTERM before training, and its Ctrl-C (ScriptSignals, which run_cli sets).
"""
import errno
import os
import signal
import stat
import sys

# The signals that stop a run after its step, saved (StopSignal): Ctrl-C, a scheduler's SIGTERM (`timeout`, `docker
# stop`, SLURM at a job's end), a closed terminal's SIGHUP, and SIGUSR1 or SIGUSR2, which SLURM sends ahead of the
# time limit when asked (--signal=USR1@120; clusters' templates use either). One that the process was started
# ignoring stays ignored: nohup's SIGHUP, a background job's SIGINT. SIGQUIT (Ctrl-\) is left as the way to end a
# run at once, without saving, should saving itself hang.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                     if hasattr(signal, name))  # Windows has the first two


def ctrl_c_ends_quietly() -> None:
    """For a script as it starts: a Ctrl-C in the second or more that torch takes to import ends it as a shell
    command ends, not with the import's traceback; run_cli takes Ctrl-C from then on. Where it is ignored (a
    background job), it stays ignored."""
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, signal.SIG_DFL)


class Terminated(BaseException):
    """A SIGTERM (or SIGHUP, SIGUSR1, SIGUSR2) that ends a script at once (ScriptSignals): a BaseException, as
    KeyboardInterrupt is, so that no `except Exception` on its way takes it for an error to work around."""

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum, self.name = int(signum), signal.Signals(signum).name
        super().__init__(self.name)


class ScriptSignals:
    """A script's signals while run_cli runs its main(): Ctrl-C raises KeyboardInterrupt again (ctrl_c_ends_quietly
    had it end the process while torch imported), and the other stop signals (a scheduler's SIGTERM, `timeout`'s; a
    closed terminal's SIGHUP; SLURM's SIGUSR1 ahead of a time limit) raise Terminated, which run_cli says in one line,
    where their default would end the process without a word, as train.py checks the images before training (its
    training loop takes them in StopSignal: it finishes the step and saves). One the process was started ignoring
    stays ignored (nohup's SIGHUP). They are left to their defaults under torchrun, whose summary names the signal,
    and whose SIGTERM must end a process blocked in a collective or in joining the group at once, not when that call
    returns."""

    def __init__(self):
        self._pid = os.getpid()
        shield_resource_tracker()
        if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:  # as a script set it while it imported torch
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self._previous = {}
        if "RANK" not in os.environ:
            self._previous = {sig: signal.signal(sig, self._terminated) for sig in STOP_SIGNALS
                              if sig != signal.SIGINT and signal.getsignal(sig) is not signal.SIG_IGN}

    def _terminated(self, signum, frame):
        if os.getpid() != self._pid:  # a loader worker, forked before it set its own handling
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if signum == getattr(signal, "SIGHUP", None):  # the terminal has gone: the line said would fail there
            quiet_closed_terminal()
        raise Terminated(signum)

    def restore(self):
        for sig, handler in self._previous.items():  # None: a handler not set from Python (Python embedded)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def shield_resource_tracker() -> None:
    """multiprocessing's resource tracker, started now with the stop signals blocked, where processes start afresh
    (spawn; forkserver, Linux's default from Python 3.14): it starts with the first lock made (tqdm's, at the first
    progress bar) and ignores only SIGINT and SIGTERM, so that a SIGHUP or SIGUSR1 sent to the process group killed
    it, and the run, stopped and saved all the same, ended with a traceback for each lock it held. It keeps the mask
    it starts with. Under fork (Linux's default before 3.14) no lock needs it."""
    import multiprocessing
    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    if method == "fork" or not hasattr(signal, "pthread_sigmask"):  # Windows has neither the tracker nor the mask
        return
    from multiprocessing import resource_tracker
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def take_stop_signals(handler) -> dict:
    """The stop signals to `handler`, but for those the process was started ignoring: {signal: its handler before}."""
    return {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS if signal.getsignal(sig) is not signal.SIG_IGN}


def give_back(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class StopSignal:
    """Turns the first stop signal (STOP_SIGNALS) into a request to stop after the current step; a second
    Ctrl-C stops at once, a second of the others changes nothing.

    A terminal's Ctrl-C and a scheduler's SIGTERM reach every process of the job, the loader's
    workers too, which ignore them (workers.start_loader_worker), so that the training
    process alone decides: it finishes the step, saves, then ends its workers. A process forked with
    this handler installed takes no notice either (it would print the notice again)."""

    def __init__(self):
        self.requested, self.settled = None, False
        self.trained = False  # the last epoch trained and saved: a signal now ends nothing but its report
        self.last_epoch = False  # the last epoch's steps trained: it is validated and saved, and the run ends
        self._pid = os.getpid()
        self._previous = take_stop_signals(self._handle)

    def _handle(self, signum, frame):
        if os.getpid() != self._pid or self.settled:  # a loader worker, forked with this handler; a run ending
            return
        if signum == getattr(signal, "SIGHUP", None):  # the terminal has gone: a line written to it would fail
            quiet_closed_terminal()
        if self.requested is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            # a SIGTERM after the first signal changes nothing: torchrun turns a second Ctrl-C into one (and
            # ends the processes after its --shutdown-timeout), and SLURM's reaches both torchrun, which hands
            # it on, and its processes
            return
        self.requested = signal.Signals(signum).name
        if os.environ.get("RANK", "0") == "0":  # torchrun hands a signal to every process: said once
            again = " (a second Ctrl-C: torchrun kills the processes after its --shutdown-timeout, 30 s)" \
                if "RANK" in os.environ else " (Ctrl-C again to stop at once)" if signum == signal.SIGINT else ""
            doing = "the training is done and saved; writing its report, then the run ends" if self.trained else \
                "the last epoch is trained: validating and saving it, writing the report, then the run ends" \
                if self.last_epoch else "finishing this step, then saving last.pth"
            print(f"\n{self.requested} received: {doing}{again}", file=sys.stderr, flush=True)

    def agreed(self, anywhere: bool) -> bool:
        """A stop that the processes agreed on (`anywhere`: requested on any), taken here too: said as another
        process's where none was requested here."""
        if anywhere and self.requested is None:
            self.requested = "a stop on another process"
        return anywhere

    def exit_status(self) -> int:
        return exit_status(self.requested)

    def settle(self):
        """The run's checkpoints are on disk and it ends in moments (its workers ended, where it stopped and how to
        go on said): a signal from now on changes nothing, where a second Ctrl-C said "stopped at once" without
        the last.pth just saved or the command that resumes."""
        self.settled = True

    def restore(self):
        give_back(self._previous)

    def __enter__(self):
        return self

    def __exit__(self, *exc):  # the handlers given back however the run ends (in-process callers: tests, a notebook)
        self.restore()


def quiet_closed_terminal() -> None:
    """stdout and stderr that are a terminal, which a SIGHUP says has gone, to /dev/null: a line written to it would
    raise (EIO) wherever it came; a file or a pipe they go to is kept. (isatty() is False once it has hung up.)"""
    for stream in (sys.stdout, sys.stderr):  # what they hold unwritten goes there too, when they are flushed
        try:
            if stat.S_ISCHR(os.fstat(stream.fileno()).st_mode):
                to_devnull(stream.fileno())
        except (OSError, ValueError):  # a stream without a file descriptor (a test's capture)
            pass


def to_devnull(fd: int) -> None:
    """The file descriptor `fd` to /dev/null from now on."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


class OutlivedReader:
    """A stream (stdout or stderr) whose writes outlive its reader: where that pipe's reader has gone (EPIPE) or the
    terminal has (EIO), the stream goes on to /dev/null instead of raising wherever a line was written. For
    train.py, whose output is often piped (`| tee train.log`): a Ctrl-C or a SIGTERM to the process group ends tee
    first, and the stop's own notice then raised from inside the signal handler, so that the run ended without
    finishing its step or saving. Files, TensorBoard and metrics.csv keep the run's record; its lines go nowhere."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as err:
            self._lost(err)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as err:
            self._lost(err)

    def _lost(self, err: OSError) -> None:
        if err.errno not in (errno.EPIPE, errno.EIO):  # a full disk under a redirected file: an error to see
            raise err
        to_devnull(self._stream.fileno())  # what the stream holds unwritten goes there at its next flush
        try:
            self._stream.flush()
        except OSError:  # Python's own buffer, told of the failure, may raise once more
            pass

    def __getattr__(self, name):  # fileno, isatty, encoding, reconfigure, ...
        return getattr(self._stream, name)


def outlive_readers() -> None:
    """stdout and stderr from now on as OutlivedReader streams (once: a test may run main() again)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, OutlivedReader) and hasattr(stream, "fileno"):
            try:
                stream.fileno()
            except (OSError, ValueError):  # a test's capture without a file descriptor: nothing to redirect
                continue
            setattr(sys, name, OutlivedReader(stream))


class held_signals:
    """The stop signals held back while loader workers are forked, then raised: one then would reach a worker
    before it ignores them (start_loader_worker), or the training process inside fork's hooks, where Python drops
    the exception it raises. They stay blocked in a forked worker until it ignores them."""

    def __enter__(self):
        self._pid, self._caught = os.getpid(), []
        self._previous = take_stop_signals(self._hold)
        if hasattr(signal, "pthread_sigmask"):  # not on Windows, which does not fork
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        return self

    def _hold(self, signum, frame):
        if os.getpid() == self._pid:
            self._caught.append(signum)

    def __exit__(self, *exc):
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # one sent meanwhile arrives here: held
        give_back(self._previous)
        if self._caught:
            signal.raise_signal(self._caught[0])


def exit_status(stopped_by: str | None) -> int:
    """The status a shell gives a process that a signal ended, 128 + its number (130 for Ctrl-C, as predict.py names
    SIGINT), for a stop by one; 0 for another (--stop-after-epochs, a stop on another process)."""
    name = "SIGINT" if stopped_by == "Ctrl-C" else stopped_by
    return 128 + signal.Signals[name] if name in signal.Signals.__members__ else 0
