"""A training run's folder: where a run writes (check_output, run_folder, make_run_folder), its lock
(lock_run_folder), its settings (write_settings), the validation files it drew (record_split; a resume that
validates on other photos: check_validation_unchanged; a checkpoint of other classes: check_classes_unchanged), which
checkpoint a run folder means (resumed_file, checkpoint_of_run, newest_run_checkpoint), and which photos an
evaluation elsewhere shares with its training (photos_trained_on). The settings a run starts or goes on with are
run_settings.py's; where --eval-only of a run's checkpoint writes, eval_only.py's.
"""
import csv
import itertools
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from checkpoints import not_whole
from files import put_in_place, remove_all_left_behind
from config import write_yaml
from images import is_image_file, letters, names_order_hint, same_names, write_class_indices
from splits import is_split_root
from report import read_metrics
from processes import from_first_process, launcher, resume_command, train_script
from utils import UserError


# what a run folder holds once a run has saved an epoch: one stopped before its first is started again in it
RUN_FILES = ("last.pth", "best.pth")
NEW_RUN_ELSEWHERE = ", or start this one under another --name"  # a new run refused a folder in use: the way on
SPLIT_FILE = "val_files.json"  # the validation files of a split drawn from class folders, as the run drew them


def run_folder(cfg, checkpoint, variant: str) -> Path:
    """Where a run writes: a resumed run's own folder; for a new run, --name's, which must not hold a run already
    (the new run would write over it), or <variant>-<date>-<time> (make_run_folder makes it unique). Neither
    may be in use by a run going on now (lock_run_folder), which is said here, before the model is built. Under
    torchrun the first process decides (processes.decided_by_first_process): the others would find its own lock."""
    if checkpoint is not None:
        folder = cfg.resume if cfg.resume.is_dir() else cfg.resume.parent
        lock_run_folder(folder, hold=False)
        return folder
    if not cfg.name:
        return cfg.output / f"{variant}-{datetime.now():%Y%m%d-%H%M%S}"
    folder = cfg.output / cfg.name
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--name {cfg.name}: {folder} is a file, not a run folder: choose another --name")
    if folder.is_dir():
        lock_run_folder(folder, NEW_RUN_ELSEWHERE, hold=False)
    if any((folder / name).exists() for name in RUN_FILES):
        raise UserError(f"{folder} holds a run already: {resume_command(folder)} goes on with it, another --name "
                        "starts a new one")
    if records := records_past_checkpoints(folder):  # a run's whose checkpoints were deleted to save room
        raise UserError(f"{folder} holds a run's {' and '.join(records)} (its checkpoints gone), which a new run "
                        "there would write over: start it under another --name, or move them away first")
    return folder


def records_past_checkpoints(folder: Path) -> list:
    """What a run folder with no checkpoint holds of a run that trained: its metrics.csv past its first epoch, its
    report. One that stopped as its first epoch was saved (its row written, no checkpoint yet) is started again in
    it (nothing_to_resume)."""
    try:
        rows = read_metrics(folder / "metrics.csv")
    except (OSError, UnicodeError, csv.Error):
        rows = []
    trained = ["metrics.csv"] if any(row["epoch"] > 1 for row in rows) else []
    return trained + [name for name in ("report.html", "report.txt") if (folder / name).exists()]


def check_output(output: Path, data_path: Path) -> None:
    """--output, the folder that holds the runs, must be a folder, and not one that training reads as classes: a
    folder of class folders (`cd photos; python train.py --data-path .` put runs/ in it, a class of its own from the
    next run on, its pictures that class's photos, and the first run no longer resumed), or a split root's splits."""
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file, not a folder: give the folder that holds the runs "
                        "(default: runs)")
    data, out = data_path.resolve(), output.resolve()
    splits = [(data / split).resolve() for split in ("train", "val", "test")]
    read_as_classes = splits if is_split_root(data) else [data]
    # inside one of them, and not in a hidden folder there (.runs: training passes hidden folders over)
    if any(out == folder or folder in out.parents and not out.relative_to(folder).parts[0].startswith(".")
           for folder in read_as_classes):
        raise UserError(f"--output {output} is inside --data-path {data_path}, whose folders are read as classes: "
                        f"the runs would become a class of their own. Give --output a folder outside it, such as "
                        f"--output {shlex.quote(str(data.parent / 'runs'))}")


def make_run_folder(folder: Path, named: bool, resumed: bool = False) -> tuple:
    """Make the folder run_folder chose, and lock it (lock_run_folder): (folder, its lock, to close at the run's
    end). One named by the date and time that another run made in the same second gets -2, -3, ... (mkdir is
    atomic: two runs starting together get a folder each)."""
    if named:
        folder.mkdir(parents=True, exist_ok=True)
        lock = lock_run_folder(folder, "" if resumed else NEW_RUN_ELSEWHERE)
        remove_all_left_behind(folder)  # a killed run's, once it is this run's alone
        return folder, lock
    folder.parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        try:
            (unique := folder if n == 1 else folder.with_name(f"{folder.name}-{n}")).mkdir()
            return unique, lock_run_folder(unique)
        except FileExistsError:
            continue


def write_settings(run_dir: Path, cfg, classes: list, splits=None, resumed: bool = False) -> None:
    """config.yaml, the run's settings as a config to start another run from: not this start's --resume (fed back,
    it would go on with this run), its --name (it would name this run's folder, which is refused) nor its
    --stop-after-epochs; class_indices.json; and, given `splits` (a run's start, or a split drawn again), the
    validation files drawn now, which its resumes keep."""
    settings = {key: value for key, value in vars(cfg).items() if key not in ("resume", "name", "stop_after_epochs")}
    put_in_place(run_dir / "config.yaml", lambda tmp: write_yaml(tmp, settings))  # rewritten at each resume: whole
    put_in_place(run_dir / "class_indices.json", lambda tmp: write_class_indices(tmp, classes))
    if splits is not None:
        record_split(run_dir, splits, cfg.val_ratio, resumed)


def record_split(run_dir: Path, splits, val_ratio: float, resumed: bool = False) -> None:
    """A new run's validation files, when it drew them from class folders: its resume validates on the same
    files (recorded_split), though a file that decoded then fails now, or the reverse, would move the
    others in a split drawn again, and training on them would then count as validating. Split folders' val/
    is recorded at the run's start and kept by its resumes: a split_data.py run again into them is said at every
    resume and --eval-only (check_validation_unchanged), not at the first resume alone."""
    if resumed and not splits.drawn:
        earlier = read_split_record(run_dir / SPLIT_FILE)
        if earlier is not None and earlier.get("split_root") and earlier["data_path"] == str(splits.root.resolve()):
            return
    val = sorted(Path(path).relative_to(splits.root).as_posix() for path, _ in splits.val)
    record = {"data_path": str(splits.root.resolve()), "val_ratio": val_ratio, "val": val}
    if not splits.drawn:  # split_data.py's folders, used as they are: kept to see a re-split under a resumed run
        record["split_root"] = True
        # and its test/ at the start (none, mostly): a test/ split later from train/ holds photos the run trained on
        record["test"] = sorted(Path(path).relative_to(splits.root).as_posix() for path, _ in splits.test)
    put_in_place(run_dir / SPLIT_FILE, lambda tmp: tmp.write_text(json.dumps(record, indent=1)))


def recorded_split(run_dir: Path, data_path: Path, val_ratio: float, main_process: bool = True) -> set | None:
    """The validation files record_split wrote for this data folder and --val-ratio; None where there are none
    (a run from before 2026-11-29, a split root) or they are another folder's or ratio's, which is said: the split
    is drawn again (and recorded). Under torchrun the first process decides and sends the files to the others
    (another machine may not hold the file, or hold the data elsewhere), so that all train on one split."""
    return from_first_process(read_recorded_split(run_dir / SPLIT_FILE, data_path, val_ratio) if main_process
                              else None)


def read_split_record(path: Path, say: bool = False) -> dict | None:
    """val_files.json as record_split wrote it; None where there is none, or one cut short or edited (said, with
    `say`: its files are then drawn again, as with none)."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        drawn_from, ratio, val = record["data_path"], record["val_ratio"], record["val"]
        if not (isinstance(drawn_from, str) and type(ratio) in (int, float) and isinstance(val, list)
                and all(isinstance(name, str) for name in val)):
            raise TypeError(f"{path} holds other types")
    except (ValueError, KeyError, TypeError):
        if say:
            print(f"notice: {path} is not the JSON a run writes: the validation files are drawn again")
        return None
    return record


def read_recorded_split(path: Path, data_path: Path, val_ratio: float) -> set | None:
    """recorded_split's files, read here: None where there is no record, or one that is not a run's or not of
    this folder and ratio (said)."""
    record = read_split_record(path, say=True)
    if record is None:
        return None
    drawn_from, ratio, val = record["data_path"], record["val_ratio"], record["val"]
    here = str(Path(data_path).resolve())
    if Path(data_path).is_dir() and is_split_root(Path(data_path)) or record.get("split_root"):  # nothing drawn
        return None
    if drawn_from != here or ratio != val_ratio:
        print(f"notice: the run drew its validation files from {drawn_from} at --val-ratio {ratio:g}; from {here} "
              f"at {val_ratio:g} they are drawn again")
        return None
    return set(val)


def lock_run_folder(folder: Path, or_else: str = "", hold: bool = True):
    """A run folder's lock: a flock on its .lock file, which names the process holding it. `hold`: taken
    exclusively and kept for as long as the returned file stays open (the kernel lets go when the process ends,
    however it ends); else a shared lock tried and let go at once, which fails only where a run holds it, so that
    any process may ask without tripping over another that asks. A second train.py in a folder that a run is
    training in (two starts with one --name, two resumes of one run) is refused: the two would write over each
    other's checkpoints and metrics. Where there are no such locks (Windows, some network file systems), none."""
    try:
        import fcntl
    except ImportError:
        return open(os.devnull) if hold else None
    path = folder / ".lock"
    if not hold and not path.exists():  # never locked: no run trains here (asking writes nothing: a folder may be
        return None  # read-only to this user)
    lock = open(path, "a+" if hold else "r")
    try:
        fcntl.flock(lock, (fcntl.LOCK_EX if hold else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        raise UserError(f"{folder} is in use: a train.py run (process {holder or 'unknown'}) is training in it now, "
                        f"and two would write over each other's checkpoints. Wait for it to end{or_else}") from None
    except OSError:  # no locks on this file system
        pass
    else:
        if hold:
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
    if hold:
        return lock
    lock.close()
    return None


def best_pth_lost(run: Path) -> bool:
    """Whether a resumed run that has validated lacks a best.pth that loads: one not whole (a disk's fault; a copy
    of the run cut short), moved aside, or none (deleted; a copy of last.pth alone; set aside by a resume killed
    before it saved). Said; the epochs trained from now on then choose a best.pth: the run trained them all, then
    failed on it (or reported on last.pth) at its end, and every resume after found it finished."""
    best = run / "best.pth"
    if not best.is_file():
        print(f"notice: {run} holds no best.pth: the best of the epochs trained from now on is saved as best.pth",
              file=sys.stderr)
        return True
    why = not_whole(best)
    if why is None:
        return False
    best.replace(run / "best.pth.damaged")
    print(f"warning: {best} is cut short or damaged ({why}): kept as best.pth.damaged, and the best of the epochs "
          "trained from now on is saved as best.pth", file=sys.stderr)
    return True


def resumed_file(cfg) -> Path:
    """The checkpoint --resume names: a run folder means its last.pth, or for --eval-only its best.pth."""
    if not cfg.resume.is_dir():
        return cfg.resume
    return checkpoint_of_run(cfg.resume) if cfg.eval_only else cfg.resume / "last.pth"


def checkpoint_of_run(run: Path) -> Path:
    """What a run folder means to evaluate or predict with: its best.pth, or its last.pth while it has none
    (a run stopped before its first validation)."""
    best = run / "best.pth"
    if not best.is_file() and not (run / "last.pth").is_file():
        newest = newest_best(run)  # runs/ for runs/<name>
        if newest is not None:
            raise UserError(f"{run} is not a run folder but holds runs: name one, such as the newest, "
                            f"{shlex.quote(str(newest.parent))}")
        tutorial = tutorial_weights(run)
        if tutorial:  # the tutorial's train.py saves weights/model-<epoch>.pth
            names = ", ".join(p.name for p in tutorial[-3:]) + (" ..." if len(tutorial) > 3 else "")
            raise UserError(f"{run} is not a run folder: it holds the tutorial's {names}: name the file, --weights "
                            f"{shlex.quote(str(tutorial[-1]))} --model NAME (the tutorial trains "
                            "swin_tiny_patch4_window7_224)")
        if not (run / "config.yaml").is_file():  # said as what it is, not as "checkpoint not found: <it>/best.pth"
            raise UserError(f"{run} is not a run folder: it holds no best.pth, last.pth or run config.yaml. Name a run "
                            "folder (runs/<name>) or a checkpoint file")
    return best if best.is_file() or not (run / "last.pth").is_file() else run / "last.pth"


def newest_run_checkpoint() -> Path:
    newest = newest_best(Path("runs"))
    started = [] if newest else sorted(Path("runs").glob("*/last.pth"), key=lambda p: p.stat().st_mtime)
    if started:  # a run stopped before its first validation: named, not "train one"
        raise UserError(f"no checkpoint to predict with: no runs/*/best.pth in {Path.cwd()}, but {started[-1].parent} "
                        "holds a last.pth (stopped before its first validation): pass --weights "
                        f"{shlex.quote(str(started[-1].parent))}, or train on until it writes a best.pth")
    tutorial = [] if newest else tutorial_weights(Path("weights"))
    if tutorial:  # the tutorial's train.py saves weights/model-<epoch>.pth
        raise UserError(f"no checkpoint to predict with: no runs/*/best.pth in {Path.cwd()}, but {tutorial[-1]} "
                        f"looks like the tutorial's: pass it with --weights {shlex.quote(str(tutorial[-1]))} "
                        "--model NAME (the tutorial trains swin_tiny_patch4_window7_224)")
    if newest is None:
        raise UserError(f"no checkpoint to predict with: no runs/*/best.pth in {Path.cwd()}. Train one (python "
                        f"{train_script()} --data-path PHOTOS, or the demo on the bundled photos: python "
                        f"{train_script()} --config configs/cpu_demo.yaml) or pass one with --weights FILE (a plain "
                        "state dict also needs --model NAME --num-classes N)")
    return newest


def tutorial_weights(folder: Path) -> list:
    """The tutorial's <folder>/model-<epoch>.pth, the newest last: by the time written, then (copies that share
    one: an archive's, a checkout's) by epoch, not in the order the folder lists them."""
    def written(path: Path) -> tuple:
        epoch = path.stem.removeprefix("model-")
        return path.stat().st_mtime, int(epoch) if epoch.isdigit() else -1
    return sorted(folder.glob("model-*.pth"), key=written)


def newest_best(folder: Path) -> Path | None:
    """The best.pth of the run folder in `folder` written last; None where none holds one."""
    found = sorted(folder.glob("*/best.pth"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def check_classes_unchanged(cfg, trained_on: list, classes: list) -> None:
    """A checkpoint (or exported program) whose classes are not the data folder's, refused in one line: which class
    folders are new or gone, and what to do (put them back as they were, or start a new run on these classes from
    its weights)."""
    if same_names(trained_on, classes):
        return
    said = f"{cfg.resume or cfg.weights} was trained on classes {trained_on}, but {cfg.data_path} has {classes}"
    hint = names_order_hint(trained_on, classes)
    if hint:
        raise UserError(said + hint)
    before, now = set(map(letters, trained_on)), set(map(letters, classes))
    changes = [f"{kind} {', '.join(sorted(names))}" for kind, names in
               (("new:", now - before), ("gone:", before - now)) if names]
    where = "evaluate it on a folder with the class folders it was trained on" if cfg.eval_only else \
        (f"put the class folders back as they were to resume it, or train these classes in a new run from its "
         f"weights: {launcher()} {train_script()} --data-path {shlex.quote(str(cfg.data_path))} --weights "
         f"{shlex.quote(str(resumed_file(cfg).parent))} --name NEW_NAME")
    raise UserError(f"{said} ({'; '.join(changes)}): {where}")


def check_validation_unchanged(run_dir: Path, splits, drawn_again: bool) -> None:
    """A resumed run that validates on other photos than at its start validates on photos it trained on, and best.pth
    is chosen on another set; said, with what to do. Split folders: a val/ that holds images it did not hold at the
    run's start (split_data.py run again, at another --val-ratio or --seed). Class folders: the validation files
    drawn again (`drawn_again`: resumed at another --val-ratio), where they were a notice until 2026-11-30."""
    if splits.drawn:
        if drawn_again and (trained := photos_trained_on(run_dir, splits.val)):
            seen = trained[0]
            photos = "is a photo" if seen == 1 else "are photos"
            print(f"warning: {seen} of the {len(splits.val)} validation images {photos} the run trained on: its "
                  "validation figures and best.pth no longer compare; resume with the run's --val-ratio to keep its "
                  "split", file=sys.stderr)
        return
    record = read_split_record(run_dir / SPLIT_FILE)
    if record is None or not record.get("split_root") or record["data_path"] != str(splits.root.resolve()):
        return
    before = set(record["val"])
    now = {Path(p).relative_to(splits.root).as_posix() for p, _ in splits.val}
    if now != before:
        print(f"warning: {splits.root}/val is not what this run validated on at its start: {len(now - before)} of its "
              f"{len(now)} images are new to it (trained on, if the folder was split again), {len(before - now)} gone. "
              "Its validation figures and best.pth no longer compare: split it again as it was (split_data.py with "
              "the run's --val-ratio and --seed), or start a new run", file=sys.stderr)


def photos_trained_on(run_dir: Path, samples: list) -> tuple | None:
    """--eval-only of a run's checkpoint on another data folder (a copy of its own, a superset): (how many of
    `samples` are photos the run trained on, the folder it trained from), told by class folder, name and size against
    the files val_files.json records, where that folder is still there; None where it cannot be told."""
    record = read_split_record(run_dir / SPLIT_FILE)
    if record is None:
        return None
    root, val = Path(record["data_path"]), set(record["val"])
    trained_root = root / "train" if record.get("split_root") else root
    if not trained_root.is_dir():
        return None
    trained = {(path.parent.name, path.name, path.stat().st_size) for path in trained_root.rglob("*")
               if is_image_file(path) and path.is_file() and path.relative_to(root).as_posix() not in val}
    seen = sum((Path(path).parent.name, Path(path).name, Path(path).stat().st_size) in trained
               for path, _ in samples if Path(path).is_file())
    return (seen, root) if seen else None
