"""checkpoints.py and files.py: checkpoint files written whole (a SIGKILL mid-write leaves the last one loadable,
and its temporary file goes with the next write), and written beside training as they were when saved."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import checkpoints
import utils
from script_runs import ROOT
from utils import UserError


WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from checkpoints import save_checkpoint
i = 0
while True:
    i += 1
    save_checkpoint({{"i": i, "w": torch.full((4_000_000,), float(i))}}, {path!r})
"""


def test_sigkill_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "last.pth"
    script = WRITER.format(root=str(ROOT), path=str(path))
    for delay in (0.35, 0.6, 0.9):
        proc = subprocess.Popen([sys.executable, "-c", script])
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = checkpoints.load_checkpoint(path)  # raises if torn
        assert torch.equal(ckpt["w"], torch.full((4_000_000,), float(ckpt["i"])))


def test_checkpoints_are_written_beside_training_as_they_were_when_saved(tmp_path, monkeypatch):
    """checkpoints.CheckpointWriter, train.py's: what it writes is the checkpoint as it was at save(), whatever the
    steps after change in place; writes keep their order; one that failed is raised, as its UserError, by
    the next check() (train.py's, at every step) or close(); with saves faster than the disk, a write takes
    the newest checkpoint of its file when it starts."""
    weights = torch.zeros(1000)
    writer = checkpoints.CheckpointWriter()
    writer.save({"w": weights, "step": [1]}, tmp_path / "best.pth")
    weights += 1  # the next step, in place
    writer.save({"w": weights, "step": [1]}, tmp_path / "last.pth")
    writer.save({"w": weights, "step": [2]}, tmp_path / "last.pth")
    writer.close()
    assert torch.equal(checkpoints.load_checkpoint(tmp_path / "best.pth")["w"], torch.zeros(1000))
    last = checkpoints.load_checkpoint(tmp_path / "last.pth")
    assert last["step"] == [2] and torch.equal(last["w"], torch.ones(1000))

    def full_disk(obj, path):
        raise UserError(f"could not save {path}: No space left on device")
    monkeypatch.setattr(checkpoints, "save_checkpoint", full_disk)
    writer = checkpoints.CheckpointWriter()
    writer.save({"w": weights}, tmp_path / "last.pth")
    writer.writes[0].exception()  # waits for the write
    with pytest.raises(UserError, match="could not save .*last.pth: No space left"):
        writer.check()
    writer.save({"w": weights}, tmp_path / "last.pth")
    with pytest.raises(UserError, match="No space left"):
        writer.close()
    assert torch.equal(checkpoints.load_checkpoint(tmp_path / "last.pth")["w"], torch.ones(1000))  # the last one written

    written = []

    def slow_disk(obj, path):
        time.sleep(0.2)
        written.append(obj["step"])
    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_disk)
    writer = checkpoints.CheckpointWriter()
    for step in range(1, 6):  # saves faster than the disk: a write not yet started takes the newest
        writer.save({"step": step}, tmp_path / "last.pth")
    writer.close()
    assert written[-1] == 5 and len(written) <= 2, written


def test_a_write_that_failed_is_the_error_said_not_the_copy_of_its_file_queued_after_it(tmp_path, monkeypatch):
    """best.pth's write failed (a full disk) and the copy queued after it (last.pth, a second name of best.pth)
    failed for want of it: the copy's 'No such file' was said, and 'resume' offered where nothing was saved. The
    copy is not made, the write's own error is said, with the command that starts the run again."""
    import errno

    queued = threading.Event()

    def full_disk(obj, path, **kwargs):  # fails once the copy is queued, as a write that takes a while does
        queued.wait(10)
        raise OSError(errno.ENOSPC, "No space left on device")
    (tmp_path / "config.yaml").write_text("epochs: 2\n")
    monkeypatch.setattr(torch, "save", full_disk)
    writer = checkpoints.CheckpointWriter()
    writer.save({"w": torch.ones(3)}, tmp_path / "best.pth")
    writer.copy(tmp_path / "best.pth", tmp_path / "last.pth")
    writer.save({"w": torch.zeros(3)}, tmp_path / "other.pth")  # not made either
    queued.set()
    with pytest.raises(UserError, match=r"^could not save .*best.pth: No space left on device \(.* GB free on its "
                                        r"disk\); nothing was written\. Make room, then start it again: python "
                                        r"\S*train.py --config .*config.yaml --output .* --name "):
        writer.wait()  # train.py's, at the run's end; then its close(), which raised the copy's error over it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    monkeypatch.undo()  # room again: a later save of the file whose write was not made is written
    writer.save({"w": torch.ones(3)}, tmp_path / "other.pth")
    writer.close()
    assert torch.equal(checkpoints.load_checkpoint(tmp_path / "other.pth")["w"], torch.ones(3))


def test_a_copy_is_the_file_as_written_before_it_and_later_saves_come_after(tmp_path, monkeypatch):
    """CheckpointWriter.copy, train.py's last.pth when the best weights are the last ones: a second name for
    best.pth's file (a hard link; a copy where links fail), put in place after the writes queued before
    it, unchanged by the saves after it, which no write queued before it takes."""
    best, last = tmp_path / "best.pth", tmp_path / "last.pth"

    def steps():
        return [checkpoints.load_checkpoint(path)["step"] for path in (best, last)]

    writer = checkpoints.CheckpointWriter()
    writer.save({"step": 1}, best)
    writer.copy(best, last)
    writer.close()
    assert steps() == [1, 1] and os.path.samefile(best, last)
    writer = checkpoints.CheckpointWriter()
    writer.save({"step": 2}, best)  # a new file under the name: the other keeps the old one
    writer.close()
    assert steps() == [2, 1]

    save, release = checkpoints.save_checkpoint, threading.Event()

    def held_disk(obj, path):  # each write waits until the test has queued the rest
        release.wait(10)
        save(obj, path)
    monkeypatch.setattr(checkpoints, "save_checkpoint", held_disk)
    for queued_before, after, want in ((best, 4, [4, 3]), (last, 5, [4, 5])):
        release.clear()
        writer = checkpoints.CheckpointWriter()
        writer.save({"step": 0}, tmp_path / "other.pth")  # held: what follows is queued, not started
        writer.save({"step": 3}, queued_before)
        writer.copy(best, last)
        writer.save({"step": after}, queued_before)  # not into the write queued before the copy: after it
        release.set()
        writer.close()
        assert steps() == want, queued_before.name

    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    monkeypatch.setattr(os, "link", lambda *args: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
    writer = checkpoints.CheckpointWriter()
    writer.save({"step": 5}, best)
    writer.copy(best, last)  # no hard links here: a copy of the file
    writer.close()
    assert steps() == [5, 5] and not os.path.samefile(best, last)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_temporary_file_a_killed_writer_left_goes_with_the_next_write(tmp_path):
    """SIGKILL while a checkpoint is written leaves its temporary file, as large as the checkpoint: the next write of
    that file removes those of processes that are gone (a kill per resume would otherwise pile them up), not one that
    another live process is writing, nor another file's."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = tmp_path / f".last.pth.{gone.pid}.tmp"
    writing = tmp_path / f".last.pth.{os.getppid()}.tmp"
    other = tmp_path / f".best.pth.{gone.pid}.tmp"
    for path in (left, writing, other):
        path.write_bytes(b"half a checkpoint")
    checkpoints.save_checkpoint({"step": 1}, tmp_path / "last.pth")
    assert not left.exists() and writing.exists() and other.exists()
    assert torch.load(tmp_path / "last.pth", weights_only=True) == {"step": 1}


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_file_written_over_keeps_its_permissions(tmp_path):
    """files.put_in_place writes beside the file and renames over it: the new file takes the old one's mode, so
    a checkpoint or exported program made private (chmod 600) is not world-readable after it is written again."""
    from files import put_in_place
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    path.chmod(0o600)
    put_in_place(path, lambda tmp: tmp.write_bytes(b"new"))
    assert path.read_bytes() == b"new" and path.stat().st_mode & 0o777 == 0o600
    # best.pth made a second name of last.pth: last.pth's mode is not changed to best.pth's
    last, best = tmp_path / "last.pth", tmp_path / "best.pth"
    last.write_bytes(b"last")
    last.chmod(0o644)
    best.write_bytes(b"best")
    best.chmod(0o600)
    checkpoints.link_checkpoint(last, best)
    assert last.stat().st_mode & 0o777 == 0o644 and best.read_bytes() == b"last"


def test_a_save_refused_by_permissions_says_so_rather_than_to_make_room(tmp_path):
    """A folder that takes no new file (read-only, another user's) fails the write beside the file, which is not
    a full disk: the line says what refused it and keeps the file that was there, without 'Make room'."""
    import errno
    from files import put_in_place
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    def refused(tmp):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    with pytest.raises(UserError, match=r"^could not save .*model.onnx: Permission denied \(its folder .* takes no "
                                        r"new file\); the model.onnx that was there is kept. Make the folder "
                                        r"writable, then export again$"):
        put_in_place(path, refused, "export again")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_file_written_beside_itself_is_checked_against_its_folder_first(tmp_path, monkeypatch):
    """predict.py --export over a program that is there and writable, in a folder that takes no new file: the
    check before the model is loaded and traced refuses it (the export failed only once made, saying to make
    room); a file written in place (--output) needs only the file."""
    import errno
    import tempfile
    from utils import check_writable
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    check_writable(path, beside=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]

    def refused(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    check_writable(path)
    with pytest.raises(UserError, match=r"^cannot write .*model.onnx: Permission denied \(its folder .* takes no "
                                        r"new file\)$"):
        check_writable(path, beside=True)
    assert path.read_bytes() == b"old"


def test_the_temporary_files_of_killed_writers_are_cleared_from_a_folder_but_a_live_ones_are_kept(tmp_path,
                                                                                                  monkeypatch):
    """A kill as a finished run wrote its report left .confusion_matrix.png.<pid>.tmp, which no later write of that
    file (the report then goes to eval_val/) cleared: a folder's own are cleared, those of a process alive kept."""
    import os
    import subprocess
    from files import remove_all_left_behind
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f".confusion_matrix.png.{gone.pid}.tmp"
    alive = tmp_path / f".best.pth.{os.getpid()}.tmp"
    mine = [tmp_path / ".lock", tmp_path / ".notes.tmp", tmp_path / "report.html"]
    for path in [dead, alive, *mine]:
        path.write_text("")
    remove_all_left_behind(tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted([alive, *mine])
    # another user's process (os.kill may not signal it: PermissionError) is alive too: its file kept
    other = tmp_path / ".last.pth.4242.tmp"
    other.write_text("")

    def not_ours(pid, signal):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(os, "kill", not_ours)
    remove_all_left_behind(tmp_path)
    assert other.exists()


def test_torch_saves_full_disk_is_said_as_one_line_and_a_bug_is_not(tmp_path):
    """torch.save's own writer raises a RuntimeError, not an OSError, when the disk fills as it writes: said as a full
    disk is, the file that was there kept; any other RuntimeError is a bug, raised as it is."""
    from files import put_in_place
    path = tmp_path / "last.pth"
    path.write_bytes(b"old")

    def full(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    with pytest.raises(UserError, match=r"^could not save .*last.pth: the write failed \(.* GB free on its disk\); "
                                        r"the last.pth that was there is kept\. Make room, then save again$"):
        put_in_place(path, full, "save again")

    def bug(tmp):
        raise RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="^a bug$"):
        put_in_place(path, bug, "save again")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_an_empty_checkpoint_is_said_to_be_cut_short_not_another_kind_of_file(tmp_path):
    """A copy that wrote nothing (a full disk, a transfer stopped at once): torch.load's EOFError was said as "not a
    PyTorch checkpoint", which sends the user looking for another file rather than to copy this one again."""
    for empty in (tmp_path / "last.pth", tmp_path / "model.safetensors"):
        empty.touch()
        with pytest.raises(UserError, match=rf"^{re.escape(str(empty))} is cut short or damaged \(an empty file\): a "
                                            "copy or download that did not finish"):
            checkpoints.load_checkpoint(empty)


def test_what_is_there_but_no_file_is_not_said_to_be_missing(tmp_path):
    """--weights /dev/null (or a folder where a file was meant) was "checkpoint not found": it is there."""
    with pytest.raises(UserError, match=r"^/dev/null is no checkpoint file: a pipe, a socket or a device$"):
        checkpoints.load_checkpoint("/dev/null")
    with pytest.raises(UserError, match=rf"^{re.escape(str(tmp_path))} is no checkpoint file: a folder$"):
        checkpoints.load_checkpoint(tmp_path)
    with pytest.raises(UserError, match=r"^checkpoint not found: .*gone.pth$"):
        checkpoints.load_checkpoint(tmp_path / "gone.pth")


def test_a_file_in_torch_saves_legacy_format_loads_where_it_would_be_mapped(tmp_path):
    """torch.load cannot map a file of torch.save's legacy (non-zip) format, which older weights files may be: read
    whole instead, not called no checkpoint (train.py maps --weights to see what the file is)."""
    torch.save({"head.weight": torch.ones(2, 3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert torch.equal(checkpoints.load_checkpoint(tmp_path / "legacy.pth", mmap=True)["head.weight"], torch.ones(2, 3))


def test_a_host_copy_of_cpu_tensors_is_its_own():
    """CheckpointWriter's snapshot of CPU weights: the next training step, in place, does not change it (the existing
    writer test only catches this when the background write loses the race)."""
    weights = torch.zeros(10)
    snapshot = checkpoints.host_copy({"model": {"w": weights}, "rng": [weights], "step": 3})
    weights += 1
    assert torch.equal(snapshot["model"]["w"], torch.zeros(10)) and torch.equal(snapshot["rng"][0], torch.zeros(10))
    assert snapshot["step"] == 3


def test_a_stale_temporary_of_this_process_does_not_turn_a_link_into_a_copy(tmp_path):
    """link_checkpoint makes best.pth a second name of last.pth (no second write, no double disk use), even where a
    temporary of this pid was left behind (an earlier write of this process interrupted, a pid reused)."""
    last, best = tmp_path / "last.pth", tmp_path / "best.pth"
    checkpoints.save_checkpoint({"w": torch.ones(3)}, last)
    (tmp_path / f".best.pth.{os.getpid()}.tmp").write_bytes(b"stale")
    checkpoints.link_checkpoint(last, best)
    assert best.stat().st_ino == last.stat().st_ino
    assert torch.equal(checkpoints.load_checkpoint(best)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "last.pth"]


def test_writes_queued_before_a_failure_is_raised_are_not_made_after_it(tmp_path, monkeypatch):
    """A write that failed: the writes queued behind it are not made, even where they had not started when check()
    raised the error (here an executor that runs a task only when asked makes that order certain)."""
    import concurrent.futures

    class Lazy(concurrent.futures.Future):
        def __init__(self, fn):
            super().__init__()
            self.fn, self.ran = fn, False

        def run(self):
            if not self.ran:
                self.ran = True
                try:
                    self.set_result(self.fn())
                except BaseException as err:
                    self.set_exception(err)

        def result(self, timeout=None):
            self.run()
            return super().result(timeout)

        def exception(self, timeout=None):
            self.run()
            return super().exception(timeout)

    class Executor:
        def __init__(self):
            self.tasks = []

        def submit(self, fn):
            self.tasks.append(Lazy(fn))
            return self.tasks[-1]

        def shutdown(self, wait=True):
            for task in self.tasks:
                task.run()

    written = []

    def save(obj, path):
        if path.name == "a.pth":
            raise UserError(f"could not save {path}: No space left on device")
        written.append(path.name)
    monkeypatch.setattr(checkpoints, "save_checkpoint", save)
    writer = checkpoints.CheckpointWriter()
    writer.thread = Executor()
    writer.save({"step": 1}, tmp_path / "a.pth")
    writer.save({"step": 1}, tmp_path / "b.pth")
    writer.thread.tasks[0].run()  # a.pth's write fails; b.pth's has not started
    with pytest.raises(UserError, match="No space left"):
        writer.check()
    writer.close()
    assert written == []
    writer = checkpoints.CheckpointWriter()  # and after the error, saves are made again
    writer.thread = Executor()
    writer.save({"step": 2}, tmp_path / "c.pth")
    writer.close()
    assert written == ["c.pth"]


def test_checking_a_file_writable_leaves_no_file(tmp_path):
    utils.check_writable(tmp_path / "sub" / "out.csv")
    assert (tmp_path / "sub").is_dir() and not (tmp_path / "sub" / "out.csv").exists()
