"""The bundled sample (samples/flowers): what a fresh clone trains and tests on, small and credited."""
import re
import subprocess
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]


def test_sample_is_five_classes_of_small_real_photos(flowers):
    assert sorted(p.name for p in flowers.iterdir()) == CLASSES
    files = sorted(flowers.rglob("*.*"))
    assert all(p.suffix == ".jpg" and p.parent.parent == flowers for p in files)
    assert all(len(list((flowers / name).iterdir())) == 20 for name in CLASSES)
    assert sum(p.stat().st_size for p in files) <= 2_000_000
    for path in files:
        with Image.open(path) as image:
            image.load()
            assert image.mode == "RGB" and max(image.size) <= 256, path


def test_every_photo_is_credited_with_its_flickr_page(flowers):
    credits = (ROOT / "samples" / "CREDITS.md").read_text()
    assert "CC-BY 2.0" in credits and "creativecommons.org/licenses/by/2.0" in credits
    listed = dict(re.findall(r"^\| `([^`]+)` \| (https://\S+) \|$", credits, re.MULTILINE))
    assert sorted(listed) == sorted(p.relative_to(flowers).as_posix() for p in flowers.rglob("*.jpg"))
    for name, page in listed.items():
        assert page == f"https://www.flickr.com/photo.gne?id={Path(name).name.split('_')[0]}"


def test_the_repository_holds_no_other_binary_files():
    if not (ROOT / ".git").exists():  # an unpacked archive: nothing to check (a skip fails in CI)
        pytest.skip("not a git checkout")
    listing = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    tracked = listing.stdout.split()
    assert listing.returncode == 0 and "train.py" in tracked, listing.stderr
    binary = [name for name in tracked if (ROOT / name).is_file() and b"\0" in (ROOT / name).read_bytes()[:8192]
              and not name.startswith("samples/flowers/")]
    assert binary == []
