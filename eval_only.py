"""train.py --eval-only: a run's checkpoint, other weights (official, timm's, a state dict) or a program that
predict.py --export wrote, evaluated on a split of a data folder; its report.html, report.txt, confusion matrix and
misclassified.csv written, in the run's folder for a run's checkpoint. What its figures count that they should not
(photos the run trained on) is said first and again in the report."""
import shlex
import sys
from pathlib import Path

import torch

import evaluation
import report
from checkpoints import load_checkpoint
from data import build_normalize, build_transform, preprocessing_of, seen_box
from export import ExportedClassifier
from loaders import build_eval_loader
from runs import SPLIT_FILE, photos_trained_on, read_split_record, resumed_file
from splits import is_split_root, without_validation
from utils import UserError, check_writable, counted, seed_everything
from weights import evaluation_preprocessing, model_for_run


def evaluate_checkpoint(cfg, checkpoint, program, splits, device, amp, recorded: set = None) -> None:
    """--eval-only: top-1/top-5, per-class precision and recall, confusion matrix (text and
    picture), and the misclassified files (the tutorial's extra scripts, folded in); of a checkpoint,
    or of a program that predict.py --export wrote (an export.ExportedClassifier, evaluated as it ships: on its own
    device, with its own crop)."""
    if program is not None:
        model, device, amp = program, program.device, None
        preprocessing = preprocessing_of(program)
    else:
        seed_everything(cfg.seed)
        # a run's checkpoint, or --weights' file read once, for the model and for how it is evaluated; None: the
        # official file model_for_run finds by the variant's name
        weights = checkpoint if checkpoint is not None else load_checkpoint(cfg.weights) if cfg.weights.is_file() \
            else None
        model = model_for_run(cfg, len(splits.classes), checkpoint, True, read=weights).to(device)
        preprocessing = evaluation_preprocessing(weights, model.img_size)
    transform = build_transform(model.img_size, train=False, **preprocessing)
    samples = splits.test if cfg.split == "test" else splits.val
    if not samples:
        split = is_split_root(cfg.data_path)
        photos = "PHOTOS" if split else shlex.quote(str(cfg.data_path))
        how = (f"draw one before training, {'from the class folders it was split from (PHOTOS) ' if split else ''}"
               f"into a new folder (python split_data.py --data-path {photos} --test-ratio 0.1 --out NEW_DIR), and "
               "train on it: split from this folder now, test/ would hold photos the model trained on"
               if cfg.split == "test" else "use --val-ratio above 0, or put images in val/<class>/")
        raise UserError(f"{cfg.data_path} has no {cfg.split} split: {how}")
    split_name = "validation" if cfg.split == "val" else cfg.split
    if missing := without_validation(splits.classes, splits.counts(cfg.split), split_name):  # the page's n/a, said
        print(f"warning: {missing}", file=sys.stderr)
    caveats = []  # what its figures count that they should not: said now, and in the report
    if checkpoint is not None:
        out, source, caveats = evaluation_in_run(cfg, checkpoint, splits, samples, recorded)
    else:  # weights from elsewhere: a run folder of their own; a program's kind said (an int8 one's figures are its)
        source = f"{cfg.weights} ({model.kind})" if isinstance(model, ExportedClassifier) else str(cfg.weights)
        out = cfg.output / (cfg.name or f"eval-{cfg.weights.name}") / f"eval_{cfg.split}"  # flowers.onnx and .pt2 apart
    check_writable(out / "report.txt", beside=True)  # a read-only folder fails before the work
    normalize = None if isinstance(model, ExportedClassifier) else build_normalize()  # a program normalises
    loader = build_eval_loader(samples, transform, cfg, 0, 1)
    result = evaluation.evaluate(model, loader, normalize, len(splits.classes), device, amp, cfg.progress)
    if torch.distributed.is_initialized():  # torchrun with one process (more are refused)
        torch.distributed.destroy_process_group()
    print(report.write_evaluation(out, result, splits.classes, source, model.variant, cfg.split,
                                  out.parent / "metrics.csv", splits.skipped, str(splits.root),
                                  seen_box(model.img_size, preprocessing), caveats))
    wrong = len(result["wrong"])
    print(f"\n{counted(wrong, 'misclassified file')}: {out / 'misclassified.csv'}; picture: "
          f"{out / 'confusion_matrix.png'}; open in a browser: {out / 'report.html'}")


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
