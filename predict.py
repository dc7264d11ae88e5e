"""Classify photos with a trained Swin Transformer: by default the newest training run's best.pth.

    python predict.py tulip.jpg                         # newest runs/*/best.pth; prints the top-5 classes
    python predict.py photos/ more/*.jpg "raw/**/*.png" # files, folders (recursive), globs; in batches
    python predict.py photos/ --json > preds.jsonl      # one JSON object per image, nothing else on stdout
    python predict.py photos/ --output preds.csv        # or preds.json
    python predict.py photos/ --save-vis vis/           # each photo beside a bar chart of its top-k
    python predict.py photos/ --save-vis vis/ --cam     # and where it saw its top class (class activation map)
    python predict.py tulip.jpg --weights runs/<name> --tta --device cuda
    python predict.py tulip.jpg --weights weights/model-9.pth --model swin_tiny_patch4_window7_224 \\
        --num-classes 5 --class-indices class_indices.json        # the tutorial's files
    python predict.py cat.jpg --weights weights/swin_tiny_patch4_window7_224.pth \\
        --model swin_tiny_patch4_window7_224 --num-classes 1000    # official ImageNet weights: indices
    python predict.py --export flowers.onnx             # ONNX; or .pt2 (torch.export), .pt (TorchScript)
    python predict.py photos/ --weights flowers.onnx    # the same results through ONNX Runtime (or a .pt2)

Results go to stdout; the checkpoint used, unreadable files and progress to stderr. Exit status 1
when an image could not be read (the others are still classified), 2 for a usage error, 130 after
Ctrl-C (the images classified until then are still written to --output).
"""
import argparse
import json
import sys
from pathlib import Path

# stopping.py and utils.py import the standard library's modules only: set before torch's import, which takes
# seconds, and loads OpenMP, which reads its settings then
from stopping import Terminated, ctrl_c_ends_quietly, exit_status, held_signals
from utils import threads_sleep_while_waiting
if __name__ == "__main__":
    ctrl_c_ends_quietly()
    threads_sleep_while_waiting()

import cards
import plots
from evaluation import classify
from config import COUNT, POSITIVE_INT
from data import Normalize, build_transform, preprocessing_of
from export import (ExportedClassifier, add_arguments as add_export_arguments, check_target as check_export_target,
                    chosen_exporter, is_program)
from report import write_predictions
from images import NOT_A_FILE, UNREAD_PHOTOS, image_problem, list_images, set_image_checks
from precision import amp_dtype
from utils import (ArgumentParser, UserError, check_writable, counted, padded, printable, run_cli, select_device,
                   text_width, tune_for)
from weights import load_classifier
from workers import default_workers


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="*", help="image files, folders (searched recursively) or glob patterns")
    g = p.add_argument_group("model")
    g.add_argument("--weights", type=Path, metavar="FILE", help="a train.py checkpoint or run folder, a plain "
                   "state dict with --model, or an .onnx or .pt2 that --export wrote (default: the newest "
                   "runs/*/best.pth)")
    g.add_argument("--model", metavar="NAME", help="the variant of a plain state dict (a train.py checkpoint "
                   "names its own)")
    g.add_argument("--num-classes", type=POSITIVE_INT, metavar="N", help="checked against the weights' classifier "
                   "(default: its size)")
    g.add_argument("--class-indices", type=Path, metavar="FILE", help="class_indices.json naming the classes "
                   "(default: the checkpoint's names; for a plain state dict, the class indices)")
    g.add_argument("--img-size", type=POSITIVE_INT, help="input size (default: the checkpoint's, else the variant's)")
    g.add_argument("--tta", action="store_true", help="average with the mirrored image (default: off)")
    g.add_argument("--device", type=str, default="auto",
                   help="auto, cpu, cuda, cuda:N, a GPU index N or mps (default: auto)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"], help="mixed precision; auto = "
                   "bf16 or fp16 on a GPU, off on a CPU, where --amp bf16 ran some 1.6x as fast on one that computes "
                   "in bf16 (AVX512-BF16 or AMX: precision.cpu_computes_bf16) (default: auto)")
    g.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="default: 32")
    g.add_argument("--workers", type=COUNT, help="image loading processes, for more than one batch (default: 0 on "
                   "a CPU, where the model needs every core; with a GPU, the CPU cores less one)")
    g = p.add_argument_group("output")
    g.add_argument("--topk", type=POSITIVE_INT, default=5, help="classes per image, at most all (default: 5)")
    g.add_argument("--json", action="store_true", help="JSON Lines on stdout: {path, topk: [{label, index, prob}]}")
    g.add_argument("--output", type=Path, metavar="FILE", help="write the results to FILE.json or FILE.csv "
                   "instead of the table")
    g.add_argument("--save-vis", type=Path, metavar="DIR", help="write each photo with its top-k chart as a PNG")
    g.add_argument("--cam", action="store_true", help="with --save-vis: each card also shows the crop the model saw, "
                   "tinted where it saw its top class (its class activation map; a checkpoint's, not a program's)")
    add_export_arguments(g)
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    set_image_checks()  # decompression bombs refused, as training refuses them
    if not args.images and args.export is None:
        raise UserError("name the images to classify: files, folders or glob patterns (or --export FILE)")
    if not args.images and (unused := [flag for flag, given in (("--output", args.output is not None),
                                                                ("--save-vis", args.save_vis is not None),
                                                                ("--json", args.json), ("--tta", args.tta)) if given]):
        # an empty results file and an empty folder were written, without a word
        raise UserError(f"{' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} for the images classified, "
                        "and none are named: name them after --export FILE, or drop the flag")
    if args.cam and args.save_vis is None:
        raise UserError("--cam draws on the --save-vis cards: add --save-vis DIR")
    if args.output is not None and args.output.is_dir():
        raise UserError(f"--output {args.output} is a folder: name the file to write, such as "
                        f"{args.output / 'predictions.csv'} (or .json)")
    if args.output is not None and args.output.suffix.lower() not in (".json", ".csv"):
        raise UserError(f"--output {args.output}: the name must end in .json or .csv")
    if args.output is not None:  # what cannot be written fails before the classifying, not after
        check_writable(args.output, beside=True)  # written beside and renamed: put_in_place
    if is_program(args.weights) and (args.export is not None or args.cam):  # before any folder is made
        raise UserError(f"--{'export' if args.export is not None else 'cam'} needs a checkpoint, not the program "
                        f"{args.weights}")
    if args.save_vis is not None:
        cards.check_folder(args.save_vis)
    export = chosen_exporter(args)
    if export is not None:  # as --output: before the model is loaded, traced and checked
        check_writable(args.export, beside=True)  # written beside and renamed: put_in_place
    unlisted, passed = [], []  # folders that cannot be read (counted as images that could not be read); files passed
    paths = list_images(args.images, cards.is_card, unlisted, passed)  # before the model: a mistyped path fails at once
    for folder, why in unlisted + passed:  # over in a folder (a HEIC photo, a second name of one): each said
        print(f"warning: {printable(folder)}: {why}", file=sys.stderr)
    # failed, as if named: a photo in a format it does not read, a pipe or a device named as an image
    unread = [path for path, _ in passed if Path(path).suffix.lower() in UNREAD_PHOTOS]
    special = [path for path, why in passed if why == NOT_A_FILE]
    device = select_device(args.device)
    tune_for(device)  # fp32 stays fp32: an export is checked against the model at 1e-4
    clf = load_classifier(args.weights, args.model, args.num_classes, args.class_indices, args.img_size)
    program = isinstance(clf.model, ExportedClassifier)
    clf.model.to(device).eval()
    device = clf.model.device if program else device  # where a program runs: its runtime decides
    print(f"{clf.source}: {clf.model.variant}, {len(clf.class_names)} classes, {clf.model.img_size} px, "
          f"on {device}" + (f" ({clf.model.kind})" if program else ""), file=sys.stderr)
    if args.save_vis is not None and (notice := plots.letters_missing_notice(clf.class_names, "the cards")):
        print(notice, file=sys.stderr)  # a machine the model is shipped to may lack the fonts of the one it trained on
    if export is not None:
        check_export_target(args.export, clf.source)
        note = export(clf, args.export, device, args.export_input)
        print(f"wrote {args.export} ({note})", file=sys.stderr)
    k, width = min(args.topk, len(clf.class_names)), max(text_width(name) for name in clf.class_names)
    amp = None if program else amp_dtype(args.amp, device)  # a program is fp32
    workers = args.workers if args.workers is not None else 0 if device.type == "cpu" else default_workers(device)
    transform = build_transform(clf.model.img_size, train=False, **preprocessing_of(clf))
    normalize = None if program else Normalize(clf.mean, clf.std)  # a program normalises: it takes the uint8 crop
    # the results are kept for --output alone, written at the end: printed, a million images' would be gigabytes
    results, classified, failed, card_names, stopped, cardless = [], 0, [], set(), None, 0
    try:
        for path, probs, seen in classify(clf.model, paths, transform, normalize, device, amp, args.batch_size,
                                              workers, args.tta, args.cam, args.progress) if paths else ():
            if probs is None:
                failed.append(path)
                why = image_problem(Path(path)) or "could not be read"
                print(f"warning: {printable(path)}: {why}", file=sys.stderr)
                if args.output is not None:  # a row of its own: the file says which images it lacks results for
                    results.append({"path": path, "topk": [], "error": why})
                continue
            top = probs.topk(k)
            result = {"path": path, "topk": [{"label": clf.class_names[i], "index": i, "prob": round(p, 6)}
                                             for p, i in zip(top.values.tolist(), top.indices.tolist())]}
            classified += 1
            if args.output is not None:
                results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
            elif args.output is None:
                print(printable(path), *(f"  {r:>{len(str(k))}}. {padded(e['label'], width)}  {e['prob']:7.2%}"
                              for r, e in enumerate(result["topk"], 1)), sep="\n")
            if args.save_vis is not None and not cards.save_card(result, args.save_vis, card_names, seen):
                cardless += 1
    except (KeyboardInterrupt, Terminated) as stop:  # Ctrl-C, SIGTERM: what was classified is still written, counted
        stopped = stop.name if isinstance(stop, Terminated) else "Ctrl-C"
    finally:  # and after an error (a full disk for the cards), before it is said
        if args.output is not None:  # and the photos a folder held in a format it does not read, each with why
            # a stop's file says which images it has no results for, as it says an unreadable one's
            with held_signals():  # a Ctrl-C while it is written: taken once it is whole (a torn file read as all)
                left = [{"path": path, "topk": [], "error": f"not classified: stopped by {stopped}"}
                        for path in paths[len(results):]] if stopped else []  # one result each, in order
                write_predictions(results + left + [{"path": path, "topk": [], "error": why} for path, why in passed
                                                if path in unread or path in special], args.output, k)
    if paths:
        print(f"classified {classified} of {len(paths)} images" + (f"; {len(failed)} could not be read"
              if failed else "") + (f"; {counted(len(unlisted), 'folder')} could not be read"
                                    if unlisted else "") +
              (f"; {counted(len(unread), 'photo')} in a format it does not read" if unread else "") +
              (f"; {len(special)} not a file (a pipe, a socket or a device)" if special else "") +
              (f"; results in {args.output}" if args.output else "") +
              (f"; cards in {args.save_vis}" if args.save_vis is not None and classified > cardless else "") +
              (f"; stopped by {stopped}" if stopped else ""), file=sys.stderr)
    if stopped:
        sys.exit(exit_status(stopped))
    if failed or cardless or unlisted or unread or special:
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main)
