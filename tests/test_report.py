"""report.py: the HTML report's content, read back from the page, and the page in a real browser
(Debian's headless Chromium, driven over the DevTools protocol on a pipe: no package needed).
train.py writing it is tested with the runs test_train.py makes."""
import base64
import csv
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
import torch
from PIL import Image

import evaluation
import report
import utils
from data import seen_box

CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def fake_evaluation(flowers: Path, probabilities: list) -> dict:
    """An evaluate() result on the bundled photos: the image k of class k % 5 mistaken (for the
    next class) with the k-th probability, every other photo right."""
    photos = {name: sorted((flowers / name).glob("*.jpg")) for name in CLASSES}
    confusion = torch.zeros(5, 5, dtype=torch.long)
    wrong = []
    for k, probability in enumerate(probabilities):
        label = k % 5
        predicted, second = (label + 1) % 5, (label + 2) % 5
        wrong.append((str(photos[CLASSES[label]][k // 5]), label, [predicted, label, second],
                      [probability, (1 - probability) * 0.6, (1 - probability) * 0.3]))
        confusion[label, predicted] += 1
    for label, name in enumerate(CLASSES):
        confusion[label, label] += len(photos[name]) - int(confusion[label].sum())
    images = int(confusion.sum())
    return {"loss": 0.75, "acc1": confusion.trace().item() / images, "acc5": 0.98,
            "balanced_acc": evaluation.balanced_accuracy(confusion), "confusion": confusion, "wrong": wrong,
            "failed": [], "images": images}


def write_metrics(path: Path, epochs: int = 4) -> Path:
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["epoch", "step", "loss_train", "loss_val", "acc1_train", "acc5_train", "acc1_val",
                      "balanced_acc_val", "acc5_val", "lr"])
        for e in range(1, epochs + 1):
            out.writerow([e, 5 * e, 1.6 - 0.2 * e, 1.5 - 0.15 * e, 0.2 * e, 0.9, 0.18 * e, 0.17 * e, 0.95,
                          1e-3 / e])
    return path


class Node:
    def __init__(self, tag: str, attrs: dict):
        self.tag, self.attrs, self.children = tag, attrs, []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find_all(self, tag: str, cls: str = None) -> list:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if child.tag == tag and (cls is None or cls in child.attrs.get("class", "").split()):
                    found.append(child)
                found += child.find_all(tag, cls)
        return found

    def by_id(self, id_: str):
        return next(n for n in self.find_all_nodes() if n.attrs.get("id") == id_)

    def find_all_nodes(self) -> list:
        return [n for c in self.children if isinstance(c, Node) for n in [c, *c.find_all_nodes()]]


class TreeBuilder(HTMLParser):
    """The page as a tree of Nodes (html.parser gives events only)."""
    VOID = {"img", "meta", "br", "link", "input", "hr"}

    def __init__(self, page: str):
        super().__init__()
        self.root = Node("document", {})
        self.stack = [self.root]
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        while self.stack[-1].tag != tag:
            self.stack.pop()
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(path: Path) -> Node:
    return TreeBuilder(path.read_text(encoding="utf-8")).root


def decoded(src: str) -> Image.Image:
    assert src.startswith("data:image/"), src[:40]
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))


def test_report_holds_the_figures_the_table_the_pictures_and_the_mistakes(flowers, tmp_path):
    probabilities = [0.41, 0.92, 0.55, 0.47, 0.66, 0.88, 0.40]  # classes 0..4, then 0 and 1 again
    result = fake_evaluation(flowers, probabilities)
    path = report.write_report(tmp_path / "run" / "report.html", result, CLASSES, "runs/x/best.pth (epoch 4)",
                               "swin_micro_patch4_window4_128", "val", write_metrics(tmp_path / "metrics.csv"))
    page = parse(path)
    cards = {c.find_all("span")[0].text(): c.find_all("b")[0].text() for c in page.find_all("div", "card")}
    assert cards["top-1"] == f"{result['acc1']:.1%}" == "93.0%"  # 7 wrong of 100
    assert cards["images"] == "100" and cards["classes"] == "5"
    assert "top-5" not in cards and "top-5" not in (tmp_path / "run" / "report.html").read_text()  # 1 of 5 classes
    more = report.headline(result, CLASSES + ["lilies"], "best.pth", "swin_micro", "val", [])
    assert '<span>top-5</span><b>98.0%</b>' in more
    assert cards["balanced accuracy"] == f"{result['balanced_acc']:.1%}" and cards["mistakes"] == "7"
    about = page.find_all("p", "about")[0]
    assert about.find_all("b", "variant")[0].text() == "swin_micro_patch4_window4_128"
    assert about.find_all("b", "checkpoint")[0].text() == "runs/x/best.pth (epoch 4)"

    table = page.find_all("table", "sortable")[0]
    assert [th.text() for th in table.find_all("th")] == ["class", "precision", "recall", "F1", "images", "mistakes",
                                                          "most often taken for"]
    rows = [[td.text() for td in tr.find_all("td")] for tr in table.find_all("tbody")[0].find_all("tr")]
    assert [row[0] for row in rows] == CLASSES
    for row, (precision, recall, _, support) in zip(rows, evaluation.per_class_metrics(result["confusion"])):
        f1 = 2 * precision * recall / (precision + recall)
        assert row[1:6] == [f"{precision:.3f}", f"{recall:.3f}", f"{f1:.3f}", str(support),
                            str(support - round(recall * support))]
    assert rows[0][6] == "dandelion (2)"  # daisy's two mistakes were both taken for dandelion

    pictures = [img.attrs["src"] for img in page.find_all("img", "picture")]
    assert len(pictures) == 4  # the confusion matrix and three training curves
    assert all(decoded(src).format == "PNG" and decoded(src).width > 300 for src in pictures)

    # the gallery: groups in class order, the most confident mistake first in each
    groups = [h3.attrs["id"] for h3 in page.by_id("mistakes").find_all("h3")]
    assert groups == ["wrong-0", "wrong-1", "wrong-2", "wrong-3", "wrong-4"]
    figures = page.by_id("mistakes").find_all("figure")
    order = [float(f.find_all("li")[0].text().split()[-1].rstrip("%")) / 100 for f in figures]
    assert order == [0.88, 0.41, 0.92, 0.40, 0.55, 0.47, 0.66]
    first = figures[0]
    assert "true: daisy" in first.find_all("figcaption")[0].text()
    assert [li.text() for li in first.find_all("li")] == ["dandelion 88.0%", "daisy 7.2%", "roses 3.6%"]
    assert first.find_all("li", "truth")[0].text().startswith("daisy")  # the true class is marked
    for figure, (file, *_) in zip(figures, sorted(result["wrong"], key=lambda m: (m[1], -m[3][0]))):
        link = figure.find_all("a")[0].attrs["href"]
        assert Path(unquote(urlparse(link).path)) == Path(file).resolve()  # the original photo
        thumb = decoded(figure.find_all("img")[0].attrs["src"])
        assert thumb.format == "JPEG" and max(thumb.size) <= report.THUMB_SIZE

    # self-contained: nothing to fetch
    text = path.read_text()
    assert not page.find_all("link") and all("src" not in s.attrs for s in page.find_all("script"))
    assert all(img.attrs["src"].startswith("data:") for img in page.find_all("img"))
    assert "http://" not in text and "https://" not in text


def test_a_large_set_shows_the_most_confident_mistakes_and_counts_the_rest(flowers, tmp_path):
    probabilities = [0.40 + 0.01 * k for k in range(40)]
    result = fake_evaluation(flowers, probabilities)
    result["wrong"].append((str(tmp_path / "gone.jpg"), 0, [1, 0, 2], [0.99, 0.005, 0.005]))  # deleted since
    path = report.write_report(tmp_path / "report.html", result, CLASSES, "best.pth", "swin_micro", max_shown=6)
    page = parse(path)
    mistakes = page.by_id("mistakes")
    shown = sorted(float(f.find_all("li")[0].text().split()[-1].rstrip("%")) for f in mistakes.find_all("figure"))
    assert shown == [75.0, 76.0, 77.0, 78.0, 79.0, 99.0]
    assert "the other 35 are listed in misclassified.csv" in mistakes.text()
    assert "the file no longer opens" in mistakes.text()
    assert len(mistakes.find_all("img")) == 5
    assert "(2 of 9 mistakes)" in mistakes.text()  # daisy: 8 of the 40, and the deleted one
    assert "No metrics.csv" in page.by_id("curves").text()


def test_a_class_whose_mistakes_are_all_unsure_keeps_its_place_in_the_gallery(flowers, tmp_path):
    """Ranked by confidence alone, the 300 shown of a large set left out the worst class (recall 0, its mistakes
    unsure) without a word. Each class with mistakes shows its most confident ones first; a class there is no room
    for is still named, with its count."""
    probabilities = [0.30 if k % 5 == 0 else 0.90 + 0.001 * k for k in range(40)]  # daisy's all unsure
    result = fake_evaluation(flowers, probabilities)
    page = parse(report.write_report(tmp_path / "report.html", result, CLASSES, "best.pth", "swin_micro",
                                     max_shown=6))
    mistakes = page.by_id("mistakes")
    assert "daisy (1 of 8 mistakes)" in mistakes.text() and len(mistakes.find_all("figure")) == 6
    assert "Shown: 6, the most confident 1 mistake of each class, then the most confident of all" in mistakes.text()
    page = parse(report.write_report(tmp_path / "report.html", result, CLASSES, "best.pth", "swin_micro",
                                     max_shown=3))
    mistakes = page.by_id("mistakes")
    assert "daisy (none of 8 shown)" in mistakes.text() and len(mistakes.find_all("figure")) == 3


def test_many_classes_leave_out_the_pictures_and_text_matrix_that_no_one_could_read(tmp_path):
    """report.txt's matrix numbers its columns (names cut to 5 letters were alike: class_01, class_02); past 30
    classes it is left out, past 60 the picture too (80 drew a grid without names; 1000 classes drew 198
    megapixels, more than Pillow opens), and an earlier evaluation's picture goes with it."""
    for n, matrix, picture in ((12, True, True), (31, False, True), (60, False, True), (61, False, False)):
        classes = [f"class_{k:02d}" for k in range(n)]
        confusion = torch.eye(n, dtype=torch.long) * 3
        confusion[0, 1] = 1
        result = {"loss": 0.5, "acc1": 0.99, "acc5": 1.0, "balanced_acc": 0.99, "confusion": confusion, "wrong": [],
                  "failed": [], "images": int(confusion.sum())}
        text = report.write_evaluation(tmp_path, result, classes, "best.pth", "swin_micro", "val", data="photos")
        assert text.splitlines()[0] == "swin_micro from best.pth, on photos"
        assert ("numbered as the rows" in text) == matrix and (f"left out for {n} classes" in text) == (not matrix)
        if matrix:
            lines = text.splitlines()
            header = lines[lines.index(next(line for line in lines if "numbered as the rows" in line)) + 1]
            assert header.split() == [str(k) for k in range(n)]
            assert f" 0  class_00  {3:5d}{1:6d}" in text and "11  class_11  " in text
        assert (tmp_path / "confusion_matrix.png").is_file() == picture


def test_a_class_with_no_image_in_the_split_shows_no_recall_rather_than_zero(flowers, tmp_path):
    """A small class may have no validation image: its recall is n/a in report.html and report.txt, sorted
    below every figure, and balanced accuracy averages the other classes."""
    result = fake_evaluation(flowers, [0.6, 0.7])  # daisy's first photo taken for dandelion, dandelion's for roses
    result["confusion"][4] = 0  # no tulips in this split
    result["balanced_acc"] = evaluation.balanced_accuracy(result["confusion"])
    text = report.write_evaluation(tmp_path, result, CLASSES, "best.pth", "swin_micro", "val")
    tulips = next(line for line in text.splitlines() if line.startswith("tulips"))
    assert tulips.split() == ["tulips", "n/a", "n/a", "n/a", "0"]  # never predicted either
    assert next(line for line in text.splitlines() if line.startswith("daisy")).split()[1:] == [
        "1.000", "0.950", "0.974", "20"]
    rows = {tr.find_all("td")[0].text(): tr.find_all("td")
            for tr in parse(tmp_path / "report.html").find_all("table", "sortable")[0].find_all("tr")[1:]}
    assert [td.text() for td in rows["tulips"][1:5]] == ["n/a", "n/a", "n/a", "0"]
    assert rows["tulips"][2].attrs["data-value"] == ""  # no figure: the page's sort keeps it last either way
    assert result["balanced_acc"] == pytest.approx((0.95 + 0.95 + 1.0 + 1.0) / 4)


def test_report_txt_keeps_its_columns_in_line_for_class_names_in_any_script(flowers, tmp_path):
    """A CJK letter takes two columns and a combining accent none: the table pads by the columns a name takes,
    not by its characters, so the figures stay in line (as in split_data.py's table and predict.py's)."""
    from utils import text_width
    # wide letters; é as e and a combining accent; a right-to-left mark and a zero-width joiner, which take none
    names = ["daisy", "日本の花", "rose\u0301s", "sun\u200dflowers", "\u202etulips"]
    text = report.write_evaluation(tmp_path, fake_evaluation(flowers, [0.6, 0.7]), names, "best.pth", "swin_micro",
                                   "val")
    lines = text.splitlines()
    table = lines[lines.index(next(line for line in lines if line.startswith("class"))):][:6]
    assert len({text_width(line) for line in table}) == 1, table
    matrix = lines[-6:]
    assert len({text_width(line) for line in matrix}) == 1, matrix
    # a name of right-to-left text (or a mark that overrides the direction) isolated, so that a viewer ordering text
    # by direction does not reverse the figures after it; a left-to-right name as it is
    assert "\u2068\u202etulips\u2069 " in text and "\u2068daisy" not in text


@pytest.mark.parametrize("crop_mode", ["center", "squash"])
def test_a_mistake_with_a_map_is_tinted_where_the_model_saw_its_choice(flowers, tmp_path, crop_mode):
    """evaluate's maps (by path: where the model saw the class it chose) tint the part of the thumbnail evaluation
    showed the model: its central square (87.5%, by default), or the whole photo where evaluation squashes it, the
    map stretched over it; a mistake without one is shown as it is."""
    result = fake_evaluation(flowers, [0.9, 0.8])
    hot, plain = result["wrong"][0][0], result["wrong"][1][0]
    result["maps"] = {hot: [[0.0, 0.0], [0.0, 4.0]]}  # the bottom right of the part shown
    seen = {"seen": seen_box(64, {"crop_mode": "squash", "crop_pct": 1.0})} if crop_mode == "squash" else {}
    page = parse(report.write_report(tmp_path / "report.html", result, CLASSES, "best.pth", "swin_micro", **seen))
    assert "tinted red where, in the part the model was shown, it saw the class it chose" in page.text()
    thumbs = {unquote(urlparse(f.find_all("a")[0].attrs["href"]).path): decoded(f.find_all("img")[0].attrs["src"])
              for f in page.by_id("mistakes").find_all("figure")}

    def redness(image, box):
        pixels = torch.tensor(np.asarray(image.convert("RGB").crop(box)), dtype=torch.float).view(-1, 3)
        return (pixels[:, 0] - pixels[:, 1:].mean(1)).mean().item()
    for path, tinted in ((hot, True), (plain, False)):
        thumb, original = thumbs[str(Path(path).resolve())], report.plots.thumbnail(path, report.THUMB_SIZE)
        w, h = thumb.size
        assert w != h  # a photo that is not square: the square and the whole photo differ
        side_w, side_h = (w, h) if crop_mode == "squash" else (round(report.CROP_PCT * min(w, h)),) * 2
        corner = ((w + side_w) // 2 - 8, (h + side_h) // 2 - 8, (w + side_w) // 2 - 2, (h + side_h) // 2 - 2)
        gain = redness(thumb, corner) - redness(original, corner)  # the part's bottom right, against the photo
        assert (gain > 60) if tinted else (abs(gain) < 15), (path, gain)
        far = (w - side_w) // 2 + 2, (h - side_h) // 2 + 2, (w - side_w) // 2 + 8, (h - side_h) // 2 + 8  # top left
        assert abs(redness(thumb, far) - redness(original, far)) < 15
        if crop_mode == "center":  # the photo's own corner, outside the square, as it is
            assert abs(redness(thumb, (w - 8, h - 8, w - 2, h - 2)) - redness(original, (w - 8, h - 8, w - 2, h - 2))) \
                < 15


def test_misclassified_csv_gains_the_top3_probabilities(flowers, tmp_path):
    result = fake_evaluation(flowers, [0.5, 0.7])
    report.write_misclassified_csv(tmp_path / "m.csv", result["wrong"], CLASSES)
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert [(r["true"], r["predicted"], r["probability"], r["second"], r["third"]) for r in rows] == [
        ("daisy", "dandelion", "0.5000", "daisy", "roses"), ("dandelion", "roses", "0.7000", "dandelion", "sunflowers")]
    assert float(rows[1]["second_probability"]) == pytest.approx(0.18)


def test_images_that_failed_as_they_were_evaluated_are_named_with_why(flowers, tmp_path):
    """Removed or changed after they were listed: the page names one and the count, report.txt all, each with
    why, as the file is now."""
    result = fake_evaluation(flowers, [0.9])
    result["failed"] = [str(tmp_path / "gone.jpg"), str(tmp_path / "empty.jpg")]
    (tmp_path / "empty.jpg").write_bytes(b"")
    report.write_evaluation(tmp_path / "eval", result, CLASSES, "c.pth", "swin_micro_patch4_window4_128", "val")
    text = (tmp_path / "eval" / "report.txt").read_text()
    listed = text.split("2 images could not be read when they were evaluated, and were left out:\n")[1].splitlines()
    assert listed[0].startswith(f"{tmp_path / 'gone.jpg'}: cannot be read (") and "No such file" in listed[0]
    assert listed[1] == f"{tmp_path / 'empty.jpg'}: empty file"
    page = (tmp_path / "eval" / "report.html").read_text()
    assert f"2 images failed to load and were not evaluated, such as {tmp_path / 'gone.jpg'}: report.txt" in page


def test_one_file_left_out_of_the_run_is_said_as_one(flowers, tmp_path):
    report.write_evaluation(tmp_path / "eval", fake_evaluation(flowers, [0.9]), CLASSES, "c.pth", "swin_micro", "val",
                            left_out=[("photos/daisy/x.jpg", "empty file")])
    assert "\n1 file in the data folder left out of the run:\nphotos/daisy/x.jpg: empty file" in \
        (tmp_path / "eval" / "report.txt").read_text()
    page = (tmp_path / "eval" / "report.html").read_text()
    assert re.search(r"1 file in the data folder was left out of the run, <[^>]+>photos/daisy/x.jpg</[^>]+>: "
                     r"empty file\.</p>", page)


def test_files_left_out_are_said_without_brackets_doubled(flowers, tmp_path):
    """Pillow's reason for a truncated JPEG ends in a bracket of its own, "(84 bytes not processed)": the page and
    the reason each put one more around it, and the line ended "not processed)));"."""
    from images import image_problem
    photo = next((flowers / "daisy").glob("*.jpg"))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:len(photo.read_bytes()) // 2])
    left_out = [(str(cut), image_problem(cut)), ("photos/daisy/x.jpg", "empty file")]
    assert re.fullmatch(r"does not decode: OSError: image file is truncated \(\d+ bytes not processed\)",
                        left_out[0][1])
    report.write_evaluation(tmp_path / "eval", fake_evaluation(flowers, [0.9]), CLASSES, "c.pth", "swin_micro", "val",
                            left_out=left_out)
    page = (tmp_path / "eval" / "report.html").read_text()
    assert re.search(r"2 files in the data folder were left out of the run, such as <[^>]+>[^<]*cut.jpg</[^>]+>: "
                     r"does not decode: OSError: image file is truncated \(\d+ bytes not processed\); report.txt "
                     r"lists them all\.</p>", page)
    assert f"{cut}: {left_out[0][1]}\n" in (tmp_path / "eval" / "report.txt").read_text()


def test_one_mistake_and_one_failed_image_are_said_as_one(flowers, tmp_path):
    result = fake_evaluation(flowers, [0.9])
    result["failed"] = [str(tmp_path / "gone.jpg")]
    report.write_evaluation(tmp_path / "eval", result, CLASSES, "c.pth", "swin_micro_patch4_window4_128", "val")
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "1 misclassified image, grouped by true class" in page
    assert f"1 image failed to load and was not evaluated, {tmp_path / 'gone.jpg'}: report.txt says why." in page


def test_file_names_whose_bytes_are_not_utf8_are_written_not_raised_about(flowers, tmp_path):
    """A photo named in Latin-1 (old zips, Windows shares): the report shows its name with U+FFFD and links to it,
    misclassified.csv and report.txt keep its bytes, and the report of an earlier evaluation is replaced whole."""
    import os
    import shutil
    photo = tmp_path / os.fsdecode(b"daisy_caf\xe9.jpg")
    shutil.copy(sorted((flowers / "daisy").glob("*.jpg"))[0], photo)
    result = fake_evaluation(flowers, [0.9])
    result["wrong"][0] = (str(photo), *result["wrong"][0][1:])
    out = tmp_path / "eval"
    report.write_evaluation(out, result, CLASSES, "c.pth", "swin_micro_patch4_window4_128", "val")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "daisy_caf\ufffd.jpg" in page and "daisy_caf%E9.jpg" in page
    with open(out / "misclassified.csv", "rb") as f:
        assert b"daisy_caf\xe9.jpg" in f.read()
    assert not list(out.glob("*.tmp*"))


def test_evaluate_collects_the_top3_of_each_mistake_only():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    logits = torch.tensor([[4.0, 1.0, 0.0, 0.0], [0.0, 3.0, 2.0, 1.0], [0.0, 0.0, 0.0, 5.0]])
    loader = [(logits, torch.tensor([0, 2, 3]), ["a.jpg", "b.jpg", "c.jpg"], []),
              (logits[:0], torch.tensor([], dtype=torch.long), [], ["broken.jpg"]),  # every file of a batch failed
              (torch.tensor([[0.0, 1.0, 2.0, 5.0], [4.0, 1.0, 0.0, 0.0]]), torch.tensor([1, 0]),
               ["d.jpg", "e.jpg"], [])]
    result = evaluation.evaluate(Fixed(), loader, lambda x: x, 4, torch.device("cpu"), None, show_progress=False)
    assert [(path, label, top) for path, label, top, _ in result["wrong"]] == [("b.jpg", 2, [1, 2, 3]),
                                                                              ("d.jpg", 1, [3, 2, 1])]
    assert result["wrong"][0][3] == pytest.approx(logits[1].softmax(-1)[[1, 2, 3]].tolist())
    assert result["confusion"].tolist() == [[2, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert result["failed"] == ["broken.jpg"] and result["images"] == 5 and result["maps"] == {}
    # the loss is the mean over the images, as training's (TensorBoard's loss/val beside loss/train), not their sum
    every = torch.cat([logits, loader[2][0]]), torch.cat([loader[0][1], loader[2][1]])
    assert result["loss"] == pytest.approx(torch.nn.functional.cross_entropy(*every).item())

    class Mapped(Fixed):
        """Class activation maps over 2 x 2 places whose means are the logits."""
        def forward_with_maps(self, x):
            maps = x[:, None, None, :] * torch.tensor([[0.2, 0.4], [0.6, 2.8]])[None, :, :, None]
            return maps.mean(dim=(1, 2)), maps
    mapped = evaluation.evaluate(Mapped(), loader, lambda x: x, 4, torch.device("cpu"), None, show_progress=False)
    assert mapped["wrong"] == result["wrong"]  # the same logits
    # each mistake's map of the class it chose: b.jpg's class 1 (logit 3), d.jpg's class 3 (logit 5)
    assert mapped["maps"].keys() == {"b.jpg", "d.jpg"}
    torch.testing.assert_close(torch.tensor(mapped["maps"]["b.jpg"]), torch.tensor([[0.6, 1.2], [1.8, 8.4]]))
    torch.testing.assert_close(torch.tensor(mapped["maps"]["d.jpg"]), torch.tensor([[1.0, 2.0], [3.0, 14.0]]))


def test_evaluate_counts_top5_as_the_label_among_the_five_highest():
    """7 classes: labels ranked 1st, 4th and 5th are top-5 hits, one ranked 6th is not (top-1: the first only)."""
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x

    ranked = torch.tensor([[7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]]).expand(4, -1)  # class 0 first ... class 6 last
    loader = [(ranked, torch.tensor([0, 3, 4, 5]), ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], [])]
    result = evaluation.evaluate(Fixed(), loader, lambda x: x, 7, torch.device("cpu"), None, show_progress=False)
    assert result["acc1"] == 0.25 and result["acc5"] == 0.75


# --- In a real browser ---

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe"]


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: it
    reads JSON commands on fd 3 and answers on fd 4, each message ending in a NUL byte), so the
    test needs no websocket client and opens no port."""

    def __init__(self, profile: Path, timeout: float = 60):
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()

        def give_fds_3_and_4():  # in the child: the pipe ends Chromium expects, kept across exec
            read_end, write_end = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write))
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                        preexec_fn=give_fds_3_and_4, close_fds=False,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(answers_write)
        self.timeout, self.buffer, self.next_id, self.events = timeout, b"", 0, []

    def call(self, method: str, params: dict = None, session: str = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            answer = self.receive()
            if answer.get("id") == self.next_id:
                assert "error" not in answer, (method, answer["error"])
                return answer["result"]
            self.events.append(answer)

    def receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            ready, _, _ = select.select([self.answers], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self.answers, 1 << 20) if ready else b""
            assert chunk, "Chromium stopped answering"
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def wait_for(self, method: str) -> dict:
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self.receive())
        return next(e for e in self.events if e.get("method") == method)

    def close(self):
        try:
            self.call("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.commands)
        os.close(self.answers)


def problems(events: list) -> list:
    """What a person would see in the developer console: uncaught errors, console errors, failed loads."""
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"].get("text"))
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert", "warning"):
            found.append(str(params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
            found.append(params["entry"]["text"])
    return found


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="no chromium here (apt-get install chromium); .ci/run installs it and CI runs this")
def test_the_report_in_headless_chromium(flowers, tmp_path):
    assert CHROMIUM is not None, "CI must run the browser test: .ci/run installs Debian's chromium"
    result = fake_evaluation(flowers, [0.41, 0.92, 0.55, 0.47, 0.66, 0.88, 0.40])
    path = report.write_report(tmp_path / "report.html", result, CLASSES, str(tmp_path / "best.pth"),
                               "swin_micro_patch4_window4_128", "val", write_metrics(tmp_path / "metrics.csv"))
    browser = Browser(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",  # a laptop screen
                     {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session)
        browser.call("Page.navigate", {"url": path.as_uri()}, session)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expression: str):
            answer = browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, session)
            assert "exceptionDetails" not in answer, answer
            return answer["result"].get("value")

        images = evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
        assert len(images) == 1 + 3 + 7  # confusion matrix, three curves, seven thumbnails
        assert all(complete and width > 0 for complete, width, _ in images), images
        for width in (1280, 1024):  # no scrolling sideways on a laptop, nor in a narrower window
            browser.call("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session)
            assert evaluate("document.documentElement.scrollWidth <= window.innerWidth"), width
            # the mistakes' groups side by side where they fit (2, 2, 1, 1 and 1 photos), not a row each
            tops = evaluate("Array.from(document.querySelectorAll('#mistakes h3'))"
                            ".map(h => Math.round(h.getBoundingClientRect().top))")
            assert len(tops) == 5 and tops[0] == tops[1] and len(set(tops)) <= 3, (width, tops)

        column = "Array.from(document.querySelectorAll('table.sortable tbody tr')).map(r => r.cells[0].textContent)"
        evaluate("document.querySelectorAll('table.sortable th')[2].click()")  # recall: highest first
        recalls = {c: r for c, (_, r, _, _) in zip(CLASSES, evaluation.per_class_metrics(result["confusion"]))}
        by_recall = evaluate(column)
        assert [recalls[c] for c in by_recall] == sorted(recalls.values(), reverse=True)
        evaluate("document.querySelectorAll('table.sortable th')[2].click()")  # again: lowest first
        assert [recalls[c] for c in evaluate(column)] == sorted(recalls.values())
        evaluate("document.querySelectorAll('table.sortable th')[0].click()")  # names: a to z
        assert evaluate(column) == CLASSES
        # a class with no image in the split (n/a): below the figures, highest first and lowest first alike
        result["confusion"][4] = 0
        result["wrong"] = [w for w in result["wrong"] if w[1] != 4]
        other = report.write_report(tmp_path / "na.html", result, CLASSES, str(tmp_path / "best.pth"),
                                    "swin_micro_patch4_window4_128", "val", None)
        # names a person may give: 200 letters (the page no wider for it), a right-to-left mark (its direction kept
        # to the name: it reversed the text after it)
        odd = ["L" * 200, "\u202eevil", *CLASSES[2:]]
        named = report.write_report(tmp_path / "odd.html", result, odd, str(tmp_path / "best.pth"),
                                    "swin_micro_patch4_window4_128", "val", None)
        for page in (other, named, path):  # there, and back to the report the rest of this test looks at
            browser.events = [e for e in browser.events if e.get("method") != "Page.loadEventFired"]
            browser.call("Page.navigate", {"url": page.as_uri()}, session)
            browser.wait_for("Page.loadEventFired")
            for _ in range(2 if page == other else 0):
                evaluate("document.querySelectorAll('table.sortable th')[2].click()")
                assert evaluate(column)[-1] == "tulips"
            if page == named:
                assert evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                isolated = evaluate("Array.from(document.querySelectorAll('bdi')).map(b => b.textContent)")
                assert isolated.count("\u202eevil") >= 2 and isolated.count("L" * 200) >= 2

        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}, session)
        height = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        shot = browser.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}}, session)
        screenshot = tmp_path / "report.png"
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        with Image.open(screenshot) as picture:
            assert picture.width == 1280 and picture.height > 1500  # the whole page, top to bottom
            assert len(picture.convert("RGB").getcolors(1 << 20)) > 1000  # photos and charts: not a blank page
        assert problems(browser.events) == []
        requested = [e["params"]["request"]["url"] for e in browser.events
                     if e.get("method") == "Network.requestWillBeSent"]
        assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested
    finally:
        browser.close()


def test_metrics_saved_again_by_a_spreadsheet_still_draw_their_curves(tmp_path):
    """metrics.csv with a byte-order mark (a spreadsheet's "CSV UTF-8") and a row without its epoch: the other rows'
    curves, where the mark hid the epoch column (KeyError) and the row without one failed the sort (TypeError)."""
    import plots
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss_train,lr\n,0.5,1e-3\n1,0.4,1e-3\n2,0.3,5e-4\n", encoding="utf-8-sig")
    rows = report.read_metrics(path)
    assert [(row["epoch"], row["loss_train"]) for row in rows] == [(1, 0.4), (2, 0.3)]
    assert len(plots.training_curves(rows)) == 3


def test_per_class_metrics():
    confusion = torch.tensor([[3, 1], [0, 4]])
    assert evaluation.per_class_metrics(confusion) == [(1.0, 0.75, 6 / 7, 4), (0.8, 1.0, 8 / 9, 4)]


def test_per_class_metrics_leave_undefined_figures_out():
    """A class with no image in the split has no recall (not 0: it was never missed), one never predicted no
    precision, one neither present nor predicted no F1; balanced accuracy averages the recalls there are."""
    confusion = torch.tensor([[2, 0, 2], [0, 0, 0], [0, 0, 4]])  # class 1: none; class 0: some taken for 2
    assert evaluation.per_class_metrics(confusion) == [(1.0, 0.5, 2 / 3, 4), (None, None, None, 0),
                                                       (4 / 6, 1.0, 0.8, 4)]
    never_predicted = torch.tensor([[0, 3], [0, 5]])
    assert evaluation.per_class_metrics(never_predicted)[0] == (None, 0.0, 0.0, 3)
    present_not_predicted = torch.tensor([[0, 0], [2, 5]])  # class 0 absent but predicted twice
    assert evaluation.per_class_metrics(present_not_predicted)[0] == (0.0, None, 0.0, 0)
    assert evaluation.balanced_accuracy(confusion) == pytest.approx((0.5 + 1.0) / 2)


def test_misclassified_csv_lists_the_mistakes_by_path(tmp_path):
    """evaluate gathers mistakes in the loader's order (and under torchrun, by rank): the file is sorted by path, so
    that two evaluations compare line by line."""
    wrong = [("z.jpg", 0, [1, 0, 2], [0.9, 0.05, 0.05]), ("a.jpg", 1, [0, 1, 2], [0.6, 0.3, 0.1])]
    report.write_misclassified_csv(tmp_path / "m.csv", wrong, ["cat", "dog", "fox"])
    with open(tmp_path / "m.csv", newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == ["a.jpg", "z.jpg"]


def test_the_most_frequent_confusions_are_ten_each_a_share_of_its_true_class():
    """The list under the matrix: its ten most frequent mistakes, each as a share of the images of its true class
    (its row), not of the class it was taken for."""
    classes = [f"c{k}" for k in range(12)]
    confusion = torch.eye(12, dtype=torch.long) * 10
    for k in range(11):  # 11 confusions: k + 1 images of class k taken for class k + 1
        confusion[k, k + 1] = k + 1
    section = report.confusion_section(confusion, classes)
    assert section.count("<li>") == 10
    assert "<bdi>c0</bdi> taken for <bdi>c1</bdi>" not in section  # the 11th, the least frequent, left out
    assert "<bdi>c10</bdi> taken for <bdi>c11</bdi>: 11 (52% of <bdi>c10</bdi>)" in section  # 11 of its 21


def test_a_class_never_mistaken_names_no_class_it_is_taken_for():
    table = report.class_table(torch.tensor([[5, 0], [1, 4]]), ["cat", "dog"])
    rows = table.split("<tr>")[2:]  # after the header, a row per class
    assert rows[0].endswith("<td></td></tr>") and "<bdi>cat</bdi> (1)" in rows[1]


def test_a_class_whose_mistakes_are_all_shown_counts_them_once(tmp_path):
    photos = [tmp_path / "1.jpg", tmp_path / "2.jpg"]
    for photo in photos:
        Image.new("RGB", (40, 30), "yellow").save(photo)
    html = report.gallery([(str(p), 0, [1, 0], [0.8, 0.2]) for p in photos], ["daisy", "rose"], 300, 32, [], {})
    assert "(2 mistakes)" in html and "2 of 2" not in html


def test_metrics_rows_without_an_epoch_are_left_out_of_the_curves(tmp_path):
    """A row whose epoch is empty or not a number (a file edited by hand) has no place on a curve's axis."""
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss_train\n1,0.5\n,0.4\nn/a,0.3\n2,0.2\n")
    assert [row["epoch"] for row in report.read_metrics(path)] == [1.0, 2.0]


def test_fullwidth_letters_take_two_columns():
    assert utils.text_width("ＡＢ") == 4
