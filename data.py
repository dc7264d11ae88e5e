"""Transforms and batches: an opened image to its uint8 crop (build_transform), a batch on its device, normalised
(to_device, build_normalize), mixup and cutmix, and JPEGs decoded on a GPU (--decode device). The datasets and
loaders that run them are loaders.py's.

    from data import build_transform, build_normalize
    transform = build_transform(224, train=True)   # opened image -> (3, 224, 224) uint8
    normalize = build_normalize(train=True)
    x = normalize(images.to("cuda", non_blocking=True))   # uint8 from the workers, float32 here

Speed: the crop is chosen from the image header before anything is decoded, so a JPEG is decoded
at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves the crop at least the output
resolution; the crop is resized on uint8 tensors by PyTorch's vectorised antialiased kernel, and
stays uint8 until the batch is on its device (a GPU, where normalising it costs nothing).
bench/bench_data.py measures this against torchvision's ImageFolder.
"""
import itertools
import math
import random
import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from images import orientation as exif_orientation, upright_rgb
from utils import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_PCT = 0.875  # evaluation keeps the central 87.5% of the shorter side (the official recipe's)
RECIPES = ("tutorial", "official")
# each recipe's resize, for training and evaluation: the tutorial's is torchvision's default, the official recipe's
# the official code's (its configs' DATA.INTERPOLATION, its evaluation's too)
RECIPE_INTERPOLATION = {"tutorial": "bilinear", "official": "bicubic"}
# how evaluation takes a photo's box (timm's crop_mode names, evaluation_box): "center", a square of crop_pct of the
# shorter side; "squash", crop_pct of each side, stretched to a square (the whole photo at crop_pct 1.0)
CROP_MODES = ("center", "squash")
# the official configs of every 384 px fine-tune (swin/*_384*_finetune.yaml, swinv2/*_192to384_22kto1k_ft.yaml) set
# TEST.CROP False: their evaluation squashes the whole photo to 384 x 384; the others crop 87.5%
SQUASHED_FROM = 384  # px


def preprocessing_of(classifier) -> dict:
    """The crop_mode, crop_pct and interpolation (build_transform's keywords) that a classifier or an exported program
    carries as attributes."""
    return {key: getattr(classifier, key) for key in ("crop_mode", "crop_pct", "interpolation")}


def recipe_preprocessing(recipe: str, img_size: int) -> dict:
    """How a run of `recipe` at `img_size` evaluates: build_transform's keywords, a checkpoint's keys. The tutorial's
    recipe center-crops 87.5%, bilinear; the official code resizes bicubic, and at SQUASHED_FROM px and above squashes
    the whole photo (crop_mode "squash", crop_pct 1.0), as its configs evaluate there."""
    squash = recipe == "official" and img_size >= SQUASHED_FROM
    return {"crop_mode": "squash" if squash else "center", "crop_pct": 1.0 if squash else CROP_PCT,
            "interpolation": RECIPE_INTERPOLATION[recipe]}


# --- Transforms ---

def random_resized_box(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """(left, top, box_width, box_height): torchvision's RandomResizedCrop.get_params, from the size alone."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        box_w = round(math.sqrt(target_area * aspect))
        box_h = round(math.sqrt(target_area / aspect))
        if 0 < box_w <= width and 0 < box_h <= height:
            return random.randint(0, width - box_w), random.randint(0, height - box_h), box_w, box_h
    # fallback after ten misses, as torchvision: the whole image, clamped to the ratio range
    box_w, box_h = width, height
    if width / height < ratio[0]:
        box_h = round(width / ratio[0])
    elif width / height > ratio[1]:
        box_w = round(height * ratio[1])
    return (width - box_w) // 2, (height - box_h) // 2, box_w, box_h


def evaluation_box(width: int, height: int, size: int, crop_pct: float, crop_mode: str = "center"):
    """(left, top, box_width, box_height): the box of the original that evaluation resizes to size x size. "center":
    the one that Resize(shorter side to size / crop_pct) then CenterCrop(size) keep, a square; "squash": the one that
    Resize((size / crop_pct, size / crop_pct)) then CenterCrop(size) keep, crop_pct of each side (the whole photo at
    1.0), stretched to a square."""
    scale = size / math.floor(size / crop_pct)
    box_w, box_h = (scale * width, scale * height) if crop_mode == "squash" else (scale * min(width, height),) * 2
    return (width - box_w) / 2, (height - box_h) / 2, box_w, box_h


def seen_box(img_size: int, preprocessing: dict):
    """(width, height) -> the box of a photo that evaluation shows the model at img_size, cropped as `preprocessing`
    (recipe_preprocessing's keys) says: where the report puts its maps."""
    return partial(evaluation_box, size=img_size, crop_pct=preprocessing["crop_pct"],
                   crop_mode=preprocessing["crop_mode"])


def draft_reduction(box_w: float, box_h: float, size: int) -> int:
    """The largest JPEG DCT scale-down (8, 4, 2) that leaves the box at least `size` pixels a side, else 1."""
    return next((r for r in (8, 4, 2) if min(box_w, box_h) / r >= size), 1)


class DecodeCrop:
    """Opened image -> the crop that becomes the output, `size` x `size`, decoding no more than it needs.

    The crop is chosen on the upright image from the header alone (`choose_box(width, height)`),
    then a JPEG is decoded at the DCT scale `draft_reduction` allows: a 4000 x 3000 photo whose
    crop is 1500 px wide is decoded at 1/4 scale, a sixteenth of the pixels. Returns a uint8 CHW
    tensor, resized by PyTorch's vectorised uint8 kernel (about twice Pillow's speed, within one
    grey level of it), or a PIL image (`to_tensor=False`) for timm's PIL-only augmentations.
    """

    def __init__(self, size: int, choose_box, interpolation: str = "bilinear", to_tensor: bool = True):
        self.size, self.choose_box, self.interpolation, self.to_tensor = size, choose_box, interpolation, to_tensor

    def __call__(self, image: Image.Image):
        _, width, height = upright_size(image)
        return self.decode(image, self.choose_box(width, height), width, height)

    def decode(self, image: Image.Image, box: tuple, width: int, height: int):
        """The crop `box` (left, top, width, height) of the image seen upright, `width` x `height`
        (upright_size), decoded and resized."""
        left, top, box_w, box_h = box
        reduction = draft_reduction(box_w, box_h, self.size)
        if reduction > 1:  # a no-op for formats other than JPEG and for decoded images
            image.draft(None, (image.width // reduction, image.height // reduction))
        image = upright_rgb(image)
        scale_x, scale_y = image.width / width, image.height / height
        box = (left * scale_x, top * scale_y, min((left + box_w) * scale_x, image.width),
               min((top + box_h) * scale_y, image.height))
        if not self.to_tensor:
            resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
            return image.resize((self.size, self.size), resample, box=box)
        x0, y0 = min(round(box[0]), image.width - 1), min(round(box[1]), image.height - 1)
        x1, y1 = max(round(box[2]), x0 + 1), max(round(box[3]), y0 + 1)
        pixels = torch.from_numpy(np.array(image.crop((x0, y0, x1, y1))))  # (h, w, 3)
        pixels = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, h, w), channels-last in memory: the fast path
        resized = F.interpolate(pixels, size=(self.size, self.size), mode=self.interpolation,
                                antialias=True, align_corners=False)
        return resized[0]  # (3, size, size) uint8


def upright_size(image: Image.Image) -> tuple:
    """(EXIF orientation, width, height as the photo is seen), from the header alone (images.orientation)."""
    orientation = exif_orientation(image)
    # a TIFF's size is given as seen already (Pillow turns it as it loads), its stored one in its tags
    stored = (image.tag_v2[256], image.tag_v2[257]) if image.format == "TIFF" else image.size
    width, height = stored[::-1] if orientation in (5, 6, 7, 8) else stored
    return orientation, width, height


class RandomErasing:
    """The official recipe's random erasing (Zhong et al.; timm's RandomErasing in pixel mode, one box): each
    image, with `probability`, gets a box of 2% to a third of its area and of aspect 0.3 to 1/0.3, filled with
    normal noise. The boxes are drawn on the host with Python's random in the order of timm's draws (the same
    boxes for the same seed), and the batch is erased in a few operations where timm's loops over its images,
    launching some per erased image: on a GPU, CPU time that the step waits on."""

    def __init__(self, probability: float):
        self.probability = probability

    def box(self, height: int, width: int):
        """(top, left, h, w) of one image's box, or None."""
        if random.random() > self.probability:
            return None
        for _ in range(10):  # a box that does not fit is drawn again, ten times at most
            area = random.uniform(0.02, 1 / 3) * height * width
            aspect = math.exp(random.uniform(math.log(0.3), math.log(1 / 0.3)))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if w < width and h < height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        return None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """`x`, a (B, C, H, W) float batch (or one (C, H, W) image), erased in place."""
        if x.ndim == 3:
            return self(x[None])[0]
        height, width = x.shape[-2:]
        boxes = [(i, *box) for i in range(len(x)) if (box := self.box(height, width)) is not None]
        if not boxes:
            return x
        spans = torch.tensor(boxes)  # (K, 5): image, top, left, h, w; to a GPU from pinned memory, not waiting
        spans = spans.pin_memory() if x.is_cuda else spans
        image, top, left, h, w = spans.to(x.device, non_blocking=True).unbind(1)
        rows, cols = torch.arange(height, device=x.device), torch.arange(width, device=x.device)
        inside = (((rows >= top[:, None]) & (rows < (top + h)[:, None]))[:, None, :, None]
                  & ((cols >= left[:, None]) & (cols < (left + w)[:, None]))[:, None, None, :])  # (K, 1, H, W)
        noise = torch.randn((len(boxes), *x.shape[1:]), dtype=x.dtype, device=x.device)
        x[image] = torch.where(inside, noise, x[image])
        return x


class Normalize:
    """uint8 images, (B, 3, H, W) or (3, H, W), on whatever device they are -> float32 (x / 255 - mean) / std;
    then, with `erasing` > 0 (the official recipe in training), random erasing in pixel mode with that
    probability (RandomErasing), its noise drawn on the batch's device.

    It runs once the batch is on its device: the loader's workers hand over uint8, a quarter of
    float32's bytes to pin and copy, and on a GPU the arithmetic is free beside the model.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, erasing: float = 0.0):
        self.mean, self.std, self.erasing = tuple(mean), tuple(std), erasing
        self.eraser = RandomErasing(erasing) if erasing > 0 else None
        self._per_device = {}  # scale and shift, made once per device

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device not in self._per_device:
            std = torch.tensor(self.std, device=pixels.device).view(3, 1, 1)
            mean = torch.tensor(self.mean, device=pixels.device).view(3, 1, 1)
            self._per_device[pixels.device] = (1 / (255 * std), -mean / std)
        scale, shift = self._per_device[pixels.device]
        x = torch.addcmul(shift, pixels.float(), scale)  # on a CPU faster than addcmul promoting uint8 itself
        return x if self.eraser is None else self.eraser(x)


# --- Decoding on the device (train.py --decode device) ---

@dataclass
class JpegCrop:
    """What a worker hands over for the device to decode: a JPEG's bytes and the crop to make of it,
    (left, top, width, height) on the upright image, its EXIF orientation, whether to mirror it, and
    the output's size and interpolation."""
    data: torch.Tensor  # the file's bytes, uint8
    box: tuple
    orientation: int
    flip: bool
    size: int
    interpolation: str


class ReadForDevice:
    """Opened image -> a JpegCrop: the training crop chosen as DecodeCrop chooses it (the same random
    draws: the same box and flip for the same seed), nothing decoded. The worker decodes, as
    build_transform's pipeline does, what is better decoded there: other files than baseline colour
    JPEGs (other formats; grey, CMYK or progressive JPEGs, which nvJPEG's batched decoder may not
    take), and crops of large photos, which it decodes at a reduced DCT scale (draft_reduction) for a
    fraction of a full decode's work, where the device would decode every pixel into its memory."""

    def __init__(self, size: int, interpolation: str = "bilinear"):
        self.size, self.interpolation = size, interpolation
        self.on_cpu = DecodeCrop(size, random_resized_box, interpolation)

    def __call__(self, image: Image.Image):
        if image.format != "JPEG" or image.mode != "RGB" or image.info.get("progressive"):
            return random_horizontal_flip(self.on_cpu(image))
        orientation, width, height = upright_size(image)
        box = random_resized_box(width, height)
        if draft_reduction(box[2], box[3], self.size) > 1:
            return random_horizontal_flip(self.on_cpu.decode(image, box, width, height))
        flip = bool(torch.rand(1) < 0.5)
        image.fp.seek(0)
        return JpegCrop(torch.frombuffer(bytearray(image.fp.read()), dtype=torch.uint8), box, orientation, flip,
                        self.size, self.interpolation)


@dataclass
class EncodedBatch:
    """A training batch that the device decodes (nvJPEG on a GPU, batched): collated in a worker, its
    JPEGs' bytes one after another in one tensor (one block of shared memory to hand over, not one per
    image), with each one's crop; and the images the worker decoded itself, stacked."""
    data: torch.Tensor  # uint8, every JPEG's bytes
    ends: list  # where each JPEG's bytes end in data
    crops: list  # per image of the batch: (box, orientation, flip) for a JPEG, None for one decoded already
    decoded: torch.Tensor  # (images decoded in the worker, 3, size, size) uint8
    size: int
    interpolation: str

    @classmethod
    def collate(cls, items: list) -> "EncodedBatch":
        """Items of ReadForDevice, at least one of them a JpegCrop, as one batch."""
        jpegs = [item for item in items if isinstance(item, JpegCrop)]
        decoded = [item for item in items if not isinstance(item, JpegCrop)]
        size, interpolation = jpegs[0].size, jpegs[0].interpolation
        return cls(torch.cat([j.data for j in jpegs]),
                   list(itertools.accumulate(len(j.data) for j in jpegs)),
                   [(i.box, i.orientation, i.flip) if isinstance(i, JpegCrop) else None for i in items],
                   torch.stack(decoded) if decoded else torch.empty(0, 3, size, size, dtype=torch.uint8),
                   size, interpolation)

    def __len__(self) -> int:
        return len(self.crops)

    def pin_memory(self) -> "EncodedBatch":
        """What the loader's pinning thread calls (pin_memory=True on a GPU machine): the images decoded
        already are pinned, so that their copy to the GPU need not block. The JPEG bytes stay where they
        are: nvJPEG reads them on the CPU."""
        self.decoded = self.decoded.pin_memory()
        return self

    def decode(self, device) -> tuple:
        """(uint8 (B', 3, size, size) on the device, whether each image decoded): the JPEGs decoded in one
        batch, each then made upright, cropped, resized (antialiased) and mirrored as its worker chose.

        On a GPU this runs on a stream of its own, which the training stream then waits for: the decoding
        overlaps the previous step's kernels, and it must not share their stream, since nvJPEG's
        hardware decoder writes its output before the work already queued on its stream has run, into
        memory that work may still read (pytorch/vision#9606, meta-pytorch/torchcodec#1634). Its own
        stream is drained first, and memory freed on the training stream never goes to another stream.
        """
        device = torch.device(device)
        if device.type != "cuda":
            return self.decode_here(device)
        side_stream(device).synchronize()
        return on_side_stream(device, lambda: self.decode_here(device))

    def decode_here(self, device) -> tuple:
        files = list(torch.tensor_split(self.data, self.ends[:-1]))
        pixels = decode_jpegs(files, device)
        resized = [self.crop_resize(image, *crop) for image, crop in zip(pixels, (c for c in self.crops if c))
                   if image is not None]
        # float: the GPU's antialiased resize has no uint8 kernel; rounded back to the uint8 of the workers' path,
        # for the whole batch at once (three operators a batch, not three an image: launches on a GPU)
        resized = iter(torch.stack(resized).round_().clamp_(0, 255).to(torch.uint8) if resized else [])
        pixels, worker_decoded = iter(pixels), iter(self.decoded.to(device, non_blocking=True))
        images, kept = [], []
        for crop in self.crops:
            ok = crop is None or next(pixels) is not None
            if ok:
                images.append(next(worker_decoded) if crop is None else next(resized))
            kept.append(ok)
        empty = torch.empty(0, 3, self.size, self.size, dtype=torch.uint8, device=device)
        return (torch.stack(images) if images else empty), kept

    def crop_resize(self, image: torch.Tensor, box: tuple, orientation: int, flip: bool) -> torch.Tensor:
        """A decoded JPEG's crop, resized, mirrored if chosen, in float (decode_here rounds the batch)."""
        image = UPRIGHT[orientation](image)  # (3, H, W) as the photo is seen
        left, top, width, height = box
        crop = image[None, :, top:top + height, left:left + width].float()
        resized = F.interpolate(crop, size=(self.size, self.size), mode=self.interpolation, antialias=True,
                                align_corners=False)[0]
        return resized.flip(-1) if flip else resized


SIDE_STREAMS = {}  # device -> the CUDA stream that batches are copied to it and decoded on (on_side_stream)


def side_stream(device: torch.device) -> torch.cuda.Stream:
    if device not in SIDE_STREAMS:
        SIDE_STREAMS[device] = torch.cuda.Stream(device)
    return SIDE_STREAMS[device]


def on_side_stream(device: torch.device, work) -> tuple:
    """work() -> (tensor on the device, ...) run on the device's side stream, which the training stream then
    waits for: a batch's copy or decoding overlaps the previous step's kernels where, on the training
    stream, it would wait behind them and they then for it. The tensors are made on the side stream and
    used and freed on the training one (record_stream), so their memory is not given to the side stream
    again before the training stream is done with them."""
    stream, training = side_stream(device), torch.cuda.current_stream(device)
    with torch.cuda.stream(stream):
        made = work()
    training.wait_stream(stream)
    for value in made:
        if isinstance(value, torch.Tensor):
            value.record_stream(training)
    return made

UPRIGHT = {  # EXIF orientation -> what makes a decoded (3, H, W) image upright, as PIL's exif_transpose
    1: lambda x: x, 2: lambda x: x.flip(-1), 3: lambda x: x.flip(-1, -2), 4: lambda x: x.flip(-2),
    5: lambda x: x.transpose(-1, -2), 6: lambda x: torch.rot90(x, -1, (-2, -1)),
    7: lambda x: x.flip(-1, -2).transpose(-1, -2), 8: lambda x: torch.rot90(x, 1, (-2, -1))}


def decode_jpegs(files: list, device) -> list:
    """JPEG bytes -> RGB uint8 (3, H, W) tensors on the device, batched (nvJPEG on a GPU). When the batch
    fails, one by one: a file the device does not decode is decoded on the CPU (libjpeg) and moved, so
    that no photo the workers would have kept is lost; None for one that decodes nowhere.
    torchvision's decode_jpeg, deprecated in torchvision 0.29 in favour of TorchCodec, which the GPU
    machines here do not have; it stays until TorchCodec's can replace it."""
    from torchvision.io import ImageReadMode, decode_jpeg
    if not files:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:  # the batch has a broken file: decode one by one to find it
            return [decode_one(data, device) for data in files]


def decode_one(data: torch.Tensor, device):
    """One JPEG's bytes -> RGB uint8 (3, H, W) on the device, decoded there or else on the CPU; or None."""
    from torchvision.io import ImageReadMode, decode_jpeg
    for where in (device, "cpu"):
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=where).to(device)
        except RuntimeError:
            pass
    return None


def build_normalize(train: bool = False, recipe: str = "tutorial", mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Normalize:
    """The batch half of build_transform's pipeline: normalisation, and for the official recipe in
    training random erasing 0.25 (in pixel mode, one box at most, as the official config has it)."""
    return Normalize(mean, std, erasing=0.25 if train and recipe == "official" else 0.0)


class Compose:
    """Apply the steps in order (torchvision's Compose, without importing torchvision: seconds saved
    at every start of predict.py)."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x


def random_horizontal_flip(pixels: torch.Tensor) -> torch.Tensor:
    """Mirror a CHW tensor with probability 1/2 (torchvision's RandomHorizontalFlip, same draw)."""
    return pixels.flip(-1) if torch.rand(1) < 0.5 else pixels


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL RGB image -> uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def build_transform(img_size: int, train: bool, recipe: str = "tutorial", crop_pct: float | None = None,
                    decode: str = "workers", interpolation: str | None = None, crop_mode: str | None = None):
    """Opened image -> uint8 (3, img_size, img_size) tensor; build_normalize's Normalize, on the
    batch, makes the model's input of it. With decode="device" (training, tutorial recipe), a JpegCrop
    instead: the crop and flip chosen, the JPEG left for the device to decode (EncodedBatch).

    tutorial: RandomResizedCrop + horizontal flip, bilinear; eval resizes to img_size / crop_pct
        (256 for 224, the tutorial's int(224 * 1.143)) and center-crops.
    official: the official Swin recipe through timm.data.create_transform: bicubic, RandAugment
        rand-m9-mstd0.5-inc1 (and random erasing 0.25 in pixel mode, in build_normalize); color jitter
        0.4 is passed as the official code passes it, and timm ignores it when RandAugment is on, as there;
        eval as the tutorial's, bicubic, and at 384 px the whole photo squashed to a square (recipe_preprocessing).
    `crop_mode`, `crop_pct` and `interpolation` are evaluation's where the caller knows the model's own (a
    checkpoint's record, weights.evaluation_preprocessing); each not given, the recipe's (recipe_preprocessing).
    """
    if recipe not in RECIPES:
        raise UserError(f"unknown transform recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    if not train:
        given = {"crop_mode": crop_mode, "crop_pct": crop_pct, "interpolation": interpolation}
        preprocessing = recipe_preprocessing(recipe, img_size) | {k: v for k, v in given.items() if v is not None}
        if preprocessing["crop_mode"] not in CROP_MODES:  # a program or checkpoint of a later version's
            raise UserError(f"unknown crop mode {preprocessing['crop_mode']!r}: this version knows "
                            f"{', '.join(CROP_MODES)}")
        return Compose([DecodeCrop(img_size, seen_box(img_size, preprocessing), preprocessing["interpolation"])])
    interpolation = RECIPE_INTERPOLATION[recipe]
    if decode == "device":
        check_decode(decode, recipe)
        return ReadForDevice(img_size, interpolation)
    if recipe == "tutorial":
        return Compose([DecodeCrop(img_size, random_resized_box, interpolation), random_horizontal_flip])
    # imported here: timm and torchvision take seconds to import, and only this recipe needs them
    from timm.data import auto_augment, create_transform
    from torchvision import transforms
    crop_and_flip, augment, _ = create_transform(
        img_size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4,
        interpolation="bicubic", separate=True)
    for op in augment.transforms[0].ops:  # the RandAugment operations
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = posterize
    # timm's RandomResizedCrop decodes the whole image first; ours picks the same kind of box first
    flip = [t for t in crop_and_flip.transforms if isinstance(t, transforms.RandomHorizontalFlip)]
    return Compose([DecodeCrop(img_size, random_resized_box, interpolation, to_tensor=False),
                    *flip, *augment.transforms, pil_to_uint8])


def posterize(image: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, giving for 0 bits the black image older Pillow gave, where Pillow 13 raises
    ValueError: 'rand-m9-mstd0.5-inc1' asks for 0 bits whenever its sampled magnitude reaches 10."""
    from timm.data import auto_augment
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return auto_augment.posterize(image, bits_to_keep, **kwargs)


def check_mixup_batch(mixup_alpha: float, cutmix_alpha: float, batch_size: int) -> None:
    """Mixup and cutmix pair the images of a batch: an odd --batch-size would lose an image from every batch."""
    if (mixup_alpha > 0 or cutmix_alpha > 0) and batch_size % 2:
        raise UserError(f"--batch-size {batch_size} is odd, and mixup and cutmix mix the images of a batch in "
                        f"pairs: use an even batch size, such as {batch_size + 1}")


def check_decode(decode: str, recipe: str) -> None:
    """--decode device decodes and crops on the device, which the tutorial recipe's crop and flip alone allow."""
    if decode == "device" and recipe != "tutorial":
        raise UserError(f"--decode device works with --recipe tutorial (crop and flip): the {recipe} recipe's "
                        "RandAugment runs on decoded images, in the workers. Use --decode workers.")


def build_mixup(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int,
                batch_size: int = None):
    """timm's Mixup/CutMix as the official Swin recipe sets it (per batch, switch probability 0.5),
    or None when both alphas are 0. It mixes images in pairs: an odd --batch-size is an error (it
    would lose an image from every batch)."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
    if batch_size is not None:
        check_mixup_batch(mixup_alpha, cutmix_alpha, batch_size)
    return EvenBatchMixup(mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha,
                          label_smoothing=label_smoothing, num_classes=num_classes)


class EvenBatchMixup:
    """timm's Mixup, which needs an even batch: a batch made odd by a failed image gives up its last image."""

    def __init__(self, **kwargs):
        from timm.data import Mixup
        self.mixup = Mixup(**kwargs)

    def __call__(self, images, labels):
        if len(images) % 2:
            images, labels = images[:-1], labels[:-1]
        return self.mixup(images, labels)


# --- Batches on the device ---

def to_device(images, labels: torch.Tensor, paths: list, device) -> tuple:
    """A loader's batch on the device: (uint8 images, labels, paths of images that failed to decode there).
    A batch of tensors is copied without blocking (it comes pinned), on a GPU on its side stream
    (on_side_stream); an EncodedBatch is decoded there."""
    if not isinstance(images, EncodedBatch):
        def copy():
            return images.to(device, non_blocking=True), labels.to(device, non_blocking=True), []
        return on_side_stream(torch.device(device), copy) if torch.device(device).type == "cuda" else copy()
    images, kept = images.decode(device)
    failed = [path for path, ok in zip(paths, kept) if not ok]
    if failed:  # indexed on the CPU: a boolean index on the GPU would wait for it
        labels = labels[torch.tensor(kept, dtype=torch.bool)]
    return images, labels.to(device, non_blocking=True), failed
