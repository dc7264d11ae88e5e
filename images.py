"""Image files and the folders that hold them: finding, checking and loading images, class folders,
class_indices.json (splitting them into train/val/test: splits.py; writing a split as folders: split_folders.py).

    from images import load_rgb, read_class_root
    classes, images, skipped = read_class_root("flower_photos")   # every image checked; what fails, with why
    image = load_rgb(images[0][0])          # upright 8-bit RGB, whatever the file's mode

Every image is decoded when listed; what does not decode is skipped and reported, never a crash.
Nothing here needs torch, so split_data.py need not load it; loaders.py turns these lists into batches.
"""
import errno
import glob
import json
import os
import shlex
import struct
import unicodedata
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, JpegImagePlugin
from tqdm import tqdm

from utils import UserError

# .jfif and .jpe: JPEGs as some browsers and Windows save them; .ppm/.pgm/.pbm/.pnm: Netpbm, which torchvision's
# ImageFolder reads (.ppm, .pgm) and scientific tools write; .avif: where this Pillow reads it (11.3 on)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                    ".pgm", ".pbm", ".pnm") + tuple(
    suffix for suffix in (".avif",) if Image.registered_extensions().get(suffix))
# Photos in a format Pillow does not read: each is left out of a folder with a word on what to do, not passed over
# without one as a text file is
UNREAD_PHOTOS = dict.fromkeys((".heic", ".heif"), "an iPhone's HEIC photo, which Pillow does not read: convert it to "
                              "JPEG (macOS: sips -s format jpeg, or the phone's Settings > Camera > Formats)")
UNREAD_PHOTOS.update(dict.fromkeys((".cr2", ".cr3", ".nef", ".arw", ".dng", ".orf", ".raf", ".rw2"),
                                   "a camera's raw file, which Pillow does not read: export it as JPEG"))
UNREAD_PHOTOS.update({".avif": "an AVIF photo, which this Pillow does not read (11.3 and newer do): pip install "
                               "-U pillow, or convert it to JPEG"} if ".avif" not in IMAGE_EXTENSIONS else {})
# What an image's name can be that no decoder opens (a pipe would wait forever): said, and an image not classified
NOT_A_FILE = "not a file of its own (a pipe, a socket or a device)"
# Folders that systems write beside the photos, of thumbnails and deleted files: never a class's photos
SYSTEM_FOLDERS = {"@eaDir": "a Synology NAS's thumbnails", "#recycle": "a NAS's recycle bin",
                  "$RECYCLE.BIN": "Windows' recycle bin", "__MACOSX": "macOS's archive metadata"}
# What Pillow's decoders raise for a broken file: they have no common base class.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
BUNDLED_SAMPLE = Path(__file__).resolve().parent / "samples" / "flowers"  # 100 photos a fresh clone trains on


# Pillow refuses an image past 89.5 MP as it opens it, from its header (set_image_checks: its warning, up to twice
# that, raised too): a decompression bomb, a small file that decodes to gigabytes. A phone's 108 or 200 MP JPEG is
# none: read at a reduced DCT scale, as every reader here reads a large photo (1/8: 1.7 or 3.1 MP), it takes some
# 10 MB. So open_image opens a baseline JPEG past the limit all the same, through Pillow's JPEG reader alone, and
# upright_rgb keeps the limit on what it decodes; anything else past it (a PNG; a progressive JPEG, whose
# coefficients libjpeg holds whole at any scale) stays refused, and Pillow's readers keep their own checks (an ICO's
# icons) as they are.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# What opening a file past the limit raises: Pillow's error, its warning as an error (set_image_checks), ours
TOO_LARGE = (Image.DecompressionBombError, Image.DecompressionBombWarning)
# What opening and decoding an image that cannot be used raises, where the file is read once it was listed
UNREADABLE = (OSError, *TOO_LARGE)


class UnreadableImage(OSError):
    """An image file that opened but does not decode. An OSError, as Pillow's own open errors are,
    so one `except OSError` catches a broken file while a bug in a transform still raises."""


class TooManyPixels(Image.DecompressionBombError):
    """An image that would be decoded past MAX_PIXELS; its message is the reason, said as it is."""


# --- Images ---

def is_image_file(path: Path) -> bool:
    """An image by its extension, in any case; hidden files (macOS `._x.jpg` forks) are not."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: palette, grey, CMYK, 16-bit, float, with or without transparency."""
    if image.mode == "RGB":
        return image
    if image.mode == "F":
        # 32-bit float grey (scientific TIFFs) is most often 0 to 1, which convert() would leave black
        pixels = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if pixels.max() <= 1.0:
            pixels = pixels * 255
        return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode.startswith("I"):
        # 16- and 32-bit grey: convert() would clip every value above 255 to white; scale instead
        pixels = np.asarray(image).astype(np.int64)
        if image.mode.startswith("I;16") or pixels.max() > 255:
            pixels = pixels // 257
        return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")
    if image.has_transparency_data:
        # transparent pixels often hold black or garbage: show them over white, as viewers do
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


# EXIF orientation -> the turn that makes the stored pixels upright (none for 1)
TURNS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
         5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
         8: Image.Transpose.ROTATE_90}


def orientation(image: Image.Image) -> int:
    """The EXIF orientation of an opened image, 1 to 8, from its header: 1 where it has none, one outside 1 to 8
    (some editors write 0), or an EXIF block that does not parse (phones and editors write some that Pillow cannot
    read, a text where a number belongs: the photo is good all the same, and as stored is the best guess)."""
    try:
        value = image.getexif().get(0x0112, 1)  # 0x0112: Orientation
        return value if value in TURNS else 1
    except Exception:  # what Pillow's EXIF parser raises has no common base: TypeError, struct.error, ZeroDivision...
        return 1


def upright_rgb(image: Image.Image) -> Image.Image:
    """`image` (opened or decoded) as RGB, turned as its EXIF orientation says (phones store it sideways).

    Decodes an opened image; raises UnreadableImage if that fails. Not Pillow's exif_transpose, which also
    rewrites the EXIF block without the orientation, and raises on many that it reads (Pillow issues 4665, 8605).
    """
    if image.width * image.height > MAX_PIXELS:  # the size it decodes at: after draft(), a JPEG's reduced one
        raise TooManyPixels(f"{image.width}x{image.height} pixels decoded whole, past {MAX_PIXELS / 1e6:.1f} MP (a "
                            "guard against decompression bombs): make a smaller copy")
    try:
        image.load()  # first: Pillow turns a TIFF as it loads it (and then drops its orientation)
        turn = TURNS.get(orientation(image))
        return to_rgb(image if turn is None else image.transpose(turn))
    except DECODE_ERRORS as error:
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error


def open_image(path) -> Image.Image:
    """Image.open, and a baseline JPEG past MAX_PIXELS too (MPO: a phone's JPEG with a second picture), which is
    decoded at a reduced scale; anything else past it is refused (TooManyPixels)."""
    try:
        image = Image.open(path)
    except TOO_LARGE as bomb:
        with open(path, "rb") as file:
            if file.read(3) != b"\xff\xd8\xff":  # not a JPEG: Pillow's refusal stands
                raise TooManyPixels(f"too many pixels, a possible decompression bomb ({bomb}): if it is a real "
                                    "photo, make a smaller copy") from None
        try:
            image = JpegImagePlugin.jpeg_factory(os.fspath(path))  # Image.open, without its check on the header
        except SyntaxError as error:  # what Image.open says as UnidentifiedImageError (changed since it read it)
            raise Image.UnidentifiedImageError(f"cannot identify image file {os.fspath(path)!r}") from error
    except (ValueError, EOFError, zlib.error) as error:  # a broken header (a PNG's IHDR cut short, a PPM's size)
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error
    except OSError as error:  # a decoder's, not the file system's (no errno): a JPEG cut in its header, a WebP's
        if error.errno is not None or isinstance(error, (Image.UnidentifiedImageError, UnreadableImage)):
            raise
        raise UnreadableImage(f"{type(error).__name__}: {error}") from error
    if image.width * image.height > MAX_PIXELS and (image.format not in ("JPEG", "MPO") or
                                                    image.info.get("progressive")):
        kind = "a progressive JPEG" if image.format in ("JPEG", "MPO") else f"a {image.format or 'file'}"
        said = (f"{image.width}x{image.height} pixels ({image.width * image.height / 1e6:.0f} MP), {kind}: past the "
                f"{MAX_PIXELS / 1e6:.1f} MP decoded whole (a guard against decompression bombs), and only a baseline "
                "JPEG is read smaller: make a smaller copy")
        image.close()
        raise TooManyPixels(said)
    return image


def load_rgb(path, size: int | None = None) -> Image.Image:
    """The image file at `path` as upright 8-bit RGB, a JPEG decoded at the smallest DCT scale that leaves it `size`
    px a side or more; raises OSError (or Pillow's DecompressionBombError, or its warning) if it does not decode."""
    with open_image(path) as image:
        if size is not None:
            image.draft("RGB", (size, size))
        return upright_rgb(image)


def image_problem(path: Path) -> str | None:
    """Why the file at `path` cannot be used as an image, or None when it decodes."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        with open_image(path) as image:
            # At 1/8 scale a JPEG decoder still reads every compressed byte, so a truncated
            # file still fails, in a fraction of the time of a full decode.
            image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
            upright_rgb(image)
    except TooManyPixels as error:
        return str(error)
    except TOO_LARGE as error:  # Pillow's own: an icon's
        return f"too many pixels, a possible decompression bomb ({error}): if it is a real photo, make a smaller copy"
    except Image.UnidentifiedImageError:
        if path.suffix.lower() in UNREAD_PHOTOS:  # a photo in a format Pillow does not read: what to do with it
            return UNREAD_PHOTOS[path.suffix.lower()]
        held = what_it_holds(path)
        return f"not an image: {held}" if held else "not an image (Pillow cannot identify it)"
    except UnreadableImage as error:  # not in brackets: Pillow's may end in its own, "(84 bytes not processed)"
        return f"does not decode: {error}"
    except OSError as error:
        if path.is_symlink() and not path.exists():
            return link_to_nowhere(path)
        return f"cannot be read ({error.strerror or error})"  # its path is the caller's to say, once
    return None


def link_to_nowhere(path: Path) -> str:
    """What a link that leads nowhere is, said the one way for a photo, a class folder or a folder in one: where it
    leads (readlink, as ls -l shows it), and why that is nowhere."""
    try:
        os.stat(path)
        why = "which cannot be reached"
    except OSError as error:
        why = {errno.ENOENT: "which does not exist", errno.ELOOP: "a loop of links"}.get(
            error.errno, f"which cannot be reached ({error.strerror})")
    return f"a link to {os.readlink(path)}, {why}"


def what_it_holds(path: Path) -> str:
    """What a file that is no image holds, where its first bytes say: an HTML page (a download that got an error page,
    saved under the photo's name), text; else ""."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        return ""
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a download that got an error page?)"
    try:
        return "text" if head and b"\0" not in head and head.decode("utf-8", errors="strict") else ""
    except UnicodeDecodeError:  # cut in a character at byte 512, or binary
        return ""


def why_it_failed(path) -> str:
    """Why an image that failed to load during a run fails now (image_problem), or that it reads now: a file
    changed, removed or put back since."""
    return image_problem(Path(path)) or "it reads now"


def set_image_checks() -> None:
    """Pillow's warnings, for this process: Pillow warns about an image past Image.MAX_IMAGE_PIXELS (89.5 MP) and
    decodes it anyway (it raises past twice that): from here on the warning is raised, so that such a file is
    refused (but a baseline JPEG, open_image), wherever it is opened: when a folder is listed (check_images), by
    predict.py, in the loader's workers. A photo whose EXIF block is cut short decodes as it is (no orientation can be
    read from it): Pillow's warning about it, which names no file, is not shown. Set once for the process: the
    listing's threads read them, and catch_warnings around each image would make Pillow's once-only warnings (a
    palette's transparency) print again for every image."""
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)


def in_threads(function, items: list, wrap=iter) -> list:
    """[function(item) for item in items], on up to 8 threads (decoding releases the GIL), the results passed
    through wrap (a progress bar). A Ctrl-C drops the items not yet begun wherever it lands: a pool's `with`
    waits for every item queued where one lands before the first result is awaited (in the progress bar's
    setup), and the checks of a large folder take minutes."""
    pool = ThreadPoolExecutor(min(8, os.cpu_count() or 1))
    try:
        return list(wrap(pool.map(function, items)))
    finally:
        pool.shutdown(cancel_futures=True)


def check_images(paths: list[Path], desc: str = "checking images"):
    """Split `paths` into those that decode and (path, reason) for those that do not, in order; a card of
    predict.py --save-vis (written into the data folder, `cd photos; predict.py . --save-vis vis`) is no photo of a
    class: it was trained on, a class of its own or a second, labelled copy of its photo."""
    set_image_checks()
    problems = in_threads(listed_problem, paths, lambda results: tqdm(results, total=len(paths), desc=desc,
                                                                      unit="img", leave=False, disable=None))
    good = [path for path, problem in zip(paths, problems) if problem is None]
    skipped = [(str(path), problem) for path, problem in zip(paths, problems) if problem is not None]
    return good, skipped


def listed_problem(path: Path) -> str | None:
    """image_problem, or that the file is a card predict.py --save-vis wrote: a photo of a data folder's."""
    problem = image_problem(path)
    if problem is None and path.suffix.lower() == ".png":
        from cards import is_card  # cards imports this module
        if is_card(path):
            return CARD_PROBLEM
    return problem


CARD_PROBLEM = "a card predict.py --save-vis wrote (a photo beside its predictions), not a photo: move it out"


CANNOT_BE_READ = "cannot be read"  # how find_images says a folder it could not list, which read_class_folder names


def readable_folder(folder: Path) -> None:
    """A folder given to read that cannot be listed: one line that names it and says so, where a path inside it
    (its train/) failed with the bare system error, or no image in it was found."""
    try:
        os.scandir(folder).close()
    except PermissionError as error:
        raise UserError(f"{folder} {CANNOT_BE_READ} ({error.strerror}): give this user read access to it "
                        f"(chmod -R u+rX {shlex.quote(str(folder))})") from None


def find_images(folder: Path, others: dict = None, left_out: list = None, unlisted: list = None) -> list[Path]:
    """Image files under `folder`, at any depth, in sorted order on every platform; hidden folders are left out.
    A NAS's thumbnail folders and recycle bins (SYSTEM_FOLDERS) are left out too, and so are photos in a format
    Pillow does not read (UNREAD_PHOTOS) and files that are not files (a pipe), each in `left_out` with why.
    Symlinked folders are followed (as a symlinked class folder is), each real folder once, and none that holds
    `folder` itself: a link to a folder above (the data folder, from a class folder) would bring in the other
    classes' photos, or walk forever. Nor one in `others`, the data folder's other class folders ({real path: name}),
    whose photos are those classes' (linked into this one, or this one's subfolder linked as a class of its own),
    nor a file linked from one, nor a second name (a link) of a file found already, which would be counted twice and
    could land in two splits: each goes into `left_out` as (path, why). So does a folder that cannot be listed
    (its permissions), which os.walk would pass over in silence, with all its photos; into `unlisted` instead where
    the caller keeps those apart (predict.py, which has no use for the rest)."""
    found, seen, seen_files, top = [], set(), {}, os.path.realpath(folder)
    others = others or {}
    inside = [other for other in others if other.startswith(top + os.sep)]  # almost always none

    def unreadable(error: OSError) -> None:
        said = unlisted if unlisted is not None else left_out
        if said is not None:
            said.append((error.filename, f"{CANNOT_BE_READ} ({error.strerror}): a folder, its photos left out"))
    for directory, subdirs, files in os.walk(folder, onerror=unreadable, followlinks=True):
        real = os.path.realpath(directory)
        shared = os.path.commonpath([real, top])
        if real in seen or (real != top and shared == real):  # seen, or above `folder`
            subdirs[:] = []
            continue
        # only a folder reached through a link can be in another class folder, or one that another class links to
        candidates = others if shared != top else inside
        owner = next((other for other in candidates if os.path.commonpath([real, other]) == other), None)
        if owner is not None:
            if left_out is not None:
                left_out.append((directory, f"in the class folder {others[owner]} (through a link): its photos "
                                            "are that class's, not this one's"))
            subdirs[:] = []
            continue
        seen.add(real)
        for name in (name for name in subdirs if name in SYSTEM_FOLDERS and left_out is not None):
            left_out.append((os.path.join(directory, name), f"{SYSTEM_FOLDERS[name]}, not photos of the class"))
        subdirs[:] = sorted(name for name in subdirs if not name.startswith(".") and name not in SYSTEM_FOLDERS)
        for name in sorted(files):
            path = Path(directory, name)
            if not is_image_file(path):
                if left_out is not None and path.suffix.lower() in UNREAD_PHOTOS and not name.startswith("."):
                    left_out.append((str(path), UNREAD_PHOTOS[path.suffix.lower()]))
                elif left_out is not None and not name.startswith(".") and path.is_symlink() and not path.exists():
                    # a linked folder on a drive not mounted now (os.walk lists it as a file): its photos missing
                    left_out.append((str(path), f"{link_to_nowhere(path)}: the photos there are left out"))
                continue
            if not path.is_file() and path.exists():  # a pipe (opening it would wait forever), a socket, a device
                if left_out is not None:
                    left_out.append((str(path), NOT_A_FILE))
                continue
            # a file linked from another class folder: that class's photo, as a linked folder's are
            linked = others and os.path.islink(path) and next(
                (other for other in others if os.path.commonpath([os.path.realpath(path), other]) == other), None)
            if linked:
                if left_out is not None:
                    left_out.append((str(path), f"in the class folder {others[linked]} (through a link): it is that "
                                                "class's photo, not this one's"))
                continue
            # a second name of a photo listed here already (a link to it in its own folder): resolved for links only,
            # a file's real path otherwise its folder's and its name (no more calls per file on a large folder)
            link = os.path.islink(path)
            same = os.path.realpath(path) if link else os.path.join(real, name)
            if same in seen_files:  # the file's own name kept, the link's left out
                kept = seen_files[same]
                if not link and os.path.islink(found[kept]):
                    path, found[kept] = found[kept], path
                if left_out is not None:
                    left_out.append((str(path), f"the same file as {found[kept]} (a link): counted once"))
                continue
            seen_files[same] = len(found)
            found.append(path)
    return found


def class_folders(root: Path) -> list[Path]:
    """The class folders of `root`, sorted by name: the class order everywhere (labels, class_indices.json)."""
    entries = list(root.iterdir())
    # a link that leads nowhere (a class folder on a drive not mounted now, or a loop of links) is no folder to
    # is_dir(): passed over, its class would be missing from the run without a word, every later label shifted
    for path in sorted(p for p in entries if p.is_symlink() and not p.exists() and not p.name.startswith(".")
                       and not is_image_file(p)):
        where = link_to_nowhere(path)
        raise UserError(f"the class folder {path} is {where}: " + ("remove the link" if where.endswith("loop of links")
                        else "mount or restore where it leads (a drive not mounted now), or remove the link"))
    folders = sorted((p for p in entries if p.is_dir() and not p.name.startswith(".")
                      and p.name not in SYSTEM_FOLDERS), key=lambda p: p.name)  # __MACOSX: a zip made on a Mac
    written = {}
    for folder in folders:
        other = written.setdefault(letters(folder.name), folder.name)
        if other != folder.name:  # one class to same_names, two folders here: their photos would be mixed up
            raise UserError(f"{root} holds two class folders named {folder.name!r}, their letters written two ways "
                            f"({ascii(other)} and {ascii(folder.name)}, é as one letter or as e and an accent): "
                            "merge them into one")
        try:  # a class's name is text in checkpoints, TensorBoard's tags and ONNX metadata, which hold UTF-8 only
            folder.name.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"the class folder {str(folder)!r} has a name that is not UTF-8 (bytes of another "
                            "system's encoding, from an old zip or a Windows share): rename it, since its name "
                            "is the class's") from None
        if any(unicodedata.category(letter) == "Cc" for letter in folder.name):
            raise UserError(f"the class folder {str(folder)!r} has a line break or another control character in its "
                            "name: rename it, since its name is the class's, written in charts and CSV files")
    return folders


# --- Class indices: the tutorial's class_indices.json, {"0": "daisy", "1": "dandelion", ...} ---

def write_class_indices(path, classes: list[str]) -> None:
    indices = json.dumps({str(i): name for i, name in enumerate(classes)}, indent=4)
    Path(path).write_text(indices + "\n", encoding="utf-8")


def letters(name: str) -> str:
    """A class name as its letters: é written as one character or as e and an accent (macOS file systems and
    some archives turn names into the second) is one letter. How class names are compared everywhere."""
    return unicodedata.normalize("NFC", name)


def same_names(names: list[str], others: list[str]) -> bool:
    """Whether two lists of class names are the same, letter for letter (letters)."""
    return list(map(letters, names)) == list(map(letters, others))


def names_order_hint(names: list[str], others: list[str]) -> str:
    """For an error about two lists of class names that differ: where they hold the same names in another order,
    which a letter written two ways causes (sorted, e and an accent comes before é), what to look at."""
    if sorted(map(letters, names)) != sorted(map(letters, others)):
        return ""
    if sorted(names) == sorted(others):  # written alike: only their order differs (a file edited, another tool's)
        return " (the same names in another order: each label would be another class's)"
    return (f" (the same names in another order: letters written two ways, as one letter or as a letter and an "
            f"accent, sort otherwise; {ascii(names)} against {ascii(others)})")


def read_class_indices(path) -> list[str]:
    """The class names in label order, from a class_indices.json."""
    path = Path(path)
    try:
        indices = json.loads(path.read_text(encoding="utf-8-sig"))  # Notepad and PowerShell 5 begin UTF-8 with a BOM
    except OSError as error:
        raise UserError(f"cannot read the class index file {path}: {error.strerror or error}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); it should look like "
                        '{"0": "daisy", "1": "dandelion"}') from None
    names = list(indices.values()) if isinstance(indices, dict) else []
    if (not names or set(indices) != {str(i) for i in range(len(names))}
            or not all(isinstance(name, str) and name for name in names) or len(set(names)) != len(names)):
        raise UserError(f"{path} should map \"0\", \"1\", ... to distinct class names, like "
                        f'{{"0": "daisy", "1": "dandelion"}}; found {json.dumps(indices)[:200]}')
    if odd := next((name for name in names if any(unicodedata.category(c) == "Cc" for c in name)), None):
        raise UserError(f"{path} names a class {odd!r}, with a line break, tab or another control character: a "
                        "class name is one line of text, as the class folders' names are")
    return [indices[str(i)] for i in range(len(names))]


# --- Class folders ---

def read_class_folder(folder: Path, check: bool = True, others: dict = None, or_else: str = "remove the folder"):
    """The images of one class folder and the files skipped (links into `others`, the other class folders, too);
    a clear error if none is usable, which says what to do: mend the folder, `or_else` (in a split's train/, whose
    val/ has the class too, removing it alone only gives the next error: splits.load_split_root's)."""
    links = []
    paths = find_images(folder, others, links)
    good, skipped = check_images(paths, desc=f"checking {folder.name}") if check else (paths, [])
    skipped = links + skipped
    if not good:
        if not paths and links and links[0][0] == str(folder):  # not listed at all: its photos are there, unseen
            readable_folder(folder)
        if not paths:
            left = f"; left out: {Path(links[0][0]).name}, {links[0][1]}" if links else ""  # HEIC photos, say
            raise UserError(f"class folder {folder} has no image files ({', '.join(IMAGE_EXTENSIONS)}){left}: "
                            f"add images or {or_else}")
        if all(why == CARD_PROBLEM for _, why in skipped):  # `cd photos; predict.py . --save-vis vis`
            raise UserError(f"class folder {folder} holds no photo, only the cards predict.py --save-vis wrote: move "
                            f"it out of {folder.parent}")
        reasons = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:3])
        if all(Path(p).is_symlink() and not Path(p).exists() for p, _ in skipped):  # split_data.py --mode symlink's
            # links, the photos they lead to moved or deleted since: nothing to replace in the folder itself
            raise UserError(f"class folder {folder} has no usable image: all {len(paths)} are links to photos no "
                            f"longer there ({reasons}): put the photos back where the links lead, or {or_else}")
        raise UserError(f"class folder {folder} has no usable image: all {len(paths)} fail to decode "
                        f"({reasons}): replace them or {or_else}")
    return good, skipped


def read_class_root(root: Path, check: bool = True, split_too: bool = True, or_else: str = "remove the folder"):
    """(classes, images per class, skipped) of a folder holding one folder per class. `split_too`: the caller
    takes a split folder as well (train.py; split_data.py makes one), which the error for no class folders names.
    `or_else`: what else to do with a class folder of no usable image (read_class_folder)."""
    folders = class_folders(root)
    if not folders:
        loose = " It holds images but no folders." if any(map(is_image_file, root.iterdir())) else ""
        split = f", or a split: {root}/train/<class>/ and {root}/val/<class>/" if split_too else ""
        raise UserError(f"no class folders in {root}.{loose} Expected {root}/<class>/<image>, one "
                        f"folder per class{split}")
    if len(folders) == 1:  # often an archive extracted into a folder of its own name
        nested = any(path.is_dir() and not path.name.startswith(".") for path in folders[0].iterdir())
        hint = f"; the class folders seem to be in it: use {folders[0]}" if nested else ""
        raise UserError(f"{root} holds one class folder, {folders[0].name!r}: a classifier needs two or more, one "
                        f"folder per class{hint}")
    # an image beside the class folders has no class: said, not passed over in silence
    skipped = [(str(path), "beside the class folders, in none: it has no class")
               for path in sorted(root.iterdir()) if is_image_file(path) and path.is_file()]
    images, real, top = [], {}, os.path.realpath(root)
    for folder in folders:  # two names for one folder (a link to a class folder, or to one above the data)
        own = os.path.realpath(folder)
        if own == top or top.startswith(own + os.sep):
            raise UserError(f"the class folder {folder} is a link to {own}, which holds the data folder: its photos "
                            "would be every class's (and others around it); remove the link")
        if own in real:
            raise UserError(f"the class folders {real[own]!r} and {folder.name!r} in {root} are one folder (a link): "
                            "its photos would carry two labels; remove one")
        real[own] = folder.name
    for folder in folders:
        own = os.path.realpath(folder)
        good, bad = read_class_folder(folder, check, {path: name for path, name in real.items() if path != own},
                                      or_else)
        images.append(good)
        skipped += bad
    return [folder.name for folder in folders], images, skipped


# --- Images named on a command line (predict.py) ---

def list_images(patterns: list, passed_over=None, left_out: list = None, passed: list = None) -> list[str]:
    """The files named, the images under the folders named and the files glob patterns match, in
    order and each once (however its path is spelled). A folder or pattern passes over the files for
    which `passed_over(path)` holds (predict.py's cards of an earlier run: no photos to classify). Folders inside
    them that cannot be read go into `left_out`, (path, why), as find_images says them; the files find_images
    leaves out of a folder (an iPhone's HEIC photo, a second name of a photo) into `passed`, (path, why)."""
    paths = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_file() or path.is_symlink() and not path.exists():  # a broken link: its reading says why
            paths.append(str(path))
            continue
        if not path.is_dir() and not glob.has_magic(pattern):
            raise UserError(f"{pattern} is {NOT_A_FILE}" if path.exists()
                            else f"image not found: {pattern}")
        unread, special = [], []  # the folders in it that cannot be read; what a pattern matches that is no file
        if path.is_dir():
            readable_folder(path)
            skipped = []
            found = find_images(path, left_out=skipped, unlisted=unread)
            if passed is not None:  # a NAS's thumbnail folders and the like go unsaid: no photos of the user's
                passed += [(where, why) for where, why in skipped if Path(where).name not in SYSTEM_FOLDERS]
        else:  # the files a pattern matches: not a folder, nor a pipe that opens forever (said, as in a folder)
            matched = sorted(glob.glob(pattern, recursive=True))
            found = [p for p in matched if Path(p).is_file() or not Path(p).exists()]
            special = [p for p in matched if Path(p).exists() and not Path(p).is_file() and not Path(p).is_dir()]
            if found and passed is not None:
                passed += [(p, NOT_A_FILE) for p in special]
        if not found:
            unseen = f"; {unread[0][0]} {unread[0][1]}" if unread else ""
            if path.is_dir():
                raise UserError(f"no images in {path} (at any depth){unseen}")
            if special:
                raise UserError(f"no image file matches {pattern!r}: {special[0]} is {NOT_A_FILE}")
            folders = [p for p in matched if Path(p).is_dir()]  # photos/*
            hint = f": it matches folders only ({', '.join(folders[:3])}{', ...' * (len(folders) > 3)}): give a " \
                   f"folder (all its images) or files, such as '{Path(pattern).parent / '**' / '*.jpg'}'"
            raise UserError(f"no file matches {pattern!r}{hint if folders else ''}")
        if left_out is not None:
            left_out += unread
        kept = [str(p) for p in found if passed_over is None or not passed_over(p)]
        if not kept:
            raise UserError(f"the images {'in' if path.is_dir() else 'matching'} {pattern} are all passed over: "
                            "each is a card predict.py --save-vis wrote")
        paths += kept
    unique = {}  # by the file itself: photos/a.jpg, ./photos/a.jpg and link/a.jpg through a linked folder are one
    for path in paths:  # (a glob's ** follows linked folders, where find_images takes each real folder once)
        unique.setdefault(os.path.realpath(path), path)
    return list(unique.values())
