"""split_folders.py: the --out a split is written to, made ready by removing what the earlier split wrote there (as
its manifest lists it) and nothing of the user's; refused where it holds what is not the split's; each image placed
without writing through a file or link; a split stopped halfway refused by training until written whole."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import split_data
from split_folders import place_image
from image_factory import write_image
from test_split_data import make_photos, split_files
from utils import UserError


def test_refuses_an_out_it_did_not_make_unless_forced(tmp_path, capsys):
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    (out / "train" / "cat").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "train" / "cat" / "mine.jpg").write_bytes(b"someone's file")
    with pytest.raises(UserError, match="not empty.*2 file.*--force"):
        split_data.main(["--data-path", str(source), "--out", str(out)])
    assert split_files(out) == {"train": ["cat/mine.jpg"]}
    split_data.main(["--data-path", str(source), "--out", str(out), "--force"])
    assert f"note: under {out}/train, val or test, train/cat/mine.jpg was not written by split_data.py; kept, " \
           "training will read it\n" in capsys.readouterr().out  # one file, said as one: not "1 file(s) ... were"
    split_data.main(["--data-path", str(source), "--out", str(out), "--force", "--seed", "1"])
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "train" / "cat" / "mine.jpg").read_bytes() == b"someone's file"


def test_a_photo_edited_inside_the_split_is_not_removed_by_the_next_split(tmp_path):
    """A photo cropped or replaced in place in the split was the earlier split's file by its path alone, and the next
    split removed it, --force too, whose refusal says it keeps the user's files: a photo changed since it was written
    is the user's, refused until moved away (kept by --force, it could be a val/ photo's twin in train/). Not one
    whose time alone changed (a copy of the split that kept no times), nor the split's own report; a hard link's
    other name keeps its photo."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    first = sorted((out / "train").rglob("*.jpg"))
    for photo in first[:4]:
        photo.write_bytes(b"the user's crop")
    for flags in ([], ["--force"]):
        with pytest.raises(UserError, match=rf"^{re.escape(str(first[0]))}, {re.escape(str(first[1]))}, "
                                            rf"{re.escape(str(first[2]))} and 1 other file changed since split_data.py "
                                            r"wrote them \(edited in place\?\), and a new split replaces the earlier "
                                            rf"one's files: move them out of {re.escape(str(out))} to keep them \(or "
                                            r"delete them\), then run again$"):
            split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "1", *flags])
        assert all(photo.read_bytes() == b"the user's crop" for photo in first[:4])
    kept = tmp_path / "kept"
    kept.mkdir()
    for photo in first[:4]:
        photo.rename(kept / photo.name)
    (out / "split_report.txt").write_text("my notes")  # the split's own file: written anew
    for photo in (out / "val").rglob("*.jpg"):  # times changed alone (cp without -p): the same bytes
        os.utime(photo, (1_700_000_000, 1_700_000_000))
    split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "1"])
    again = tmp_path / "again"
    split_data.main(["--data-path", str(source), "--out", str(again), "--seed", "1"])
    assert split_files(out) == split_files(again) and sorted(p.name for p in kept.iterdir()) == sorted(
        p.name for p in first[:4])
    # links: an edit through one changes the photo itself, which --data-path keeps: the split's, removed; but an
    # editor that saves a new file over the link (rename) leaves a file of the user's there
    for mode in ("hardlink", "symlink"):
        linked = tmp_path / mode
        split_data.main(["--data-path", str(source), "--out", str(linked), "--mode", mode])
        one, other = sorted((linked / "val").rglob("*.jpg"))[:2]
        with open(one, "r+b") as photo:  # through the link: the photo in --data-path changes with it
            photo.seek(0, os.SEEK_END)
            photo.write(b"\0")
        saved = tmp_path / "saved.jpg"
        saved.write_bytes(b"the user's version")
        saved.replace(other)  # as an editor saves
        with pytest.raises(UserError, match=rf"^{re.escape(str(other))} changed since split_data.py wrote it"):
            split_data.main(["--data-path", str(source), "--out", str(linked), "--mode", mode, "--seed", "1"])
        other.rename(kept / f"{mode}-{other.name}")
        split_data.main(["--data-path", str(source), "--out", str(linked), "--mode", mode, "--seed", "1"])
        assert not one.exists() or one.samefile(source / one.parent.name / one.name)


def test_another_tools_split_in_out_is_named_so_not_offered_force(tmp_path):
    """The tutorial's own split_data.py leaves flower_data/train and flower_data/val beside flower_photos: the
    documented --data-path flower_data/flower_photos --out flower_data was refused with advice to --force, which then
    refused too (the new split would write over its files), or, had it not, would have trained on both splits."""
    source = make_photos(tmp_path / "flower_data" / "flower_photos")
    out = tmp_path / "flower_data"
    for split, name in (("train", "a.jpg"), ("val", "b.jpg")):
        (out / split / "cat").mkdir(parents=True)
        (out / split / "cat" / name).write_bytes(b"the tutorial's copy")
    with pytest.raises(UserError, match=r"holds a split that split_data.py did not write: 2 images in .*train/ and "
                                        r".*val/ .*Move those folders away"):
        split_data.main(["--data-path", str(source), "--out", str(out)])
    shutil.rmtree(out / "train"), shutil.rmtree(out / "val")
    split_data.main(["--data-path", str(source), "--out", str(out)])


def test_what_a_file_browser_leaves_in_a_split_refuses_nothing_and_keeps_no_removed_class(tmp_path):
    """Finder's .DS_Store (Explorer's Thumbs.db) in a split that a file browser showed: not a file of the user's to
    refuse a new split for, nor said to be read by training; and a class gone from the photos leaves no folder
    holding one, which training refused as a class that train/ lacks."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    for folder in (out, out / "val" / "owl", out / "train" / "owl"):
        (folder / ".DS_Store").write_bytes(b"\0")
    (out / "train" / "Thumbs.db").write_bytes(b"\0")
    (out / "val" / "owl" / ".directory").write_text("[Dolphin]\nViewMode=1\n")  # KDE's file browser
    shutil.rmtree(source / "owl")
    split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "1"])
    assert not (out / "val" / "owl").exists() and not (out / "train" / "owl").exists()
    assert (out / ".DS_Store").exists()  # in --out itself, which an earlier split did not make: left alone


def test_a_new_split_replaces_the_earlier_one_entirely(tmp_path):
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3", "--test-ratio", "0.2"])
    split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.2", "--seed", "5"])
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "fresh"), "--val-ratio", "0.2",
                     "--seed", "5"])
    assert split_files(out) == split_files(tmp_path / "fresh")  # nothing stale: no image in two splits
    assert not (out / "test").exists()


def test_a_split_stopped_while_written_is_refused_by_training_until_written_again(tmp_path, monkeypatch, capsys):
    """Stopped halfway (Ctrl-C, a kill), a split held some images, one perhaps cut short, and train.py trained on
    it without a word. Its manifest says it is not finished until its last file is written: train.py refuses it,
    and the same command again clears it and writes it whole."""
    import splits
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    placed = []

    def stopped_after_four(image, target, mode, max_size=None):
        if len(placed) == 4:
            raise KeyboardInterrupt
        placed.append(target)
        place_image(image, target, mode, max_size)
    with monkeypatch.context() as patched:
        patched.setattr(split_data, "place_image", stopped_after_four)
        with pytest.raises(KeyboardInterrupt):
            split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3"])
    # the stop says what it leaves and what to do, not "stopped by SIGINT" alone
    assert f"{out} is left unfinished (train.py refuses it): run the same command again" in capsys.readouterr().err
    assert json.loads((out / "split_manifest.json").read_text())["complete"] is False
    with pytest.raises(UserError, match=r"out is a split that split_data.py did not finish \(stopped while writing "
                                        r"it\): run the same split_data.py command again"):
        splits.load_splits(out)
    # its train/ alone, as class folders (--data-path out/train), held the classes written so far: trained on, and
    # split again, without a word
    with pytest.raises(UserError, match=r"out/train is part of a split that split_data.py did not finish"):
        splits.load_splits(out / "train")
    with pytest.raises(UserError, match=r"out/train is part of a split that split_data.py did not finish"):
        split_data.main(["--data-path", str(out / "train"), "--out", str(tmp_path / "again")])
    split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3"])
    assert len(splits.load_splits(out / "train").classes) == 3  # finished: its train/ is class folders again
    assert json.loads((out / "split_manifest.json").read_text())["complete"] is True
    assert len(splits.load_splits(out).train) > 4
    assert not list(out.glob(".*.tmp"))  # the manifest was written whole, its temporary file renamed
    # the report's reader gone (| head) as it prints: every file is written, and the split is finished
    def reader_gone(*args, **kwargs):
        raise BrokenPipeError
    monkeypatch.setattr(split_data, "print", reader_gone, raising=False)
    with pytest.raises(BrokenPipeError):
        split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3", "--seed", "1"])
    assert json.loads((out / "split_manifest.json").read_text())["complete"] is True


def test_a_split_stopped_while_the_earlier_one_is_cleared_is_refused_by_training(tmp_path, monkeypatch):
    """Split again (another seed, ratio), and stopped as the earlier split's files were removed: its manifest said
    finished, and train.py trained on the photos left without a word."""
    import splits
    import split_folders
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3"])
    unlink, gone = Path.unlink, []

    def stopped_after_two(path, *args, **kwargs):
        if path.suffix != ".tmp":  # the manifest's temporary file aside: a photo of the earlier split
            if len(gone) == 2:
                raise KeyboardInterrupt
            gone.append(path)
        unlink(path, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(split_folders.Path, "unlink", stopped_after_two)
        with pytest.raises(KeyboardInterrupt):
            split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3", "--seed", "1"])
    with pytest.raises(UserError, match="did not finish"):
        splits.load_splits(out)
    split_data.main(["--data-path", str(source), "--out", str(out), "--val-ratio", "0.3", "--seed", "1"])
    assert json.loads((out / "split_manifest.json").read_text())["complete"] is True


def test_the_manifest_a_killed_split_left_half_written_is_not_taken_for_a_file_of_the_users(tmp_path, monkeypatch):
    """The manifest is written beside itself and renamed (files.put_in_place): the temporary file of a split killed
    as it wrote it is cleared by the next run, not refused as something split_data.py did not write; a full disk
    as it writes it is one line that keeps the manifest there was."""
    import errno
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = out / f".split_manifest.json.{gone.pid}.tmp"
    left.write_text("{")
    (out / ".split_manifest.json.tmp").write_text("{")  # as a split killed before 2026-11-30 named it
    split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "1"])
    assert not left.exists() and not (out / ".split_manifest.json.tmp").exists()
    before = (out / "split_manifest.json").read_text()
    real_write_text = Path.write_text

    def full_disk(path, *args, **kwargs):
        if path.name.startswith(".split_manifest.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(path, *args, **kwargs)
    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(UserError, match=r"could not save .*split_manifest.json: No space left on device .*the "
                                        r"split_manifest.json that was there is kept. Make room, then run "
                                        r"split_data.py again"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "2"])
    assert (out / "split_manifest.json").read_text() == before
    assert not list(out.glob(".*.tmp"))


def test_will_not_overwrite_a_file_it_did_not_write(tmp_path):
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    (out / "class_indices.json").parent.mkdir()
    (out / "class_indices.json").write_text("{}")
    with pytest.raises(UserError, match="class_indices.json was not written by split_data.py"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--force"])
    assert (out / "class_indices.json").read_text() == "{}"


def test_a_manifest_naming_files_outside_out_is_refused(tmp_path):
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "precious.txt").write_text("keep")
    (out / "split_manifest.json").write_text(json.dumps({"files": ["../precious.txt"], "dirs": []}))
    with pytest.raises(UserError, match="outside"):
        split_data.main(["--data-path", str(source), "--out", str(out)])
    assert (tmp_path / "precious.txt").read_text() == "keep"
    (out / "split_manifest.json").write_bytes(b"\xff\xfe{}")  # not UTF-8: one line, not a traceback
    with pytest.raises(UserError, match="is not a manifest written by split_data.py .*utf-8"):
        split_data.main(["--data-path", str(source), "--out", str(out)])
    for stamps in ({"train/a.jpg": 5}, {"train/a.jpg": [1, 2]}, {"train/a.jpg": ["1", 2, "d"]}, ["train/a.jpg"]):
        (out / "split_manifest.json").write_text(json.dumps({"files": [], "dirs": [], "stamps": stamps}))
        with pytest.raises(UserError, match="is not a manifest written by split_data.py"):  # edited by hand
            split_data.main(["--data-path", str(source), "--out", str(out)])


def test_placing_an_image_never_writes_through_an_existing_file_or_link(tmp_path):
    source = write_image(tmp_path / "source.jpg")
    before = source.read_bytes()
    link = tmp_path / "out" / "source.jpg"
    link.parent.mkdir()
    link.symlink_to(source)  # as a symlink split leaves it: a copy onto it would rewrite the source
    for mode in ("copy", "hardlink", "symlink"):
        with pytest.raises(UserError, match="exists already"):
            place_image(write_image(tmp_path / "other.jpg", seed=3), link, mode)
    assert source.read_bytes() == before


def test_images_kept_by_force_in_a_class_folder_the_split_lacks_are_refused(tmp_path):
    """train.py refused such a split (class_indices.json lists the photos' classes only) and said to run split_data.py
    again, which kept the folder again."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    before = split_files(out)
    (out / "train" / "bird").mkdir()
    shutil.copy(next(source.rglob("*.jpg")), out / "train" / "bird" / "mine.jpg")
    with pytest.raises(UserError, match=r"train/bird/ holds images split_data.py did not write, of a class that "):
        split_data.main(["--data-path", str(source), "--out", str(out), "--force"])
    after = split_files(out)
    assert after["train"] == sorted([*before["train"], "bird/mine.jpg"]) and after["val"] == before["val"]


def test_a_class_folder_without_images_the_split_lacks_is_refused(tmp_path):
    """An empty train/bird/ (or one of other files) in --out: the split was written without a word, and train.py
    refused it (a class folder with no image files; val/bird/ a class train/ does not have). A class removed from
    the photos still has its folder cleared with the earlier split's files, a .DS_Store in it or not."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    (out / "train" / "bird").mkdir(parents=True)
    with pytest.raises(UserError, match=r"train/bird/ is a class folder of a class that .* holds no image"):
        split_data.main(["--data-path", str(source), "--out", str(out)])
    (out / "train" / "bird").rmdir()
    split_data.main(["--data-path", str(source), "--out", str(out)])
    (out / "val" / "owl" / ".DS_Store").write_bytes(b"")
    shutil.rmtree(source / "owl")
    split_data.main(["--data-path", str(source), "--out", str(out)])
    assert not (out / "train" / "owl").exists() and not (out / "val" / "owl").exists()


def test_a_photo_replaced_with_its_time_kept_is_not_removed_by_the_next_split(tmp_path):
    """cp -p / rsync of another photo over one in the split keeps the recorded modification time: its size tells."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    photo = sorted((out / "train").rglob("*.jpg"))[0]
    status = os.stat(photo)
    photo.write_bytes(b"the user's other photo, of another size")
    os.utime(photo, ns=(status.st_atime_ns, status.st_mtime_ns))
    with pytest.raises(UserError, match="changed since split_data.py wrote it"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--seed", "1"])
    assert photo.read_bytes() == b"the user's other photo, of another size"


def test_placing_an_image_never_writes_through_a_dangling_link(tmp_path):
    """A link whose target is missing does not exist() but must not be written through (outside --out)."""
    source = write_image(tmp_path / "source.jpg")
    elsewhere = tmp_path / "elsewhere" / "x.jpg"
    elsewhere.parent.mkdir()
    link = tmp_path / "out" / "x.jpg"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    for mode in ("copy", "hardlink", "symlink"):
        with pytest.raises(UserError, match="exists already"):
            place_image(source, link, mode)
    assert not elsewhere.exists()
