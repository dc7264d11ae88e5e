"""Split a folder of class folders into train/ and val/ (and test/) folders, as the tutorial's split_data.py does.

    python split_data.py                  # flower_photos/<class>/* -> data/train, data/val: 10% per class, seed 0
    python split_data.py --download       # fetch flower_photos first (218 MiB, SHA-256 checked), then split
    python split_data.py --data-path photos --out photos_split --val-ratio 0.2 --test-ratio 0.1
    python split_data.py --mode hardlink  # links instead of copies (same filesystem); or --mode symlink
    python split_data.py --max-size 512   # copies no larger than 512 px a side, faster to decode in training
    python split_data.py --force          # write into an --out that holds other files (they are kept)

Writes into --out: train/<class>/, val/<class>/ (test/<class>/), class_indices.json, split_report.txt
(images per class and split, and every file skipped because it does not decode), class_distribution.png,
and split_manifest.json, the list of what it wrote: a later run removes those files and nothing else.
Nothing under --data-path is ever moved, changed or deleted. train.py reads --out as its --data-path.
"""
import argparse
import itertools
import os
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

import plots
from config import COUNT, FRACTION, POSITIVE_INT, folder_path, ranged, sha256_digest, web_address
from download import FLOWER_PHOTOS_SHA256, FLOWER_PHOTOS_URL, fetch_flower_photos
from images import BUNDLED_SAMPLE, read_class_root, readable_folder, write_class_indices
from splits import (SPLITS, case_twins, check_split_finished, class_imbalance, is_split_root, per_class_counts,
                    split_by_class, split_counts, without_validation)
from split_folders import finish_split, place_image, prepare_out
from stopping import Terminated
from utils import ArgumentParser, UserError, counted, nearest_existing, padded, printable, run_cli, text_width

REPORT, CHART, CLASS_INDICES = "split_report.txt", "class_distribution.png", "class_indices.json"


def parse_args(argv=None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data-path", type=folder_path, default=Path("flower_photos"),
                        help="folder of class folders, <class>/<image>; only ever read")
    parser.add_argument("--out", type=folder_path, default=Path("data"), help="where the split folders go")
    parser.add_argument("--val-ratio", type=ranged(float, 0, 1, low_open=True, high_open=True), default=0.1,
                        help="share of each class for validation, above 0: train.py validates on val/ (as "
                             "the tutorial's split_data.py)")
    parser.add_argument("--test-ratio", type=FRACTION, default=0.0, help="share of each class for a test split")
    parser.add_argument("--seed", type=COUNT, default=0, help="the same seed gives the same split")
    parser.add_argument("--mode", choices=("copy", "hardlink", "symlink"), default="copy",
                        help="how images get into --out")
    parser.add_argument("--max-size", type=POSITIVE_INT, default=None,
                        help="write images larger than this many px a side as smaller upright RGB copies")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out; only files an earlier split wrote are removed")
    parser.add_argument("--download", action="store_true", help="download and extract flower_photos first")
    parser.add_argument("--url", type=web_address, default=FLOWER_PHOTOS_URL,
                        help="where --download fetches the archive")
    parser.add_argument("--sha256", type=sha256_digest, default=FLOWER_PHOTOS_SHA256,
                        help="the archive's expected SHA-256")
    args = parser.parse_args(argv)
    if args.val_ratio + args.test_ratio >= 1:  # before any download or the check of every image
        parser.error(f"--val-ratio {args.val_ratio:g} and --test-ratio {args.test_ratio:g} add up to 1 or more: "
                     "they must leave images for training")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    source, out = args.data_path, args.out
    if args.download:
        check_out(source, out)  # before the download: they are paths, known now
        try:
            fetch_flower_photos(source, args.url, args.sha256)
        except UserError as err:  # offline, most often: the photos that came with the project split without a network
            out_flag = "" if out == Path("data") else f" --out {shlex.quote(str(out))}"
            script = shlex.quote(os.path.relpath(__file__))  # typed from another folder, as the user ran it
            raise UserError(f"{err}. Or split the bundled sample: python {script} --data-path {bundled_sample()}"
                            f"{out_flag}") from None
    if not source.is_dir():
        problem = "is a file, not a folder" if source.exists() else "not found"
        fetch = ("pass --download to fetch it" if source.name == "flower_photos" else
                 "--download fetches the tutorial's flower_photos into it")
        raise UserError(f"data path {problem}: {source}. Give a folder of class folders with --data-path (such as "
                        f"{bundled_sample()}, the bundled photos), or {fetch}")
    readable_folder(source)
    if is_split_root(source):  # split already; a Kaggle or Roboflow download (test/, valid/) too: its folders would
        beside = ", ".join(sorted(p.name + "/" for p in source.iterdir()  # become classes named train, test, valid
                                  if p.is_dir() and p.name != "train" and not p.name.startswith(".")))
        raise UserError(f"{source} is split already (it has train/<class>/ folders, and {beside or 'no other'}): "
                        "train.py reads a folder with train/ and val/ as it is (a valid/ renamed val/ is one); to "
                        f"split its training photos, give --data-path {source / 'train'} and another --out")
    check_split_finished(source)  # the train/ of an interrupted split: the classes it wrote so far
    check_out(source, out)  # after what is said of the photos themselves (split already: which folder to give)

    if args.mode == "hardlink":  # known before the earlier split is cleared, not at the first link
        out_device = os.stat(nearest_existing(out.resolve())).st_dev
        if out_device != os.stat(source).st_dev:
            raise UserError(f"--mode hardlink needs --out on the file system of --data-path {source}, and {out} is on "
                            "another: use --mode copy or --mode symlink, or an --out beside the photos")
    classes, images, skipped = read_class_root(source, split_too=False)
    splits = split_by_class(images, args.val_ratio, args.test_ratio, args.seed)
    plan = {f"{split}/{classes[label]}/{Path(path).relative_to(source / classes[label]).as_posix()}": Path(path)
            for split in SPLITS for path, label in splits[split]}
    if args.mode == "hardlink":  # and each photo's (os.stat follows links): a class folder linked from another disk
        elsewhere = next((path for path in plan.values() if os.stat(path).st_dev != out_device), None)
        if elsewhere is not None:
            raise UserError(f"--mode hardlink needs every photo on the file system of --out {out}, and {elsewhere} "
                            f"(at {elsewhere.resolve()}) is on another: use --mode copy or --mode "
                            "symlink")
        # and each photo Linux lets this user link (fs.protected_hardlinks: own it, or may read and write it):
        # a shared folder of another user's photos failed at the first link, after the earlier split was removed
        protected = hardlinks_protected() and next((path for path in plan.values() if not may_hardlink(path)), None)
        if protected:
            raise UserError(f"--mode hardlink cannot link {protected}: it belongs to another user and this one may "
                            "not write it, and Linux (fs.protected_hardlinks) allows hard links to such files to "
                            "their owner only: use --mode copy or --mode symlink")
    prepare_out(out, source, [*plan, CLASS_INDICES, REPORT, CHART], args.force)
    shown = [split for split in SPLITS if splits[split] or split != "test"]
    counts = {split: per_class_counts(splits[split], len(classes)) for split in shown}
    report = format_report(source, out, args, classes, counts, skipped)
    try:
        for target, image in tqdm(plan.items(), desc=f"writing {out}", unit="img", disable=None):
            place_image(image, out / target, args.mode, args.max_size)
        write_class_indices(out / CLASS_INDICES, classes)
        (out / REPORT).write_text(report, encoding="utf-8", errors="surrogateescape")
        title = f"Images per class: {source.resolve().name} split into {out.resolve().name}"  # "." has no name
        plots.class_distribution_chart(classes, counts, title).save(out / CHART)
        # every file written: a split stopped before this is refused by train.py and cleared by a run again (and
        # not after the printing, where a reader gone from the pipe, | head, stops the script)
        finish_split(out)
    except (KeyboardInterrupt, Terminated):  # a stop: said with what to do, then as before
        print(f"\n{out} is left unfinished (train.py refuses it): run the same command again to write it whole",
              file=sys.stderr)
        raise
    print(report, end="")
    print(f"wrote {out / CLASS_INDICES}, {out / REPORT} and {out / CHART}")
    if args.val_ratio > 0 and (missing := without_validation(classes, counts["val"])):
        print(f"warning: {missing}; 2 photos or more of each would give them some", file=sys.stderr)
    # per_class_counts, not counts["test"]: a test split that no class has an image for is not shown
    if args.test_ratio > 0 and (missing := without_validation(classes, per_class_counts(splits["test"], len(classes)),
                                                              "test")):
        enough = next(n for n in itertools.count(3) if split_counts(n, args.val_ratio, args.test_ratio)[1])
        print(f"warning: {missing}; {enough} photos or more of each would give them some", file=sys.stderr)
    if notice := plots.letters_missing_notice(classes, f"the labels of {CHART}"):
        print(notice, file=sys.stderr)
    if twins := case_twins(classes):
        print(f"warning: {twins}", file=sys.stderr)
    imbalance = class_imbalance(classes, [len(paths) for paths in images])
    if imbalance:
        print(f"warning: {imbalance}; train.py --balance sampler (or loss) compensates", file=sys.stderr)


def check_out(source: Path, out: Path) -> None:
    """What --out cannot be, told from the two paths alone: before a download, and before the images are checked,
    which takes minutes on a large folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a folder for the split (made if missing)")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside --data-path {source}: the split must go elsewhere, "
                        "because nothing is ever written under --data-path")
    # and the reverse: photos in --out's train/ (val/, test/) are what a split there replaces, an earlier split's
    # files removed before the new one is written (a re-split of data/train into data: its val/ photos went)
    for split in SPLITS:
        if (out / split).resolve() in (source.resolve(), *source.resolve().parents):
            raise UserError(f"--data-path {source} is inside {out / split}, which a split into --out {out} "
                            f"replaces: move the class folders out of {out / split} first (or split into "
                            "another --out)")


def hardlinks_protected() -> bool:
    """Whether Linux's fs.protected_hardlinks is on (its default): hard links to a file only for its owner, or one
    who may read and write it. Elsewhere, no."""
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "1"
    except OSError:
        return False


def may_hardlink(path: Path) -> bool:
    """Whether this user may hard-link the file at `path` where hardlinks_protected(): its owner, or one who may read
    and write it (root may link any)."""
    return os.stat(path).st_uid == os.geteuid() or os.access(path, os.R_OK | os.W_OK)


def bundled_sample() -> str:
    """samples/flowers as the user types it from where they are: what splits with no download."""
    return shlex.quote(os.path.relpath(BUNDLED_SAMPLE))


def format_report(source: Path, out: Path, args, classes: list[str], counts: dict, skipped: list) -> str:
    """The table of images per class and split, and every skipped file with its reason."""
    skipped_per_class = [sum(Path(path).relative_to(source).parts[0] == name for path, _ in skipped)
                         for name in classes]
    columns = {**counts, "skipped": skipped_per_class}
    width = max(len("class"), *map(text_width, classes))
    lines = [f"{source} -> {out}: seed {args.seed}, val {args.val_ratio:g}, test {args.test_ratio:g}, "
             f"mode {args.mode}" + (f", max size {args.max_size}" if args.max_size else ""),
             f"{'class':<{width}}" + "".join(f"{name:>9}" for name in columns)]
    lines += [padded(name, width) + "".join(f"{column[i]:>9}" for column in columns.values())
              for i, name in enumerate(classes)]
    totals = [*map(sum, counts.values()), len(skipped)]  # images beside the class folders are skipped in no class
    lines.append(f"{'total':<{width}}" + "".join(f"{total:>9}" for total in totals))
    if skipped:
        lines.append(f"skipped {counted(len(skipped), 'file')}, each with why:")
        lines += [f"  {printable(path)}: {reason}" for path, reason in skipped]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    run_cli(main)
