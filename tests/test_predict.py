"""predict.py on a CPU: a checkpoint of the small variant trained briefly on the real test photos,
then every way of naming images, weights and outputs, checked against the model run by hand."""
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import plots
import predict
import train
import utils
from data import Normalize, build_transform
from export import load_program
from image_factory import write_broken_files
from images import load_rgb, write_class_indices
from model import create_model
from runs import train_here
from utils import UserError

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
pytestmark = pytest.mark.xdist_group("programs")  # conftest.py says why


@pytest.fixture(scope="session")
def checkpoint(trained) -> dict:
    return torch.load(trained / "runs" / "r" / "best.pth", weights_only=True)


@pytest.fixture(scope="session")
def photos(flowers) -> list:
    return sorted(flowers.glob("*/*.jpg"))


def expected_probs(checkpoint: dict, path, img_size=None, flip=False) -> torch.Tensor:
    """The model of the checkpoint run by hand on one photo, as the tutorial's predict.py does."""
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    transform = build_transform(img_size or checkpoint["img_size"], train=False, crop_pct=checkpoint["crop_pct"])
    with Image.open(path) as image, torch.no_grad():
        x = Normalize(checkpoint["mean"], checkpoint["std"])(transform(image)[None])
        probs = model(x).softmax(-1)[0]
        return (probs + model(x.flip(-1)).softmax(-1)[0]) / 2 if flip else probs


def run_predict(capsys, monkeypatch, cwd, *args):
    """predict.main in this process (no start-up cost): (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    code = 0
    try:
        predict.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]  # fails on anything but JSON on stdout


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


def test_a_run_folder_stopped_before_its_first_validation_means_its_last_pth(checkpoint, photos, tmp_path, capsys,
                                                                             monkeypatch):
    (tmp_path / "stopped").mkdir()
    torch.save(checkpoint, tmp_path / "stopped" / "last.pth")
    _, out, err = run_predict(capsys, monkeypatch, tmp_path, photos[0], "--weights", "stopped", "--json")
    assert err.startswith(f"{Path('stopped') / 'last.pth'}: swin_micro") and json_lines(out)[0]["path"] == str(photos[0])


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
        assert "warning: in/gone.jpg: " in err and "warning: in/loop.jpg: " in err
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
    assert list(rows[0]) == ["path", "label_1", "index_1", "prob_1", "label_2", "index_2", "prob_2"]
    assert [(r["label_1"], float(r["prob_2"])) for r in rows] == [
        (r["topk"][0]["label"], r["topk"][1]["prob"]) for r in json_lines(out)]


def test_a_file_name_whose_bytes_are_not_utf8_is_printed_and_written_as_it_is(trained, photos, tmp_path):
    """A photo named in Latin-1 (old zips, Windows shares), on a terminal that is strict UTF-8: the table and
    the CSV hold its name's bytes, as ls prints it, where printing it raised UnicodeEncodeError."""
    import shutil
    photo = tmp_path / os.fsdecode(b"caf\xe9.jpg")
    shutil.copy(photos[0], photo)
    result = subprocess.run([sys.executable, ROOT / "predict.py", photo], cwd=trained, capture_output=True,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0 and result.stdout.startswith(bytes(tmp_path) + b"/caf\xe9.jpg\n"), result.stderr
    result = subprocess.run([sys.executable, ROOT / "predict.py", photo, "--output", tmp_path / "p.csv"],
                            cwd=trained, capture_output=True, env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    assert result.returncode == 0 and b"/caf\xe9.jpg," in (tmp_path / "p.csv").read_bytes(), result.stderr


@pytest.mark.parametrize("stop, said, status", [(KeyboardInterrupt, "Ctrl-C", 130), (utils.Terminated, "SIGTERM", 143)])
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
    with open(tmp_path / "p.csv") as f:
        assert [row["path"] for row in csv.DictReader(f)] == [str(p) for p in photos[:2]]


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


def test_save_vis_writes_a_card_per_photo(trained, photos, tmp_path, capsys, monkeypatch):
    twin = tmp_path / "twin" / photos[0].name  # same file name as photos[0], another folder
    twin.parent.mkdir()
    shutil.copy(photos[5], twin)
    run_predict(capsys, monkeypatch, trained, photos[0], twin, "--save-vis", tmp_path / "vis", "--topk", "3")
    cards = sorted((tmp_path / "vis").iterdir())
    assert [c.name for c in cards] == [f"{photos[0].stem}.png", f"{photos[0].stem}_2.png"]
    with Image.open(cards[0]) as card, Image.open(photos[0]) as photo:
        assert card.format == "PNG" and card.width > photo.width + 200
        pixels = np.array(card.convert("RGB")).reshape(-1, 3)
        assert (pixels == (40, 90, 200)).all(1).sum() > 100  # the top class's bar


def test_cam_cards_show_where_the_top_class_was_seen(trained, photos, tmp_path, capsys, monkeypatch):
    """--save-vis --cam: between the photo and the chart, the model's square crop tinted where its top class's map is
    high (the map's positive part, scaled to its maximum: some of the crop red, not all of it); --tta too."""
    photo = load_rgb(photos[0])
    photo.thumbnail((320, 320))  # as the card shows it; the crop beside it at the same height
    w, h = photo.size
    for flags in ((), ("--tta",)):
        run_predict(capsys, monkeypatch, trained, photos[0], "--save-vis", tmp_path / "plain", *flags)
        code, _, _ = run_predict(capsys, monkeypatch, trained, photos[0], "--save-vis", tmp_path / "cam", "--cam",
                                 *flags)
        assert code == 0
        with Image.open(tmp_path / "plain" / f"{photos[0].stem}.png") as plain, \
                Image.open(tmp_path / "cam" / f"{photos[0].stem}.png") as card:
            assert card.size == (plain.width + h + 10, plain.height)
            pixels = np.array(card.convert("RGB"), dtype=int)
        seen, shown = pixels[34:34 + h, 20 + w:20 + w + h], pixels[34:34 + h, 10:10 + w]
        red = (seen[..., 0] - seen[..., 1:].max(-1)) > 60
        assert 0.02 < red.mean() < 0.9 and red.mean() > ((shown[..., 0] - shown[..., 1:].max(-1)) > 60).mean()


def test_a_card_shows_an_icon_and_a_panorama_at_a_size_to_see():
    """An 8 x 8 icon is enlarged on its card, and the model's crop beside a 4000 x 50 panorama (a strip a few
    pixels high on the card) is shown at half the card's photo size, not at the strip's height."""
    crop = Image.new("RGB", (64, 64), (200, 30, 30))
    icon = plots.prediction_card(Image.new("RGB", (8, 8), (0, 128, 0)), ["a", "b"], [0.7, 0.3], seen=crop)
    pixels = np.array(icon)
    assert (pixels[34:34 + 160, 10:10 + 160] == (0, 128, 0)).all()  # the icon, 160 px a side
    strip = plots.prediction_card(Image.new("RGB", (4000, 50), (0, 0, 128)), ["a", "b"], [0.7, 0.3], seen=crop)
    pixels = np.array(strip)
    assert (pixels[34:34 + 4, 10:10 + 320] == (0, 0, 128)).all()  # the strip, 320 x 4
    assert (pixels[34:34 + 160, 340:340 + 160] == (200, 30, 30)).all() and strip.height >= 160 + 34


def test_the_heat_lies_where_the_map_is_high():
    """plots.heat_overlay: a map's rows are the image's rows, its columns the columns; the rest keeps its colour."""
    gray = np.full((40, 60, 3), 128, dtype=np.uint8)  # 40 rows, 60 columns
    heat = np.array([[0.0, 0.0, 5.0], [0.0, -3.0, 0.0]])  # hot at the top right; a negative value is no heat
    tinted = np.array(plots.heat_overlay(gray, heat), dtype=int)
    assert tinted.shape == (40, 60, 3)
    assert tuple(tinted[2, 57]) == (183, 69, 69)  # the top right: the hottest, 0.6 of the way to red (220, 30, 30)
    assert (tinted[37, 2] == 128).all() and (tinted[37, 30] == 128).all()  # the bottom left, and the cold cell


def test_cam_needs_cards_and_a_checkpoint(trained, photos, pt2_program, tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match=r"--cam draws on the --save-vis cards: add --save-vis DIR"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--cam")
    with pytest.raises(UserError, match=r"--cam needs a checkpoint, not the program .*\.pt2"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", pt2_program, "--save-vis", tmp_path, "--cam")


@pytest.mark.parametrize("args, message", [
    ("nowhere.jpg --weights {run}", "image not found: nowhere.jpg"),
    ("{photo} --weights plain.pth", "add --model NAME (swin_micro_patch4_window4_128) and --num-classes N"),
    ("{photo} --weights plain.pth --model swin_micro_patch4_window4_128 --num-classes 4",
     "--num-classes 4 was given, but the classifier in plain.pth has 5 outputs"),
    ("{photo} --weights {run} --class-indices four.json", "four.json names 4 classes, but the classifier in"),
    ("{photo} --weights {run} --model swin_tiny_patch4_window7_224", "but {run}/best.pth holds a swin_micro"),
    ("{photo} --weights {run} --output results.txt", "--output results.txt: the name must end in .json or .csv"),
    ("{photo} --weights {run} --save-vis {photo}", "--save-vis {photo} is a file: name a folder for the cards"),
])
def test_user_errors(args, message, trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    torch.save(checkpoint["model"], tmp_path / "plain.pth")
    write_class_indices(tmp_path / "four.json", CLASSES[:4])
    fill = {"photo": photos[0], "run": trained / "runs" / "r"}
    with pytest.raises(UserError, match=re.escape(message.format(**fill))):
        run_predict(capsys, monkeypatch, tmp_path, *args.format(**fill).split())


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
    assert not (tmp_path / "p.csv").exists()
    predict.main([str(photos[0]), "--output", str(tmp_path / "p.csv")])  # the check leaves no file of its own
    assert len(list(csv.reader(open(tmp_path / "p.csv")))) == 2


def test_no_checkpoint_says_what_to_do(photos, tmp_path):
    """Through run_cli, as a user sees it: one line, status 2, no traceback."""
    result = subprocess.run([sys.executable, ROOT / "predict.py", photos[0]], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: no checkpoint to predict with") and result.stderr.count("\n") == 1
    assert "python train.py" in result.stderr and "--weights" in result.stderr


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


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_gives_the_checkpoint_logits(trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    code, _, _ = run_predict(capsys, monkeypatch, trained, "--export", tmp_path / "flowers.pt")
    assert code == 0
    program = torch.jit.load(tmp_path / "flowers.pt")
    assert list(program.class_names) == CLASSES and program.img_size == 64
    assert not any(n.kind() == "prim::PythonOp" for n in program.net.inlined_graph.nodes())  # standard ops only
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    transform = build_transform(64, train=False)
    decode_crop, normalize = transform.transforms[0], Normalize(checkpoint["mean"], checkpoint["std"])
    crops = []  # uint8 (3, 64, 64): what a deployer feeds
    for photo in photos[:3]:  # 3 images: another batch size than the trace's 2
        with Image.open(photo) as image:
            crops.append(decode_crop(image))
    crops = torch.stack(crops)
    with torch.no_grad():
        want = model(torch.stack([normalize(c) for c in crops]))
    torch.testing.assert_close(program(crops), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(program(crops.float() / 255), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(program.probabilities(crops[:1]), want[:1].softmax(-1), rtol=1e-4, atol=1e-5)
    # A whole photo of any size is cropped and resized inside the program as predict.py does it. As a
    # PNG, since predict.py decodes a JPEG at a reduced scale where it can, which a program fed pixels cannot.
    Image.open(photos[0]).save(tmp_path / "photo.png")
    with Image.open(tmp_path / "photo.png") as image:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        assert pixels.shape[1:] != (64, 64)
        with torch.no_grad():
            want = model(normalize(transform(image)[None]))
    torch.testing.assert_close(program(pixels[None]), want, rtol=0, atol=0.01)  # uint8 rounding in predict.py




def table_entries(out: str) -> list:
    """(path, label, rank, probability) for each line of the printed table."""
    rows, path = [], None
    for line in out.splitlines():
        if not line.startswith(" "):
            path = line
            continue
        rank, label, percent = line.split()
        rows.append((path, label, rank, float(percent.rstrip("%")) / 100))
    return rows


def result_entries(results: list) -> list:
    """(path, label, index, probability) for each entry of --json results."""
    return [(r["path"], e["label"], e["index"], e["prob"]) for r in results for e in r["topk"]]


def csv_results(path: Path) -> list:
    with open(path) as f:
        return [{"path": row["path"], "topk": [{"label": row[f"label_{r}"], "index": int(row[f"index_{r}"]),
                                                "prob": float(row[f"prob_{r}"])} for r in range(1, 6)]}
                for row in csv.DictReader(f)]


def assert_same(got: list, want: list, last_digit: float) -> None:
    """Equal, but for a probability's last printed digit: ONNX Runtime and PyTorch add up fp32 in other orders."""
    assert len(got) == len(want) > 4 and [row[:3] for row in got] == [row[:3] for row in want]
    assert [row[3] for row in got] == pytest.approx([row[3] for row in want], abs=last_digit * 1.01)


def test_onnx_weights_print_what_the_checkpoint_prints(trained, photos, onnx_program, tmp_path, capsys,
                                                       monkeypatch):
    chosen, onnx = [photos[0], photos[33], photos[66], photos[99]], ["--weights", onnx_program]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen)
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, *onnx)
    assert "flowers.onnx: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (ONNX Runtime)" in err
    assert_same(table_entries(got), table_entries(want), last_digit=1e-4)  # percent with 2 decimals
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json", *onnx)
    assert_same(result_entries(json_lines(got)), result_entries(json_lines(want)), last_digit=1e-6)
    for name in ("p.json", "p.csv"):
        run_predict(capsys, monkeypatch, trained, *chosen, "--output", tmp_path / f"want_{name}")
        run_predict(capsys, monkeypatch, trained, *chosen, "--output", tmp_path / name, *onnx)
        want, got = (result_entries(csv_results(f) if f.suffix == ".csv" else json.loads(f.read_text()))
                     for f in (tmp_path / f"want_{name}", tmp_path / name))
        assert_same(got, want, last_digit=1e-6)


def test_eval_only_evaluates_a_program_as_it_evaluates_its_checkpoint(trained, flowers, onnx_program, tmp_path,
                                                                       capsys):
    """train.py --eval-only --weights flowers.onnx: the validation split through the program, in the report that
    the checkpoint gets; training from a program, or evaluating it on other classes, is one clear error."""
    train_here(capsys, "--eval-only", "--resume", trained / "runs" / "r", "--workers", "0", "--no-progress")
    out = train_here(capsys, "--eval-only", "--weights", onnx_program, "--data-path", flowers, "--workers", "0",
                     "--no-progress", "--output", tmp_path)
    folders = tmp_path / "eval-flowers.onnx" / "eval_val", trained / "runs" / "r" / "eval_val"
    assert f"open in a browser: {folders[0] / 'report.html'}" in out and (folders[0] / "report.html").is_file()
    got, want = ((folder / "report.txt").read_text().split("\n") for folder in folders)
    assert got[0] == f"swin_micro_patch4_window4_128 from {onnx_program}" and got[1].startswith("val: 20 images")
    assert got[1].split("loss")[0] == want[1].split("loss")[0] and got[2:] == want[2:]  # figures, classes, confusion
    mistakes = [list(csv.DictReader(open(folder / "misclassified.csv"))) for folder in folders]
    assert [r["path"] for r in mistakes[0]] == [r["path"] for r in mistakes[1]]
    assert [float(r["probability"]) for r in mistakes[0]] == pytest.approx(
        [float(r["probability"]) for r in mistakes[1]], abs=1e-5)
    with pytest.raises(UserError, match=r"flowers\.onnx is a program that predict\.py --export wrote: predict\.py "
                       r"runs it and train\.py --eval-only evaluates it, but its weights do not train"):
        train.main(["--weights", str(onnx_program), "--data-path", str(flowers), "--epochs", "1", "--workers", "0"])
    for name in ("daisy", "roses"):
        shutil.copytree(flowers / name, tmp_path / "two" / name)
    for weights in (["--weights", onnx_program], ["--resume", trained / "runs" / "r"]):  # a program, a checkpoint
        with pytest.raises(UserError, match=rf"{re.escape(str(weights[1]))} was trained on classes \['daisy', "
                           r"'dandelion', 'roses', 'sunflowers', 'tulips'\], but .*two has \['daisy', 'roses'\]$"):
            train.main(["--eval-only", *map(str, weights), "--data-path", str(tmp_path / "two")])


@pytest.mark.parametrize("weights, tolerance, input_type", [("int8", 0.05, "float32"), ("fp16", 0.01, "uint8")])
def test_int8_and_fp16_onnx_classify_as_the_checkpoint_does(weights, tolerance, input_type, trained, photos,
                                                            export_packages, tmp_path, capsys, monkeypatch):
    """The int8 program also takes [0, 1] floats (--export-input float32; an export is some 20 s here): it refuses
    uint8 rather than misread it, and predict.py hands it floats. On the way, export_onnx checked the fp32
    program's logits within 1e-4 of the checkpoint's, as it checks every export's."""
    path = tmp_path / "f.onnx"
    code, _, err = run_predict(capsys, monkeypatch, trained, "--export", path, f"--export-{weights}",
                               "--export-input", input_type)
    assert code == 0 and f"(ONNX opset 18 with {weights} weights, probabilities within {tolerance} of the " \
        "checkpoint's;" in err
    program = load_program(path)
    assert program.input_type == input_type
    if input_type == "float32":
        with pytest.raises(Exception, match="Unexpected input data type"):  # ONNX Runtime's words
            program.session.run(None, {"images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8).numpy()})
    chosen = [photos[0], photos[33], photos[66], photos[99]]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--weights", path)
    assert f"f.onnx: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (ONNX Runtime, {weights} weights)" in err
    got, want = ([{e["label"]: e["prob"] for e in r["topk"]} for r in json_lines(out)] for out in (got, want))
    assert len(got) == len(want) == 4
    for got_probs, want_probs in zip(got, want):  # near the checkpoint's, not equal: rounded
        assert got_probs == pytest.approx(want_probs, abs=tolerance) and got_probs != want_probs


def test_pt2_export_gives_the_checkpoint_logits(trained, checkpoint, photos, pt2_program, capsys, monkeypatch):
    extra = {"classifier.json": ""}
    program = torch.export.load(pt2_program, extra_files=extra).module()
    assert json.loads(extra["classifier.json"])["class_names"] == CLASSES
    decode_crop = build_transform(64, train=False).transforms[0]
    normalize = Normalize(checkpoint["mean"], checkpoint["std"])
    with Image.open(photos[10]) as image:
        crop = decode_crop(image)
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    with torch.no_grad():
        torch.testing.assert_close(program(crop[None]), model(normalize(crop)[None]), rtol=1e-4, atol=1e-4)
    # predict.py runs the program as it runs the checkpoint, and prints the same
    chosen = [photos[0], photos[50], photos[99]]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--weights", pt2_program)
    assert "flowers.pt2: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (torch.export)" in err
    assert_same(result_entries(json_lines(got)), result_entries(json_lines(want)), last_digit=1e-6)


def test_a_program_for_float_input(trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    """--export-input float32: the program takes [0, 1] floats (and not uint8), says so, and predict.py
    hands it floats, printing what it prints for the checkpoint (the .onnx: the int8 test above)."""
    path = tmp_path / "flowers.pt2"
    code, _, _ = run_predict(capsys, monkeypatch, trained, "--export", path, "--export-input", "float32")
    assert code == 0
    program = load_program(path)
    assert program.input_type == "float32"
    decode_crop = build_transform(64, train=False).transforms[0]
    with Image.open(photos[10]) as image:
        crop = decode_crop(image)[None]
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    with torch.no_grad():
        want = model(Normalize(checkpoint["mean"], checkpoint["std"])(crop[0])[None])
    torch.testing.assert_close(program.program(crop.float() / 255), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(RuntimeError, match="(?i)dtype"):  # its input type is fixed: uint8 is refused, not misread
        program.program(crop)
    chosen = [photos[0], photos[50], photos[99]]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--weights", path)
    assert_same(result_entries(json_lines(got)), result_entries(json_lines(want)), last_digit=1e-6)


def test_a_pt2_exported_on_a_gpu_says_so_where_there_is_none(trained, photos, pt2_program, tmp_path, capsys,
                                                             monkeypatch):
    """The archive's tensor descriptions name the device; rewritten to cuda, as a GPU export writes them."""
    import re
    import zipfile
    with zipfile.ZipFile(pt2_program) as source, zipfile.ZipFile(tmp_path / "gpu.pt2", "w") as target:
        for member in source.infolist():
            data = source.read(member.filename)
            if member.filename.endswith("_config.json"):
                data = re.sub(rb'"device": \{"type": "cpu"[^}]*\}', b'"device": {"type": "cuda", "index": 0}', data)
            target.writestr(member, data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"gpu\.pt2 was exported on a GPU and runs on one only"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", tmp_path / "gpu.pt2")


def test_a_broken_pt2_is_one_line_with_its_cause(photos, tmp_path):
    """torch.export logs a failed load as a traceback on stderr: in a fresh process, as a user runs it."""
    (tmp_path / "broken.pt2").write_bytes(b"PK\x03\x04 not a whole archive")
    done = subprocess.run([sys.executable, "predict.py", photos[0], "--weights", tmp_path / "broken.pt2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "broken.pt2 does not load as a torch.export program (RuntimeError: " in done.stderr


def test_a_torchscript_program_to_weights_says_how_to_run_it(trained, photos, tmp_path, capsys, monkeypatch):
    run_predict(capsys, monkeypatch, trained, "--export", tmp_path / "flowers.pt")
    with pytest.raises(UserError, match=r"flowers\.pt is a TorchScript program, not a checkpoint: torch\.jit\.load"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", tmp_path / "flowers.pt")


@pytest.mark.parametrize("args", ["--export x.onnx", "img.jpg --weights x.onnx"])
def test_onnx_without_its_packages_says_what_to_install(args, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "onnx", None)
    (tmp_path / "img.jpg").write_bytes(b"")
    with pytest.raises(UserError) as error:
        run_predict(capsys, monkeypatch, tmp_path, *args.split())
    message = str(error.value)
    assert "\n" not in message and "is not installed: pip install -r requirements-export.txt" in message
    assert message.startswith(args.split()[-2] + " x.onnx needs onnx")


def test_export_suffix_picks_the_format(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match=r"--export flowers\.pth: the name must end in \.onnx \(ONNX\), \.pt2 "
                       r"\(torch\.export\) or \.pt \(TorchScript\)"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "flowers.pth")
    for weights in ("int8", "fp16"):
        with pytest.raises(UserError, match=rf"--export-{weights} is for ONNX programs only: name the file "
                           r"flowers\.onnx"):
            run_predict(capsys, monkeypatch, tmp_path, "--export", "flowers.pt2", f"--export-{weights}")
        with pytest.raises(UserError, match=rf"--export-{weights} goes with --export FILE\.onnx"):
            run_predict(capsys, monkeypatch, tmp_path, "img.jpg", f"--export-{weights}")
    with pytest.raises(UserError, match=r"--export-int8 and --export-fp16: choose one"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "f.onnx", "--export-int8", "--export-fp16")
