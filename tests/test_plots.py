"""plots.py: the pictures (confusion matrix, curves, picture grids, labels) read back as pixels, and the fonts they
draw class names in. report.py's pages that hold them: test_report.py."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import plots


def test_the_confusion_matrix_of_two_classes_shows_its_whole_legend():
    picture = np.asarray(plots.confusion_matrix_image(torch.tensor([[3, 1], [0, 4]]), ["a", "b"]).convert("L"))
    legend = picture[34:50]  # the line under the title
    inked = np.nonzero((legend < 200).any(0))[0]
    assert inked.size and inked.max() < picture.shape[1] - 5  # white beyond its last letter: nothing cut off


def test_a_curve_hidden_under_another_of_the_same_points_is_named_with_it():
    """On a balanced validation split, balanced accuracy is top-1: its line covers top-1's, and the legend says
    so rather than list a line that cannot be seen; the whole legend stays in the picture."""
    rows = [{"epoch": e, "acc1_train": 0.5 + e / 10, "acc1_val": 0.4 + e / 10, "balanced_acc_val": 0.4 + e / 10,
             "acc1_val_ema": 0.45, "loss_train": 1.0, "loss_val": 1.1, "lr": 1e-3} for e in (1, 2, 3)]
    series = {"train": [(1, 0.6)], "val": [(1, 0.5)], "val balanced": [(1, 0.5)], "val EMA": [(1, 0.5)]}
    assert plots.legend_names(series) == ["train", "val", "val balanced = val", "val EMA = val"]
    assert plots.legend_names({"train": [(1, 0.6)], "val": [(1, 0.5)]}) == ["train", "val"]
    picture = np.asarray(plots.training_curves(rows)[1].convert("L"))
    inked = np.nonzero((picture[30:46] < 200).any(0))[0]
    assert inked.size and inked.max() < picture.shape[1] - 5


def test_the_accuracy_axis_stops_at_100_percent():
    """A run that reaches 100% top-1 would otherwise get an axis to 120%: a height no accuracy can have."""
    assert plots.axis_ticks([0.3, 1.0])[-1] > 1.0  # what the rounding alone gives
    assert plots.axis_ticks([0.3, 1.0], most=1.0) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert plots.axis_ticks([0.3, 1.0], most=1.0)[-1] == 1.0
    assert plots.axis_ticks([2.0, 3.0], most=1.0)[-1] > 3.0  # values past `most`: shown, not cut off


def a_wide_font_here() -> bool:
    from PIL import ImageFont
    for name in plots.FONT_FILES:
        try:
            ImageFont.truetype(name, 13)
            return True
        except OSError:
            continue
    return False


@pytest.mark.skipif(not a_wide_font_here() and os.environ.get("CI") != "true",
                    reason="no font beyond ASCII here (Debian: apt-get install fonts-dejavu-core); .ci/run installs one")
def test_letters_no_font_here_draws_are_said_as_a_run_starts(capsys, monkeypatch):
    """Class names in a script the fonts here lack would be boxes in every picture: said once, with what to install.
    (U+10FFFF: a code point no font draws, where CJK letters depend on the machine.)"""
    import run_log
    assert plots.letters_missing("rosés Ärzte \u03b1\u03b2 \u0436") == ""  # Latin, Greek, Cyrillic: DejaVu's
    assert plots.letters_missing("a\U0010ffffb\U0010ffff\n") == "\U0010ffff"
    run_log.notice_letters_missing(["daisy", "rosés"])
    assert capsys.readouterr().out == ""
    run_log.notice_letters_missing(["daisy", "x\U0010ffff"])
    assert capsys.readouterr().out.startswith("notice: the fonts here have no letters for \U0010ffff in the class "
                                              "names: the pictures (confusion matrix, report, TensorBoard) draw boxes")
    monkeypatch.setattr(plots, "letters_missing", lambda text: "\U0001f339")  # an emoji: another font to install
    run_log.notice_letters_missing(["daisy", "rose \U0001f339"])
    assert capsys.readouterr().out.endswith("apt-get install fonts-noto-color-emoji for emoji)\n")


@pytest.mark.skipif(not a_wide_font_here() and os.environ.get("CI") != "true",
                    reason="no font beyond ASCII here (Debian: apt-get install fonts-dejavu-core); .ci/run installs one")
def test_class_names_beyond_ascii_are_drawn_as_letters_not_boxes():
    face = plots.font(13)
    box = bytes(face.getmask("\U0010ffff"))  # a code point no font draws: the box of a missing letter
    for letter in "éüøñß":
        assert bytes(face.getmask(letter)) != box, letter


def test_a_long_class_name_is_shortened_in_the_pictures_not_the_tables():
    """A 200-letter class name made the confusion matrix 1764 px wide for its labels (the grid a corner of it) and
    the class chart as wide: labels end in "…" at plots.LABEL_WIDTH; the table and report.txt keep the name."""
    names = ["L" * 200, "b"]
    matrix = plots.confusion_matrix_image(torch.tensor([[3, 1], [0, 4]]), names)
    chart = plots.class_distribution_chart(names, {"train": [3, 4], "val": [1, 1]}, "images per class")
    assert matrix.width < 2 * plots.LABEL_WIDTH + 200 and chart.width < plots.LABEL_WIDTH + 2 * 300 + 40
    assert plots.shortened("L" * 200).endswith("…") and plots.pixel_width(plots.shortened("L" * 200)) <= \
        plots.LABEL_WIDTH and plots.shortened("daisy") == "daisy"


def test_the_class_chart_of_a_thousand_classes_is_drawn():
    """Past 280 classes (ImageNet's 1000 folders) a row was thinner than its bar's margins, and split_data.py stopped
    with Pillow's "y1 must be greater than or equal to y0" after every image was written, the split left unfinished."""
    for n in (281, 350, 1000):
        counts = list(range(1, n + 1))
        chart = plots.class_distribution_chart([f"c{i}" for i in range(n)], {"train": counts, "val": counts}, "t")
        assert chart.height > n * 2


def test_close_values_get_ticks_that_read_apart():
    """A train and a val loss within 0.01 of each other: every tick of the loss chart read 1.65."""
    assert plots.tick_labels([1.648, 1.650, 1.652], "{:.2f}") == ["1.648", "1.650", "1.652"]
    assert plots.tick_labels([0.5, 1.0], "{:.2f}") == ["0.50", "1.00"]
    assert plots.tick_labels([0.501, 0.502], "{:.0%}") == ["50.1%", "50.2%"]
    # a step of 2.5%: each label its tick's value, not 2% and 8% for 2.5% and 7.5%
    assert plots.tick_labels([0, 0.025, 0.05, 0.075, 0.1], "{:.0%}") == ["0.0%", "2.5%", "5.0%", "7.5%", "10.0%"]
    assert plots.tick_labels([1.4, 1.425, 1.45], "{:.2f}") == ["1.400", "1.425", "1.450"]
    chart = plots.line_chart({"train": [(1, 1.6485), (2, 1.6501)], "val": [(1, 1.6490), (2, 1.6510)]}, "loss")
    assert chart.width == 350


def test_picture_captions_keep_to_their_picture():
    """TensorBoard's grids cut a caption at 24 letters (a long true class hid the class chosen) and let a caption run
    into its neighbour's under 64 px crops: each line is shortened to its picture's width, true and chosen a line
    each."""
    from PIL import Image
    tile = Image.new("RGB", (64, 64), "white")
    grid = plots.picture_grid([tile, tile], [("L" * 200 + " >", "b"), "c"])
    assert grid.size == (2 * (64 + 4) + 4, 64 + 4 + 2 * 14 + 4 + 4)
    text = np.asarray(grid.convert("L"))[64 + 4:, :]  # the captions
    assert (text[:, 4 + 64: 4 + 64 + 4] >= 200).all()  # nothing written across the gap between the pictures
    inked = np.nonzero((text[:, 4: 4 + 64] < 200).any(0))[0]
    assert inked.size and inked.max() - inked.min() > 48  # the long line fills its picture's width, ending in …


def test_a_curve_is_drawn_in_epoch_order_whatever_the_order_of_its_points():
    points = [(1, 0.2), (2, 0.9), (3, 0.4), (4, 0.6)]
    shuffled = [points[2], points[0], points[3], points[1]]
    assert plots.line_chart({"a": shuffled}, "t").tobytes() == plots.line_chart({"a": points}, "t").tobytes()


def test_a_grid_has_a_row_for_its_last_pictures():
    pictures = [Image.new("RGB", (20, 20), "red") for _ in range(9)]
    eight, nine = plots.picture_grid(pictures[:8], ["x"] * 8), plots.picture_grid(pictures, ["x"] * 9)
    assert nine.width == eight.width and nine.height > eight.height + 20


def test_a_small_confusion_matrixs_cells_are_shaded_by_their_rows_and_show_their_counts_readably():
    """Right answers blue, mistakes red, each shaded by its share of its row (the true class); each count shown,
    white on a dark cell."""
    image = plots.confusion_matrix_image(torch.tensor([[9, 1], [0, 1]]), ["a", "b"])
    margin, cell = plots.pixel_width("a") + 14, 56  # confusion_matrix_image's layout for two classes
    top = 70 + margin

    def inside(i, j):
        return np.asarray(image.crop((margin + j * cell + 8, top + i * cell + 8, margin + (j + 1) * cell - 8,
                                      top + (i + 1) * cell - 8))).reshape(-1, 3)
    r, g, b = image.getpixel((margin + 3, top + 3))
    assert b > r  # 9 of 10 right: blue
    r, g, b = image.getpixel((margin + cell + 3, top + 3))
    assert r > b and min(r, g) > 200  # 1 of 10 wrong: a light red
    assert image.getpixel((margin + cell + 3, top + cell + 3))[2] < 210  # 1 of 1: the full blue
    assert inside(1, 1).min(axis=1).max() > 230  # "1" in white on it
    assert inside(0, 1).max(axis=1).min() < 100  # "1" in black on the light red
