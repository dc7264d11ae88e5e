"""images.py: finding, checking and loading images, class folders, class_indices.json."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from image_factory import (png_bytes, write_broken_files, write_class_tree, write_ignored_files, write_image,
                           write_sideways_photo)
from images import (IMAGE_EXTENSIONS, check_images, find_images, image_problem, list_images, load_rgb,
                    read_class_indices, write_class_indices)
from splits import load_splits
from utils import UserError


def test_load_rgb_gives_8_bit_rgb_for_every_mode(tmp_path):
    files = {
        "palette.png": write_image(tmp_path / "palette.png", mode="P"),
        "grey.jpg": write_image(tmp_path / "grey.jpg", mode="L"),
        "bilevel.bmp": write_image(tmp_path / "bilevel.bmp", mode="1"),
        "cmyk.jpg": write_image(tmp_path / "cmyk.jpg", mode="CMYK"),
        "rgba.webp": write_image(tmp_path / "rgba.webp", mode="RGBA"),
        "grey_alpha.png": write_image(tmp_path / "grey_alpha.png", mode="LA"),
        "anim.gif": write_image(tmp_path / "anim.gif"),
        "photo.TIFF": write_image(tmp_path / "photo.TIFF"),
    }
    for name, path in files.items():
        image = load_rgb(path)
        assert (image.mode, image.size) == ("RGB", (48, 40)), name


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(path)  # mid grey in 16 bits
    assert Image.open(path).mode.startswith("I")
    assert load_rgb(path).getpixel((0, 0)) == (127, 127, 127)  # convert("RGB") alone gives white
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16)).save(path)  # dark in 16 bits: all its values below 256
    assert load_rgb(path).getpixel((0, 0)) == (0, 0, 0)


def test_float_grey_from_0_to_1_is_scaled_and_from_0_to_255_kept(tmp_path):
    """A 32-bit float TIFF, as scientific tools write one: most often 0 to 1, which convert("RGB") leaves black."""
    for top, expected in ((1.0, 128), (255.0, 128)):
        pixels = np.full((8, 8), top / 2 + (0.5 if top == 255 else 0), dtype=np.float32)
        pixels[0, 0] = np.nan  # a hole in the data: black, not an error
        Image.fromarray(pixels).save(tmp_path / "float.tif")
        assert Image.open(tmp_path / "float.tif").mode == "F"
        image = load_rgb(tmp_path / "float.tif")
        assert image.getpixel((1, 1)) == (expected,) * 3 and image.getpixel((0, 0)) == (0, 0, 0)
    pixels = np.zeros((8, 8), dtype=np.float32)
    pixels[:, 4:] = 1.0  # white at 1.0 exactly, as a normalised image's: 0 to 1 still
    Image.fromarray(pixels).save(tmp_path / "float.tif")
    assert load_rgb(tmp_path / "float.tif").getpixel((6, 1)) == (255, 255, 255)


def test_transparent_pixels_become_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert load_rgb(path).getpixel((1, 1)) == (255, 255, 255)


def test_load_rgb_applies_exif_orientation(tmp_path):
    image = load_rgb(write_sideways_photo(tmp_path / "phone.jpg"))
    assert image.size == (20, 40)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_listing_follows_symlinked_folders_once(tmp_path):
    """A symlinked folder inside a class folder (photos kept elsewhere) is listed as a symlinked class folder
    is; a link back to the folder, or to one above it (the data folder, with the other classes' photos), is
    not walked: it would list photos of other classes under this one, or walk forever."""
    extra = [write_image(tmp_path / "elsewhere" / name) for name in ("x.jpg", "y.jpg")]
    own = write_image(tmp_path / "c" / "a.jpg")
    (tmp_path / "c" / "more").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "c" / "loop").symlink_to(tmp_path / "c")
    (tmp_path / "c" / "up").symlink_to(tmp_path)
    write_image(tmp_path / "d" / "another_class.jpg")
    found = find_images(tmp_path / "c")
    assert found == [own, *(tmp_path / "c" / "more" / path.name for path in extra)]


def test_a_link_into_another_class_folder_is_left_out_and_said(tmp_path):
    """daisy/more -> ../roses would give the roses photos a second label, perhaps one in training and one in
    validation: left out, with why, where the files that do not decode are said."""
    write_class_tree(tmp_path / "data", {"daisy": 3, "roses": 4})
    (tmp_path / "data" / "daisy" / "more").symlink_to("../roses")
    (tmp_path / "data" / "roses" / "deeper").mkdir()
    (tmp_path / "data" / "daisy" / "some").symlink_to("../roses/deeper")
    rose = sorted((tmp_path / "data" / "roses").glob("*.jpg"))[0]
    (tmp_path / "data" / "daisy" / "one.jpg").symlink_to(rose)  # a file too
    (tmp_path / "data" / "daisy" / "mine.jpg").symlink_to(tmp_path / "data" / "daisy" / "more" / rose.name)
    splits = load_splits(tmp_path / "data", val_ratio=0.0)
    assert splits.counts("train") == [3, 4]
    assert sorted(path for path, _ in splits.skipped) == [str(tmp_path / "data" / "daisy" / name)
                                                         for name in ("mine.jpg", "more", "one.jpg", "some")]
    assert all("in the class folder roses (through a link)" in why for _, why in splits.skipped)
    # a subfolder of one class linked as a class of its own: its photos are that class's alone
    write_class_tree(tmp_path / "pets" / "cats", {"kittens": 2, "grown": 3})
    write_class_tree(tmp_path / "pets", {"dogs": 3})
    (tmp_path / "pets" / "kittens").symlink_to("cats/kittens")
    pets = load_splits(tmp_path / "pets", val_ratio=0.0)
    assert pets.classes == ["cats", "dogs", "kittens"] and pets.counts("train") == [3, 3, 2]
    assert [why for _, why in pets.skipped] == ["in the class folder kittens (through a link): its photos are that "
                                                "class's, not this one's"]


def test_a_photo_or_a_class_folder_under_two_names_is_counted_once_or_refused(tmp_path):
    """A link to a photo in its own folder counted it twice (it could land in training and validation both); a class
    folder linked as another class (Daisy_alias -> daisy) gave its photos two labels; one linked to a folder above
    the data brought in everything around it as one class. Found on 2026-11-30."""
    write_class_tree(tmp_path / "data", {"daisy": 3, "roses": 4})
    rose = sorted((tmp_path / "data" / "roses").glob("*.jpg"))[0]
    (tmp_path / "data" / "roses" / "dup.jpg").symlink_to(rose.name)
    splits = load_splits(tmp_path / "data", val_ratio=0.0)
    assert splits.counts("train") == [3, 4]
    assert splits.skipped == [(str(tmp_path / "data" / "roses" / "dup.jpg"),
                               f"the same file as {rose} (a link): counted once")]
    (tmp_path / "data" / "Daisy_alias").symlink_to("daisy")
    with pytest.raises(UserError, match=r"the class folders 'Daisy_alias' and 'daisy' in .* are one folder \(a link\)"):
        load_splits(tmp_path / "data", val_ratio=0.0)
    (tmp_path / "data" / "Daisy_alias").unlink()
    (tmp_path / "data" / "up").symlink_to("..")
    with pytest.raises(UserError, match=r"class folder .*up is a link to .*, which holds the data folder"):
        load_splits(tmp_path / "data", val_ratio=0.0)


def test_a_photo_whose_exif_block_is_cut_short_decodes_without_a_warning_that_names_no_file(tmp_path):
    import warnings
    import images
    exif = Image.Exif()
    exif[0x0112] = 6  # an orientation, in a block cut short
    Image.new("RGB", (64, 48), (200, 0, 0)).save(tmp_path / "cut.jpg", exif=exif.tobytes()[:20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images.set_image_checks()
        assert load_rgb(tmp_path / "cut.jpg").size == (64, 48) and image_problem(tmp_path / "cut.jpg") is None
    assert not [warning for warning in caught if "EXIF" in str(warning.message)]


def test_load_rgb_raises_on_a_broken_file(tmp_path):
    for path in write_broken_files(tmp_path / "broken")[:4]:  # the bomb only warns outside a check
        with pytest.raises(OSError):
            load_rgb(path)


def test_listing_ignores_non_images_and_reads_any_case(tmp_path):
    good = [write_image(tmp_path / "c" / name, format="JPEG" if name.endswith(("jfif", "jpe")) else None)
            for name in ("a.JPG", "b.jpeg", "c.Png", "d.bmp", "e.tif", "f.jfif", "g.jpe", "h.ppm", "i.PGM")]
    # .jfif: a browser's JPEG; .ppm and .pgm: Netpbm, which torchvision's ImageFolder lists too
    write_ignored_files(tmp_path / "c")
    write_image(tmp_path / "c" / ".ipynb_checkpoints" / "a-checkpoint.jpg")
    assert find_images(tmp_path / "c") == good
    assert {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"} <= set(IMAGE_EXTENSIONS)
    assert check_images(good)[1] == []


def test_what_is_left_out_of_a_class_folder_is_said_with_what_to_do(tmp_path):
    """A NAS's thumbnails (of photos in the folder: in another split they would leak the photo into it), a
    recycle bin, iPhone and camera-raw photos that Pillow does not read, a pipe (opening it would wait forever):
    left out, each with why; a folder of a zip made on a Mac is no class."""
    own = write_image(tmp_path / "data" / "c" / "a.jpg")
    write_image(tmp_path / "data" / "c" / "@eaDir" / "a.jpg" / "SYNOPHOTO_THUMB_M.jpg")
    write_image(tmp_path / "data" / "c" / "#recycle" / "old.jpg")
    (tmp_path / "data" / "c" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\x18ftypheic")
    (tmp_path / "data" / "c" / "DSC_0001.NEF").write_bytes(b"MM\0*")
    os.mkfifo(tmp_path / "data" / "c" / "pipe.jpg")
    left_out = []
    assert find_images(tmp_path / "data" / "c", left_out=left_out) == [own]
    why = {Path(path).name: reason for path, reason in left_out}
    assert set(why) == {"@eaDir", "#recycle", "IMG_0001.HEIC", "DSC_0001.NEF", "pipe.jpg"}
    assert "Synology" in why["@eaDir"] and "convert it to JPEG" in why["IMG_0001.HEIC"]
    assert "export it as JPEG" in why["DSC_0001.NEF"] and "pipe" in why["pipe.jpg"]
    write_image(tmp_path / "data" / "d" / "b.jpg")
    write_image(tmp_path / "data" / "__MACOSX" / "c" / "._a.jpg")
    splits = load_splits(tmp_path / "data", val_ratio=0.0)
    assert splits.classes == ["c", "d"] and len(splits.skipped) == 5
    (tmp_path / "data" / "e").mkdir()
    (tmp_path / "data" / "e" / "IMG_0002.heic").write_bytes(b"\0\0\0\x18ftypheic")
    with pytest.raises(UserError, match=r"e has no image files \(.*\); left out: IMG_0002\.heic, an iPhone's HEIC "
                                        r"photo, .*convert it to JPEG.*: add images or remove the folder$"):
        load_splits(tmp_path / "data")


def test_a_folder_that_cannot_be_read_is_said_not_passed_over(tmp_path, unreadable):
    """os.walk passes over a folder it cannot list in silence: its photos left out of training and of a split with
    no word, a class folder said to hold no images, the data folder refused with its train/ named instead."""
    for name in ("c", "d"):
        for i in range(2):
            write_image(tmp_path / "data" / name / f"{i}.jpg")
    write_image(tmp_path / "data" / "c" / "more" / "x.jpg")
    unreadable(tmp_path / "data" / "c" / "more")
    splits = load_splits(tmp_path / "data", val_ratio=0.5)
    assert splits.skipped == [(str(tmp_path / "data" / "c" / "more"),
                               "cannot be read (Permission denied): a folder, its photos left out")]
    left_out = []
    assert len(list_images([str(tmp_path / "data")], left_out=left_out)) == 4 and len(left_out) == 1
    unreadable(tmp_path / "data" / "d")
    with pytest.raises(UserError, match=r"data/d cannot be read \(Permission denied\): give this user read access "
                                        r"to it \(chmod -R u\+rX .*data/d\)$"):
        load_splits(tmp_path / "data")
    write_image(tmp_path / "only" / "sub" / "y.jpg")  # predict.py's folder whose photos are all in one it cannot read
    unreadable(tmp_path / "only" / "sub")
    with pytest.raises(UserError, match=r"^no images in .*only \(at any depth\); .*only/sub cannot be read "
                                        r"\(Permission denied\): a folder, its photos left out$"):
        list_images([str(tmp_path / "only")])
    unreadable(tmp_path / "data")
    with pytest.raises(UserError, match=r"data cannot be read \(Permission denied\)"):
        load_splits(tmp_path / "data")
    with pytest.raises(UserError, match=r"data cannot be read \(Permission denied\)"):
        list_images([str(tmp_path / "data")])

def test_a_class_folder_with_a_line_break_in_its_name_is_refused(tmp_path):
    """Its name is the class's, drawn in charts (whose text cannot hold a line break) and written in CSV files."""
    write_class_tree(tmp_path / "data", {"roses": 2, "red\nroses": 2})
    with pytest.raises(UserError, match="line break or another control character"):
        load_splits(tmp_path / "data")


def test_a_photo_whose_exif_pillow_cannot_rewrite_is_kept_and_turned_upright(tmp_path):
    """Phones and editors write EXIF blocks that Pillow reads but cannot write back (here a resolution given as
    text): its exif_transpose raised on them, which stopped a run or dropped a good photo as broken."""
    path = write_sideways_photo(tmp_path / "phone.jpg", unwritable_exif=True)
    from PIL import ImageOps
    with Image.open(path) as opened, pytest.raises(TypeError):  # what made such a photo fail before
        ImageOps.exif_transpose(opened)
    assert image_problem(path) is None
    image = load_rgb(path)
    top, bottom = image.getpixel((10, 5)), image.getpixel((10, 35))
    assert image.size == (20, 40) and top[0] > 200 and bottom[2] > 200


def test_check_reports_exactly_the_broken_files(tmp_path):
    folder = tmp_path / "mixed"
    good = [write_image(folder / f"good_{i}.jpg", seed=i) for i in range(3)]
    broken = write_broken_files(folder)
    write_ignored_files(folder)
    kept, skipped = check_images(find_images(folder))
    assert kept == good
    assert sorted(path for path, _ in skipped) == sorted(map(str, broken))
    reasons = dict(skipped)
    assert reasons[str(folder / "empty.jpg")] == "empty file"
    assert "truncated" in reasons[str(folder / "truncated.jpg")]
    assert "decompression bomb" in reasons[str(folder / "bomb.png")]
    assert reasons[str(folder / "saved_page.PNG")] == "not an image: an HTML page (a download that got an error page?)"
    assert reasons[str(folder / "notes_really.jpg")] == "not an image: text"


def test_a_file_whose_header_pillow_refuses_with_a_value_error_is_reported_not_raised(tmp_path):
    """Pillow's readers raise ValueError for some broken headers (a PNG whose IHDR chunk says 5 bytes, one bit
    flipped; a PPM whose size is not a number), which Image.open lets through: a skipped file, not a traceback."""
    png = bytearray(png_bytes(16, 16))
    png[8:12] = (5).to_bytes(4, "big")  # IHDR's length: 13 -> 5
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bad_ihdr.png").write_bytes(bytes(png))
    (tmp_path / "c" / "bad_size.ppm").write_bytes(b"P6\n16 1x6\n255\n" + bytes(16 * 16 * 3))
    for path in (tmp_path / "c" / "bad_ihdr.png", tmp_path / "c" / "bad_size.ppm"):
        assert image_problem(path).startswith("does not decode: ValueError: "), image_problem(path)
        with pytest.raises(OSError):
            load_rgb(path)


def test_a_jpeg_cut_in_its_header_does_not_decode_rather_than_cannot_be_read(tmp_path):
    """Pillow raises a bare OSError (no errno) for a JPEG cut short within its header: a broken file, said as the
    other broken files are, not "cannot be read", the words for the file system's errors (permissions, a file gone)."""
    photo = write_image(tmp_path / "photo.jpg")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(photo.read_bytes()[:40])
    assert image_problem(cut).startswith("does not decode: OSError: "), image_problem(cut)
    with pytest.raises(OSError):
        load_rgb(cut)


# a Ctrl-C that lands in a garbage collector's callback is dropped there, which pytest reports: it is sent again
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_while_the_images_are_checked_stops_at_once(tmp_path, monkeypatch):
    """Checking a large folder takes minutes: a Ctrl-C (or run_cli's SIGTERM) drops the images not yet checked
    (Executor.map cancels what it has not started) rather than waiting for all of them."""
    import _thread
    import threading
    import time
    import images
    checked = []
    monkeypatch.setattr(images, "image_problem", lambda path: time.sleep(0.05) or checked.append(path))
    stopped = threading.Event()

    def ctrl_c():  # again until it is taken: one that lands in a garbage collector's callback is dropped by Python
        while not stopped.wait(0.3):
            _thread.interrupt_main()
    sender = threading.Thread(target=ctrl_c, daemon=True)
    sender.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            check_images([tmp_path / f"{i}.jpg" for i in range(2000)])  # 100 s of checks in one thread, 50 s in 2
    finally:
        stopped.set()
        sender.join()
    time.sleep(0.2)  # the checks under way end
    # far from all of them, with room for a machine busy with other work (the timer late, the threads slow): a count,
    # not a time (a time bound failed once under a load of 6 on 2 cores, where the checks too ran late)
    assert len(checked) < 1000


def test_a_ctrl_c_before_the_first_check_is_awaited_drops_the_checks_not_begun():
    """One that lands in the progress bar's setup, after the checks are queued and before their results are awaited,
    where a pool's `with` waited for every check queued (and made the test above fail now and then)."""
    import time

    from images import in_threads
    done = []

    def ctrl_c_in_setup(results):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        in_threads(lambda i: time.sleep(0.01) or done.append(i), list(range(2000)), ctrl_c_in_setup)
    time.sleep(0.1)  # the checks under way end
    assert len(done) < 200  # of 2000, 20 s of checks: each thread ends the one it began


def test_a_photo_past_the_pixel_limit_is_read_smaller_when_it_can_and_refused_when_it_cannot(tmp_path, monkeypatch):
    """A phone's 108 or 200 MP JPEG, past Pillow's 89.5 MP, is no decompression bomb: read at a reduced DCT scale,
    as every reader here reads a large photo, it is small. The limit is kept on what is decoded: a PNG, or a
    progressive JPEG (libjpeg holds its coefficients whole at any scale), past it is refused, as one line, and
    so is a full decode of the JPEG. (Here at a limit of 20,000 pixels, for files that are quick to write.)"""
    import images
    import split_folders
    from data import build_transform
    from loaders import ImageDataset
    monkeypatch.setattr(images, "MAX_PIXELS", 20_000)
    images.set_image_checks()
    phone = write_image(tmp_path / "phone.jpg", (640, 480), quality=90)  # 307,200 pixels; 80 x 60 at 1/8
    progressive = write_image(tmp_path / "progressive.jpg", (640, 480), progressive=True)
    png = write_image(tmp_path / "screen.png", (640, 480))
    assert image_problem(phone) is None
    assert image_problem(progressive) == ("640x480 pixels (0 MP), a progressive JPEG: past the 0.0 MP decoded whole "
                                          "(a guard against decompression bombs), and only a baseline JPEG is read "
                                          "smaller: make a smaller copy")
    assert image_problem(png).startswith("640x480 pixels (0 MP), a PNG: past")
    image, label, _ = ImageDataset([(str(phone), 3)], build_transform(32, train=False))[0]
    assert image.shape == (3, 32, 32) and label == 3
    assert load_rgb(phone, 64).size == (160, 120)  # 1/4: the largest reduction that keeps 64 px a side
    with pytest.raises(images.TooManyPixels, match=r"^640x480 pixels decoded whole, past 0\.0 MP"):
        load_rgb(phone)
    assert ImageDataset([(str(png), 0)], build_transform(32, train=False))[0][0] is None
    split_folders.place_image(phone, tmp_path / "out" / "phone.jpg", "copy", max_size=100)
    assert Image.open(tmp_path / "out" / "phone.jpg").size == (100, 75)


def test_a_phones_200_megapixel_jpeg_opens_past_pillows_limit_and_nothing_else_does(tmp_path):
    """At Pillow's own limit (89.5 MP, its warning raised past it, its error past twice that): a baseline JPEG of a
    phone's 200 MP opens (its header patched to that size: the file stays small), a progressive one does not, and
    neither does a PNG, nor an icon whose embedded PNG is past it (Pillow's readers keep their own checks)."""
    import io
    import struct
    import images
    images.set_image_checks()

    def jpeg_claiming(width: int, height: int, progressive: bool = False) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 0, 0)).save(out, "JPEG", quality=90, progressive=progressive)
        data = bytearray(out.getvalue())
        at = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")  # the frame header: height, then width
        data[at + 5:at + 9] = struct.pack(">HH", height, width)
        return bytes(data)
    (tmp_path / "phone.jpg").write_bytes(jpeg_claiming(16320, 12240))
    (tmp_path / "progressive.jpg").write_bytes(jpeg_claiming(16320, 12240, progressive=True))
    (tmp_path / "screen.png").write_bytes(png_bytes(20_000, 10_000))
    png = png_bytes(10_000, 10_000)  # an .ico of one icon, that PNG
    (tmp_path / "icon.png").write_bytes(struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32,
                                                                                   len(png), 22) + png)
    with images.open_image(tmp_path / "phone.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (16320, 12240))
    assert "pixels" not in (image_problem(tmp_path / "phone.jpg") or "")  # what it holds decodes, at 1/8
    assert image_problem(tmp_path / "progressive.jpg").startswith("16320x12240 pixels (200 MP), a progressive JPEG: "
                                                                   "past the 89.5 MP decoded whole")
    for bomb in ("screen.png", "icon.png"):
        said = image_problem(tmp_path / bomb)
        assert said.startswith("too many pixels, a possible decompression bomb") and said.endswith(
            "if it is a real photo, make a smaller copy"), said  # what to do with a panorama


def test_a_bomb_over_twice_the_limit_is_reported_too(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_bytes(20_000, 10_000))  # Pillow raises rather than warns
    _, skipped = check_images([tmp_path / "huge.png"])
    assert "decompression bomb" in skipped[0][1]


def test_a_class_name_written_with_a_combining_accent_is_the_same_class(tmp_path):
    """"rosés" as macOS file systems write it (e + a combining accent) in the folders, as one letter in
    class_indices.json: the same class, whichever way each is written."""
    decomposed, composed = "rose\u0301s", "ros\u00e9s"
    write_class_tree(tmp_path / "train", {"cat": 2, decomposed: 2})
    write_class_tree(tmp_path / "val", {"cat": 1, composed: 1})
    write_class_indices(tmp_path / "class_indices.json", ["cat", composed])
    splits = load_splits(tmp_path)
    assert splits.classes == ["cat", decomposed] and splits.counts("val") == [1, 1]
    write_class_indices(tmp_path / "class_indices.json", ["cat", "roses"])
    with pytest.raises(UserError, match="lists"):  # another name is another class
        load_splits(tmp_path)


def test_class_folders_are_in_code_point_order_as_torchvision_sorts_them(tmp_path):
    """Capitals first, as torchvision's ImageFolder and the tutorial's sorted(os.listdir()) order them: a model
    trained elsewhere on the same folders has the same class indices."""
    import images
    for name in ("b", "A", "Z", "_c"):  # no two alike but for case: a macOS disk would take them as one
        (tmp_path / name).mkdir()
    assert [folder.name for folder in images.class_folders(tmp_path)] == ["A", "Z", "_c", "b"]


def test_class_names_that_differ_only_in_how_a_letter_is_written(tmp_path):
    """Two folders whose names are one class to same_names would mix their photos up: refused. A list whose
    names sort otherwise for that reason gets an error that shows the difference, where printed they look alike."""
    write_class_tree(tmp_path / "two", {"ros\u00e9s": 1, "rose\u0301s": 1, "tulips": 1})
    with pytest.raises(UserError, match=r"two class folders named .*'rose\\u0301s' and 'ros\\xe9s'.*merge them"):
        load_splits(tmp_path / "two")
    write_class_tree(tmp_path / "split" / "train", {"e\u0301clair": 1, "fig": 1})
    write_class_tree(tmp_path / "split" / "val", {"e\u0301clair": 1, "fig": 1})
    write_class_indices(tmp_path / "split" / "class_indices.json", ["fig", "\u00e9clair"])
    with pytest.raises(UserError, match=r"the same names in another order.*'\\xe9clair'\] against \['e\\u0301clair'"):
        load_splits(tmp_path / "split")
    # written alike, only reordered (a file edited by hand, another tool's): no accent to blame
    write_class_indices(tmp_path / "split" / "class_indices.json", ["fig", "e\u0301clair"])
    with pytest.raises(UserError, match=r"the same names in another order: each label would be another class's\)"):
        load_splits(tmp_path / "split")


def test_data_path_mistakes_are_explained(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="not found"):
        load_splits(tmp_path / "missing")
    # a relative path, as a config's data_path, run from elsewhere: where it was looked for, and the bundled
    # photos as they are named from there
    monkeypatch.chdir(tmp_path)
    bundled = os.path.relpath(Path(__file__).resolve().parents[1] / "samples" / "flowers", tmp_path)
    with pytest.raises(UserError, match=f"data path not found: samples/flowers \\(looked for from {tmp_path}\\)\\. "
                                        f"Give a folder of class folders \\(such as {bundled}, the bundled photos\\) "
                                        r"or of split folders \(train/, val/: python split_data.py --data-path PHOTOS "
                                        r"--out DIR writes them\)"):
        load_splits("samples/flowers")
    write_image(tmp_path / "loose.jpg")
    with pytest.raises(UserError, match="no class folders.*holds images"):
        load_splits(tmp_path)
    write_class_tree(tmp_path / "photos", {"cat": 2, "dog": 1})  # an archive extracted into its own name
    with pytest.raises(UserError, match=r"one class folder, 'photos'.*seem to be in it: use .*photos"):
        load_splits(tmp_path)
    shutil.rmtree(tmp_path / "photos")
    write_class_tree(tmp_path, {"cat": 2})
    with pytest.raises(UserError, match=r"one class folder, 'cat': a classifier needs two or more, one folder per "
                                         r"class$"):
        load_splits(tmp_path)
    write_broken_files(tmp_path / "dog")
    with pytest.raises(UserError, match=r"dog has no usable image: all 5"):
        load_splits(tmp_path)
    for path in (tmp_path / "dog").iterdir():
        path.unlink()
    write_ignored_files(tmp_path / "dog")
    with pytest.raises(UserError, match="dog has no image files"):
        load_splits(tmp_path)


def test_class_indices_have_the_tutorial_format(tmp_path):
    path = tmp_path / "class_indices.json"
    write_class_indices(path, ["daisy", "dandelion", "roses"])
    assert json.loads(path.read_text()) == {"0": "daisy", "1": "dandelion", "2": "roses"}
    assert path.read_text().startswith('{\n    "0": "daisy",')  # the tutorial's indent=4
    assert read_class_indices(path) == ["daisy", "dandelion", "roses"]
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # edited in Windows' Notepad: a UTF-8 BOM first
    assert read_class_indices(path) == ["daisy", "dandelion", "roses"]
    path.write_text('{"1": "roses", "0": "daisy", "2": "tulips"}')  # edited by hand, or another tool's: by index
    assert read_class_indices(path) == ["daisy", "roses", "tulips"]


@pytest.mark.parametrize("text", ['{"0": "a", "1": ', '["a", "b"]', '{"0": "a", "2": "b"}',
                                  '{"0": "a", "1": "a"}', '{}', '{"0": 5}',
                                  '{"0": "a\\nb", "1": "c"}', '{"0": "a", "1": "tab\\tx"}'])  # not one line
def test_a_malformed_class_index_file_is_explained(tmp_path, text):
    path = tmp_path / "class_indices.json"
    path.write_text(text)
    with pytest.raises(UserError, match="class_indices.json"):
        read_class_indices(path)


def test_a_pipe_matched_or_linked_is_never_opened_as_a_photo(tmp_path):
    """Opening a pipe waits for a writer, forever: a glob passes over one, and one named (or linked) is refused."""
    photo = write_image(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "p.jpg")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "p.jpg")
    passed = []
    assert list_images([str(tmp_path / "*.jpg")], passed=passed) == [str(photo)]
    # said, as a folder says it: predict.py counts it among the images it could not classify
    assert passed == [(str(tmp_path / name), "not a file of its own (a pipe, a socket or a device)")
                      for name in ("link.jpg", "p.jpg")]
    for name in ("p.jpg", "link.jpg"):
        with pytest.raises(UserError, match=f"{name} is not a file of its own"):
            list_images([str(tmp_path / name)])
    with pytest.raises(UserError, match=r"^no image file matches '.*p\*.jpg': .*p.jpg is not a file of its own"):
        list_images([str(tmp_path / "p*.jpg")])  # it said "no file matches"


def test_a_photo_reached_through_a_linked_folder_is_listed_once(tmp_path):
    """A glob's ** follows a linked folder, and a folder may be named beside its link: each photo once, as the
    folder alone gives it (predict.py "photos/**/*.jpg" classified every photo under photos/latest -> 2024 twice)."""
    for name in ("x.jpg", "y.jpg"):
        write_image(tmp_path / "photos" / "2024" / name)
    (tmp_path / "photos" / "latest").symlink_to("2024")
    once = list_images([str(tmp_path / "photos")])
    assert len(once) == 2
    assert list_images([str(tmp_path / "photos" / "**" / "*.jpg")]) == once
    assert list_images([str(tmp_path / "photos"), str(tmp_path / "photos" / "latest")]) == once


def test_a_pattern_that_matches_folders_only_says_so(tmp_path):
    """predict.py 'photos/*' over class folders matches folders, no file: said, with what names their images."""
    for name in ("a", "b"):
        write_image(tmp_path / "photos" / name / "x.jpg")
    with pytest.raises(UserError, match=r"^no file matches '.*photos/\*': it matches folders only \(.*photos/a, "
                                        r".*photos/b\): give a folder \(all its images\) or files, such as "
                                        r"'.*photos/\*\*/\*\.jpg'$"):
        list_images([str(tmp_path / "photos" / "*")])
    assert len(list_images([str(tmp_path / "photos" / "**" / "*.jpg")])) == 2
    with pytest.raises(UserError, match=r"^no file matches '.*nothing\*'$"):
        list_images([str(tmp_path / "nothing*")])

def test_a_class_folder_named_in_another_encoding_is_refused_in_one_line(tmp_path):
    """A class's name is text in checkpoints, TensorBoard's tags and ONNX metadata: a folder named in Latin-1
    stopped training after its first epoch, in TensorBoard, before the epoch was saved."""
    for name in ("daisy", os.fsdecode(b"rose_caf\xe9")):
        write_image(tmp_path / name / "a.jpg")
    with pytest.raises(UserError, match="has a name that is not UTF-8"):
        load_splits(tmp_path)
