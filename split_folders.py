"""Writing a split as folders (split_data.py): an --out made ready by removing what an earlier split wrote there,
as its manifest lists it, and nothing else; each image copied, linked or made smaller into its place, never
written through an existing file or link."""
import errno
import hashlib
import json
import math
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from PIL import Image

from files import put_in_place, remove_left_behind
from images import (DECODE_ERRORS, SYSTEM_FOLDERS, TOO_LARGE, TooManyPixels, is_image_file, open_image,
                    upright_rgb)
from splits import SPLIT_MANIFEST as MANIFEST, SPLITS
from utils import UserError, counted

# what a file browser leaves in a folder it showed (Finder, Explorer): not the user's files, read by no training
BROWSER_FILES = {".DS_Store", "Thumbs.db", "desktop.ini", "ehthumbs.db", ".directory"}  # .directory: KDE's Dolphin


def browser_file(name: str) -> bool:
    name = PurePosixPath(name).name
    return name in BROWSER_FILES or name.startswith("._")


def prepare_out(out: Path, source: Path, planned: list[str], force: bool) -> None:
    """Make `out` ready for the files `planned` (relative paths): remove what an earlier split wrote
    there, listed in its manifest, and nothing else.

    Refuses an `out` holding files the manifest does not list (anything under `source` aside),
    unless `force`, and never overwrites such a file. Writes the new manifest before any image, marked
    incomplete until finish_split marks it done, so that the next run can clean up after an interrupted one, and
    train.py refuses the half-written split meanwhile (splits.unfinished_split).
    """
    manifest = out / MANIFEST
    earlier = read_manifest(manifest)
    # a killed split's half-written manifest: no file of the user's. Its process is told by the name (files.py),
    # but not on Windows, nor for a split killed before 2026-11-30 (a name without one)
    (out / f".{MANIFEST}.tmp").unlink(missing_ok=True)
    for left in out.glob(f".{MANIFEST}.*.tmp") if os.name == "nt" else ():
        left.unlink()
    remove_left_behind(manifest)
    existing = {path.relative_to(out).as_posix() for path in walk_files(out, skip=source)} - {MANIFEST}
    foreign = sorted(path for path in existing - set(earlier["files"]) if not browser_file(path))  # kept, no refusal
    if changed := changed_since(out, earlier, existing):  # a photo edited in the split: the user's work now
        them = "them" if len(changed) > 1 else "it"
        names = ", ".join(str(out / path) for path in changed[:3]) + (
            f" and {counted(len(changed) - 3, 'other file')}" if len(changed) > 3 else "")
        raise UserError(f"{names} changed since split_data.py wrote {them} (edited in place?), and a new split "
                        f"replaces the earlier one's files: move {them} out of {out} to keep {them} (or delete "
                        f"{them}), then run again")
    in_splits = [path for path in foreign if path.split("/")[0] in SPLITS and is_image_file(Path(path))]
    split_folders = sorted({path.split("/")[0] for path in in_splits})
    # another tool's split, train/ and val/ as the tutorial's split_data.py leaves them in flower_data/
    if len(split_folders) > 1 and not force:
        folders = " and ".join(f"{out / name}/" for name in split_folders)
        raise UserError(f"{out} holds a split that split_data.py did not write: {counted(len(in_splits), 'image')} in "
                        f"{folders} (such as {out / in_splits[0]}). Move those folders away (or delete them, if they "
                        f"are copies of the photos in {source}), or choose another --out; --force would keep them, "
                        "and training would read them beside the new split")
    if foreign and not force:
        raise UserError(f"{out} is not empty: it holds {counted(len(foreign), 'file')} split_data.py did not write, "
                        f"such as {out / foreign[0]}. Choose another --out, or pass --force to write the "
                        "split beside them (they are kept)")
    # a class folder the split does not have (a class removed from the photos, kept by --force): train.py refused
    # the split, class_indices.json not listing it, and said to run split_data.py again, which kept it again
    classes = {path.split("/")[1] for path in planned if path.split("/")[0] in SPLITS}
    extra = sorted({"/".join(path.split("/")[:2]) for path in in_splits if path.count("/") >= 2
                    and path.split("/")[1] not in classes})
    if extra:
        raise UserError(f"{out / extra[0]}/ holds images split_data.py did not write, of a class that {source} does "
                        "not have: train.py would refuse the split (its class_indices.json lists the classes of "
                        f"{source} only). Move {', '.join(str(out / folder) + '/' for folder in extra)} away, or "
                        "choose another --out")
    # and a folder of such a class with no image in it (empty, or holding other files), which the removal of the
    # earlier split leaves: train.py refused it as a class without images, or one train/ lacks
    if bare := sorted(lasting_folders(out, classes, earlier, existing)):
        raise UserError(f"{out / bare[0]}/ is a class folder of a class that {source} does not have, and holds no "
                        "image split_data.py wrote: train.py would refuse the split (a class without images). Remove "
                        f"{', '.join(str(out / folder) + '/' for folder in bare)}, or choose another --out")
    clashes = sorted(set(planned) & set(foreign))
    if clashes:
        raise UserError(f"{out / clashes[0]} was not written by split_data.py and the split would "
                        "overwrite it: move it away or choose another --out")
    if in_splits:
        kept = f"{in_splits[0]} was" if len(in_splits) == 1 else \
            f"{counted(len(in_splits), 'file')} (such as {in_splits[0]}) were"
        print(f"note: under {out}/train, val or test, {kept} not written by split_data.py; kept, training will read "
              f"{'it' if len(in_splits) == 1 else 'them'}")
    removed = sorted(set(earlier["files"]) & existing)
    if removed and earlier.get("complete") is not False:  # a kill while they go leaves a split train.py refuses,
        write_manifest(manifest, {**earlier, "complete": False})  # not one it takes whole with some photos gone
    for path in removed:
        (out / path).unlink()
    for folder in sorted(earlier["dirs"], key=lambda d: -d.count("/")):  # deepest first
        left = list((out / folder).iterdir()) if (out / folder).is_dir() else None
        if left is not None and all(entry.is_file() and browser_file(entry.name) for entry in left):
            for entry in left:  # a .DS_Store kept a removed class's folder in val/, which training then refused
                entry.unlink()
            (out / folder).rmdir()
    if removed:
        print(f"removed the {len(removed)} files of the earlier split in {out}")
    folders = {parent.as_posix() for path in planned for parent in PurePosixPath(path).parents} - {"."}
    out.mkdir(parents=True, exist_ok=True)
    new_folders = sorted(folder for folder in folders if not (out / folder).exists())
    write_manifest(manifest, {"written_by": "split_data.py", "complete": False, "files": planned, "dirs": new_folders})


def lasting_folders(out: Path, classes: set, earlier: dict, existing: set) -> list[str]:
    """The folders out/<split>/<name>, of names not in `classes`, that train.py reads as class folders and that the
    removal of the earlier split (its files, then its folders that only a file browser's files keep) leaves."""
    going, earlier_dirs = set(earlier["files"]) & existing, set(earlier["dirs"])

    def cleared(folder: Path) -> bool:  # each folder in it the earlier split's, each file going or a browser's
        return all((relative := Path(directory).relative_to(out).as_posix()) in earlier_dirs and
                   all(f"{relative}/{name}" in going or browser_file(name) for name in files)
                   for directory, _, files in os.walk(folder))
    return [f"{split}/{folder.name}" for split in SPLITS if (out / split).is_dir()
            for folder in sorted((out / split).iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and folder.name not in SYSTEM_FOLDERS
            and folder.name not in classes and not cleared(folder)]


def finish_split(out: Path) -> None:
    """Mark the split in `out` complete, once every file it plans is written: until then train.py refuses it. Each
    photo goes with its stamp as written: one changed since is the user's (changed_since)."""
    record = read_manifest(out / MANIFEST)
    stamps = {path: stamp(out / path) for path in record["files"] if path.split("/")[0] in SPLITS}
    write_manifest(out / MANIFEST, {**record, "complete": True, "stamps": stamps})


LINK = "link"  # a stamp's digest for a link (--mode symlink, hardlink): its photo is the one in --data-path


def own_copy(path: Path) -> bool:
    """A file whose bytes are only here: not a link (--mode symlink), nor a hard link's second name (--mode hardlink),
    whose photo the source keeps however it is edited or removed here."""
    status = os.lstat(path)
    return stat.S_ISREG(status.st_mode) and status.st_nlink == 1


def stamp(path: Path) -> list:
    """[size, modification time in ns, BLAKE2b digest] of a file of its own; LINK for the digest of a link."""
    status = os.lstat(path)
    if not own_copy(path):
        return [status.st_size, status.st_mtime_ns, LINK]
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return [status.st_size, status.st_mtime_ns, digest.hexdigest()]


def changed_since(out: Path, earlier: dict, existing: set) -> list[str]:
    """The earlier split's photos that changed since it wrote them, the user's work, which removing the split would
    lose: a copy cropped or replaced in place (told by size, or where the time differs, as in a copy of the split that
    kept no times, by the bytes' digest), or a link that became a file of its own (an editor that saves a new file
    over it; a hard link whose photo in --data-path was deleted). An edit through a link changes the photo it names,
    which keeps it. A split interrupted before its end, or written before 2026-12-02, recorded no stamps."""
    stamps = earlier.get("stamps", {})
    changed = []
    for path in sorted(set(earlier["files"]) & existing & stamps.keys()):
        size, written, digest = stamps[path]
        if not own_copy(out / path):  # a link still, or a copy made a link: the photo lives on elsewhere
            continue
        status = os.lstat(out / path)
        if digest == LINK or status.st_size != size or (status.st_mtime_ns != written and
                                                        stamp(out / path)[2] != digest):
            changed.append(path)
    return changed


def write_manifest(path: Path, record: dict) -> None:
    """Whole or not at all: a kill while it was written left an empty manifest, and an --out no run could clear."""
    put_in_place(path, lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8"),
                 then="run split_data.py again")


def read_manifest(manifest: Path) -> dict:
    """The files and folders an earlier split wrote, as relative paths; none if there was no split."""
    if not manifest.exists():
        return {"files": [], "dirs": []}
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        paths = [PurePosixPath(p) for p in record["files"] + record["dirs"]]
        for path, (size, written, digest) in record.get("stamps", {}).items():
            if not (isinstance(path, str) and isinstance(size, int) and isinstance(written, int) and
                    isinstance(digest, str)):
                raise TypeError(f"stamps[{path!r}] is not [size, time, digest]")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise UserError(f"{manifest} is not a manifest written by split_data.py ({error}): "
                        "move it away, or choose another --out") from None
    # a manifest is trusted to name files inside its folder only: never a way to delete anything else
    if any(p.is_absolute() or ".." in p.parts for p in paths):
        raise UserError(f"{manifest} names files outside {manifest.parent}: move it away, or choose another --out")
    return record


def walk_files(folder: Path, skip: Path):
    """Every file (and link) under `folder`, except under `skip`."""
    skip = skip.resolve()
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = [name for name in subdirs if Path(directory, name).resolve() != skip]
        yield from (Path(directory, name) for name in files)


def place_image(source: Path, target: Path, mode: str, max_size: int | None = None) -> None:
    """Copy (mode "copy") or link ("hardlink", "symlink") `source` to `target`; with `max_size`,
    an image larger than that a side becomes a smaller upright RGB copy instead."""
    if target.exists() or target.is_symlink():  # writing through a link could change the source
        raise UserError(f"{target} exists already: split_data.py writes only new files")
    target.parent.mkdir(parents=True, exist_ok=True)
    smaller = None
    if max_size is not None:
        try:
            with open_image(source) as image:
                if max(image.size) > max_size:  # a JPEG decoded at a reduced scale, its copy's size or more
                    scale = max_size / max(image.size)
                    image.draft("RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale)))
                    smaller = upright_rgb(image)
                    smaller.thumbnail((max_size, max_size), Image.LANCZOS)
        except TooManyPixels as error:  # a JPEG past the limit, read at a reduced scale no smaller than max_size
            raise UserError(f"{source}: {error}; at a smaller --max-size it is read at a smaller scale") from None
        except (*DECODE_ERRORS, *TOO_LARGE) as error:
            raise UserError(f"{source} no longer decodes ({error}), changed since it was checked: run again") from None
        if smaller is not None:
            # quality: JPEG's and WebP's setting; a TIFF with it (its compression not JPEG) is refused by Pillow
            lossy = target.suffix.lower() in (".jpg", ".jpeg", ".jfif", ".jpe", ".webp", ".avif")
            try:
                smaller.save(target, **({"quality": 90} if lossy else {}))
            except (ValueError, KeyError) as error:  # a format Pillow reads and does not write (a full disk: run_cli)
                raise UserError(f"cannot write a smaller copy of {source} as {target.name} ({error}): convert it to "
                                "JPEG or PNG first, or leave out --max-size") from None
            return
    try:
        if mode == "copy":
            shutil.copy2(source, target)
        elif mode == "hardlink":  # to the file a symlink names: link() would copy a relative link, broken there
            os.link(source.resolve(), target)
        else:
            target.symlink_to(source.resolve())
    except OSError as error:
        hint = (". Hard links need one filesystem: use --mode copy or --mode symlink"
                if mode == "hardlink" and error.errno == errno.EXDEV else "")
        raise UserError(f"cannot {mode} {source} to {target}: {error}{hint}") from None
