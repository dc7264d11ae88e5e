"""predict.py's cards (--save-vis, cards.py) and their class activation maps (--cam): a card per photo, named apart
and written whole, never over a file of the user's nor through a link, and the heat where the model saw its class."""
import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cards
import plots
import predict
from files import current_umask
from images import load_rgb
from script_runs import json_lines, run_predict
from utils import UserError

pytestmark = pytest.mark.xdist_group("programs")  # conftest.py says why


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
    assert cards[0].stat().st_mode & 0o777 == 0o666 & ~current_umask()  # as any file written: not mkstemp's 0600


def test_cards_of_long_names_fit_and_a_card_cut_short_is_none(trained, photos, tmp_path, capsys, monkeypatch):
    """Two photos of one 251-letter name: the second card's _2 made a name past 255 bytes, which stopped the run;
    names are cut to fit. A card whose writing Ctrl-C broke off was left cut short, and passed for a card later:
    a card is written whole or not at all."""
    long = "n" * 247 + ".jpg"
    for folder, photo in (("a", photos[0]), ("b", photos[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / long)
    code, _, err = run_predict(capsys, monkeypatch, trained, tmp_path / "a", tmp_path / "b", "--save-vis",
                               tmp_path / "vis")
    assert code == 0 and f"classified 2 of 2 images; cards in {tmp_path / 'vis'}\n" in err, err  # where they went
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["n" * 240 + ".png", "n" * 240 + "_2.png"]
    drawn = plots.prediction_card

    def broken_off(*args, **kwargs):
        card = drawn(*args, **kwargs)

        def save(path, **options):
            Path(path).write_bytes(b"\x89PNG\r\n")  # the first bytes, then Ctrl-C
            raise KeyboardInterrupt
        card.save = save
        return card
    monkeypatch.setattr(cards.plots, "prediction_card", broken_off)
    code, _, _ = run_predict(capsys, monkeypatch, trained, photos[2], "--save-vis", tmp_path / "cut")
    assert code == 130 and list((tmp_path / "cut").iterdir()) == []


def test_cards_of_names_one_on_a_case_blind_file_system_do_not_write_over_each_other(trained, photos, tmp_path,
                                                                                     capsys, monkeypatch):
    """A.jpg and a.jpg (or café written two ways) in two folders are one card name on macOS's and Windows' file
    systems: the second card wrote over the first there. Names are compared as those compare them."""
    for folder, name, photo in (("x", "A.jpg", photos[0]), ("y", "a.jpg", photos[1]),
                                ("z", "cafe\u0301.jpg", photos[2]), ("w", "caf\u00e9.jpg", photos[3])):
        (tmp_path / folder).mkdir()
        shutil.copy(photo, tmp_path / folder / name)
    run_predict(capsys, monkeypatch, trained, *(tmp_path / f for f in "xyzw"), "--save-vis", tmp_path / "vis")
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == \
        sorted(["A.png", "a_2.png", "cafe\u0301.png", "caf\u00e9_2.png"])

def test_save_vis_never_writes_over_the_users_pngs_nor_classifies_its_cards(trained, photos, tmp_path, capsys,
                                                                             monkeypatch):
    """Cards written beside the photos: a PNG photo of the same name is kept (the card takes _2), and run again,
    the cards of the first run are written over, not classified as photos. A file named twice, spelled two
    ways, is classified once."""
    shots = tmp_path / "shots"
    shots.mkdir()
    shutil.copy(photos[0], shots / "a.jpg")
    with Image.open(photos[1]) as photo:
        photo.save(shots / "a.png")
    mine = (shots / "a.png").read_bytes()
    for run in range(2):
        code, out, err = run_predict(capsys, monkeypatch, trained, shots, shots / ".." / "shots" / "a.jpg",
                                     "--save-vis", shots, "--json")
        assert code == 0 and "classified 2 of 2 images" in err, err
        assert sorted(r["path"] for r in json_lines(out)) == [str(shots / "a.jpg"), str(shots / "a.png")]
        assert sorted(p.name for p in shots.iterdir()) == ["a.jpg", "a.png", "a_2.png", "a_3.png"]
        assert (shots / "a.png").read_bytes() == mine
        assert cards.is_card(shots / "a_2.png") and cards.is_card(shots / "a_3.png")
    with pytest.raises(UserError, match=r"the images matching .*\*_\?\.png are all passed over: each is a card"):
        run_predict(capsys, monkeypatch, trained, str(shots / "*_?.png"))


def test_a_photo_gone_before_its_card_is_said_and_the_results_are_written(trained, photos, tmp_path, capsys,
                                                                         monkeypatch):
    """A photo removed between its classification and its card (a sync client's, another job's): a warning, the
    other cards, every result in --output, exit status 1; and a line break in a photo's name is drawn as "?"."""
    folder = tmp_path / "shots"
    folder.mkdir()
    gone, odd = shutil.copy(photos[0], folder / "gone.jpg"), shutil.copy(photos[1], folder / "new\nline.jpg")
    classified = predict.classify

    def removing_one(*args):
        for item in classified(*args):
            if item[0] == str(gone):
                os.remove(gone)
            yield item
    monkeypatch.setattr(predict, "classify", removing_one)
    code, _, err = run_predict(capsys, monkeypatch, trained, folder, "--save-vis", tmp_path / "vis",
                               "--output", tmp_path / "out.csv")
    assert code == 1 and f"warning: no card for {gone}: it no longer reads" in err, err
    assert [p.name for p in (tmp_path / "vis").iterdir()] == ["new\nline.png"]
    with open(tmp_path / "out.csv", newline="") as f:
        assert sorted(row["path"] for row in csv.DictReader(f)) == [str(gone), str(odd)]


def test_save_vis_writes_no_card_through_a_link(trained, photos, tmp_path, capsys, monkeypatch):
    """A link where a card would go (even one to nothing) is the user's: the card takes another name, nothing is
    written through the link."""
    vis = tmp_path / "vis"
    vis.mkdir()
    (vis / f"{photos[0].stem}.png").symlink_to(tmp_path / "nowhere.png")
    code, _, _ = run_predict(capsys, monkeypatch, trained, photos[0], "--save-vis", vis)
    assert code == 0 and (vis / f"{photos[0].stem}.png").is_symlink() and not (tmp_path / "nowhere.png").exists()
    assert cards.is_card(vis / f"{photos[0].stem}_2.png")


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
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", pt2_program, "--save-vis",
                    tmp_path / "cards", "--cam")
    assert not (tmp_path / "cards").exists()  # refused before the folder is made
    with pytest.raises(UserError, match=r"--export needs a checkpoint, not the program .*\.pt2"):
        run_predict(capsys, monkeypatch, trained, "--weights", pt2_program, "--export", tmp_path / "again.onnx")


def test_cards_say_class_names_the_fonts_here_lack(trained, photos, tmp_path, capsys, monkeypatch):
    """A machine a model is shipped to may lack the fonts of the one it trained on (CJK class names): --save-vis says
    that its cards draw boxes for those letters, on stderr (stdout holds the results)."""
    monkeypatch.setattr(plots, "letters_missing", lambda text: "\u5411")
    code, out, err = run_predict(capsys, monkeypatch, trained, photos[0], "--save-vis", tmp_path / "vis")
    assert code == 0 and "notice: the fonts here have no letters for \u5411 in the class names: the cards draw " \
        "boxes for them" in err and "notice" not in out


def test_a_png_another_program_marked_is_not_a_card(tmp_path):
    """A photo a program (GIMP, a phone) marked with its name in the PNG's Software field is the user's: never
    taken for a card, which --save-vis would write over; a card is told by our mark, whatever its suffix's case."""
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text(cards.CARD_MARK[0], "GIMP 2.10")
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png", pnginfo=info)
    assert not cards.is_card(tmp_path / "photo.png") and not cards.card_or_free(tmp_path / "photo.png")
    mark = PngInfo()
    mark.add_text(*cards.CARD_MARK)
    Image.new("RGB", (4, 4)).save(tmp_path / "card.PNG", pnginfo=mark)
    assert cards.is_card(tmp_path / "card.PNG")
