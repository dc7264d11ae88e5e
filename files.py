"""Files written whole or not at all: put_in_place writes beside a file and renames over it, the rename made durable.
A checkpoint, a run's settings and report, an export and split_data.py's manifest are each written so. No torch
here: split_data.py uses it too."""
import contextlib
import errno
import glob
import os
import shutil
from pathlib import Path

from processes import go_on
from utils import UserError


def current_umask() -> int:
    """The process's umask (the permissions its new files leave out), read by setting it and back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def put_in_place(path: Path, fill, then: str = None) -> None:
    """fill(tmp) makes a temporary file beside `path`, which a rename then puts in its place, made durable:
    a kill at any moment leaves either the previous file or the new one, never a torn one. A write that
    fails (a full disk, a quota; a folder that takes no new file) is a UserError that says so, the previous file
    still in place, and what to do once there is room (or the folder is writable): `then`, or for a run's files the
    command that resumes it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # one a killed process left: a hard link cannot be made over it
    remove_left_behind(path)
    try:
        fill(tmp)
        # the file it replaces keeps its permissions (a model chmod 600 stays the owner's alone); not through a
        # hard link (link_checkpoint's best.pth), which would change its other name's (last.pth) too
        if path.exists() and tmp.stat().st_nlink == 1:
            with contextlib.suppress(OSError):  # a file system without modes (SMB, some FUSE): the file all the same
                shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "inline_container" not in str(err):  # not torch.save's file writer
            raise
        reason = err.strerror if isinstance(err, OSError) and err.strerror else "the write failed"
        kept = f"the {path.name} that was there is kept" if path.exists() else "nothing was written"
        if isinstance(err, OSError) and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):  # not a full disk
            raise UserError(f"could not save {path}: {reason} (its folder {path.parent} takes no new file); {kept}. "
                            f"Make the folder writable, then {then or go_on(path.parent)}"
                            ) from None
        free = shutil.disk_usage(path.parent).free / 2**30
        raise UserError(f"could not save {path}: {reason} ({free:.1f} GB free on its disk); {kept}. Make room, "
                        f"then {then or go_on(path.parent)}") from None
    finally:
        tmp.unlink(missing_ok=True)
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the renames in `folder` durable."""
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_left_behind(path: Path) -> None:
    """The temporary files of `path` that processes killed while writing it left (a checkpoint's, as large as it):
    those whose process is gone."""
    for tmp in left_by_the_dead(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
        tmp.unlink(missing_ok=True)


def remove_all_left_behind(folder: Path) -> None:
    """remove_left_behind for every file in `folder`: the temporary files of those that no later write of theirs
    replaces (a report's picture, a kill as a finished run wrote it), whose process is gone."""
    for tmp in left_by_the_dead(folder.glob(".*.*.tmp")):
        with contextlib.suppress(OSError):  # a folder that takes no change (a copied run, read-only): kept
            tmp.unlink(missing_ok=True)


def left_by_the_dead(temporaries) -> list[Path]:
    """Those of put_in_place's temporary files (.<name>.<pid>.tmp) whose process is gone."""
    return [tmp for tmp in temporaries
            if (pid := tmp.name[:-len(".tmp")].rpartition(".")[2]).isdigit() and not process_alive(int(pid))]


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # there os.kill(pid, 0) would send a Ctrl-C: taken as alive, its file kept
        return True
    try:
        os.kill(pid, 0)  # no signal sent: whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
