"""splits.py: a data folder's samples, split from class folders as the tutorial splits them, or read from split
folders as split_data.py writes them."""
import os
import random
import re
import shutil
from pathlib import Path

import pytest

from image_factory import write_broken_files, write_class_tree
from images import write_class_indices
import run_settings
import train
from splits import DataSplits, check_validation, load_splits, split_by_class, split_counts
from utils import UserError


def tutorial_val_paths(root: Path, val_rate: float) -> set:
    """The validation images of the tutorial's utils.read_split_data, by its own steps."""
    state = random.getstate()
    random.seed(0)
    val = set()
    for cla in sorted(p.name for p in root.iterdir() if p.is_dir()):
        images = sorted(str(root / cla / i) for i in (p.name for p in (root / cla).iterdir())
                        if Path(i).suffix in [".jpg", ".JPG", ".png", ".PNG"])
        val.update(random.sample(images, k=int(len(images) * val_rate)))
    random.setstate(state)
    return val


def test_class_folders_are_split_like_the_tutorial(flowers, tmp_path):
    splits = load_splits(flowers)
    assert splits.classes == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert (len(splits.train), len(splits.val), splits.test, splits.skipped) == (80, 20, [], [])
    assert splits.counts("val") == [4] * 5 and splits.counts("train") == [16] * 5
    assert {path for path, _ in splits.val} == tutorial_val_paths(flowers, 0.2)
    for path, label in splits.train + splits.val:
        assert Path(path).parent.name == splits.classes[label]

    # a class of 3 photos gets one validation image the tutorial's int(3 * 0.2) would not: drawn after the
    # tutorial's draws, so that every other class keeps the tutorial's very picks
    mixed = tmp_path / "flowers"
    shutil.copytree(flowers, mixed)
    os.mkdir(mixed / "iris")
    for photo in sorted((mixed / "daisy").iterdir())[:3]:
        shutil.copy(photo, mixed / "iris" / photo.name)
    val = {path for path, _ in load_splits(mixed).val}
    assert tutorial_val_paths(mixed, 0.2) < val and len(val - tutorial_val_paths(mixed, 0.2)) == 1
    assert sum(Path(path).parent.name == "iris" for path in val) == 1


def test_the_tutorials_read_split_data_works_as_it_did(flowers, tmp_path, monkeypatch):
    """Scripts written against the tutorial's utils.py (its confusion-matrix script) import read_split_data: its
    four lists, the split train.py makes, and ./class_indices.json written as the tutorial writes it."""
    import json
    from utils import read_split_data
    monkeypatch.chdir(tmp_path)
    train_paths, train_labels, val_paths, val_labels = read_split_data(str(flowers))
    assert (len(train_paths), len(train_labels), len(val_paths), len(val_labels)) == (80, 80, 20, 20)
    assert set(map(str, val_paths)) == tutorial_val_paths(flowers, 0.2)
    assert json.loads((tmp_path / "class_indices.json").read_text())["4"] == "tulips"


def test_splits_are_deterministic_and_disjoint(flowers):
    first, again, other = load_splits(flowers), load_splits(flowers), load_splits(flowers, seed=1)
    assert (first.train, first.val) == (again.train, again.val)
    assert first.val != other.val
    assert not {p for p, _ in first.train} & {p for p, _ in first.val}
    assert len({p for p, _ in first.train + first.val}) == 100


def test_a_recorded_split_keeps_its_validation_files_whatever_changed_since(flowers, tmp_path):
    """A run's split as it drew it (val_files): a photo that no longer decodes, or one added since, moves no other
    file between training and validation, where drawing again would shift a class's whole split."""
    data = tmp_path / "photos"
    shutil.copytree(flowers, data)
    first = load_splits(data)
    val = {Path(path).relative_to(data).as_posix() for path, _ in first.val}
    broken = next(Path(path) for path, label in first.train if label == 0)
    broken.write_bytes(b"not a jpeg any more")
    shutil.copy(data / "roses" / sorted(os.listdir(data / "roses"))[0], data / "roses" / "zz_new.jpg")
    kept = load_splits(data, val_files=val)
    assert {path for path, _ in kept.val} == {path for path, _ in first.val}
    assert {path for path, _ in kept.train} == {path for path, _ in first.train} - {str(broken)} | {
        str(data / "roses" / "zz_new.jpg")}
    assert kept.drawn and [path for path, _ in kept.skipped] == [str(broken)]
    drawn_again = load_splits(data)
    assert {path for path, _ in drawn_again.val} != {path for path, _ in first.val}  # what the record prevents


def test_every_class_gets_an_image_in_every_split_where_it_can():
    images = [[Path(f"c{c}/{i}.jpg") for i in range(n)] for c, n in enumerate((1, 2, 3, 40))]
    splits = split_by_class(images, val_ratio=0.1, test_ratio=0.1, seed=0)
    per_class = {name: [sum(label == c for _, label in splits[name]) for c in range(4)] for name in splits}
    assert per_class == {"train": [1, 1, 1, 32], "val": [0, 1, 1, 4], "test": [0, 0, 1, 4]}
    paths = [path for name in splits for path, _ in splits[name]]
    assert len(paths) == len(set(paths)) == 46
    # a test split is drawn after validation, so asking for one leaves val as it was, however large it asks to be
    for test_ratio in (0.1, 0.5, 0.8):
        assert split_by_class(images, 0.1, test_ratio, 0)["val"] == split_by_class(images, 0.1, 0.0, 0)["val"]
    assert split_counts(2, 0.1, 0.5) == (1, 0) and split_counts(10, 0.1, 0.8) == (1, 8)


@pytest.mark.parametrize("val_ratio, test_ratio", [(1.0, 0.0), (-0.1, 0.0), (0.5, 0.5)])
def test_impossible_ratios_are_refused(val_ratio, test_ratio):
    with pytest.raises(UserError, match="ratio"):
        split_by_class([[Path("a.jpg"), Path("b.jpg")]], val_ratio, test_ratio)


def test_a_split_root_is_read_as_it_is(tmp_path):
    write_class_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    write_class_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    write_class_tree(tmp_path / "test", {"dog": 1})
    write_broken_files(tmp_path / "val" / "cat")
    (tmp_path / "val" / "dog" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")  # said, as in train/
    write_class_indices(tmp_path / "class_indices.json", ["cat", "dog"])
    splits = load_splits(tmp_path)
    assert splits.classes == ["cat", "dog"]
    assert (splits.counts("train"), splits.counts("val"), splits.counts("test")) == ([3, 2], [1, 1], [0, 1])
    assert len(splits.skipped) == 6 and "convert it to JPEG" in dict(splits.skipped)[
        str(tmp_path / "val" / "dog" / "IMG_0001.HEIC")]
    write_class_indices(tmp_path / "class_indices.json", ["dog", "cat"])
    with pytest.raises(UserError, match="class_indices.json"):
        load_splits(tmp_path)


def test_a_class_named_train_is_a_class_not_a_split(tmp_path):
    """bus/, car/, train/: a train/ holding photos itself is a class, for train.py as for split_data.py."""
    import split_data
    write_class_tree(tmp_path / "vehicles", {"bus": 5, "car": 5, "train": 5})
    splits = load_splits(tmp_path / "vehicles")
    assert splits.classes == ["bus", "car", "train"] and splits.drawn
    assert len(splits.train) + len(splits.val) == 15
    split_data.main(["--data-path", str(tmp_path / "vehicles"), "--out", str(tmp_path / "split")])
    assert load_splits(tmp_path / "split").classes == ["bus", "car", "train"]  # train/train/ holds that class
    write_class_tree(tmp_path / "vehicles" / "train", {"at_night": 2})  # and a folder of its own: still a class
    splits = load_splits(tmp_path / "vehicles")
    assert splits.classes == ["bus", "car", "train"] and len(splits.train) + len(splits.val) == 17


def test_split_root_mistakes_are_explained(tmp_path):
    write_class_tree(tmp_path / "train", {"cat": 2, "dog": 1})
    with pytest.raises(UserError, match="no val/"):
        load_splits(tmp_path)
    (tmp_path / "valid").mkdir()  # Roboflow's name for it
    with pytest.raises(UserError, match="no val/: a split root needs both: rename valid/ to val/"):
        load_splits(tmp_path)
    (tmp_path / "valid").rmdir()
    write_class_tree(tmp_path / "val", {"cat": 1, "owl": 1})
    with pytest.raises(UserError, match="owl"):
        load_splits(tmp_path)
    shutil.rmtree(tmp_path / "val" / "owl")
    (tmp_path / "val" / "owl").mkdir()  # only a file of another program's in it: it is no class, and says so
    (tmp_path / "val" / "owl" / "notes.txt").write_text("")
    with pytest.raises(UserError, match="owl is a class that .* does not have, and holds no photo"):
        load_splits(tmp_path)


def test_a_stray_photo_in_train_leaves_the_folder_a_split(tmp_path):
    """A photo dropped into data/train/ beside its class folders made train.py read data/ as class folders: a
    classifier of two classes, "train" and "val". A photo beside the class folders of val/ or test/ was passed over
    without a word; each is left out and said, as one beside the class folders of train/ is."""
    import split_data
    write_class_tree(tmp_path / "train", {"cat": 3, "dog": 3})
    write_class_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    shutil.copy(tmp_path / "train" / "cat" / "cat_00.jpg", tmp_path / "train" / "stray.jpg")
    shutil.copy(tmp_path / "val" / "cat" / "cat_00.jpg", tmp_path / "val" / "loose.jpg")
    splits = load_splits(tmp_path)
    assert splits.classes == ["cat", "dog"] and not splits.drawn
    assert (len(splits.train), len(splits.val)) == (6, 2)
    assert sorted(Path(path).name for path, _ in splits.skipped) == ["loose.jpg", "stray.jpg"]
    with pytest.raises(UserError, match="is split already"):
        split_data.main(["--data-path", str(tmp_path), "--out", str(tmp_path.parent / "again")])


@pytest.mark.parametrize("link", ["nowhere", "loop"])
def test_a_class_folder_linked_to_nothing_is_an_error_not_a_class_less(tmp_path, link):
    """A class folder linked from a drive not mounted now, or a loop of links, is no folder to is_dir(): the run
    trained on the other classes without a word, every later label shifted."""
    write_class_tree(tmp_path / "data", {"cat": 3, "dog": 3})
    if link == "nowhere":
        (tmp_path / "data" / "bird").symlink_to(tmp_path / "unmounted" / "bird")
    else:
        (tmp_path / "data" / "bird").symlink_to("owl")
        (tmp_path / "data" / "owl").symlink_to("bird")
    said = "which does not exist: mount or restore" if link == "nowhere" else "a loop of links: remove the link$"
    with pytest.raises(UserError, match=f"the class folder .*bird is a link to .*, {said}"):
        load_splits(tmp_path / "data")
    # inside a class folder, such a link is left out and said with the files left out, its photos with it
    (tmp_path / "data" / "bird").unlink()
    (tmp_path / "data" / "owl").unlink(missing_ok=True)
    (tmp_path / "data" / "dog" / "more").symlink_to(tmp_path / "unmounted" / "dogs")
    splits = load_splits(tmp_path / "data")
    assert [(Path(path).name, why.split(",")[1]) for path, why in splits.skipped] == \
        [("more", " which does not exist: the photos there are left out")]


def test_class_folders_beside_train_and_val_are_said(tmp_path, capsys):
    """data/lilies/ dropped beside data/train and data/val is in no split: train.py trained without it, not a word
    said. Not a folder of folders (runs/), nor a hidden or a NAS's one."""
    write_class_tree(tmp_path / "train", {"cat": 2, "dog": 2})
    write_class_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    write_class_tree(tmp_path, {"lilies": 2, ".hidden": 1, "@eaDir": 1})
    write_class_tree(tmp_path / "runs", {"r1": 1})
    parser = train.build_parser()
    cfg = parser.parse_args(["--data-path", str(tmp_path)])
    splits = load_splits(tmp_path)
    assert splits.classes == ["cat", "dog"]
    check_validation(splits, cfg, parser.get_default("val_ratio"), notify=True)
    assert capsys.readouterr().out == (
        f"notice: {tmp_path} holds split folders, and lilies/ beside train/ and val/ is in no split: not trained or "
        "validated on. To train on it, put its photos in train/<class>/ and val/<class>/, or run split_data.py "
        "again from class folders that include it\n")


def test_a_train_class_folder_without_photos_in_a_split_says_to_split_again(tmp_path):
    """Removing an empty train/<class>, as the error advised, only led to the next: val/<class> is a class train/
    lacks. split_data.py's split is written again; one made by hand loses the class in both."""
    import split_data
    write_class_tree(tmp_path / "photos", {"cat": 3, "dog": 3})
    split_data.main(["--data-path", str(tmp_path / "photos"), "--out", str(tmp_path / "data"), "--val-ratio", "0.4"])
    for photo in (tmp_path / "data" / "train" / "dog").iterdir():
        photo.unlink()
    with pytest.raises(UserError, match=r"train/dog has no image files \(.*\): add images or run split_data.py "
                                        "again, which writes the split whole$"):
        load_splits(tmp_path / "data")
    (tmp_path / "data" / "split_manifest.json").unlink()  # a split made by hand
    with pytest.raises(UserError, match="add images or remove it and its val/ folder$"):
        load_splits(tmp_path / "data")


def test_a_val_ratio_that_a_split_root_leaves_unused_is_said(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    parser = train.build_parser()
    splits = DataSplits(tmp_path, ["a", "b"], [("x.jpg", 0)], [("y.jpg", 1)])
    for ratio, said in ((0.3, True), (parser.get_default("val_ratio"), False)):
        cfg = parser.parse_args(["--data-path", str(tmp_path), "--val-ratio", str(ratio)])
        check_validation(splits, cfg, parser.get_default("val_ratio"), notify=True)
        assert ("notice: --val-ratio 0.3 is not used" in capsys.readouterr().out) == said


def test_the_train_half_of_split_folders_given_as_the_data_is_said(tmp_path, capsys):
    """--data-path data/train trains on it as class folders, a part drawn to validate on: data/val, beside it,
    unused."""
    write_class_tree(tmp_path / "data" / "train", {"a": 3, "b": 3})
    write_class_tree(tmp_path / "data" / "val", {"a": 1, "b": 1})
    parser = train.build_parser()
    for data, said in ((tmp_path / "data" / "train", True), (tmp_path / "data", False)):
        cfg = parser.parse_args(["--data-path", str(data)])
        check_validation(load_splits(data, cfg.val_ratio), cfg, parser.get_default("val_ratio"), notify=True)
        assert (f"notice: {tmp_path / 'data' / 'train'} is the train/ of {tmp_path / 'data'}'s split folders: its "
                f"val/ is not used, and 0.2 of these photos are drawn" in capsys.readouterr().out) == said


def test_a_configs_val_ratio_is_measured_against_the_parsers_default(tmp_path, monkeypatch):
    """A --config's val_ratio became the parser's default, against which train.py compared it: a split root's
    notice that the ratio is not used was never said of a config's (nor of a --val-ratio typed beside it)."""
    config = tmp_path / "run.yaml"
    config.write_text("val_ratio: 0.3\n")
    seen = []

    def stop(cfg, checkpoint, program, default_val_ratio, main_process):
        seen.append(default_val_ratio)
        raise SystemExit(0)
    monkeypatch.setattr(run_settings, "load_data", stop)
    with pytest.raises(SystemExit):
        train.main(["--config", str(config), "--data-path", str(tmp_path / "data"), "--output", str(tmp_path / "runs"),
                    "--device", "cpu"])
    assert seen == [train.build_parser().get_default("val_ratio")]


def test_no_validation_images_says_what_gives_some(tmp_path):
    """Classes of one photo each give none at any --val-ratio (the one trains): the line said to raise --val-ratio
    above 0, which it was."""
    parser = train.build_parser()
    write_class_tree(tmp_path / "photos", {"a": 1, "b": 1})
    write_class_tree(tmp_path / "split" / "train", {"a": 2, "b": 2})
    (tmp_path / "split" / "val").mkdir()
    for data, flags, how in (("photos", [], "each class has a single photo, which trains; 2 photos or more"),
                             ("photos", ["--val-ratio", "0"], "use --val-ratio above 0"),
                             ("split", [], f"put images in {tmp_path / 'split' / 'val'}/<class>/")):
        cfg = parser.parse_args(["--data-path", str(tmp_path / data), *flags])
        with pytest.raises(UserError, match=f"gives no validation images, which choose best.pth: {re.escape(how)}"):
            check_validation(load_splits(cfg.data_path, cfg.val_ratio), cfg, parser.get_default("val_ratio"),
                             notify=False)


def test_a_class_without_validation_images_is_said(tmp_path, capsys):
    """One photo of a class (none drawn for validation), or a val/ folder made by hand without it: its recall is
    never measured, and balanced accuracy leaves it out, which the user is told as the run starts."""
    parser = train.build_parser()
    cfg = parser.parse_args(["--data-path", str(tmp_path)])
    for drawn, more in ((True, "2 photos or more of each"), (False, "photos in their val/<class>/ folders")):
        splits = DataSplits(tmp_path, ["a", "b", "c"], [("x.jpg", 0), ("z.jpg", 1), ("w.jpg", 2)], [("y.jpg", 0)],
                            drawn=drawn)
        check_validation(splits, cfg, parser.get_default("val_ratio"), notify=True)
        assert capsys.readouterr().err == (
            "warning: 2 of the 3 classes have no validation image (b, c): nothing measures their recall, and "
            f"balanced accuracy is the mean over the others; {more} would give them some\n")
    splits.val.append(("v.jpg", 1))
    splits.val.append(("u.jpg", 2))
    check_validation(splits, cfg, parser.get_default("val_ratio"), notify=True)
    assert capsys.readouterr().err == ""


def test_cards_that_predict_wrote_into_the_data_folder_are_no_photos(tmp_path):
    """`cd photos; predict.py . --save-vis vis` (or --save-vis roses/cards): the cards, each a photo beside its
    predicted names, were a class of their own, or a second copy of a class's photos, trained and validated on."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo
    from cards import CARD_MARK

    def card(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        mark = PngInfo()
        mark.add_text(*CARD_MARK)
        Image.new("RGB", (64, 32), (0, 90, 0)).save(path, pnginfo=mark)

    write_class_tree(tmp_path / "photos", {"cats": 4, "dogs": 4})
    card(tmp_path / "photos" / "cats" / "cards" / "cats_00.png")
    Image.new("RGB", (64, 32)).save(tmp_path / "photos" / "dogs" / "own.png")  # a PNG of the user's: a photo
    splits = load_splits(tmp_path / "photos", 0.25)
    assert len(splits.train) + len(splits.val) == 9
    assert [Path(path).name for path, _ in splits.skipped] == ["cats_00.png"]
    assert "predict.py --save-vis" in splits.skipped[0][1]
    card(tmp_path / "photos" / "vis" / "cats_00.png")
    with pytest.raises(UserError, match="vis holds no photo, only the cards predict.py --save-vis wrote"):
        load_splits(tmp_path / "photos")


def test_processes_that_see_different_data_are_refused(tmp_path, monkeypatch):
    """Under torchrun each process lists its own --data-path (another machine's copy): one out of date trained on
    another split, or on labels shifted by a renamed class folder, without a word."""
    import socket
    import processes
    from splits import check_same_everywhere
    splits = DataSplits(tmp_path, ["a", "b"], [(str(tmp_path / "a" / "x.jpg"), 0)], [(str(tmp_path / "b" / "y.jpg"), 1)])
    monkeypatch.setattr(processes, "distributed", lambda: True)
    monkeypatch.setattr(processes, "from_all_processes", lambda mine: [mine, mine])
    check_same_everywhere(splits)  # the same everywhere
    monkeypatch.setattr(processes, "from_all_processes", lambda mine: [mine, ("other", "node2", 3, 1, 1)])
    with pytest.raises(UserError, match=rf"processes of this run see different data in {tmp_path} \(process 0 on "
                                        rf"{socket.gethostname()}: 2 classes, 1 training and 1 validation images; "
                                        r"process 1 on node2: 3 classes, .*each machine needs the same copy of it"):
        check_same_everywhere(splits)


def test_a_class_folder_without_a_usable_image_is_not_to_be_removed_where_a_model_has_that_class(tmp_path):
    """A new run may drop such a folder; a resumed (or evaluated) run cannot: its model has the class, and removing
    the folder was then refused as a class gone."""
    write_class_tree(tmp_path / "flat", {"cat": 3, "dog": 2})
    write_class_tree(tmp_path / "split" / "train", {"cat": 3, "dog": 2})
    write_class_tree(tmp_path / "split" / "val", {"cat": 1, "dog": 1})
    for root in (tmp_path / "flat", tmp_path / "split" / "train"):
        for photo in (root / "dog").iterdir():
            photo.write_bytes(b"not a photo")
    for data in (tmp_path / "flat", tmp_path / "split"):
        with pytest.raises(UserError, match=r"dog has no usable image: all 2 fail to decode .*: replace them or "
                                            r"(remove|run split_data|remove it and)"):
            load_splits(data)
        with pytest.raises(UserError, match=r"dog has no usable image: all 2 fail to decode .*: replace them or put "
                                            r"back the photos it held when the run started \(its model has a class "
                                            r"for it\)$"):
            load_splits(data, kept_classes=True)
