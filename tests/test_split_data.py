"""split_data.py: the tutorial's split, made deterministic, checked and safe for the source. The --out it writes
to, made ready and written without harm to what is there: test_split_folders.py."""
import json
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


def test_photos_in_subfolders_of_a_class_keep_their_subfolders_and_all_are_split(tmp_path):
    """Two photos of one name in different subfolders of a class are two photos: neither is lost."""
    source = tmp_path / "photos"
    write_class_tree(source, {"cat": 4, "dog": 4})
    for sub in ("2023", "2024"):
        write_image(source / "cat" / sub / "same.jpg", seed=len(sub) + int(sub))
    out = tmp_path / "out"
    split_data.main(["--data-path", str(source), "--out", str(out)])
    files = [f for names in split_files(out).values() for f in names]
    assert len(files) == 10
    assert sorted(f for f in files if f.endswith("same.jpg")) == ["cat/2023/same.jpg", "cat/2024/same.jpg"]


def test_max_size_shrinks_by_the_longer_side(tmp_path):
    """A wide photo whose short side is under --max-size is still too large: its long side is."""
    source = write_image(tmp_path / "wide.png", size=(400, 60))
    target = tmp_path / "out" / "wide.png"
    place_image(source, target, "copy", max_size=100)
    assert Image.open(target).size == (100, 15)


def test_symlink_mode_with_relative_paths_makes_links_that_resolve(tmp_path, monkeypatch):
    """--data-path given relative (as typed): the links must lead to the photos from inside --out."""
    make_photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    split_data.main(["--data-path", "photos", "--out", "split", "--mode", "symlink"])
    links = [p for p in (tmp_path / "split").rglob("*.jpg") if p.is_symlink()]
    assert links and all(p.exists() for p in links)
