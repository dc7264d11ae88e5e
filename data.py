"""Transforms, datasets and loaders: from the lists of images that images.py makes to batches of tensors.

    from data import load_splits, build_transform, ImageDataset, build_loader
    splits = load_splits("flower_photos")   # or a split root such as data/ (see images.py)
    train_set = ImageDataset(splits.train, build_transform(224, train=True))
    for images, labels, paths, failed_paths in build_loader(train_set, 32, train=True, num_workers=2):
        ...

A file that breaks during training (changed or removed after it was listed) is dropped from its
batch and named in `failed_paths`, so the epoch goes on and the count survives worker processes.

Speed: the crop is chosen from the image header before anything is decoded, so a JPEG is decoded
at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves the crop at least the output
resolution; the crop is resized on uint8 tensors by PyTorch's vectorised antialiased kernel and
normalised in one pass. bench/bench_data.py measures this against torchvision's ImageFolder.
"""
import math
import random
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image
from torch.utils.data import DataLoader, Dataset, default_collate

# The file-level half of the data API, importable from here too, so that one import serves train.py.
from images import (IMAGE_EXTENSIONS, DataSplits, load_rgb, load_splits, read_class_indices,  # noqa: F401
                    upright_rgb, write_class_indices)
from utils import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RECIPES = ("tutorial", "official")


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


def center_box(width: int, height: int, size: int, crop_pct: float):
    """The box that Resize(shorter side to size / crop_pct) then CenterCrop(size) keep, on the original."""
    side = size / math.floor(size / crop_pct) * min(width, height)
    return (width - side) / 2, (height - side) / 2, side, side


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
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        width, height = image.size[::-1] if orientation in (5, 6, 7, 8) else image.size
        left, top, box_w, box_h = self.choose_box(width, height)
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


class NormalizeUint8:
    """uint8 CHW tensor -> float32 (x / 255 - mean) / std, one allocation instead of ToTensor + Normalize's four."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.scale = 1 / (255 * torch.tensor(std).view(3, 1, 1))
        self.shift = -torch.tensor(mean).view(3, 1, 1) / torch.tensor(std).view(3, 1, 1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        out = torch.empty(pixels.shape, dtype=torch.float32)
        return out.copy_(pixels).mul_(self.scale).add_(self.shift)


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


def build_transform(img_size: int, train: bool, recipe: str = "tutorial", mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, crop_pct: float = 0.875):
    """Opened or decoded PIL image -> normalised float (3, img_size, img_size) tensor.

    tutorial: RandomResizedCrop + horizontal flip, bilinear; eval resizes to img_size / crop_pct
        (256 for 224, the tutorial's int(224 * 1.143)) and center-crops.
    official: the official Swin recipe through timm.data.create_transform: bicubic, RandAugment
        rand-m9-mstd0.5-inc1, random erasing 0.25 in pixel mode; color jitter 0.4 is passed as the
        official code passes it, and timm ignores it when RandAugment is on, as there.
    """
    if recipe not in RECIPES:
        raise UserError(f"unknown transform recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    interpolation = "bilinear" if recipe == "tutorial" else "bicubic"
    if not train:
        return Compose([DecodeCrop(img_size, partial(center_box, size=img_size, crop_pct=crop_pct), interpolation),
                        NormalizeUint8(mean, std)])
    if recipe == "tutorial":
        return Compose([DecodeCrop(img_size, random_resized_box, interpolation), random_horizontal_flip,
                        NormalizeUint8(mean, std)])
    # imported here: timm and torchvision take seconds to import, and only this recipe needs them
    from timm.data import auto_augment, create_transform
    from torchvision import transforms
    crop_and_flip, augment, to_tensor = create_transform(
        img_size, is_training=True, auto_augment="rand-m9-mstd0.5-inc1", color_jitter=0.4,
        re_prob=0.25, re_mode="pixel", re_count=1, interpolation="bicubic", mean=mean, std=std,
        separate=True)
    for op in augment.transforms[0].ops:  # the RandAugment operations
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = posterize
    # timm's RandomResizedCrop decodes the whole image first; ours picks the same kind of box first
    flip = [t for t in crop_and_flip.transforms if isinstance(t, transforms.RandomHorizontalFlip)]
    return Compose([DecodeCrop(img_size, random_resized_box, interpolation, to_tensor=False),
                    *flip, *augment.transforms, *to_tensor.transforms])


def posterize(image: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize, giving for 0 bits the black image older Pillow gave, where Pillow 13 raises
    ValueError: 'rand-m9-mstd0.5-inc1' asks for 0 bits whenever its sampled magnitude reaches 10."""
    from timm.data import auto_augment
    if bits_to_keep <= 0:
        return Image.new(image.mode, image.size)
    return auto_augment.posterize(image, bits_to_keep, **kwargs)


def build_mixup(mixup_alpha: float, cutmix_alpha: float, label_smoothing: float, num_classes: int):
    """timm's Mixup/CutMix as the official Swin recipe sets it (per batch, switch probability 0.5),
    or None when both alphas are 0."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return None
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


# --- Datasets and loaders ---

class ImageDataset(Dataset):
    """(path, label) samples through `transform`; item: (tensor, label, path), or (None, label, path) if it fails.

    `transform` receives the image opened but not yet decoded, so that build_transform's
    pipelines can decode at a reduced scale; a plain torchvision pipeline should begin with
    `upright_rgb`.
    """

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return self.transform(image), label, path
        except (OSError, Image.DecompressionBombError):
            return None, label, path  # changed or removed since it was listed: the batch goes on without it


def collate_skipping_failures(batch):
    """(images, labels, paths, failed_paths): the samples that loaded, stacked, with their paths,
    and the paths of those that did not.

    The failed paths travel with the batch, so they reach the training loop from worker processes.
    A batch whose every image failed has no images: `len(labels) == 0`.
    """
    loaded = [(image, label, path) for image, label, path in batch if image is not None]
    failed = [path for image, _, path in batch if image is None]
    if not loaded:
        return torch.empty(0), torch.empty(0, dtype=torch.long), [], failed
    images, labels, paths = zip(*loaded)
    # default_collate stacks straight into shared memory inside a worker: no copy on the way out
    return default_collate(list(images)), torch.tensor(labels), list(paths), failed


def build_loader(dataset, batch_size: int, train: bool, num_workers: int, sampler=None,
                 drop_last: bool | None = None, generator: torch.Generator | None = None) -> DataLoader:
    """Batches of (images, labels, paths, failed_paths); shuffled in training unless a sampler is given.

    `generator` seeds the worker processes; without one, starting the workers draws from (and so
    shifts) the global random stream that dropout and mixup use.
    """
    if drop_last is None:
        # full batches in training, as the official Swin loader has, unless the data cannot fill one
        drop_last = train and len(sampler if sampler is not None else dataset) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      num_workers=num_workers, collate_fn=collate_skipping_failures,
                      pin_memory=torch.cuda.is_available(), drop_last=drop_last,
                      persistent_workers=num_workers > 0, generator=generator)
