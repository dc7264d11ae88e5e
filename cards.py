"""predict.py --save-vis: a card per photo (the photo beside a chart of its top-k, plots.prediction_card), in a
folder the cards may share with the user's own files. A card's name follows its photo's, never takes a file of the
user's, and is marked in the PNG so that a later run knows its own cards; a card is written whole or not at all.
"""
import os
import sys
import tempfile
import unicodedata
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

import plots
from files import current_umask
from images import UNREADABLE, load_rgb
from utils import UserError

CARD_MARK = ("Software", "predict.py --save-vis")  # a PNG text chunk: what tells a card from a user's own PNG


def check_folder(folder: Path) -> None:
    """Made if missing; a file there, or a folder that cannot be written (read-only), is said now, before the
    classifying, not after the first batch."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--save-vis {folder} is a file: name a folder for the cards (made if missing)")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise UserError(f"cannot write the cards into --save-vis {folder}: {err.strerror}") from None


def save_card(result: dict, folder: Path, used: set, seen=None) -> bool:
    """DIR/<photo name>.png; a second photo of the same name gets _2, _3, ..., and so does a photo whose
    name a PNG that is not a card already holds there: an earlier run's card is written over, a file of
    the user's (a photo, when DIR is the photos' folder) never. `used`: the names taken in this run. False,
    said, where the photo no longer reads (removed or changed since it was classified)."""
    try:
        photo = load_rgb(result["path"], size=640)  # a JPEG decoded no larger than twice the card shows it
    except UNREADABLE as error:
        print(f"warning: no card for {result['path']}: it no longer reads ({error})", file=sys.stderr)
        return False
    folder.mkdir(parents=True, exist_ok=True)
    stem, n = Path(result["path"]).stem, 1
    while len(os.fsencode(stem)) > 240:  # room for _N.png in a file name's 255 bytes (a long name's _2 was past it)
        stem = stem[:-1]
    while True:  # names compared as a case-blind file system (macOS's, Windows') does: A.jpg's card is not a.jpg's
        name = stem if n == 1 else f"{stem}_{n}"
        key = unicodedata.normalize("NFC", name).casefold()
        if key not in used and card_or_free(folder / f"{name}.png"):
            break
        n += 1
    used.add(key)
    card = plots.prediction_card(photo, [e["label"] for e in result["topk"]],
                                 [e["prob"] for e in result["topk"]], title=result["path"], seen=seen)
    mark = PngInfo()
    mark.add_text(*CARD_MARK)
    # whole or not at all, a card cut short by Ctrl-C passed for one; a short name beside it, whatever its own length
    handle, tmp = tempfile.mkstemp(prefix=".card-", suffix=".tmp", dir=folder)
    os.close(handle)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's file is the owner's alone; a picture to share is not
    try:
        card.save(tmp, format="PNG", pnginfo=mark)
        os.replace(tmp, folder / f"{name}.png")
    finally:
        tmp.unlink(missing_ok=True)
    return True


def card_or_free(path: Path) -> bool:
    """Whether nothing is at path, or a card predict.py wrote."""
    return not path.exists() and not path.is_symlink() or is_card(path)


def is_card(path) -> bool:
    """Whether the file is a card of predict.py's (its text chunk says so): written over by a later run's card,
    and passed over in the folders and patterns of images to classify."""
    if Path(path).suffix.lower() != ".png":
        return False
    try:
        with Image.open(path) as image:
            # info: the text chunks before the pixels, where a card has its own (.text would decode the image)
            return image.format == "PNG" and image.info.get(CARD_MARK[0]) == CARD_MARK[1]
    except (*UNREADABLE, ValueError):
        return False
