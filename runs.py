"""A training run's folder: where a run writes (check_output, run_folder, make_run_folder), its lock
(lock_run_folder), its settings (write_settings), the validation files it drew (record_split; a resume that
validates on other photos: check_validation_unchanged; a checkpoint of other classes: check_classes_unchanged), and
going on with a run: the checkpoint --resume names and the settings the run goes on with (resume_config), the model a
run's checkpoint given as --weights builds (model_of_weights), the --val-ratio of an exported program's run
(val_ratio_of_program), what a run folder means to evaluate or predict with (evaluated_file, newest_run_checkpoint),
where an evaluation of a run's checkpoint writes (evaluation_in_run), and which photos an evaluation elsewhere shares
with its training (photos_trained_on).
"""
import argparse
import csv
import itertools
import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path

from checkpoints import TRAINING_STATE, is_run_checkpoint, load_checkpoint, not_whole
from files import put_in_place, remove_all_left_behind
from config import config_named, explicit_flags, read_yaml_config, typed_flags, write_yaml
from download import official_weights_file
from export import is_program
from images import is_image_file, letters, names_order_hint, same_names, write_class_indices
from splits import is_split_root
from variants import VARIANTS, resolve_variant
from report import read_metrics
from processes import from_first_process, launched_first, launcher, resume_command, start_again_command, train_script
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


PER_PROCESS = ("workers", "device", "stop_after_epochs", "progress")


def resume_config(parser, cfg, argv) -> tuple:
    """(config, checkpoint) of --resume, or (cfg, None) without it. A resumed run continues with the
    settings it saved, except the flags typed now; --eval-only takes only its data and split from them."""
    if cfg.eval_only and not cfg.resume and isinstance(cfg.weights, Path) and cfg.weights.is_file() and \
            not is_program(cfg.weights):
        # mapped: only what the file is is read here; other weights are evaluated as --weights, read whole once then
        if not is_run_checkpoint(load_checkpoint(cfg.weights, mmap=True)):
            return cfg, None
        checkpoint = load_checkpoint(cfg.weights)
        cfg.resume, cfg.weights = cfg.weights, None  # train.py's checkpoint knows its model, classes and data
    elif not cfg.resume:
        return cfg, None
    else:
        path = resumed_file(cfg)
        if cfg.resume.is_dir() and not path.is_file():
            lock_run_folder(cfg.resume, hold=False)  # a run in its first epoch has none yet: in use, not stopped
            raise UserError(nothing_to_resume(cfg.resume))
        try:
            checkpoint = load_checkpoint(path)
        except UserError as err:  # damaged (a disk's fault, a copy cut short: train.py writes whole files only)
            other = cfg.resume / "best.pth"
            if not (cfg.resume.is_dir() and other.is_file() and other.resolve() != path.resolve()):
                raise
            raise UserError(f"{err}. To go on from the run's best epoch instead: {resume_command(other)}") from None
        if not is_run_checkpoint(checkpoint):
            raise UserError(f"{path} is not a checkpoint of train.py; to start from its weights use --weights")
        if not cfg.eval_only and (missing := [key for key in TRAINING_STATE if key not in checkpoint]):
            raise UserError(f"{path} holds a model but not its training state ({', '.join(missing)} cut from it), so "
                            f"its run cannot go on from it; to train on from its weights, start a new run: --weights "
                            f"{shlex.quote(str(path))} --name NEW")
        if not cfg.eval_only:
            if not cfg.resume.is_dir():  # a folder named is the run's folder, as the user says
                check_not_in_run_folder(path, checkpoint)
            check_not_going_back(path, checkpoint)
    if cfg.eval_only:  # its model and classes are what an evaluation needs (--resume or --weights): a config cut
        checkpoint.setdefault("config", {})  # from it is none
    typed = typed_flags(parser, argv)
    given = explicit_flags(parser, argv, typed)
    if not cfg.eval_only:  # the checkpoint's model is the one that goes on: another one typed is refused, not ignored
        def run_value(key):
            saved = checkpoint["config"].get(key)
            if saved is None and key in ("img_size", "window_size"):  # not typed then: the variant's, as built
                return checkpoint.get("model_overrides", {}).get(key, VARIANTS[checkpoint["variant"]][key])
            return saved

        def same(key):
            asked, saved = getattr(cfg, key), run_value(key)
            if asked is None and key in ("img_size", "window_size"):  # `img_size: null` (a config.yaml): the
                return True  # variant's, as the run was built; nothing asked of the model
            if key == "model" and asked and saved:  # a short form or an alias names the same variant
                return resolve_variant(asked) == resolve_variant(saved)
            return str(asked) == str(saved) or key == "weights" and saved is None and str(asked) == "none"
        changed = [f"--{key.replace('_', '-')} {getattr(cfg, key)} (the run's: "
                   f"{'none given' if run_value(key) is None else run_value(key)})"
                   for key in ("model", "img_size", "window_size", "weights") if key in given and not same(key)]
        if changed:
            raise UserError(f"a resumed run goes on with its own model: {'; '.join(changed)}. To train another "
                            "from its weights, start a new run: --weights <its best.pth> --name NEW")
        # and in its own folder: a --name or --output typed (a config's, such as the run's own config.yaml, may
        # hold another spelling of it, or none) that names another is refused
        run = cfg.resume if cfg.resume.is_dir() else cfg.resume.parent
        real = run.resolve()
        elsewhere = [f"--{key} {shlex.quote(str(getattr(cfg, key)))}" for key, here in (
            ("name", lambda: cfg.name == real.name), ("output", lambda: Path(cfg.output).resolve() == real.parent))
            if key in typed and getattr(cfg, key) is not None and not here()]
        if elsewhere:
            raise UserError(f"a resumed run goes on in its own folder, {run}, not in another: {' '.join(elsewhere)}. "
                            f"To train a new run from its weights: --weights "
                            f"{shlex.quote(str(cfg.resume if cfg.resume.is_file() else evaluated_file(run)))} "
                            f"--name NEW")
    ignored = [f"--{key.replace('_', '-')} {getattr(cfg, key)}" for key in ("model", "img_size", "window_size")
               if cfg.eval_only and key in typed]
    if ignored and launched_first():
        print(f"notice: --eval-only evaluates {cfg.resume} as it was trained ({checkpoint['variant']} at "
              f"{checkpoint.get('img_size')} px): {', '.join(ignored)} not used")
    # this process's own, unless typed: where it runs and with how many loader workers (the machine it goes on on),
    # whether it stops after some epochs (a job's time limit), progress bars (a terminal or a log)
    kept = ("data_path", "val_ratio") if cfg.eval_only else [k for k in checkpoint["config"] if k not in PER_PROCESS]
    where = () if cfg.eval_only else ("name", "output")  # the run's own, however a config given again spells them
    saved = {k: v for k, v in checkpoint["config"].items()
             if k in kept and (k not in given or k in where) and hasattr(cfg, k)}
    cfg = argparse.Namespace(**{**vars(cfg), **saved, "resume": cfg.resume})
    cfg.data_path, cfg.output = Path(cfg.data_path), Path(cfg.output)
    root = checkpoint.get("data_root")  # the run's data_path is relative to where it started: resumed elsewhere,
    if "data_path" not in given and not cfg.data_path.exists() and root and Path(root).is_dir():  # its data is there
        cfg.data_path = Path(root)
    return cfg, checkpoint


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


def nothing_to_resume(run: Path) -> str:
    """What --resume of a run folder without last.pth says: a run killed while its first epoch was saved left
    only its best.pth, or nothing, with its config.yaml, which starts it again in the same folder."""
    if (run / "best.pth").is_file():
        return f"{run} has no last.pth, only best.pth (stopped while saving): {resume_command(run / 'best.pth')} " \
               "goes on from it"
    if records := records_past_checkpoints(run):  # a run's whose checkpoints were deleted: not one to start again
        return f"{run} holds no checkpoint, only its run's {' and '.join(records)} (its checkpoints gone): nothing " \
               "to resume; a new run goes under another --name"
    return f"{run} holds no checkpoint" + (f": the run stopped before its first epoch was saved. To start it again: "
                                           f"{start_again_command(run)}" if (run / "config.yaml").is_file() else "")


def resumed_file(cfg) -> Path:
    """The checkpoint --resume names: a run folder means its last.pth, or for --eval-only its best.pth."""
    if not cfg.resume.is_dir():
        return cfg.resume
    return evaluated_file(cfg.resume) if cfg.eval_only else cfg.resume / "last.pth"


def evaluated_file(run: Path) -> Path:
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
    return best if best.is_file() or not (run / "last.pth").is_file() else run / "last.pth"


def weights_of_typed_model(cfg, parser, argv) -> None:
    """A config that names its own model's official weights (configs/finetune_*.yaml) with another --model typed:
    that model's (weights/<model>.pth, which --download-weights fetches), not the config's model's, which it cannot
    load (the run stopped on an architecture error, and --download-weights fetched nothing)."""
    named, typed = config_named(argv), typed_flags(parser, argv)
    if cfg.resume or not named or "model" not in typed or "weights" in typed:
        return
    values = read_yaml_config(named, parser)
    try:
        its_own = "model" in values and values.get("weights") == official_weights_file(resolve_variant(values["model"]))
        other = its_own and resolve_variant(cfg.model) != resolve_variant(values["model"])
    except UserError:  # an unknown model: said where it is built
        return
    if other:
        if launched_first():
            print(f"notice: {named} names the weights of its model, {values['weights']}; for --model {cfg.model}: "
                  f"{official_weights_file(resolve_variant(cfg.model))} (--weights FILE for others)")
        cfg.weights = None


def model_of_weights(cfg, parser, argv) -> None:
    """--weights naming a train.py checkpoint, with no --model typed or in --config: the checkpoint's model, its
    variant (the default swin_tiny would refuse a swin_micro run's weights) and the image and window sizes it was
    built with where none is given (a 384 px run's went on at 224 without a word)."""
    given = explicit_flags(parser, argv)
    if not (isinstance(cfg.weights, Path) and cfg.weights.is_file()) or is_program(cfg.weights):
        return
    saved = load_checkpoint(cfg.weights, mmap=True)
    other = resolve_variant(cfg.model) != saved.get("variant")
    if not is_run_checkpoint(saved) or other and "model" in given:  # another model asked for: its own sizes
        return
    taken = {"model": saved["variant"]} if other else {}
    taken.update({key: value for key in ("img_size", "window_size")
                  if (value := saved.get("model_overrides", {}).get(key)) is not None and key not in given})
    if taken and launched_first():
        flags = ", ".join(f"--{key.replace('_', '-')} {value}" for key, value in taken.items())
        print(f"notice: --weights {cfg.weights} is a {saved['variant']} run's: training that model ({flags}; "
              "--model NAME for another)")
    for key, value in taken.items():
        setattr(cfg, key, value)


def val_ratio_of_program(cfg, program, parser, argv) -> None:
    """--eval-only of a program that predict.py --export wrote, with no --val-ratio typed or in --config: its run's
    ratio, so that its run's validation files are drawn, as --eval-only --resume takes a run's (another ratio would
    count training photos). Split folders have their own val/, and no ratio."""
    if program.val_ratio is None or cfg.val_ratio == program.val_ratio or "val_ratio" in explicit_flags(parser, argv) \
            or is_split_root(cfg.data_path):
        return
    print(f"notice: {cfg.weights} was trained at --val-ratio {program.val_ratio:g}: its validation files are "
          "drawn so (--val-ratio sets another)")
    cfg.val_ratio = program.val_ratio


def check_not_in_run_folder(path: Path, checkpoint: dict) -> None:
    """A run goes on in the folder of its checkpoint, writing last.pth, best.pth and its report there: a checkpoint
    copied elsewhere (a folder of another name without the run's config.yaml) would take that folder's best.pth,
    another run's or a file of the user's, for its own, report on it, and write over it."""
    others = [path.parent / name for name in RUN_FILES if (path.parent / name).is_file()
              and (path.parent / name).resolve() != path.resolve()]
    own_name = checkpoint.get("config", {}).get("name") == path.parent.name
    if others and not own_name and not (path.parent / "config.yaml").is_file():
        raise UserError(f"{path} is in a folder that holds a {others[0].name} but no run config.yaml, and a resumed "
                        "run writes its last.pth, best.pth and report beside its checkpoint. Put it in a folder of its "
                        "own first: "
                        f"mkdir runs/NAME && cp {shlex.quote(str(path))} runs/NAME/last.pth, then "
                        f"{resume_command(Path('runs/NAME'))}")


def check_not_going_back(path: Path, checkpoint: dict) -> None:
    """Training on from a checkpoint older than its run folder's last.pth (a best.pth, most often) would train
    those epochs again over last.pth: refused, with the two ways on. --eval-only reads any checkpoint."""
    last = path.parent / "last.pth"
    if not last.is_file() or last.resolve() == path.resolve():
        return
    try:
        newer = load_checkpoint(last, mmap=True)  # mapped: only its counts are read
    except UserError as err:  # nothing in it to lose: the run goes on from `path`, its next save replaces it
        print(f"notice: {err}: going on from {path}; the next save writes a new {last.name}")
        return
    if (newer["epoch"], newer["batches_done"]) > (checkpoint["epoch"], checkpoint["batches_done"]):
        done = f"{newer['epoch']} epochs" + (f" and {newer['batches_done']} batches" if newer["batches_done"] else "")
        aside = path.parent / f"last-step{newer['step']}.pth"
        raise UserError(f"{path} is from epoch {checkpoint['epoch']}, but {last} has {done}: training on from "
                        f"{path.name} would write over them. To go on from there: {resume_command(path.parent)}. "
                        f"To train again from epoch {checkpoint['epoch']}, set {last} aside first (mv {last} {aside})")


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
        raise UserError(f"no checkpoint to predict with: no runs/*/best.pth in {Path.cwd()}. Train one "
                        f"(python {train_script()} --data-path flower_photos) or pass one with --weights FILE (a plain "
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


def evaluation_in_run(cfg, checkpoint: dict, splits, samples: list, recorded: set | None) -> tuple:
    """--eval-only of a run's checkpoint: (the folder its report goes to, the checkpoint as the report names it). In
    the run's folder, a folder per checkpoint and data folder, so that no evaluation writes over another's: best.pth's
    eval_val/, another checkpoint's eval_val_<its name>/ (eval_val_last/), and for another data folder than the
    run's own -<folder> after either (eval_val-photos/); and what its figures count that they should not, said first
    and again in the report (a list of warnings): a test/ split since the run started (test_changed), and the
    evaluated photos that the run trained on (photos_trained_on)."""
    path = resumed_file(cfg)
    own = Path(cfg.data_path).resolve() == Path(checkpoint.get("data_root", cfg.data_path)).resolve()
    out = path.parent / (f"eval_{cfg.split}" + ("" if path.name == "best.pth" else f"_{path.stem}")
                         + ("" if own else f"-{Path(cfg.data_path).resolve().name}"))
    epoch, batches = checkpoint.get("epoch", "?"), checkpoint.get("batches_done")  # a stop's last.pth: midway
    source = f"{path} (in epoch {epoch + 1}, batch {batches})" if batches else f"{path} (epoch {epoch})"
    # a copy of its data, a superset; or its own class folders drawn again (another --val-ratio)
    caveats = []
    if own and cfg.split == "test" and (changed := test_changed(path.parent, splits)):
        caveats.append(changed)
    if (not own or splits.drawn and recorded is None) and (trained := photos_trained_on(path.parent, samples)):
        caveats.append(f"{trained[0]} of the {len(samples)} images evaluated are photos the run trained on (the "
                       f"same class folder, name and size in {trained[1]}): its figures count them. Evaluate on "
                       "photos it did not train on")
    for caveat in caveats:
        print(f"warning: {caveat}", file=sys.stderr)
    return out, source, caveats


def test_changed(run_dir: Path, splits) -> str | None:
    """--eval-only --split test of a run on its own split folders: a test/ with images it did not hold at the run's
    start was split since (split_data.py --test-ratio, run again into the folder), from the train/ the run trained
    on; what to say, with what to do. Runs that recorded no test/ (before 2026-12-01) are not checked."""
    record = read_split_record(run_dir / SPLIT_FILE)
    if record is None or not record.get("split_root") or not isinstance(record.get("test"), list) \
            or record["data_path"] != str(splits.root.resolve()):
        return None
    new = {Path(p).relative_to(splits.root).as_posix() for p, _ in splits.test} - set(record["test"])
    if not new:
        return None
    return (f"{len(new)} of the {len(splits.test)} images in {splits.root}/test were not there when this run "
            "started: split since, they may be photos it trained on, and its test figures then count them. A test "
            "split is drawn before training: split_data.py --test-ratio into a new --out, and train on it")


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
