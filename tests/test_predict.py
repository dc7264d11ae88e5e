"""predict.py on a CPU: a checkpoint of the small variant trained briefly on the real test photos,
then every way of naming images, weights and outputs, checked against the model run by hand. The programs
it exports, and classifying with them: test_predict_programs.py; its cards (--save-vis, --cam): test_cards.py."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import cards
import predict
import report
import stopping
import utils
import weights
from data import Normalize, build_transform
from image_factory import write_broken_files
from images import write_class_indices
from model import create_model
from script_runs import json_lines, run_predict
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
pytestmark = pytest.mark.xdist_group("programs")  # conftest.py says why


def expected_probs(checkpoint: dict, path, img_size=None, flip=False, preprocessing=None, model=None) -> torch.Tensor:
    """The model of the checkpoint (or `model`) run by hand on one photo, as the tutorial's predict.py does:
    cropped and resized as `preprocessing` says (build_transform's keywords), or as the trained run did (its tutorial
    recipe's: its crop_pct of the shorter side, bilinear)."""
    if model is None:
        model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
        model.load_state_dict(checkpoint["model"])
    preprocessing = preprocessing or {"crop_mode": "center", "crop_pct": checkpoint["crop_pct"],
                                      "interpolation": "bilinear"}
    transform = build_transform(img_size or checkpoint["img_size"], train=False, **preprocessing)
    with Image.open(path) as image, torch.no_grad():
        x = Normalize(checkpoint["mean"], checkpoint["std"])(transform(image)[None])
        probs = model(x).softmax(-1)[0]
        return (probs + model(x.flip(-1)).softmax(-1)[0]) / 2 if flip else probs


def test_no_flags_finds_the_run_and_prints_named_topk(trained, checkpoint, photos):
    """`python predict.py img.jpg` after training: the real command, in a fresh process."""
    photo = photos[0]
    result = subprocess.run([sys.executable, ROOT / "predict.py", photo], cwd=trained, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(photo) and len(lines) == 6  # the path, then all 5 classes (fewer than 5 + 1)
    assert "runs/r/best.pth" in result.stderr
    names = [line.split()[1] for line in lines[1:]]
    percents = [float(line.split()[2].rstrip("%")) for line in lines[1:]]
    assert sorted(names) == CLASSES and percents == sorted(percents, reverse=True)
    assert len({line.rindex("%") for line in lines[1:]}) == 1  # the column lines up
    want = expected_probs(checkpoint, photo)
    assert names[0] == CLASSES[want.argmax()]
    assert percents == pytest.approx([p * 100 for p in want.sort(descending=True).values.tolist()], abs=0.006)


def test_newest_run_is_used_with_what_it_carries(trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    """The newest best.pth, with its class names and its preprocessing (normalisation, crop)."""
    other = dict(checkpoint, class_names=[name.upper() for name in CLASSES], mean=[0.5] * 3, std=[0.25] * 3,
                 crop_pct=1.0)
    for name, ckpt, mtime in (("old", checkpoint, 1_000_000), ("new", other, 2_000_000)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        torch.save(ckpt, tmp_path / "runs" / name / "best.pth")
        os.utime(tmp_path / "runs" / name / "best.pth", (mtime, mtime))
    _, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--json")
    assert "runs/new/best.pth" in err
    top = json_lines(out)[0]["topk"]
    assert [e["label"] for e in top] == [other["class_names"][e["index"]] for e in top]
    want = expected_probs(other, photos[0])
    assert want.sub(expected_probs(checkpoint, photos[0])).abs().max() > 1e-3  # the preprocessing matters
    assert [want[e["index"]].item() for e in top] == pytest.approx([e["prob"] for e in top], abs=1e-5)


def test_photos_are_cropped_and_resized_as_the_weights_were_evaluated(checkpoint, photos, tmp_path, capsys,
                                                                      monkeypatch):
    """A run of the official recipe records bicubic, with which it validated, and at 384 px the whole photo squashed
    (test_resume.py trains one), and predict.py crops and resizes so; a checkpoint from before the record, center and
    bilinear as before; an official file bicubic, as the official evaluation resizes, and squashed whole at 384 px, as
    its 384 px configs evaluate. Each the model's output on that preprocessing of the photo, not on the other."""
    assert checkpoint["interpolation"] == "bilinear" and checkpoint["crop_mode"] == "center"  # conftest.py's run
    # as the official code saves its weights: with its index buffers and shift masks (which the model rebuilds)
    official = {"model": {**checkpoint["model"], "layers.0.blocks.0.attn.relative_position_index": torch.zeros(
        49, dtype=torch.long), "layers.0.blocks.1.attn_mask": torch.zeros(16, 16, 16)}}
    as_official = {}
    for size in (64, 384):
        as_official[size] = create_model(checkpoint["variant"], img_size=size, num_classes=5).eval()
        weights.load_weights(as_official[size], official, verbose=False)  # as the official loader fits it
    center, bicubic = {"crop_mode": "center", "crop_pct": 0.875}, {"interpolation": "bicubic"}
    squashed = {"crop_mode": "squash", "crop_pct": 1.0, "interpolation": "bicubic"}
    before = {k: v for k, v in checkpoint.items() if k not in ("interpolation", "crop_mode")}
    # name: (what it holds, its size, how it is cropped and resized, the other way it is not)
    files = {"official_recipe.pth": (dict(checkpoint, interpolation="bicubic"), 64, {**center, **bicubic},
                                     {**center, "interpolation": "bilinear"}),
             "official_recipe_384.pth": (dict(checkpoint, **squashed), 64, squashed, {**center, **bicubic}),
             "before_the_record.pth": (before, 64, {**center, "interpolation": "bilinear"}, {**center, **bicubic}),
             "official.pth": (official, 64, {**center, **bicubic}, {**center, "interpolation": "bilinear"}),
             "official_384.pth": (official, 384, squashed, {**center, **bicubic})}
    for name, (saved, size, preprocessing, not_so) in files.items():
        torch.save(saved, tmp_path / name)
        model = None if "variant" in saved else as_official[size]  # a run checkpoint: its own model
        plain = ["--model", checkpoint["variant"], "--img-size", size] if model is not None else []
        _, out, _ = run_predict(capsys, monkeypatch, tmp_path, photos[5], "--weights", name, *plain, "--json")
        top = json_lines(out)[0]["topk"]
        want, other = (expected_probs(checkpoint, photos[5], size, preprocessing=way, model=model)
                       for way in (preprocessing, not_so))
        assert (want - other).abs().max() > 1e-3, name  # the preprocessing matters
        assert [want[e["index"]].item() for e in top] == pytest.approx([e["prob"] for e in top], abs=1e-5), name


def test_a_run_folder_stopped_before_its_first_validation_means_its_last_pth(checkpoint, photos, tmp_path, capsys,
                                                                             monkeypatch):
    (tmp_path / "stopped").mkdir()
    torch.save(checkpoint, tmp_path / "stopped" / "last.pth")
    _, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "stopped", "--json")
    assert err.startswith(f"{Path('stopped') / 'last.pth'}: swin_micro") and json_lines(out)[0]["path"] == str(photos[0])
    # the folder that holds runs, given for one: said, with the newest run named
    with pytest.raises(UserError, match=rf"^{tmp_path} is not a run folder but holds runs: name one, such as the "
                                        rf"newest, {tmp_path / 'stopped'}$"):
        (tmp_path / "stopped" / "last.pth").rename(tmp_path / "stopped" / "best.pth")
        run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", tmp_path)


def test_folder_with_broken_files(trained, photos, tmp_path, capsys, monkeypatch):
    """Unreadable files are named on stderr, the photos are still classified, the exit status is 1. An image
    past Pillow's 89 MP, which it decodes with a warning, is refused as training refuses it, in one line."""
    good = []
    for i, photo in enumerate(photos[:40:4]):  # 10 photos in nested folders, more than one batch of 4
        target = tmp_path / "in" / f"sub{i % 3}" / ("deeper" if i % 2 else "") / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        good.append(str(Path("in") / target.relative_to(tmp_path / "in")))
        shutil.copy(photo, target)
    broken = write_broken_files(tmp_path / "in" / "sub0")
    shutil.copytree(trained / "runs", tmp_path / "runs")
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, "in", "--json", "--batch-size", "4",
                                 "--workers", "2")
    assert code == 1
    results = json_lines(out)
    assert sorted(r["path"] for r in results) == sorted(good)
    for path in broken:
        assert f"warning: {Path('in') / path.relative_to(tmp_path / 'in')}: " in err
    assert f"classified {len(good)} of {len(good) + len(broken)} images; {len(broken)} could not be read" in err
    assert "bomb.png: too many pixels, a possible decompression bomb" in err and "Warning" not in err
    # --output: a row for every image, those that could not be read with why (a file of results that left them
    # out said nothing of them, where stderr had scrolled away), and the photos in a format it does not read
    (tmp_path / "in" / "IMG_1.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    for name in ("p.csv", "p.json"):
        code, _, err = run_predict(capsys, monkeypatch, tmp_path, "in", "--topk", "2", "--output", tmp_path / name)
        assert code == 1, err
        if name == "p.csv":
            with open(tmp_path / name, newline="") as f:
                rows = list(csv.DictReader(f))
            assert list(rows[0])[-1] == "error"
            failed = {row["path"]: row["error"] for row in rows if row["error"]}
            assert all(row["label_1"] == "" for row in rows if row["error"])
        else:
            rows = json.loads((tmp_path / name).read_text())
            failed = {r["path"]: r["error"] for r in rows if "error" in r}
            assert all(r["topk"] == [] for r in rows if "error" in r)
        assert sorted(r["path"] for r in rows if r["path"] not in failed) == sorted(good)
        assert failed[str(Path("in") / "sub0" / "empty.jpg")] == "empty file"
        assert failed[str(Path("in") / "IMG_1.HEIC")].startswith("an iPhone's HEIC photo")
        assert len(failed) == len(broken) + 1


def test_a_folder_that_cannot_be_read_is_named_and_counted(trained, photos, tmp_path, capsys, monkeypatch,
                                                           unreadable):
    """A subfolder that cannot be listed (its permissions) was passed over in silence, its photos never classified
    and the exit status 0: it is a warning, counted in the summary, and the status is 1."""
    shutil.copytree(trained / "runs", tmp_path / "runs")
    for folder, photo in (("in", photos[0]), ("in/locked", photos[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / photo.name)
    unreadable(tmp_path / "in" / "locked")
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, "in", "--json")
    assert code == 1 and [r["path"] for r in json_lines(out)] == [f"in/{photos[0].name}"], err
    assert "warning: in/locked: cannot be read (Permission denied): a folder, its photos left out" in err
    assert "classified 1 of 1 images; 1 folder could not be read" in err
    # what is left out by design (a NAS's thumbnails, an iPhone's .heic) is no folder that could not be read
    (tmp_path / "nas" / "@eaDir").mkdir(parents=True)
    shutil.copy(photos[2], tmp_path / "nas" / photos[2].name)
    (tmp_path / "nas" / "IMG_1.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    code, _, err = run_predict(capsys, monkeypatch, tmp_path, "nas", "--json")
    assert "classified 1 of 1 images; 1 photo in a format it does not read\n" in err and "could not be read" not in err
    assert code == 1  # as for the HEIC photo named alone: a pipeline that checks the status sees a photo unclassified
    # a pipe named as a photo in a folder: said, and counted as one (it was left out of the count, the file and the
    # status: a pipeline saw every image classified)
    os.mkfifo(tmp_path / "nas" / "pipe.jpg")
    code, _, err = run_predict(capsys, monkeypatch, tmp_path, "nas", "--output", "out.csv")
    assert "classified 1 of 1 images; 1 photo in a format it does not read; 1 not a file (a pipe, a socket or a " \
           "device); results in out.csv" in err and code == 1
    rows = {row["path"]: row for row in csv.DictReader((tmp_path / "out.csv").open())}
    assert rows["nas/pipe.jpg"]["error"] == "not a file of its own (a pipe, a socket or a device)"


def test_a_line_break_in_a_photos_name_stays_on_its_line(trained, photos, tmp_path, capsys, monkeypatch):
    """A file name with a line break printed raw looked like two entries, in the table and in a warning: written
    as \\n, as Python writes it (--json and --output keep the name as it is)."""
    (tmp_path / "in").mkdir()
    shutil.copy(photos[0], tmp_path / "in" / "a\nb.jpg")
    (tmp_path / "in" / "c\td.jpg").write_text("not a photo")
    code, out, err = run_predict(capsys, monkeypatch, trained, tmp_path / "in")
    assert code == 1 and out.splitlines()[0] == f"{tmp_path / 'in'}/a\\nb.jpg", out
    assert f"warning: {tmp_path / 'in'}/c\\td.jpg: not an image" in err, err
    _, out, _ = run_predict(capsys, monkeypatch, trained, tmp_path / "in", "--json")
    assert json_lines(out)[0]["path"] == str(tmp_path / "in" / "a\nb.jpg")
    from utils import printable
    assert printable("a\u2028b\x01c") == "a\\u2028b\\x01c"  # Unicode's line separator breaks a line too

def test_links_that_lead_nowhere_are_named_whether_globbed_or_named(trained, photos, tmp_path, capsys, monkeypatch):
    """A link to a removed file, or a link loop, is matched by a glob and may be named: it is read and said to be
    unreadable, as in a folder given; neither passed over without a word nor said not to exist."""
    shutil.copytree(trained / "runs", tmp_path / "runs")
    (tmp_path / "in").mkdir()
    shutil.copy(photos[0], tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "gone.jpg").symlink_to(tmp_path / "removed.jpg")
    (tmp_path / "in" / "loop.jpg").symlink_to("loop.jpg")
    for named in (["in/*.jpg"], ["in/a.jpg", "in/gone.jpg", "in/loop.jpg"]):
        code, out, err = run_predict(capsys, monkeypatch, tmp_path, *named, "--json")
        assert code == 1 and [r["path"] for r in json_lines(out)] == ["in/a.jpg"], err
        assert f"warning: in/gone.jpg: a link to {tmp_path / 'removed.jpg'}, which does not exist" in err, err
        assert "warning: in/loop.jpg: a link to loop.jpg, a loop of links" in err, err
        assert "classified 1 of 3 images; 2 could not be read" in err


def test_json_lines_sum_to_one(trained, checkpoint, photos, capsys, monkeypatch):
    chosen = [photos[0], photos[30], photos[60]]
    code, out, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--topk", "9")
    assert code == 0
    results = json_lines(out)
    assert [r["path"] for r in results] == [str(p) for p in chosen]
    for result, photo in zip(results, chosen):
        probs = [e["prob"] for e in result["topk"]]
        assert len(probs) == 5 and sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert probs == sorted(probs, reverse=True)
        assert all(e["label"] == CLASSES[e["index"]] for e in result["topk"])
        want = expected_probs(checkpoint, photo)
        assert [want[e["index"]].item() for e in result["topk"]] == pytest.approx(probs, abs=1e-5)


def test_output_files_hold_the_json_results(trained, photos, tmp_path, capsys, monkeypatch):
    chosen = [str(photos[i]) for i in (1, 2, 50)]
    _, out, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--topk", "2")
    _, table, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--topk", "2", "--output", tmp_path / "p.json")
    assert table == ""  # the file instead of the table
    assert json.loads((tmp_path / "p.json").read_text()) == json_lines(out)
    run_predict(capsys, monkeypatch, trained, *chosen, "--topk", "2", "--output", tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == chosen
    assert list(rows[0]) == ["path", "label_1", "index_1", "prob_1", "label_2", "index_2", "prob_2", "error"]
    assert all(row["error"] == "" for row in rows)
    assert [(r["label_1"], float(r["prob_2"])) for r in rows] == [
        (r["topk"][0]["label"], r["topk"][1]["prob"]) for r in json_lines(out)]


def test_a_file_name_whose_bytes_are_not_utf8_is_printed_and_written_as_it_is(trained, photos, tmp_path, capsys,
                                                                              monkeypatch):
    """A photo named in Latin-1 (old zips, Windows shares), on a terminal that is strict UTF-8: the table and
    the CSV hold its name's bytes, as ls prints it, where printing it raised UnicodeEncodeError."""
    import shutil
    photo = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(photos[0], photo)
    result = subprocess.run([sys.executable, ROOT / "predict.py", photo], cwd=trained, capture_output=True,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0 and result.stdout.startswith(bytes(tmp_path) + b"/caf\xe9.jpg\n"), result.stderr
    code, _, err = run_predict(capsys, monkeypatch, trained, photo, "--output", tmp_path / "p.csv")  # no terminal
    assert code == 0 and b"/caf\xe9.jpg," in (tmp_path / "p.csv").read_bytes(), err
    (tmp_path / "mixed").mkdir()  # a warning names such a file by its bytes too, not as \udcff
    (tmp_path / "mixed" / os.fsdecode(b"bad\xff.jpg")).write_text("not a photo")
    shutil.copy(photos[0], tmp_path / "mixed" / "ok.jpg")
    result = subprocess.run([sys.executable, ROOT / "predict.py", tmp_path / "mixed"], cwd=trained,
                            capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert b"/bad\xff.jpg: " in result.stderr and b"udcff" not in result.stderr, result.stderr


def test_a_name_the_streams_encoding_lacks_is_escaped_not_raised(trained, photos, tmp_path):
    """A CJK photo name on a stream that is not UTF-8 (on Windows, stdout and stderr redirected to a file or a pipe
    are the code page, cp1252): \\u82b1 in the table and the warnings, the other photos classified, where
    surrogateescape alone raised UnicodeEncodeError at the first such line, a traceback and nothing classified."""
    import shutil
    (tmp_path / "cjk").mkdir()
    (tmp_path / "cjk" / "a_\u82b1.jpg").write_text("not a photo")  # a warning on stderr first
    shutil.copy(photos[0], tmp_path / "cjk" / "b_\u82b1.jpg")
    shutil.copy(photos[0], tmp_path / "cjk" / os.fsdecode(b"c\xff.jpg"))  # and a name's bytes, as they are
    result = subprocess.run([sys.executable, ROOT / "predict.py", tmp_path / "cjk"], cwd=trained,
                            capture_output=True, env={**os.environ, "PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 1 and b"Traceback" not in result.stderr, result.stderr
    assert b"/a_\\u82b1.jpg: not an image" in result.stderr, result.stderr
    assert b"/b_\\u82b1.jpg\n" in result.stdout and b"/c\xff.jpg\n" in result.stdout, result.stdout


@pytest.mark.parametrize("stop, said, status", [(KeyboardInterrupt, "Ctrl-C", 130), (stopping.Terminated, "SIGTERM", 143)])
def test_a_stop_still_writes_what_was_classified(stop, said, status, trained, photos, tmp_path, capsys, monkeypatch):
    """Ctrl-C, or a SIGTERM (run_cli raises Terminated for it), after the second image: the two are written."""
    real = predict.classify

    def interrupted(*args, **kwargs):
        for n, result in enumerate(real(*args, **kwargs)):
            if n == 2:
                raise stop
            yield result
    monkeypatch.setattr(predict, "classify", interrupted)
    code, _, err = run_predict(capsys, monkeypatch, trained, *photos[:4], "--output", tmp_path / "p.csv")
    assert code == status and "classified 2 of 4 images; results in " in err and err.endswith(f"; stopped by {said}\n")
    with open(tmp_path / "p.csv") as f:  # and the two it did not reach, said so: the file does not read as whole
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [str(p) for p in photos[:4]]
    assert [row["error"] for row in rows] == ["", ""] + [f"not classified: stopped by {said}"] * 2


def test_glob_and_tta_and_img_size(trained, checkpoint, flowers, capsys, monkeypatch):
    pattern = str(flowers / "roses" / "1*.jpg")
    _, out, _ = run_predict(capsys, monkeypatch, trained, pattern, "--json", "--tta", "--img-size", "96")
    results = json_lines(out)
    assert [r["path"] for r in results] == sorted(str(p) for p in (flowers / "roses").glob("1*.jpg"))
    want = expected_probs(checkpoint, results[0]["path"], img_size=96, flip=True)
    assert [want[e["index"]].item() for e in results[0]["topk"]] == pytest.approx(
        [e["prob"] for e in results[0]["topk"]], abs=1e-5)


def test_tutorial_state_dict_with_class_indices(trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    """weights/model-9.pth and class_indices.json, as the tutorial's train.py wrote them."""
    (tmp_path / "weights").mkdir()
    torch.save({f"module.{k}": v for k, v in checkpoint["model"].items()}, tmp_path / "weights" / "model-9.pth")
    write_class_indices(tmp_path / "class_indices.json", CLASSES)
    code, out, _ = run_predict(capsys, monkeypatch, tmp_path, photos[70], "--weights", "weights/model-9.pth",
                               "--model", "swin_micro_patch4_window4_128", "--num-classes", "5",
                               "--class-indices", "class_indices.json", "--img-size", "64", "--json")
    assert code == 0
    _, ours, _ = run_predict(capsys, monkeypatch, trained, photos[70], "--json")
    assert json_lines(out) == json_lines(ours)


def test_imagenet_checkpoint_gives_indices(photos, tmp_path, capsys, monkeypatch):
    model = create_model("swin_micro_patch4_window4_128")  # 1000 classes, as the official checkpoints
    torch.save({"model": model.state_dict()}, tmp_path / "official.pth")
    code, out, _ = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "official.pth",
                               "--model", "swin_micro_patch4_window4_128", "--num-classes", "1000", "--json")
    assert code == 0
    top = json_lines(out)[0]["topk"]
    assert len(top) == 5 and all(e["label"] == str(e["index"]) for e in top)
    assert all(0 <= e["index"] < 1000 for e in top)


@pytest.mark.parametrize("args, message", [
    ("nowhere.jpg --weights {run}", "image not found: nowhere.jpg"),
    ("/dev/null --weights {run}", "/dev/null is not a file of its own (a pipe, a socket or a device)"),
    ("{photo} --weights plain.pth", "add --model NAME (swin_micro_patch4_window4_128) and --num-classes N"),
    ("{photo} --weights plain.pth --model swin_micro_patch4_window4_128 --num-classes 4",
     "--num-classes 4 was given, but the classifier in plain.pth has 5 outputs"),
    ("{photo} --weights {run} --class-indices four.json", "four.json names 4 classes, but the classifier in"),
    # the same classes in another order: every output would be named as another class, without a word
    ("{photo} --weights {run} --class-indices shuffled.json", "shuffled.json names the classes of {run}/best.pth in "
     "another order (tulips, daisy, dandelion, roses, sunflowers; its own: daisy, dandelion, roses, sunflowers, tulips)"),
    # another run's file, a class of its own among them: the classes it shares would be named as others, silently
    ("{photo} --weights {run} --class-indices other_run.json", "other_run.json numbers classes of {run}/best.pth "
     "otherwise (daisy at 1, its at 0; dandelion at 2, its at 1; roses at 3, its at 2; sunflowers at 4, its at 3)"),
    ("{photo} --weights {run} --model swin_tiny_patch4_window7_224", "but {run}/best.pth holds a swin_micro"),
    ("{photo} --weights {run} --output results.txt", "--output results.txt: the name must end in .json or .csv"),
    ("{photo} --weights {run} --save-vis {photo}", "--save-vis {photo} is a file: name a folder for the cards"),
    ("{photo} --weights {run} --export-input float32", "--export-input float32 goes with --export FILE"),
    # the checkpoint it is made from, or another that a .pt names (a common name for checkpoints), is kept
    ("--weights plain.pt --model swin_micro_patch4_window4_128 --num-classes 5 --export plain.pt",
     "--export plain.pt is the checkpoint the program is made from: name another file"),
    ("--weights {run} --export plain.pt",
     "--export plain.pt: the file there is no TorchScript program that --export wrote (a checkpoint?)"),
    ("--weights {run} --export plain.pt2",  # a checkpoint named .pt2, or notes named .onnx: kept too
     "--export plain.pt2: the file there is no torch.export program that --export wrote (a checkpoint?)"),
    ("--weights {run} --export notes.onnx", "--export notes.onnx: the file there is no ONNX program that --export"),
])
def test_user_errors(args, message, trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    torch.save(checkpoint["model"], tmp_path / "plain.pth")
    torch.save(checkpoint["model"], tmp_path / "plain.pt")
    torch.save(checkpoint["model"], tmp_path / "plain.pt2")
    (tmp_path / "notes.onnx").write_text("my notes")
    kept = [(tmp_path / name).read_bytes() for name in ("plain.pt", "plain.pt2", "notes.onnx")]
    write_class_indices(tmp_path / "four.json", CLASSES[:4])
    write_class_indices(tmp_path / "shuffled.json", CLASSES[-1:] + CLASSES[:-1])
    write_class_indices(tmp_path / "other_run.json", ["lilies"] + CLASSES[:-1])
    fill = {"photo": photos[0], "run": trained / "runs" / "r"}
    with pytest.raises(UserError, match=re.escape(message.format(**fill))):
        run_predict(capsys, monkeypatch, tmp_path, *args.format(**fill).split())
    assert [(tmp_path / name).read_bytes() for name in ("plain.pt", "plain.pt2", "notes.onnx")] == kept


def test_an_output_folder_that_cannot_be_made_fails_before_anything_is_classified(trained, photos, tmp_path,
                                                                                    capsys, monkeypatch):
    from utils import run_cli
    monkeypatch.chdir(trained)
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder.csv").mkdir()
    (tmp_path / "a_folder.onnx").mkdir()
    for flag, target, said in (("--output", tmp_path / "a_file" / "p.csv", f"cannot write {tmp_path / 'a_file' / 'p.csv'}"
                                                                       f": {tmp_path / 'a_file'} is a file, not a folder"),
                               ("--export", tmp_path / "a_file" / "m.onnx", f"cannot write {tmp_path / 'a_file'}"),
                               ("--export", tmp_path / "a_folder.onnx", f"cannot write {tmp_path / 'a_folder.onnx'}: "
                                                                        "Is a directory"),
                               ("--save-vis", tmp_path / "a_file" / "vis", tmp_path / "a_file"),
                               ("--output", tmp_path / "a_folder.csv", f"--output {tmp_path / 'a_folder.csv'} is a "
                                f"folder: name the file to write, such as {tmp_path / 'a_folder.csv' / 'predictions.csv'}")):
        with pytest.raises(SystemExit) as exited:
            run_cli(lambda: predict.main([str(photos[0]), flag, str(target)]))
        out, err = capsys.readouterr()
        assert exited.value.code == 2 and out == ""  # stopped before the model was loaded
        assert err.startswith(f"error: {said}") and err.count("\n") == 1, err  # the path and why
    # a --save-vis folder that cannot be written into (read-only: as root, a file system's refusal stands in)
    def refused(dir=None):
        raise PermissionError(13, "Permission denied", dir)
    with monkeypatch.context() as patched:
        patched.setattr(cards.tempfile, "TemporaryFile", refused)
        with pytest.raises(SystemExit) as exited:
            run_cli(lambda: predict.main([str(photos[0]), "--save-vis", str(tmp_path / "vis")]))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == "" and err == \
        f"error: cannot write the cards into --save-vis {tmp_path / 'vis'}: Permission denied\n"
    assert not (tmp_path / "p.csv").exists()
    predict.main([str(photos[0]), "--output", str(tmp_path / "p.csv")])  # the check leaves no file of its own
    assert len(list(csv.reader(open(tmp_path / "p.csv")))) == 2


def test_no_checkpoint_says_what_to_do(photos, tmp_path, capsys, monkeypatch):
    """Through run_cli, as a user sees it: one line, status 2, no traceback."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        utils.run_cli(lambda: predict.main([str(photos[0])]))
    out, err = capsys.readouterr()
    assert exited.value.code == 2 and out == ""
    assert err.startswith("error: no checkpoint to predict with") and err.count("\n") == 1
    assert "python train.py" in err and "--weights" in err
    (tmp_path / "runs" / "stopped").mkdir(parents=True)  # stopped before its first validation: named, not "train one"
    (tmp_path / "runs" / "stopped" / "last.pth").write_bytes(b"")
    with pytest.raises(SystemExit):
        utils.run_cli(lambda: predict.main([str(photos[0])]))
    assert "but runs/stopped holds a last.pth (stopped before its first validation): pass --weights runs/stopped" \
        in capsys.readouterr().err


def test_out_of_memory_is_one_line_that_says_what_needs_less(trained, photos, capsys, monkeypatch):
    """An --img-size far too large (the CPU allocator refuses 30 GB), or a GPU's want of memory: one line,
    status 2, no traceback. Any other RuntimeError keeps its traceback: a bug to see."""
    monkeypatch.chdir(trained)
    assert not utils.out_of_memory(ValueError("can't allocate memory"))  # torch's errors only
    for error in (RuntimeError("[enforce fail at alloc_cpu.cpp:119] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 30000000000 bytes. Error code 12\n(a second line)"),
                  torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")):
        monkeypatch.setattr(predict, "load_classifier", lambda *args, error=error: (_ for _ in ()).throw(error))
        with pytest.raises(SystemExit) as exited:
            utils.run_cli(lambda: predict.main([str(photos[0]), "--img-size", "100000"]))
        err = capsys.readouterr().err
        assert exited.value.code == 2 and err.count("\n") == 1, err
        assert err.startswith(f"error: out of memory: {str(error).splitlines()[0]}. A smaller --batch-size or "
                              "--img-size needs less")
    monkeypatch.setattr(predict, "load_classifier", lambda *args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        utils.run_cli(lambda: predict.main([str(photos[0])]))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated:FutureWarning")
def test_an_export_that_finds_no_room_is_one_line_and_keeps_the_program_there(trained, tmp_path):
    """A full disk (here a limit on file size, which fails a write as a full disk does): torch's own writer
    aborted the process with a C++ trace and left its temporary file; the program is written from Python, so
    it is one line that says to export again, the earlier program kept, nothing left beside it."""
    import resource
    import signal

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails instead of killing the process

    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(tmp_path / "model.pt"))  # an earlier program
    before = (tmp_path / "model.pt").read_bytes()
    done = subprocess.run([sys.executable, ROOT / "predict.py", "--weights", trained / "runs" / "r", "--export",
                           tmp_path / "model.pt"], capture_output=True, text=True, preexec_fn=limited, timeout=300)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert lines[-1].startswith(f"error: could not save {tmp_path / 'model.pt'}: "), done.stderr
    assert lines[-1].endswith("the model.pt that was there is kept. Make room, then export again")
    assert "Traceback" not in done.stderr and "terminate called" not in done.stderr
    assert (tmp_path / "model.pt").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_a_reader_that_stops_early_is_no_traceback(trained, photos):
    """`predict.py ... | head -1`: the reader has gone before the results are printed (its end of the
    pipe is closed here at once): a quiet stop with status 141, as a shell tool killed by SIGPIPE."""
    proc = subprocess.Popen([sys.executable, ROOT / "predict.py", *photos[:3]], cwd=trained,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 141 and "Traceback" not in err and "Error" not in err, err
    # another pipe that breaks (a worker's, a subprocess's) is a real error, not a reader gone

    def broken_elsewhere():
        raise BrokenPipeError("a worker's pipe")
    import utils
    with pytest.raises(BrokenPipeError, match="a worker's pipe"):
        utils.run_cli(broken_elsewhere)


def test_files_a_folder_passes_over_are_said(trained, photos, tmp_path, capsys, monkeypatch):
    """An iPhone's HEIC photo in a folder was passed over without a word (named alone, it was "not an image"), and
    a link to a photo beside it classified it twice: each is said, with what to do."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    (folder / "iphone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(16))
    shutil.copytree(trained / "runs", tmp_path / "runs")
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, "in", "--json")
    assert [line["path"] for line in json_lines(out)] == [str(Path("in") / "a.jpg")] and code == 1
    assert f"warning: {Path('in') / 'b.jpg'}: the same file as {Path('in') / 'a.jpg'} (a link): counted once" in err
    assert f"warning: {Path('in') / 'iphone.heic'}: an iPhone's HEIC photo, which Pillow does not read" in err
    code, _, err = run_predict(capsys, monkeypatch, tmp_path, "in/iphone.heic")
    assert code == 1 and "in/iphone.heic: an iPhone's HEIC photo, which Pillow does not read: convert it" in err


def test_the_tutorials_files_in_the_working_folder_are_used_as_its_predict_py_uses_them(checkpoint, photos, tmp_path,
                                                                                          capsys, monkeypatch):
    """The tutorial's train.py saves weights/model-<epoch>.pth, a plain state dict, and its predict.py names the
    classes from ./class_indices.json: with no run of this project the message names that file, and given, its classes
    come from that class_indices.json (they were printed as 0, 1, 2...)."""
    (tmp_path / "weights").mkdir()
    torch.save(checkpoint["model"], tmp_path / "weights" / "model-9.pth")
    write_class_indices(tmp_path / "class_indices.json", CLASSES)
    with pytest.raises(UserError, match=r"but weights/model-9.pth looks like the tutorial's: pass it with --weights "
                                        r"weights/model-9.pth --model NAME"):
        run_predict(capsys, monkeypatch, tmp_path, photos[0])
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "weights/model-9.pth",
                                 "--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--json")
    assert code == 0 and json_lines(out)[0]["topk"][0]["label"] in CLASSES and "class names from class_indices.json" in err
    # official ImageNet weights given beside the tutorial's 5 names: not theirs, passed over, the indices named
    write_class_indices(tmp_path / "class_indices.json", CLASSES[:4])
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "weights/model-9.pth",
                                 "--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--json")
    assert code == 0 and json_lines(out)[0]["topk"][0]["label"] in list("01234")
    assert "notice: class_indices.json here names 4 classes and weights/model-9.pth has 5 outputs: not its names, so " \
           "classes are shown by their index" in err
    assert "there is no class_indices.json here" not in err  # one notice, not a second that denies the file
    # and none at all: the indices, and why (a notice, as the tutorial's predict.py stopped without the file)
    (tmp_path / "class_indices.json").unlink()
    code, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "weights/model-9.pth",
                                 "--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--json")
    assert code == 0 and json_lines(out)[0]["topk"][0]["label"] in list("01234")
    assert "notice: weights/model-9.pth carries no class names and there is no class_indices.json here: classes are " \
           "shown by their index (--class-indices FILE" in err
    # the folder typed for the file: not "checkpoint not found: weights/best.pth"
    with pytest.raises(UserError, match=r"^weights is not a run folder: it holds the tutorial's model-9.pth: name the "
                                        r"file, --weights weights/model-9.pth --model NAME"):
        run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "weights", "--model",
                    "swin_micro_patch4_window4_128")
    # a folder of something else (the photos): what it is, not "checkpoint not found: photos/best.pth"
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError, match=r"^photos is not a run folder: it holds no best.pth, last.pth or run "
                                        r"config.yaml\. Name a run folder \(runs/<name>\) or a checkpoint file$"):
        run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "photos")


def test_the_tutorials_last_epoch_is_named_when_its_files_share_a_time(checkpoint, photos, tmp_path, capsys,
                                                                       monkeypatch):
    """weights/model-0.pth ... model-11.pth written at one time (an archive's or a checkout's): the message named the
    file the folder listed last (model-7.pth), and listed them in that order, not the last epoch's."""
    (tmp_path / "weights").mkdir()
    for epoch in range(12):
        torch.save(checkpoint["model"], tmp_path / "weights" / f"model-{epoch}.pth")
        os.utime(tmp_path / "weights" / f"model-{epoch}.pth", (1_700_000_000, 1_700_000_000))
    with pytest.raises(UserError, match=r"but weights/model-11.pth looks like the tutorial's"):
        run_predict(capsys, monkeypatch, tmp_path, photos[0])
    with pytest.raises(UserError, match=r"it holds the tutorial's model-9.pth, model-10.pth, model-11.pth \.\.\.: "
                                        r"name the file, --weights weights/model-11.pth"):
        run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "weights")


def test_a_stop_while_the_output_is_written_leaves_the_file_that_was_there_not_a_torn_one(tmp_path):
    """A Ctrl-C (or a kill) as --output is written: the file is whole or the one before it, never its first rows
    alone, which would read as every result."""
    class StopsHere:  # the writer meets it halfway, as a Ctrl-C lands
        def __str__(self):
            raise KeyboardInterrupt
    out = tmp_path / "x.csv"
    out.write_text("the results of an earlier run\n")
    row = {"path": "a.jpg", "topk": [{"label": "daisy", "index": 0, "prob": 0.9}]}
    with pytest.raises(KeyboardInterrupt):
        report.write_predictions([row] * 5000 + [{**row, "path": StopsHere()}], out, 1)
    assert out.read_text() == "the results of an earlier run\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_the_printed_table_ranks_the_classes_from_1(trained, photos, capsys, monkeypatch):
    code, out, _ = run_predict(capsys, monkeypatch, trained, photos[0], "--topk", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == ["1.", "2.", "3."]
