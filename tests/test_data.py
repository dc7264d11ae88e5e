"""data.py: transforms, datasets, loaders, mixup."""
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, JpegImagePlugin

from data import (IMAGENET_MEAN, IMAGENET_STD, EncodedBatch, Normalize, build_mixup, build_normalize, build_transform,
                  draft_reduction, evaluation_box, pil_to_uint8, random_resized_box, recipe_preprocessing, to_device)
from loaders import ImageDataset, SeededDataset, build_loader, collate_skipping_failures
from images import load_rgb
from splits import load_splits
from image_factory import write_class_tree, write_image, write_sideways_photo
from utils import UserError


def write_large_jpeg(path, size=(1600, 1200)):
    """A smooth photo-sized JPEG (gradients and waves), large enough to be decoded at a reduced scale."""
    height, width = size[1], size[0]
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x / width * 255, y / height * 255, 128 + 100 * np.sin(x / 37) * np.cos(y / 53)], -1)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=92)
    return path


@pytest.mark.parametrize("recipe", ["tutorial", "official"])
@pytest.mark.parametrize("train", [True, False])
def test_transforms_give_uint8_crops_that_normalize_makes_model_inputs(flowers, recipe, train):
    transform, normalize = build_transform(96, train=train, recipe=recipe), build_normalize(train, recipe)
    for path in sorted(flowers.glob("roses/*"))[:4]:
        with Image.open(path) as image:
            pixels = transform(image)
        assert pixels.shape == (3, 96, 96) and pixels.dtype == torch.uint8  # what workers hand over
        tensor = normalize(pixels[None])
        assert tensor.shape == (1, 3, 96, 96) and tensor.dtype == torch.float32
        if not (train and recipe == "official"):  # random erasing fills with normal noise, out of range
            assert -2.2 < tensor.min() and tensor.max() < 2.7  # the ImageNet-normalised range


def test_normalisation_uses_the_given_mean_and_std(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 64, 255)).save(path)
    pixels = build_transform(32, train=False)(Image.open(path))
    expected = (torch.tensor([128, 64, 255]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(Normalize()(pixels)[:, 5, 5], expected, atol=1e-5)
    halves = Normalize(mean=(0.5,) * 3, std=(0.5,) * 3)(pixels[None].expand(2, -1, -1, -1))
    assert halves.shape == (2, 3, 32, 32)
    assert torch.allclose(halves[1, :, 5, 5], torch.tensor([128, 64, 255]) / 127.5 - 1, atol=1e-5)


def test_evaluation_boxes_center_crop_the_shorter_side_or_squash_each_side():
    """(left, top, width, height) of a 400 x 300 photo: "center", a square of crop_pct of the shorter side; "squash",
    crop_pct of each side (timm's Resize((S / crop_pct,) * 2) then CenterCrop(S)), the whole photo at 1.0."""
    assert evaluation_box(400, 300, 224, 0.875) == (68.75, 18.75, 262.5, 262.5)
    assert evaluation_box(400, 300, 224, 0.875, "squash") == (25.0, 18.75, 350.0, 262.5)
    assert evaluation_box(400, 300, 384, 1.0, "squash") == (0.0, 0.0, 400.0, 300.0)
    assert evaluation_box(300, 400, 384, 1.0, "center") == (0.0, 50.0, 300.0, 300.0)


def test_evaluation_squashes_the_whole_photo_where_the_official_recipe_does(tmp_path):
    """A 384 px run of the official recipe is evaluated as the official configs of its size say (TEST.CROP False):
    the whole photo stretched to the square, its red and green ends in it; a center crop keeps the blue middle alone.
    The tutorial's recipe, and the official one below 384 px, center-crop 87.5%."""
    pixels = np.zeros((100, 200, 3), np.uint8)
    pixels[:, :50], pixels[:, 50:150], pixels[:, 150:] = (255, 0, 0), (0, 0, 255), (0, 255, 0)
    Image.fromarray(pixels).save(tmp_path / "stripes.png")

    def ends(**settings):
        with Image.open(tmp_path / "stripes.png") as image:
            seen = build_transform(settings.pop("size", 64), train=False, **settings)(image)
        return seen[:, seen.shape[1] // 2, 2].tolist(), seen[:, seen.shape[1] // 2, -3].tolist()  # left, right (RGB)
    assert ends(crop_mode="squash", crop_pct=1.0) == ([255, 0, 0], [0, 255, 0])
    assert ends(crop_mode="center", crop_pct=1.0) == ([0, 0, 255], [0, 0, 255])
    assert ends(size=384, recipe="official") == ([255, 0, 0], [0, 255, 0])
    assert ends(size=384, recipe="tutorial") == ends(size=256, recipe="official") == ([0, 0, 255], [0, 0, 255])
    assert recipe_preprocessing("official", 384) == {"crop_mode": "squash", "crop_pct": 1.0, "interpolation": "bicubic"}
    assert recipe_preprocessing("official", 256) == {"crop_mode": "center", "crop_pct": 0.875,
                                                     "interpolation": "bicubic"}
    assert recipe_preprocessing("tutorial", 384) == {"crop_mode": "center", "crop_pct": 0.875,
                                                     "interpolation": "bilinear"}
    with pytest.raises(UserError, match="unknown crop mode 'border': this version knows center, squash"):
        build_transform(64, train=False, crop_mode="border")


def test_official_random_erasing_runs_on_the_batch_as_seeded():
    """The official recipe erases a box in about a quarter of the images, after normalising, where the
    batch is; the same seed erases the same boxes."""
    pixels = torch.full((64, 3, 48, 48), 100, dtype=torch.uint8)
    plain = Normalize()(pixels)
    torch.manual_seed(0)
    random.seed(0)
    erased = build_normalize(train=True, recipe="official")(pixels)
    changed = (erased != plain).flatten(1).any(1)
    assert 4 <= changed.sum() <= 32 and not torch.equal(erased, plain)
    torch.manual_seed(0)
    random.seed(0)
    assert torch.equal(build_normalize(train=True, recipe="official")(pixels), erased)
    assert torch.equal(build_normalize(train=False, recipe="official")(pixels), plain)  # evaluation: none


def test_random_erasing_erases_the_boxes_timms_draws_for_the_same_seed():
    """data.RandomErasing draws its boxes as timm's RandomErasing (pixel mode, one box) does, and erases the batch
    at once where timm loops over its images: the same boxes for the same seed, noise in them (the noise's own
    values differ), one image alone too."""
    from timm.data.random_erasing import RandomErasing as TimmErasing
    from data import RandomErasing
    zeros = torch.zeros(64, 3, 40, 56)
    random.seed(3)
    ours = RandomErasing(0.5)(zeros.clone())
    random.seed(3)
    theirs = TimmErasing(0.5, mode="pixel", max_count=1, device="cpu")(zeros.clone())
    erased = ours != 0
    assert torch.equal(erased, theirs != 0) and 16 <= erased.flatten(1).any(1).sum() <= 48
    assert 0.5 < ours[erased].std() < 1.5  # normal noise
    random.seed(5)
    batch_of_one = RandomErasing(1.0)(zeros[:1].clone())
    random.seed(5)
    one = RandomErasing(1.0)(zeros[0].clone())
    assert (one != 0).any() and torch.equal(one != 0, batch_of_one[0] != 0)
    # the operators it runs on the batch (on a GPU, launches the step waits on), against timm's some 10 an image
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))
    counts = []
    for eraser in (RandomErasing(0.25), TimmErasing(0.25, mode="pixel", max_count=1, device="cpu")):
        random.seed(0)
        Count.calls = 0
        with Count():
            eraser(zeros.clone())
        counts.append(Count.calls)
    assert counts[0] < 30 and counts[1] > 100, counts  # 25 and 119 for the 11 images it erases of 64


def test_every_mode_gives_three_channels(tmp_path):
    transform = build_transform(32, train=True)
    for mode, name in [("L", "grey.jpg"), ("P", "palette.png"), ("RGBA", "alpha.png"), ("CMYK", "cmyk.jpg")]:
        assert transform(Image.open(write_image(tmp_path / name, mode=mode))).shape == (3, 32, 32)


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_looks_the_same(tmp_path, monkeypatch):
    path = write_large_jpeg(tmp_path / "big.jpg")
    decoded_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: decoded_sizes.append(size) or draft(self, mode, size))
    transform = build_transform(224, train=False)
    reduced = transform(Image.open(path))
    # the center crop is 1050 px a side: at 1/4 scale still 262 px, at least the 224 asked for
    assert decoded_sizes == [(400, 300)]
    full = transform(load_rgb(path))  # already decoded: no reduced scale possible
    grey_levels = (reduced.float() - full.float()).abs()
    assert grey_levels.mean() < 2.5


def test_training_crops_never_go_below_the_output_resolution(tmp_path, monkeypatch):
    path = write_large_jpeg(tmp_path / "big.jpg")
    reductions = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft",
                        lambda self, mode, size: reductions.append(1600 // size[0]) or draft(self, mode, size))
    monkeypatch.setattr("data.random_resized_box", lambda w, h: (100, 50, 1000, 900))
    build_transform(224, train=True)(Image.open(path))
    assert reductions == [4]  # 900 / 4 = 225 >= 224; 900 / 8 would be too few pixels
    # a wide or tall box: its shorter side decides (500 / 8 would leave 62 px high, blown up to 224)
    assert draft_reduction(2000, 500, 224) == draft_reduction(500, 2000, 224) == 2


def test_a_panoramas_training_crop_stays_inside_it_at_the_nearest_aspect():
    """No random box of 3:4 to 4:3 fits a strip 100 times as wide as high: the fallback, torchvision's, is the
    middle of it at the nearest aspect, inside the photo."""
    for width, height in ((1000, 10), (10, 1000)):
        left, top, box_w, box_h = random_resized_box(width, height)
        assert 0 <= left and 0 <= top and left + box_w <= width and top + box_h <= height
        assert (box_w, box_h) == ((13, 10) if width > height else (10, 13))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("unwritable_exif", [False, True])  # an EXIF block Pillow reads and cannot write back
def test_exif_orientation_is_applied_before_cropping(tmp_path, monkeypatch, train, unwritable_exif):
    path = write_sideways_photo(tmp_path / "phone.jpg", size=(1800, 900),  # shown 900 wide, red on top
                                unwritable_exif=unwritable_exif)
    monkeypatch.setattr("data.random_resized_box", lambda w, h: (0, 450, 900, 900))  # the middle square
    tensor = Normalize()(build_transform(64, train=train)(Image.open(path)))
    red_minus_blue = tensor[0] - tensor[2]
    assert red_minus_blue[:20].mean() > 3 and red_minus_blue[-20:].mean() < -3


@pytest.mark.parametrize("train", [True, False])
def test_a_sideways_tiff_is_cropped_as_it_is_seen(flowers, tmp_path, monkeypatch, train):
    """Pillow gives a TIFF's size as seen already, and turns it as it loads: the crop is the upright photo's,
    not one chosen on the sides swapped twice and squeezed into the square."""
    photo = Image.open(next((flowers / "daisy").iterdir())).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # seen turned 90 degrees clockwise
    photo.save(tmp_path / "scan.tiff", exif=exif)
    photo.transpose(Image.Transpose.ROTATE_270).save(tmp_path / "upright.png")
    monkeypatch.setattr("data.random_resized_box", lambda w, h: (0, 0, min(w, h), min(w, h) // 2))
    crops = []
    for name in ("scan.tiff", "upright.png"):
        random.seed(0), torch.manual_seed(0)  # the same flip
        crops.append(build_transform(64, train=train)(Image.open(tmp_path / name)).float())
    assert (crops[0] - crops[1]).abs().max() == 0


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_cropped_as_the_photo_is_seen(flowers, tmp_path, monkeypatch, orientation):
    """Phones write 6 and 8 (turned), mirrored selfies 5 and 7 (turned and flipped), 2 to 4 flips: a photo is
    cropped as Pillow's exif_transpose shows it, the crop of its upright copy (its sides swapped for 5 to 8)."""
    photo = Image.open(next((flowers / "daisy").iterdir())).convert("RGB").resize((90, 60))
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "photo.jpg") as stored:
        ImageOps.exif_transpose(stored).save(tmp_path / "upright.png")
    monkeypatch.setattr("data.random_resized_box", lambda w, h: (0, 0, min(w, h), min(w, h) // 2))
    for train in (True, False):
        crops = []
        for name in ("photo.jpg", "upright.png"):
            random.seed(0), torch.manual_seed(0)  # the same flip
            crops.append(build_transform(64, train=train)(Image.open(tmp_path / name)).float())
        assert (crops[0] - crops[1]).abs().max() == 0, train


def test_the_official_recipe_survives_posterize_with_zero_bits():
    """rand-m9-mstd0.5-inc1 asks Posterize for 0 bits when its magnitude reaches 10; Pillow 13 raises."""
    transform = build_transform(64, train=True, recipe="official")
    names = [type(t).__name__ for t in transform.transforms]
    assert names[-2] == "RandAugment" and transform.transforms[-1] is pil_to_uint8
    posterize = next(op for op in transform.transforms[-2].ops if op.name == "PosterizeIncreasing")
    posterize.prob, posterize.magnitude, posterize.magnitude_std = 1.0, 10, 0
    assert posterize(Image.new("RGB", (8, 8), (200, 100, 50))).getpixel((0, 0)) == (0, 0, 0)


def test_an_unknown_recipe_is_named():
    with pytest.raises(UserError, match="'fancy'.*tutorial, official"):
        build_transform(224, train=True, recipe="fancy")


def test_transforms_can_be_sent_to_worker_processes():
    for recipe in ("tutorial", "official"):
        for train in (True, False):
            pickle.dumps(build_transform(224, train, recipe))
    pickle.dumps(build_transform(224, True, decode="device"))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_file_broken_after_listing_is_skipped_and_named(tmp_path, num_workers):
    write_class_tree(tmp_path, {"cat": 6, "dog": 5})
    splits = load_splits(tmp_path, val_ratio=0.0)
    removed, damaged = splits.train[2][0], splits.train[8][0]
    Path(removed).unlink()
    with open(damaged, "r+b") as file:
        file.truncate(300)
    loader = build_loader(ImageDataset(splits.train, build_transform(32, train=True)), batch_size=4,
                          train=False, num_workers=num_workers)
    batches = list(loader)
    assert sum(len(labels) for _, labels, _, _ in batches) == 9
    assert sorted(path for _, _, _, failed in batches for path in failed) == sorted([removed, damaged])
    images, labels, paths, failed = batches[0]
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 0, 0] and failed == [removed]
    assert len(paths) == 3 and removed not in paths


def test_decoding_on_the_device_makes_the_workers_crops(tmp_path):
    """--decode device: for the same seed, the same crop and flip as the workers' path, from every kind of
    file: colour JPEGs (one sideways, one with an orientation out of EXIF's range) decoded on the device (here the CPU, with the same code; test_cuda.py
    runs it on a GPU); a large photo, and what nvJPEG may not take (PNG, grey, CMYK, progressive), decoded
    by the worker; all in one batch."""
    check_device_decoding(tmp_path, "cpu")


def check_device_decoding(tmp_path, device):
    files = [write_large_jpeg(tmp_path / "big.jpg", (2400, 1800)),  # any crop >= 2 x 96 px a side: drafted
             write_large_jpeg(tmp_path / "photo.jpg", (240, 180)),  # every crop < 2 x 96 px a side
             write_sideways_photo(tmp_path / "phone.jpg", (300, 180)),
             write_sideways_photo(tmp_path / "edited.jpg", (300, 180), orientation=0),  # out of EXIF's 1-8: as stored
             write_image(tmp_path / "grey.jpg", (120, 90), mode="L", quality=95),
             write_image(tmp_path / "a.png", (120, 90)), write_image(tmp_path / "cmyk.jpg", (120, 90), mode="CMYK"),
             write_image(tmp_path / "prog.jpg", (120, 90), quality=95, progressive=True)]
    samples = [(str(path), i) for i, path in enumerate(files)]
    keys = [(i, 100 + i) for i in range(len(files))]
    on_workers = SeededDataset(ImageDataset(samples, build_transform(96, train=True)))
    on_device = SeededDataset(ImageDataset(samples, build_transform(96, train=True, decode="device")))
    expected = collate_skipping_failures([on_workers[key] for key in keys])
    batch = collate_skipping_failures([on_device[key] for key in keys])
    on_the_device = [crop is not None for crop in batch[0].crops]
    assert isinstance(batch[0], EncodedBatch) and on_the_device == [False, True, True, True, False, False, False, False]
    images, labels, failed = to_device(*batch[:3], device)
    assert images.dtype == torch.uint8 and labels.tolist() == list(range(8)) and failed == []
    assert images.device.type == labels.device.type == device
    difference = (images.cpu().float() - expected[0].float()).abs().mean((1, 2, 3))
    assert difference.max() < 2, difference  # grey levels: another decoder and resize, the same crops


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_jpeg_that_fails_on_the_device_is_left_out_and_named(tmp_path, num_workers):
    """A file broken after listing whose header still reads fails only when the device decodes it."""
    good = [write_image(tmp_path / f"{i}.jpg", (64, 48), seed=i, quality=95) for i in range(3)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good[0].read_bytes()[:700])
    samples = [(str(good[0]), 0), (str(broken), 1), (str(good[1]), 2), (str(good[2]), 3)]
    loader = build_loader(ImageDataset(samples, build_transform(32, train=True, decode="device")), batch_size=4,
                          train=False, num_workers=num_workers)
    images, labels, paths, failed = next(iter(loader))
    assert failed == []  # the worker read only the header
    images, labels, failed = to_device(images, labels, paths, "cpu")
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [0, 2, 3] and failed == [str(broken)]


def test_a_jpeg_the_device_cannot_decode_is_decoded_on_the_cpu(tmp_path, monkeypatch):
    """nvJPEG takes fewer JPEGs than libjpeg: a file it refuses (here, a device that refuses all) is
    decoded on the CPU and moved, not lost; only one that decodes nowhere is."""
    import torchvision.io
    from data import decode_jpegs
    real = torchvision.io.decode_jpeg

    def cpu_only(data, mode, device):
        if str(device) != "cpu":
            raise RuntimeError("this device decodes nothing")
        return real(data, mode=mode)
    monkeypatch.setattr(torchvision.io, "decode_jpeg", cpu_only)
    good = write_image(tmp_path / "good.jpg", (64, 48), quality=95).read_bytes()
    files = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in (good, good[:700])]
    decoded, broken = decode_jpegs(files, "meta")
    assert decoded.device.type == "meta" and decoded.shape == (3, 48, 64) and broken is None


def test_a_bug_in_a_transform_is_not_taken_for_a_broken_file(tmp_path):
    def buggy(image):
        raise ValueError("a bug, not a broken file")
    dataset = ImageDataset([(str(write_image(tmp_path / "a.jpg")), 0)], buggy)
    with pytest.raises(ValueError, match="a bug"):
        dataset[0]


def test_a_batch_whose_every_image_failed_is_empty():
    images, labels, paths, failed = collate_skipping_failures([(None, 0, "a.jpg"), (None, 1, "b.jpg")])
    assert (images.numel(), len(labels), paths, failed) == (0, 0, [], ["a.jpg", "b.jpg"])


def test_training_batches_are_full_unless_the_data_cannot_fill_one():
    samples = [(f"{i}.jpg", 0) for i in range(10)]
    assert build_loader(ImageDataset(samples, None), 4, train=True, num_workers=0).drop_last
    assert not build_loader(ImageDataset(samples, None), 16, train=True, num_workers=0).drop_last
    assert not build_loader(ImageDataset(samples, None), 4, train=False, num_workers=0).drop_last


def test_mixup_is_off_at_zero_and_copes_with_an_odd_batch():
    """A batch made odd by a file that failed gives up one image; an odd --batch-size is an error."""
    assert build_mixup(0.0, 0.0, 0.1, num_classes=5) is None
    with pytest.raises(UserError, match="--batch-size 7 is odd, and mixup and cutmix mix the images of a batch"):
        build_mixup(0.8, 1.0, 0.1, num_classes=5, batch_size=7)
    mixup = build_mixup(0.8, 1.0, 0.1, num_classes=5)
    images, targets = mixup(torch.randn(5, 3, 16, 16), torch.tensor([0, 1, 2, 3, 4]))
    assert images.shape == (4, 3, 16, 16) and targets.shape == (4, 5)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    # --label-smoothing still smooths under mixup (the loss takes the mixed targets as they are): a batch of one
    # class mixes to that class's smoothed target, 1 - 0.1 + 0.1 / 5 and 0.1 / 5 for the others
    _, targets = mixup(torch.randn(4, 3, 16, 16), torch.full((4,), 2))
    smoothed = torch.full((4, 5), 0.02)
    smoothed[:, 2] = 0.92
    torch.testing.assert_close(targets, smoothed)
