"""split_data.py: the tutorial's split, made deterministic, checked and safe for the source."""
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import plots
import split_data
from split_folders import place_image
from image_factory import (file_hashes, write_broken_files, write_class_tree, write_ignored_files, write_image,
                           write_sideways_photo)
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]


def split_files(out: Path) -> dict:
    """{split: sorted "class/name" of the images in it}."""
    return {split: sorted(p.relative_to(out / split).as_posix() for p in (out / split).rglob("*") if p.is_file())
            for split in ("train", "val", "test") if (out / split).is_dir()}


def test_no_flags_does_what_the_tutorial_does(flowers, tmp_path):
    (tmp_path / "flower_photos").symlink_to(flowers)
    before = file_hashes(flowers)
    result = subprocess.run([sys.executable, str(ROOT / "split_data.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = split_files(tmp_path / "data")
    for name in ["daisy", "dandelion", "roses", "sunflowers", "tulips"]:  # 10% of 20 is 2
        assert sum(f.startswith(name + "/") for f in files["val"]) == 2
        assert sum(f.startswith(name + "/") for f in files["train"]) == 18
    assert json.loads((tmp_path / "data" / "class_indices.json").read_text()) == {
        "0": "daisy", "1": "dandelion", "2": "roses", "3": "sunflowers", "4": "tulips"}
    assert re.search(r"^total +90 +10 +0$", result.stdout, re.MULTILINE)
    assert file_hashes(flowers) == before


def test_a_user_mistake_is_one_line_and_exit_status_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "split_data.py"), "--data-path", "nowhere"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: data path not found: nowhere") and "Traceback" not in result.stderr
    # --download would fetch flower photos into a mistyped folder of one's own photos: said as what it does
    assert "--download fetches the tutorial's flower_photos into it" in result.stderr


def test_offline_download_offers_the_bundled_sample(tmp_path, monkeypatch):
    """As train.py's offline line offers the demo: a first split without a network has photos to split."""
    with socket.socket() as probe:  # a port on 127.0.0.1 with nothing listening: as good as offline
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/flower_photos.tgz"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"^could not download .*Or split the bundled sample: python \S*split_data.py "
                                        r"--data-path \S*samples/flowers --out 'my split'$") as err:
        split_data.main(["--download", "--url", url, "--out", "my split"])
    command = str(err.value).split("bundled sample: ")[1]
    split_data.main(shlex.split(command)[2:])  # the command as offered splits the sample
    assert len(split_files(tmp_path / "my split")["val"]) == 10
    with pytest.raises(UserError, match=r"data path not found: flower_photos\. .*samples/flowers, the bundled photos"):
        split_data.main([])


def test_ratios_that_leave_no_training_images_are_refused_before_anything_is_fetched(tmp_path, capsys):
    with pytest.raises(SystemExit):
        split_data.main(["--download", "--url", "http://127.0.0.1:9/never.tgz", "--data-path",
                         str(tmp_path / "flower_photos"), "--val-ratio", "0.5", "--test-ratio", "0.5"])
    assert "--val-ratio 0.5 and --test-ratio 0.5 add up to 1 or more" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_folder_of_loose_images_is_asked_for_class_folders_not_for_a_split(tmp_path, capsys):
    """split_data.py makes a split, and refuses one: its error names class folders alone (train.py's, a split too)."""
    write_image(tmp_path / "loose" / "a.jpg")
    with pytest.raises(UserError, match=r"no class folders in .*loose\. It holds images but no folders\. Expected "
                                        r".*loose/<class>/<image>, one folder per class$"):
        split_data.main(["--data-path", str(tmp_path / "loose"), "--out", str(tmp_path / "out")])


def test_the_same_flags_give_the_same_split(flowers, tmp_path):
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        split_data.main(["--data-path", str(flowers), "--out", str(tmp_path / out), "--seed", seed,
                         "--val-ratio", "0.2", "--test-ratio", "0.1"])
    first, again, other = (split_files(tmp_path / out) for out in "abc")
    assert first == again and first["val"] != other["val"]
    assert not set(first["train"]) & set(first["val"]) and not set(first["val"]) & set(first["test"])
    assert len(first["train"] + first["val"] + first["test"]) == 100
    for name in ["daisy", "dandelion", "roses", "sunflowers", "tulips"]:
        assert [sum(f.startswith(name + "/") for f in first[s]) for s in ("train", "val", "test")] == [14, 4, 2]
    # the same record of files, the photos' sizes and digests too; their times are when each was written
    manifests = [json.loads((tmp_path / out / "split_manifest.json").read_text()) for out in "ab"]
    for manifest in manifests:
        manifest["stamps"] = {path: (size, digest) for path, (size, _, digest) in manifest["stamps"].items()}
    assert manifests[0] == manifests[1] and len(manifests[0]["stamps"]) == 100


def make_photos(root: Path) -> Path:
    """Three classes of small JPEGs, plus the broken and the non-image files real folders hold."""
    write_class_tree(root, {"cat": 6, "dog": 5, "owl": 3})
    write_ignored_files(root / "cat")
    write_ignored_files(root)
    return root


def test_broken_files_are_reported_exactly_and_left_out(tmp_path):
    source = make_photos(tmp_path / "photos")
    broken = write_broken_files(source / "dog")
    write_image(source / "loose.jpg")  # beside the class folders: in no class
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    report = (tmp_path / "out" / "split_report.txt").read_text()
    assert "skipped 6 files, each with why:" in report
    listed = [line.strip().split(": ")[0] for line in report.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(map(str, [*broken, source / "loose.jpg"]))
    assert f"  {source / 'loose.jpg'}: beside the class folders, in none: it has no class" in report
    assert re.search(r"^dog +4 +1 +5$", report, re.MULTILINE)  # train, val, skipped
    assert re.search(r"^total +11 +3 +6$", report, re.MULTILINE)
    files = split_files(tmp_path / "out")
    assert len(files["train"] + files["val"]) == 14
    assert not any(Path(f).name in {p.name for p in broken} | {"Thumbs.db", "readme.txt"}
                   for f in files["train"] + files["val"])


def test_a_skipped_file_with_a_line_break_in_its_name_is_one_line_of_the_report(tmp_path):
    """split_report.txt lists each skipped file on a line: one whose name holds a line break split over two."""
    source = make_photos(tmp_path / "photos")
    (source / "cat" / "bad\nname.jpg").write_text("not a photo")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out" / "split_report.txt").read_text().splitlines()
    assert any(line.endswith("cat/bad\\nname.jpg: not an image: text") for line in lines), lines

def test_a_class_without_a_usable_image_is_named(tmp_path):
    source = make_photos(tmp_path / "photos")
    write_broken_files(source / "empty_class")
    with pytest.raises(UserError, match="empty_class has no usable image"):
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_the_source_is_never_changed_in_any_mode(tmp_path):
    source = make_photos(tmp_path / "photos")
    write_broken_files(source / "owl")
    write_sideways_photo(source / "owl" / "big_sideways.jpg", size=(300, 200))
    before = file_hashes(source)
    for mode in ("copy", "hardlink", "symlink"):
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / mode), "--mode", mode])
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / mode), "--mode", mode,
                         "--seed", "3", "--max-size", "100"])  # and again over the first: replaced
    assert file_hashes(source) == before


def test_modes_copy_hardlink_and_symlink(tmp_path):
    """Each mode places the photo itself, also where the class folder holds a relative symlink to it (as a link
    copied into the split, it would point nowhere, or at another file)."""
    source = make_photos(tmp_path / "photos")
    (tmp_path / "extra").mkdir()
    shutil.copy(source / "cat" / "cat_01.jpg", tmp_path / "extra" / "elsewhere.jpg")
    (source / "cat" / "linked.jpg").symlink_to(Path("..", "..", "extra", "elsewhere.jpg"))
    for mode in ("copy", "hardlink", "symlink"):
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / mode), "--mode", mode])
    original = source / "cat" / "cat_00.jpg"
    placed = {mode: next((tmp_path / mode).glob("*/cat/cat_00.jpg")) for mode in ("copy", "hardlink", "symlink")}
    assert placed["copy"].read_bytes() == original.read_bytes()
    assert not placed["copy"].is_symlink() and not placed["copy"].samefile(original)
    assert placed["hardlink"].stat().st_ino == original.stat().st_ino
    assert placed["symlink"].is_symlink() and placed["symlink"].resolve() == original.resolve()
    for mode in ("copy", "hardlink", "symlink"):
        linked = next((tmp_path / mode).glob("*/cat/linked.jpg"))
        assert linked.samefile(tmp_path / "extra" / "elsewhere.jpg") or mode == "copy", mode
        assert linked.read_bytes() == (tmp_path / "extra" / "elsewhere.jpg").read_bytes()


def test_a_symlink_split_whose_photos_moved_says_so(tmp_path):
    """Its links lead nowhere once the photos move: "all fail to decode ... replace them" sent the user to the
    links, where the photos are to be put back, or the split written again from where they are now."""
    from splits import load_splits
    source = make_photos(tmp_path / "photos")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "data"), "--mode", "symlink"])
    source.rename(tmp_path / "moved")
    with pytest.raises(UserError, match=r"train/cat has no usable image: all \d+ are links to photos no longer there "
                                        r"\(cat_\d+.jpg: a link to .*, which does not exist; .*\): put the photos back "
                                        "where the links lead, or run split_data.py again, which writes the split "
                                        "whole$"):
        load_splits(tmp_path / "data")


def test_max_size_writes_smaller_upright_copies(tmp_path):
    source = make_photos(tmp_path / "photos")
    write_image(source / "owl" / "large.png", size=(400, 300))
    write_image(source / "owl" / "scan.tif", size=(400, 300), compression="tiff_lzw")  # quality= is JPEG's only
    write_sideways_photo(source / "owl" / "sideways.jpg", size=(300, 150))
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out"), "--max-size", "120"])

    def placed(name: str) -> Path:  # in train/ or val/, as the split drew it
        return next((tmp_path / "out").glob(f"*/{name}"))
    assert Image.open(placed("owl/large.png")).size == Image.open(placed("owl/scan.tif")).size == (120, 90)
    sideways = Image.open(placed("owl/sideways.jpg"))
    assert sideways.size == (60, 120) and sideways.getpixel((30, 10))[0] > 200  # upright, red on top
    # a JPEG's smaller copy at quality 90, not Pillow's default 75 (its quantisation tables say which)
    reference = Path(tmp_path / "q90.jpg")
    sideways.save(reference, quality=90)
    assert sideways.quantization == Image.open(reference).quantization
    small = placed("cat/cat_00.jpg")  # 48 px: not resized, copied as it is
    assert small.read_bytes() == (source / "cat" / "cat_00.jpg").read_bytes()


def test_a_split_without_validation_images_is_refused_up_front(tmp_path, capsys):
    """train.py validates on val/: --val-ratio 0 would write a split it refuses."""
    source = make_photos(tmp_path / "photos")
    with pytest.raises(SystemExit) as exit_:
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out"), "--val-ratio", "0"])
    assert exit_.value.code == 2 and "--val-ratio: must be > 0 and < 1, not 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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

def test_hardlinks_across_file_systems_are_refused_before_the_earlier_split_is_cleared(tmp_path, monkeypatch):
    """--mode hardlink into another file system failed at the first link, after the earlier split was removed."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    before = split_files(out)
    real_stat = split_data.os.stat

    class OtherDevice:  # --out on another file system than the photos
        @staticmethod
        def stat(path):
            found = real_stat(path)
            return type("Stat", (), {"st_dev": found.st_dev + (Path(path).resolve() == out.resolve())})
    monkeypatch.setattr(split_data, "os", OtherDevice)
    with pytest.raises(UserError, match=r"--mode hardlink needs --out on the file system of --data-path .*: use "
                                        r"--mode copy or --mode symlink"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--mode", "hardlink"])
    assert split_files(out) == before

def test_hardlinks_from_a_class_folder_linked_from_another_file_system_are_refused_first(tmp_path, monkeypatch):
    """A class folder linked from another disk passed the check on --data-path's own file system, and the split
    failed at its first photo, the earlier split removed and the new one half-written."""
    source = make_photos(tmp_path / "photos")
    shutil.move(source / "dog", tmp_path / "elsewhere")
    (source / "dog").symlink_to(tmp_path / "elsewhere")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    before = split_files(out)
    real_stat = split_data.os.stat

    class OtherDevice:  # the linked class folder on another file system
        @staticmethod
        def stat(path):
            found = real_stat(path)
            return type("Stat", (), {"st_dev": found.st_dev + ((tmp_path / "elsewhere") in Path(path).resolve().parents)})
    monkeypatch.setattr(split_data, "os", OtherDevice)
    with pytest.raises(UserError, match=r"--mode hardlink needs every photo on the file system of --out .*dog.* "
                                        r"\(at .*elsewhere.*\) is on another"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--mode", "hardlink"])
    assert split_files(out) == before


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


def test_a_split_folder_is_not_split_again(tmp_path):
    source = make_photos(tmp_path / "photos")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    with pytest.raises(UserError, match="split already"):
        split_data.main(["--data-path", str(tmp_path / "out"), "--out", str(tmp_path / "again")])
    # into itself (split_data.py --data-path data, --out's default): which folder to give, before where not to write
    with pytest.raises(UserError, match=r"out is split already .*give --data-path .*out/train and another --out$"):
        split_data.main(["--data-path", str(tmp_path / "out"), "--out", str(tmp_path / "out")])
    # a Kaggle or Roboflow download: train/ and test/ (valid/) of class folders, which were read as three classes
    kaggle = tmp_path / "kaggle"
    shutil.copytree(tmp_path / "out" / "train", kaggle / "train")
    shutil.copytree(tmp_path / "out" / "val", kaggle / "test")
    with pytest.raises(UserError, match=r"kaggle is split already \(it has train/<class>/ folders, and test/\): "
                                        r".*give --data-path .*kaggle/train and another --out$"):
        split_data.main(["--data-path", str(kaggle), "--out", str(tmp_path / "again")])


def test_out_must_not_be_inside_the_source(tmp_path, monkeypatch):
    source = make_photos(tmp_path / "photos")
    for out in (source, source / "split"):
        with pytest.raises(UserError, match="inside --data-path"):
            split_data.main(["--data-path", str(source), "--out", str(out)])
    monkeypatch.chdir(tmp_path)  # the tutorial's layout, flower_data/flower_photos beside flower_data/train, is fine
    split_data.main(["--data-path", "photos", "--out", "."])
    assert (tmp_path / "train" / "cat").is_dir()


def test_an_out_that_is_a_file_is_refused_before_the_images_are_checked(tmp_path, monkeypatch):
    source = make_photos(tmp_path / "photos")
    (tmp_path / "afile.jpg").write_bytes(b"mine")
    monkeypatch.setattr(split_data, "read_class_root", lambda *args, **kwargs: pytest.fail("checked the images"))
    with pytest.raises(UserError, match=r"^--out .*afile.jpg is a file: name a folder for the split"):
        split_data.main(["--data-path", str(source), "--out", str(tmp_path / "afile.jpg")])
    assert (tmp_path / "afile.jpg").read_bytes() == b"mine"


def test_the_source_must_not_be_inside_a_split_folder_of_out(tmp_path):
    """A re-split of data/train into data (the photos it came from gone), or a Kaggle-style data/train of class
    folders split into data: the split replaces data/train and data/val, so it would remove the photos it
    reads. Refused before anything is removed; a source beside the split folders (data/raw) is fine."""
    source = make_photos(tmp_path / "photos")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "data")])
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for inside in ("data/train", "data/val", "data/train/cat"):
        with pytest.raises(UserError, match=f"--data-path .* is inside .*{Path(inside).parts[1]}, which a split"):
            split_data.main(["--data-path", str(tmp_path / inside), "--out", str(tmp_path / "data"), "--force"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()) == before
    shutil.move(str(source), str(tmp_path / "data" / "raw"))
    split_data.main(["--data-path", str(tmp_path / "data" / "raw"), "--out", str(tmp_path / "data")])
    assert (tmp_path / "data" / "raw" / "cat").is_dir() and (tmp_path / "data" / "train" / "cat").is_dir()


def test_the_chart_shows_each_split(tmp_path):
    source = make_photos(tmp_path / "photos")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out"), "--test-ratio", "0.2"])
    chart = Image.open(tmp_path / "out" / "class_distribution.png").convert("RGB")
    assert chart.width >= 480 and chart.height >= 100
    colors = {color for _, color in chart.getcolors(maxcolors=100_000)}
    assert set(plots.SPLIT_COLORS.values()) <= colors


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


def test_a_photo_cut_short_after_it_was_checked_is_one_line_when_it_is_resized(tmp_path, monkeypatch):
    """split_data.py --max-size: checked when listed, truncated (a sync still writing it) before its copy."""
    whole = write_image(tmp_path / "whole.jpg", (400, 300), quality=95).read_bytes()
    (tmp_path / "photo.jpg").write_bytes(whole[:len(whole) // 2])
    with pytest.raises(UserError, match=r"photo\.jpg no longer decodes \(.*\), changed since it was checked: "
                                        r"run again"):
        place_image(tmp_path / "photo.jpg", tmp_path / "out" / "photo.jpg", "copy", max_size=100)
    assert not (tmp_path / "out" / "photo.jpg").exists()
    def full(image, target, **kwargs):  # the copy's own failure is its own: said by run_cli with its name
        raise OSError(28, "No space left on device", str(target))
    whole = write_image(tmp_path / "whole.jpg", (400, 300))
    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(OSError, match="No space left") as error:
        place_image(whole, tmp_path / "out" / "whole.jpg", "copy", 100)
    assert error.value.filename == str(tmp_path / "out" / "whole.jpg")


def test_hardlinks_to_another_users_photos_are_refused_before_the_earlier_split_is_cleared(tmp_path, monkeypatch):
    """Linux's fs.protected_hardlinks refuses a link to a file of another user's that this one may not write: the
    split failed at its first photo (said as a matter of file systems), after the earlier split was removed."""
    source = make_photos(tmp_path / "photos")
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    before = split_files(out)
    monkeypatch.setattr(split_data, "hardlinks_protected", lambda: True)
    monkeypatch.setattr(split_data, "may_hardlink", lambda path: "dog" not in Path(path).parts)
    with pytest.raises(UserError, match=r"--mode hardlink cannot link .*dog.*: it belongs to another user .* use "
                                        r"--mode copy or --mode symlink"):
        split_data.main(["--data-path", str(source), "--out", str(out), "--mode", "hardlink"])
    assert split_files(out) == before
    assert split_data.may_hardlink(next(source.rglob("*.jpg")))  # one's own photos, always


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


def test_class_folders_differing_in_case_alone_are_said(tmp_path, capsys):
    """Daisy/ beside daisy/: two classes on Linux, each with part of the photos (one folder on a macOS or Windows
    disk, which a copy there merges), trained without a word. Said, not refused: a and A can be two classes."""
    source = tmp_path / "photos"
    write_class_tree(source, {"daisy": 4, "Daisy": 4, "roses": 4})
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    assert "warning: the class folders Daisy and daisy differ in case alone: they are classes of their own (and one " \
           "folder on a macOS or Windows disk); merge them into one folder if they are one class" in \
           capsys.readouterr().err


def test_class_names_the_fonts_here_lack_are_said(tmp_path, capsys, monkeypatch):
    """日本/ on a machine with DejaVu alone: class_distribution.png drew boxes for its name without a word, where
    train.py and predict.py --save-vis say so."""
    source = tmp_path / "photos"
    write_class_tree(source, {"daisy": 4, "roses": 4})
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    assert "notice" not in capsys.readouterr().err
    monkeypatch.setattr(plots, "letters_missing", lambda text: "\u65e5\u672c")
    split_data.main(["--data-path", str(source), "--out", str(tmp_path / "out")])
    assert "notice: the fonts here have no letters for \u65e5, \u672c in the class names: the labels of " \
           "class_distribution.png draw boxes for them" in capsys.readouterr().err
