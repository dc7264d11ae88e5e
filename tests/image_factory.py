"""Small images for the tests, written into tmp_path: good ones, and the broken files real photo folders hold."""
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size=(48, 40), mode: str = "RGB", seed: int = 0, **save_args) -> Path:
    """A noisy image (so that each file differs and a JPEG is not trivially small) in `mode`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **save_args)
    return path


def write_class_tree(root: Path, counts: dict, size=(48, 40)) -> list[Path]:
    """root/<class>/<class>_<i>.jpg, counts[class] images per class."""
    return [write_image(root / name / f"{name}_{i:02d}.jpg", size, seed=zlib.crc32(f"{name}{i}".encode()))
            for name, count in counts.items() for i in range(count)]


def write_sideways_photo(path: Path, size=(40, 20), orientation: int = 6, unwritable_exif: bool = False) -> Path:
    """Stored as left half red, right half blue, with EXIF orientation 6: shown turned 90 degrees
    clockwise, red on top. Phones save photos like this. A JPEG, or a TIFF for a .tiff path; another
    `orientation` for the values some editors write (0, out of EXIF's range, means as stored).
    `unwritable_exif`: the EXIF block also gives XResolution as text, which Pillow reads and cannot write back."""
    width, height = size
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    if unwritable_exif:  # a little-endian TIFF header and one IFD: Orientation (SHORT), XResolution (ASCII "72")
        entries = [struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<H", orientation) + b"\0\0",
                   struct.pack("<HHI", 282, 2, 3) + b"72\0\0"]
        exif = (b"Exif\0\0II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + b"".join(entries)
                + b"\0\0\0\0")
    image.save(path, exif=exif, **({} if path.suffix == ".tiff" else {"quality": 95}))
    return path


def png_bytes(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height, all black: compressed, a few kilobytes whatever its size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = (b"\0" * (1 + (width + 7) // 8)) * height  # each row: filter byte 0, then the bits
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))


def write_broken_files(folder: Path) -> list[Path]:
    """Files named as images that do not decode, as found in real folders; each must be reported."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    text = folder / "notes_really.jpg"
    text.write_text("this is a text file with an image's name\n")
    good = write_image(folder / "whole.jpg", (160, 120), seed=7, quality=95).read_bytes()
    (folder / "whole.jpg").unlink()
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])
    html = folder / "saved_page.PNG"
    html.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>\n")
    # 100 million pixels: over Pillow's MAX_IMAGE_PIXELS (89.5M), where it only warns and decodes
    bomb = folder / "bomb.png"
    bomb.write_bytes(png_bytes(10_000, 10_000))
    return [empty, text, truncated, html, bomb]


def write_ignored_files(folder: Path) -> list[Path]:
    """Files that are not images at all, to be passed over without a word."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {".DS_Store": b"\0\0\0\1Bud1", "Thumbs.db": b"\xd0\xcf\x11\xe0", "readme.txt": b"photos\n",
             "._photo.jpg": b"\0\5\26\7\0\2\0\0Mac OS X"}  # a macOS resource fork, named like an image
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return [folder / name for name in files]


def file_hashes(root: Path) -> dict:
    """(SHA-256, modification time) of every file under `root`, by relative path."""
    return {path.relative_to(root).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*")) if path.is_file()}
