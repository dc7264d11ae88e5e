"""The settings a run starts or goes on with (resolve), refused where they ask what cannot be done (check_flags):
the checkpoint --resume names and the settings the run goes on with (resume_config; a run folder with nothing to
resume: nothing_to_resume), the model a run's checkpoint given as --weights builds (model_of_weights), a config's own
weights for another --model typed (weights_of_typed_model), the --val-ratio of an exported program's run
(val_ratio_of_program); and the photos it trains and validates on (load_data: a resumed run's as it drew them, checked
against its classes). Where the run writes is runs.py's.
"""
import argparse
import shlex
from pathlib import Path

import run_log  # as a module: run_log imports this one
from checkpoints import TRAINING_STATE, is_run_checkpoint, load_checkpoint
from config import config_named, explicit_flags, parse_config, read_yaml_config, typed_flags
from data import check_decode, check_mixup_batch
from optim import check_schedule
from download import fetch_tutorial_photos_if_missing, official_weights_file
from export import is_program
from splits import check_same_everywhere, check_validation, is_split_root, load_splits
from variants import VARIANTS, resolve_variant
from processes import launched_first, resume_command, start_again_command
from runs import (RUN_FILES, check_classes_unchanged, check_output, check_validation_unchanged, checkpoint_of_run,
                  lock_run_folder, recorded_split, records_past_checkpoints, resumed_file)
from utils import UserError


def resolve(parser, argv) -> tuple:
    """(settings, checkpoint or None) of train.py's command line: its --config, the run it resumes and the weights it
    names read, and what cannot be done refused before any work."""
    cfg = parse_config(parser, argv)
    weights_of_typed_model(cfg, parser, argv)
    if isinstance(cfg.weights, Path) and cfg.weights.is_dir():  # a run folder, as predict.py takes it: its best.pth
        cfg.weights = checkpoint_of_run(cfg.weights)
    cfg, checkpoint = resume_config(parser, cfg, argv)
    if checkpoint is None:  # a new run from a run's weights: its model, as predict.py takes it, unless --model is given
        model_of_weights(cfg, parser, argv)
    check_flags(cfg, checkpoint)
    if checkpoint is None:  # where the run folder (or an evaluation's) will go: refused before any work
        check_output(cfg.output, cfg.data_path)
    return cfg, checkpoint


def check_flags(cfg, checkpoint) -> None:
    """What the settings ask that cannot be done, refused before any work: flags that would do nothing in silence,
    or the opposite of what they say."""
    if not cfg.eval_only and cfg.split != "val":  # passed over in silence: training validates on val
        raise UserError(f"--split {cfg.split} is for --eval-only (training validates on val): add --eval-only to "
                        f"evaluate a checkpoint on the {cfg.split} split")
    if not cfg.eval_only:  # said before the data is read or fetched, weights downloaded or the model built
        check_schedule(cfg, (checkpoint or {}).get("epoch", 0))
        check_mixup_batch(cfg.mixup, cfg.cutmix, cfg.batch_size)
        check_decode(cfg.decode, cfg.recipe)
    if cfg.eval_only and checkpoint is None and cfg.weights in (None, "none"):
        raise UserError("--eval-only needs a checkpoint: --resume runs/<name>/best.pth (or --weights FILE)")


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
            weights = cfg.resume if cfg.resume.is_file() else checkpoint_of_run(cfg.resume)
            raise UserError(f"a resumed run goes on with its own model: {'; '.join(changed)}. To train another "
                            f"from its weights, start a new run: --weights {shlex.quote(str(weights))} --name NEW")
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
                            f"{shlex.quote(str(cfg.resume if cfg.resume.is_file() else checkpoint_of_run(run)))} "
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


def load_data(cfg, checkpoint, program, default_val_ratio: float, main_process: bool):
    """(the run's splits, the validation files it recorded at its start or None): the tutorial's flower_photos
    fetched where it names them, the files a resumed or evaluated run drew kept, checked against the classes it was
    trained on and --num-classes."""
    fetch_tutorial_photos_if_missing(cfg.data_path, cfg.eval_only)
    if checkpoint is not None and not cfg.data_path.exists():  # its own photos: not the sample
        raise UserError(f"data path not found: {cfg.data_path}. A resumed (or evaluated) run reads the photos it was "
                        "trained on: give where they are now with --data-path DIR")
    # a run resumed (or its checkpoint evaluated) validates on the files it drew at its start
    recorded = None if checkpoint is None else recorded_split(resumed_file(cfg).parent, cfg.data_path, cfg.val_ratio,
                                                              main_process)
    splits = load_splits(cfg.data_path, cfg.val_ratio, seed=0, val_files=recorded, kept_classes=checkpoint is not None)
    check_same_everywhere(splits)  # under torchrun: another machine's copy of the data, the same
    # before the warnings about its files: a class folder added, removed or renamed is what to say first
    trained_on = checkpoint["class_names"] if checkpoint is not None else program.class_names if program else None
    if trained_on is not None:
        check_classes_unchanged(cfg, trained_on, splits.classes)
    if checkpoint is not None and main_process:
        check_validation_unchanged(resumed_file(cfg).parent, splits, recorded is None and not cfg.eval_only)
    if main_process:
        run_log.warn_unreadable(splits, recorded)
    # a resumed run's saved --val-ratio was noticed when it started
    check_validation(splits, cfg, default_val_ratio, main_process and checkpoint is None)
    classes = splits.classes
    if cfg.num_classes is not None and cfg.num_classes != len(classes):
        where = f" (typed, or num_classes in {cfg.config})" if cfg.config else ""  # which, the parser cannot tell
        raise UserError(f"--num-classes {cfg.num_classes}{where} was given, but {cfg.data_path} has {len(classes)} "
                        f"class folders: {', '.join(classes)}. Drop it or fix the folders.")
    return splits, recorded
