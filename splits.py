"""Splits: a data folder's images as train/val (/test) samples, drawn here from class folders (stratified,
seeded, as the tutorial's read_split_data draws them) or read from split folders as split_data.py writes them; the
counts per class, and the warnings they give (imbalanced classes, classes without validation images).

    from splits import load_splits
    splits = load_splits("flower_photos")   # class folders: split 80/20 here, seed 0, stratified
    splits = load_splits("data")            # or split folders: data/train, data/val (, data/test)
"""
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from images import (BUNDLED_SAMPLE, SYSTEM_FOLDERS, check_images, class_folders, find_images, is_image_file, letters,
                    names_order_hint, read_class_indices, read_class_root, readable_folder, same_names)
from utils import UserError

SPLITS = ("train", "val", "test")
SPLIT_MANIFEST = "split_manifest.json"  # what split_data.py wrote into a split root, and whether it finished


@dataclass
class DataSplits:
    """Samples are (path, label); labels index `classes`. `skipped` is (path, reason) for files that do not decode
    (and links into another class folder)."""
    root: Path
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    drawn: bool = False  # split here from class folders (a run records its validation files: runs.record_split)

    def counts(self, split: str) -> list[int]:
        """Images per class in one split, in class order."""
        return per_class_counts(getattr(self, split), len(self.classes))


def check_same_everywhere(splits: DataSplits) -> None:
    """Under torchrun each process lists its own --data-path (another machine's copy): the same classes and files
    everywhere, or a UserError that names the processes that differ. A copy out of date trained without a word on
    another split (a photo validated by one process, trained on by another), or on labels that disagree (a class
    folder renamed shifts the indices), or failed later in DDP's own traceback (a class more)."""
    from processes import distributed, from_all_processes
    if not distributed():
        return
    import hashlib
    import socket
    listing = [splits.classes, *(sorted(Path(path).relative_to(splits.root).as_posix() for path, _ in part)
                                 for part in (splits.train, splits.val))]
    digest = hashlib.sha256(json.dumps(listing).encode("utf-8", "surrogateescape")).hexdigest()
    seen = from_all_processes((digest, socket.gethostname(), len(splits.classes), len(splits.train), len(splits.val)))
    if len({entry[0] for entry in seen}) > 1:
        each = "; ".join(f"process {rank} on {host}: {classes} classes, {train} training and {val} validation images"
                         for rank, (_, host, classes, train, val) in enumerate(seen))
        raise UserError(f"the processes of this run see different data in {splits.root} ({each}, or the same counts "
                        "of other files or class names): each machine needs the same copy of it")


def per_class_counts(samples: list, num_classes: int) -> list[int]:
    """Images per class of (path, label) pairs, in class order."""
    counts = [0] * num_classes
    for _, label in samples:
        counts[label] += 1
    return counts


IMBALANCE_RATIO = 3.0  # largest class / smallest class above which the scripts warn


def class_imbalance(classes: list[str], counts: list[int], limit: float = IMBALANCE_RATIO) -> str | None:
    """A sentence naming the largest and smallest classes with their ratio, when the largest has
    more than `limit` times the images of the smallest; None when the classes are balanced enough."""
    largest = max(range(len(counts)), key=counts.__getitem__)
    smallest = min(range(len(counts)), key=counts.__getitem__)
    if counts[largest] <= limit * counts[smallest]:
        return None
    if counts[smallest] == 0:
        return (f"the classes are imbalanced: {classes[smallest]} has no image, the largest, {classes[largest]}, "
                f"{counts[largest]}")
    ratio = counts[largest] / max(counts[smallest], 1)
    shown = f"{ratio:.1f}" if float(f"{ratio:.1f}") > limit else f"{ratio:.3g}"  # past the limit, not "3.0x"
    return (f"the classes are imbalanced: the largest, {classes[largest]} ({counts[largest]} images), has "
            f"{shown}x the images of the smallest, {classes[smallest]} ({counts[smallest]})")


def without_validation(classes: list[str], val_counts: list[int], split: str = "validation") -> str | None:
    """A sentence naming the classes that have no image in the validation split (or `split`: one photo of a
    class, a val/ folder made by hand without it), whose recall nothing measures; None when every class has one."""
    missing = [name for name, count in zip(classes, val_counts) if count == 0]
    if not missing:
        return None
    names = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    have, their = ("has", "its") if len(missing) == 1 else ("have", "their")
    return (f"{len(missing)} of the {len(classes)} classes {have} no {split} image ({names}): nothing measures "
            f"{their} recall, and balanced accuracy is the mean over the others")


def case_twins(classes: list[str]) -> str | None:
    """A sentence naming the class folders whose names differ in case alone (Daisy/ beside daisy/, most often one
    class in two folders: two classes, each with half its photos, and one folder on a macOS or Windows disk, where
    a copy merges them); None when there are none. Not an error: a and A can be two classes (letters)."""
    groups = {}
    for name in classes:
        groups.setdefault(letters(name).casefold(), []).append(name)
    twins = [" and ".join(names) for names in groups.values() if len(names) > 1]
    if not twins:
        return None
    return (f"the class folders {'; '.join(twins)} differ in case alone: they are classes of their own (and one "
            "folder on a macOS or Windows disk); merge them into one folder if they are one class")


def split_counts(total: int, val_ratio: float, test_ratio: float) -> tuple[int, int]:
    """(val, test) images for a class of `total`: the tutorial's int(total * ratio), but at least
    one each where the class has enough, and always at least one training image. Validation's count first, whatever
    the test split asks (which took a class of two's only held-out image for test at --test-ratio 0.5)."""
    n_val = int(total * val_ratio)
    if val_ratio > 0 and n_val == 0 and total >= 2:
        n_val = 1
    n_test = max(0, min(int(total * test_ratio), total - n_val - 1))
    if test_ratio > 0 and n_test == 0 and total - n_val >= 2:
        n_test = 1
    return n_val, n_test


def split_by_class(images: list[list[Path]], val_ratio: float, test_ratio: float = 0.0, seed: int = 0):
    """{"train", "val", "test"} -> (path, label) samples, stratified, each image in exactly one split.

    Validation is drawn as the tutorial's read_split_data draws it (one generator seeded once,
    classes in sorted order, random.sample over the sorted list), so on the same files seed 0 and
    20% give its very split; test images are drawn afterwards, so asking for them leaves val as it was.
    """
    if not (0 <= val_ratio < 1 and 0 <= test_ratio < 1 and val_ratio + test_ratio < 1):
        raise UserError(f"val ratio {val_ratio} and test ratio {test_ratio} must each be in [0, 1) "
                        "and leave some images for training")
    rng = random.Random(seed)
    counts = [split_counts(len(paths), val_ratio, test_ratio) for paths in images]
    # the tutorial's draws first (int(n * ratio) a class), then the one image the at-least-one rule adds to a
    # small class, so that the other classes keep the tutorial's very picks
    val = [set(rng.sample(paths, int(len(paths) * val_ratio))) for paths in images]
    val = [chosen | set(rng.sample(sorted(set(paths) - chosen), n_val - len(chosen))) if n_val > len(chosen) else chosen
           for paths, chosen, (n_val, _) in zip(images, val, counts)]
    test = [set(rng.sample([p for p in paths if p not in chosen], n_test))
            for paths, chosen, (_, n_test) in zip(images, val, counts)]
    splits = {name: [] for name in SPLITS}
    for label, paths in enumerate(images):
        for path in paths:
            name = "val" if path in val[label] else "test" if path in test[label] else "train"
            splits[name].append((str(path), label))
    return splits


def load_splits(data_path, val_ratio: float = 0.2, seed: int = 0, check: bool = True,
                val_files: set = None, kept_classes: bool = False) -> DataSplits:
    """The samples under `data_path`: class folders (split here), or train/ val/ (test/) as split_data.py writes.

    `check=False` skips decoding every image up front (a split root written by split_data.py has
    been checked already); a file that then fails is still skipped at training time. `val_files`, paths
    relative to `data_path`, is a split of class folders as a run drew it: those files that are still there
    validate, every other image trains (files added since too), whatever a redraw would give now.
    `kept_classes`: a resumed run's, whose classes are its model's: a class folder without a usable image is not
    one to remove.
    """
    root = Path(data_path)
    if not root.is_dir():
        problem = "is a file, not a folder" if root.exists() else "not found"
        # a relative path is looked for from where the command runs, which a config's data_path may not expect
        where = f" (looked for from {Path.cwd()})" if not root.exists() and not root.is_absolute() else ""
        raise UserError(f"data path {problem}: {root}{where}. Give a folder of class folders (such as "
                        f"{os.path.relpath(BUNDLED_SAMPLE)}, the bundled photos) or of split folders (train/, val/: "
                        "python split_data.py --data-path PHOTOS --out DIR writes them); the name flower_photos "
                        "downloads the tutorial's photos")
    readable_folder(root)
    kept = "put back the photos it held when the run started (its model has a class for it)" if kept_classes \
        else None
    if is_split_root(root):
        return load_split_root(root, check, kept)
    check_split_finished(root)  # its train/ alone: the classes written so far
    classes, images, skipped = read_class_root(root, check, or_else=kept or "remove the folder")
    if val_files is None:
        splits = split_by_class(images, val_ratio, 0.0, seed)
    else:
        splits = {"train": [], "val": []}
        for label, paths in enumerate(images):
            for path in paths:
                splits["val" if path.relative_to(root).as_posix() in val_files else "train"].append((str(path), label))
    return DataSplits(root, classes, splits["train"], splits["val"], [], skipped, drawn=True)


def is_split_root(root: Path) -> bool:
    """Whether `root` holds split folders, train/<class>/... as split_data.py writes them, rather than class
    folders: a train/ that holds photos itself is a class of that name (bus/, car/, train/), unless it holds class
    folders too, with a val/ beside it (split folders, a photo dropped into train/ by hand: left out, said)."""
    train = root / "train"
    if not train.is_dir():
        return False
    entries = list(train.iterdir())
    if not any(is_image_file(path) for path in entries):
        return True
    # photos in train/ itself beside class folders, with a val/ beside it: split folders with a stray photo (dropped
    # into data/train by hand), which as class folders would train two classes, "train" and "val"
    return (root / "val").is_dir() and any(path.is_dir() and not path.name.startswith(".") for path in entries)


def unfinished_split(root: Path) -> bool:
    """Whether `root` is a split that split_data.py began and did not finish (stopped while it wrote the images: some
    missing, one cut short), by its manifest; a manifest from before it recorded that counts as finished."""
    try:
        return json.loads((root / SPLIT_MANIFEST).read_text(encoding="utf-8")).get("complete") is False
    except (OSError, ValueError, AttributeError):  # none (split by hand), or not split_data.py's
        return False


def check_split_finished(folder: Path) -> None:
    """A split that split_data.py began and did not finish, or its train/ (val/, test/) given alone, which holds the
    classes written so far: refused, with what to do."""
    if unfinished_split(folder):
        which = f"{folder} is a split"
    elif folder.name in SPLITS and unfinished_split(folder.parent):
        which = f"{folder} is part of a split"
    else:
        return
    raise UserError(f"{which} that split_data.py did not finish (stopped while writing it): run the same split_data.py "
                    "command again, which clears what it wrote and writes it whole")


def load_split_root(root: Path, check: bool = True, or_else: str = None) -> DataSplits:
    """train/<class>/ (required), val/<class>/ (required), test/<class>/ (optional) under `root`; `or_else`, what
    else to do with a class folder of train/ without a usable image (read_class_folder)."""
    check_split_finished(root)
    if not (root / "val").is_dir():
        other = next((name for name in ("valid", "validation") if (root / name).is_dir()), None)  # Roboflow's, Kaggle's
        hint = f": rename {other}/ to val/" if other else \
            " (python split_data.py writes them); a class folder named train holds its photos itself, not in folders"
        raise UserError(f"{root} has train/ but no val/: a split root needs both{hint}")
    # a class folder of train/ without a usable image: removing it alone leaves its val/ folder a class train/ lacks
    or_else = or_else or ("run split_data.py again, which writes the split whole" if (root / SPLIT_MANIFEST).is_file()
                          else "remove it and its val/ folder")
    classes, train_images, skipped = read_class_root(root / "train", check, or_else=or_else)
    indices_file = root / "class_indices.json"
    if indices_file.exists() and not same_names(read_class_indices(indices_file), classes):
        listed = read_class_indices(indices_file)
        raise UserError(f"{indices_file} lists {listed} but the class folders of {root / 'train'} are {classes}"
                        f"{names_order_hint(listed, classes)}: re-run split_data.py or delete it")
    splits = DataSplits(root, classes, [(str(p), label) for label, paths in enumerate(train_images)
                                        for p in paths], [], [], skipped)
    for name in ("val", "test"):
        if not (root / name).is_dir():
            continue
        labels = {letters(class_name): label for label, class_name in enumerate(classes)}
        splits.skipped += [(str(path), "beside the class folders, in none: it has no class")  # as in train/
                           for path in sorted((root / name).iterdir()) if is_image_file(path) and path.is_file()]
        for folder in class_folders(root / name):
            label = labels.get(letters(folder.name))
            if label is None:
                why = (": every class needs training images" if find_images(folder) else
                       ", and holds no photo (a folder an earlier split left, kept by another program's file): "
                       "remove it")
                raise UserError(f"{folder} is a class that {root / 'train'} does not have{why}")
            left_out = []  # as in train/: an iPhone's .heic, a NAS's thumbnails, a folder that cannot be read, said
            paths = find_images(folder, left_out=left_out)
            good, bad = check_images(paths, desc=f"checking {name}/{folder.name}") if check else (paths, [])
            getattr(splits, name).extend((str(p), label) for p in good)
            splits.skipped += left_out + bad
    return splits


def beside_the_splits(root: Path) -> str | None:
    """A sentence naming the folders of photos in a split root beside train/ and val/ (a class folder dropped there,
    data/lilies/), which no split reads; None where there are none. A folder of folders (runs/) is none of them."""
    def holds_photos(folder: Path) -> bool:
        try:
            return any(is_image_file(path) for path in folder.iterdir())
        except OSError:  # a folder this user cannot read: not the split's, and nothing to say of it
            return False
    folders = sorted(path.name for path in root.iterdir() if path.is_dir() and path.name not in SPLITS
                     and not path.name.startswith(".") and path.name not in SYSTEM_FOLDERS and holds_photos(path))
    if not folders:
        return None
    names = ", ".join(f"{name}/" for name in folders[:5]) + (f" and {len(folders) - 5} more" * (len(folders) > 5))
    them, it = ("it", "its") if len(folders) == 1 else ("them", "their")
    return (f"{root} holds split folders, and {names} beside train/ and val/ {'is' if len(folders) == 1 else 'are'} "
            f"in no split: not trained or validated on. To train on {them}, put {it} photos in train/<class>/ and "
            "val/<class>/, or run split_data.py again from class folders that include " + them)


def check_validation(splits, cfg, default_val_ratio: float, notify: bool) -> None:
    """A run needs images to validate on: they choose best.pth (load_splits has checked the classes), and a
    class without any is said. A --val-ratio that a split root leaves unused is said, not silently dropped."""
    if notify and cfg.val_ratio != default_val_ratio and not splits.drawn:
        print(f"notice: --val-ratio {cfg.val_ratio} is not used: {cfg.data_path} has its own train/ and val/ "
              "folders (split_data.py --val-ratio makes another split)")
    data = Path(cfg.data_path)
    if notify and splits.drawn and not cfg.eval_only and data.name == "train" and is_split_root(data.parent):
        # split_data.py's train half, as a folder of class folders: a part of its photos drawn for validation
        print(f"notice: {data} is the train/ of {data.parent}'s split folders: its val/ is not used, and "
              f"{cfg.val_ratio:g} of these photos are drawn to validate on instead (--data-path {data.parent} trains "
              "on train/ and validates on val/)")
    if notify and not cfg.eval_only and not splits.drawn and (stray := beside_the_splits(splits.root)):
        print(f"notice: {stray}")
    if notify and not cfg.eval_only and (twins := case_twins(splits.classes)):
        print(f"warning: {twins}", file=sys.stderr)
    missing = without_validation(splits.classes, splits.counts("val")) if splits.val else None
    if notify and missing and not cfg.eval_only:
        more = "2 photos or more of each" if splits.drawn else "photos in their val/<class>/ folders"
        print(f"warning: {missing}; {more} would give them some", file=sys.stderr)
    if not splits.val and not cfg.eval_only:
        if not splits.drawn:
            how = f"put images in {Path(cfg.data_path) / 'val'}/<class>/"
        elif cfg.val_ratio == 0:
            how = "use --val-ratio above 0 (default 0.2)"
        else:  # --val-ratio was fine: a class keeps its one photo for training
            how = "each class has a single photo, which trains; 2 photos or more in a class give it some"
        raise UserError(f"{cfg.data_path} gives no validation images, which choose best.pth: {how}")
