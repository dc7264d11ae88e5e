"""Imbalanced classes: train.py with --balance off, sampler and loss, at equal epochs and seeds, on
an imbalanced copy of a folder of class folders.

    python bench/bench_balance.py                        # samples/flowers, daisy's training photos cut to a quarter
    python bench/bench_balance.py flower_photos --cut roses --epochs 20 --img-size 128 --seeds 0

The folder is split (stratified, --val-ratio, seed 0) into train/ and val/ under a temporary
folder (links, not copies); then one class keeps only --keep of its training photos, while its
validation photos stay, so every class is measured on as many photos as before. The small variant
is trained from scratch on the CPU with each --balance setting, everything else equal, for each
seed. Printed for each: the final weights' balanced accuracy on val (the mean per-class recall;
val stays balanced, so it equals top-1 here), the cut class's recall and the mean recall of the
other classes, then their means over the seeds.
"""
import argparse
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import print_header  # bench/ is on the path when this script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at its root
from config import POSITIVE, POSITIVE_INT, ranged  # noqa: E402
import evaluation  # noqa: E402
from data import build_normalize, build_transform  # noqa: E402
from loaders import ImageDataset, build_loader  # noqa: E402
from images import BUNDLED_SAMPLE, read_class_root  # noqa: E402
from splits import load_splits, split_by_class  # noqa: E402
from model import create_model  # noqa: E402
from utils import counted  # noqa: E402

SETTINGS = ("off", "sampler", "loss")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path(os.path.relpath(BUNDLED_SAMPLE)),
                        help="class folders of photos (default: samples/flowers)")
    parser.add_argument("--cut", help="the class to cut (default: the first in sorted order)")
    parser.add_argument("--keep", type=ranged(float, 0, 1, low_open=True), default=0.25,
                        help="share of its training photos the cut class keeps (default: 0.25)")
    parser.add_argument("--val-ratio", type=ranged(float, 0, 1, low_open=True, high_open=True), default=0.3,
                        help="share of each class for validation (default: 0.3)")
    parser.add_argument("--model", default="swin_micro_patch4_window4_128",
                        help="the variant, trained from scratch (default: swin_micro_patch4_window4_128)")
    parser.add_argument("--img-size", type=POSITIVE_INT, default=64, help="default: 64")
    parser.add_argument("--epochs", type=POSITIVE_INT, default=30, help="default: 30")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=16, help="default: 16")
    parser.add_argument("--lr", type=POSITIVE, default=1e-3, help="default: 1e-3")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run of each setting a seed "
                        "(default: 0 1 2)")
    return parser.parse_args()


def main():
    args = parse_args()
    print_header()
    with tempfile.TemporaryDirectory() as scratch:
        data, cut, counts = imbalanced_split(args.folder, args.cut, args.keep, args.val_ratio, Path(scratch))
        print(f"data: {args.folder}, split {1 - args.val_ratio:.0%}/{args.val_ratio:.0%} (seed 0), then {cut} cut to "
              f"{args.keep:g} of its training photos: train {counts['train']}, val {counts['val']} per class")
        print(f"training: {args.model} at {args.img_size} px from scratch on the CPU, {counted(args.epochs, 'epoch')}, "
              f"batch {args.batch_size}, lr {args.lr:g}, seeds {' '.join(map(str, args.seeds))}")
        header = f"{'balance':<8} {'seed':>4} {'balanced acc':>12} {cut + ' recall':>14} {'others recall':>14}"
        print(header)
        results = {setting: [] for setting in SETTINGS}
        for seed in args.seeds:
            for setting in SETTINGS:
                run = Path(scratch) / "runs" / f"{setting}-{seed}"
                train(data, run, setting, seed, args)
                results[setting].append(evaluate(run / "last.pth", data, cut))
                print(row(setting, seed, *results[setting][-1]), flush=True)
    print(f"mean over {counted(len(args.seeds), 'seed')}:\n{header}")
    for setting, values in results.items():
        print(row(setting, "", *(statistics.mean(column) for column in zip(*values))))


def row(setting: str, seed, balanced: float, recall: float, others: float) -> str:
    return f"{setting:<8} {seed:>4} {balanced:12.3f} {recall:14.3f} {others:14.3f}"


def imbalanced_split(folder: Path, cut: str | None, keep: float, val_ratio: float, scratch: Path):
    """A split root under `scratch` whose class `cut` keeps `keep` of its training photos (as links)."""
    classes, images, _ = read_class_root(folder)
    cut = cut or classes[0]
    if cut not in classes:
        raise SystemExit(f"--cut {cut}: no such class in {folder} ({', '.join(classes)})")
    splits = split_by_class(images, val_ratio, 0.0, seed=0)
    train = [(path, label) for path, label in splits["train"] if label != classes.index(cut)]
    mine = [(path, label) for path, label in splits["train"] if label == classes.index(cut)]
    train += random.Random(0).sample(mine, max(1, math.ceil(len(mine) * keep)))
    root = scratch / "data"
    for split, samples in (("train", train), ("val", splits["val"])):
        for path, label in samples:
            target = root / split / classes[label] / Path(path).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(Path(path).resolve())
    counts = {split: [sum(label == k for _, label in samples) for k in range(len(classes))]
              for split, samples in (("train", train), ("val", splits["val"]))}
    return root, cut, counts


def train(data: Path, run: Path, balance: str, seed: int, args) -> None:
    command = [sys.executable, str(ROOT / "train.py"), "--data-path", str(data), "--model", args.model,
               "--img-size", str(args.img_size), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr), "--warmup-epochs", "1", "--seed", str(seed), "--balance", balance,
               "--weights", "none", "--device", "cpu", "--workers", "0", "--no-progress",
               "--output", str(run.parent), "--name", run.name]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"train.py failed:\n{' '.join(command)}\n{done.stderr[-2000:]}")


def evaluate(checkpoint: Path, data: Path, cut: str) -> tuple:
    """(balanced accuracy, the cut class's recall, the other classes' mean recall) on val."""
    saved = torch.load(checkpoint, weights_only=True)
    model = create_model(saved["variant"], **saved["model_overrides"])
    model.load_state_dict(saved["model"])
    splits = load_splits(data, check=False)
    loader = build_loader(ImageDataset(splits.val, build_transform(saved["img_size"], train=False)), 32,
                          train=False, num_workers=0)
    result = evaluation.evaluate(model, loader, build_normalize(), len(splits.classes), torch.device("cpu"), None,
                                 show_progress=False)
    recalls = [recall for _, recall, _, _ in evaluation.per_class_metrics(result["confusion"])]
    mine = recalls.pop(splits.classes.index(cut))
    others = [recall for recall in recalls if recall is not None]  # None: a class with no validation photo
    return result["balanced_acc"], math.nan if mine is None else mine, statistics.mean(others) if others else math.nan


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
