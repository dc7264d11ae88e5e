"""The datasets and loaders behind train.py and predict.py: which images each step gets, in what order, and their
randomness; batches of (images, labels, paths, failed_paths).

    from loaders import ImageDataset, build_loader
    train_set = ImageDataset(splits.train, build_transform(224, train=True))   # splits: splits.load_splits
    for images, labels, paths, failed_paths in build_loader(train_set, 32, train=True, num_workers=2):
        ...

A file that breaks during training (changed or removed after it was listed) is dropped from its
batch and named in `failed_paths`, so the epoch goes on and the count survives worker processes.

The order of training is exact to resume: each epoch's shuffle (or class-balanced draw) comes from
(seed, epoch) alone and each sample's augmentation from a seed of its own, so a run stopped and
resumed, with any worker count, sees the same images augmented the same way as one that ran
straight through. Under DDP each rank takes its share of the same draw; evaluation sees every
image exactly once over all ranks. One loader iterator serves the whole run (EpochBatches), so
its workers never wait for an epoch to start.
"""
import itertools
import math
import random
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

import workers
from data import EncodedBatch, JpegCrop, build_transform
from images import UNREADABLE, open_image
from utils import seed_everything
from workers import batches_to_hold


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
            with open_image(path) as image:
                return self.transform(image), label, path
        except UNREADABLE:
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
    if any(isinstance(image, JpegCrop) for image in images):  # --decode device
        return EncodedBatch.collate(list(images)), torch.tensor(labels), list(paths), failed
    # default_collate stacks straight into shared memory inside a worker: no copy on the way out
    stacked = default_collate(list(images))
    workers.hold(stacked)
    return stacked, torch.tensor(labels), list(paths), failed


def build_loader(dataset, batch_size: int, train: bool, num_workers: int, sampler=None,
                 drop_last: bool | None = None, generator: torch.Generator | None = None,
                 batch_sampler=None, held_batches: int = 0) -> DataLoader:
    """Batches of (images, labels, paths, failed_paths); shuffled in training unless a sampler is given,
    or made by a `batch_sampler` (loaders.EpochBatches), which then replaces the batch size,
    sampler and drop_last. Each worker keeps its last `held_batches` batches (workers.HELD_BATCHES), and runs
    at a lower priority than the training process (workers.NICE).

    `generator` seeds the worker processes; without one, starting the workers draws from (and so
    shifts) the global random stream that dropout and mixup use.
    """
    common = dict(num_workers=num_workers, collate_fn=collate_skipping_failures, pin_memory=pinning(),
                  persistent_workers=num_workers > 0, generator=generator,
                  worker_init_fn=partial(workers.start_loader_worker, held_batches=held_batches, nice=workers.NICE))
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **common)
    if drop_last is None:
        # full batches in training, as the official Swin loader has, unless the data cannot fill one
        drop_last = train and len(sampler if sampler is not None else dataset) >= batch_size
    return DataLoader(dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler,
                      drop_last=drop_last, **common)


def pinning() -> bool:
    """Whether batches are pinned for their copy to a GPU: where this process uses one (the model is on it before the
    loaders are built). A --device cpu run on a GPU machine pins none: its pinning thread would make a CUDA context on
    GPU 0 in every process, memory there for nothing."""
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def shuffle_seed(seed: int, epoch: int) -> int:
    """An epoch's shuffle seed from --seed and the epoch, far apart for neighbouring seeds, within what a
    torch.Generator takes (a signed 64-bit number) for any --seed."""
    return (seed * 1_000_003 + epoch) * 10_000_019 % 2**63


class EpochSampler(torch.utils.data.Sampler):
    """A fresh shuffle each epoch, drawn from (seed, epoch) alone; this rank's share of it; from a
    given sample on (mid-epoch resume). Yields (index, sample_seed) for SeededDataset."""

    def __init__(self, num_samples: int, seed: int, rank: int = 0, world_size: int = 1):
        self.num_samples, self.seed, self.rank, self.world_size = num_samples, seed, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def epoch_draws(self, seed: int) -> list:
        """The whole epoch's (index, sample_seed) pairs, for all ranks together."""
        order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(seed))
        return [(i, (seed + i) % 2**63) for i in order.tolist()]

    def __iter__(self):
        draws = self.epoch_draws(shuffle_seed(self.seed, self.epoch))
        per_rank = math.ceil(self.num_samples / self.world_size)
        draws = (draws * math.ceil(per_rank * self.world_size / self.num_samples))[:per_rank * self.world_size]
        return iter(draws[self.rank::self.world_size][self.skip:])

    def __len__(self):  # a skip past this process's share (a resume after the epoch's last batch) leaves none
        return max(0, math.ceil(self.num_samples / self.world_size) - self.skip)


class BalancedSampler(EpochSampler):
    """EpochSampler for imbalanced classes (--balance sampler): an epoch of the same length, drawn
    so that every class comes up equally often (the remainder of the division going to classes
    drawn at random). Within a class, images are taken in a shuffled order, reshuffled each time
    the class runs out: a small class repeats its images, a large one shows a different subset
    each epoch. Each draw gets its own augmentation seed, so a repeated image is augmented anew.
    Deterministic per (seed, epoch), sharded and resumable exactly as EpochSampler."""

    def __init__(self, labels: list[int], seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(len(labels), seed, rank, world_size)
        labels = torch.as_tensor(labels)
        self.by_class = [(labels == c).nonzero().flatten() for c in labels.unique().tolist()]
        # the draws that are trained, over all ranks (EpochBatches sets it: the whole batches' share); the classes are
        # balanced within them, and again within the rest, which a loader dropping its last batch leaves out
        self.trained = self.num_samples

    def epoch_draws(self, seed: int) -> list:
        generator = torch.Generator().manual_seed(seed)
        classes = len(self.by_class)
        trained = min(self.trained, self.num_samples)

        def quotas(count: int) -> list:
            share = torch.full((classes,), count // classes)
            if count:  # none left over (no batch dropped): the draws as before the split into trained and the rest
                share[torch.randperm(classes, generator=generator)[:count % classes]] += 1
            return share.tolist()

        head, tail = [], []
        for members, first, rest in zip(self.by_class, quotas(trained), quotas(self.num_samples - trained)):
            cycles = [members[torch.randperm(len(members), generator=generator)]
                      for _ in range(math.ceil((first + rest) / len(members)))]
            picks = torch.cat(cycles)
            head.append(picks[:first])
            tail.append(picks[first:first + rest])
        # rank r takes positions r, r + world_size, ...: the first `trained` positions are every rank's whole batches
        order = torch.cat([torch.cat(head)[torch.randperm(trained, generator=generator)],
                           torch.cat(tail)[torch.randperm(self.num_samples - trained, generator=generator)]])
        return [(i, (seed + position) % 2**63) for position, i in enumerate(order.tolist())]


class EpochBatches(torch.utils.data.Sampler):
    """The training loader's batch sampler: batches of an EpochSampler's draws, epoch after epoch, without end.

    One loader iterator then serves the whole run, and its workers go on to the next epoch's images
    while this epoch's last batches train and while the model is evaluated. With an iterator per epoch
    they stood idle at each epoch's end and all started at once at the next one's: on an H200 with 15
    workers and epochs of 30 batches, a sixth of the time went waiting for data. Batches are full (the
    official loader drops a smaller last one) unless the data cannot fill one. len() is one whole
    epoch's batches; start() sets where the next iterator begins (epoch, batches done: a resume).
    """

    def __init__(self, sampler: EpochSampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.per_rank = math.ceil(sampler.num_samples / sampler.world_size)
        self.drop_last = self.per_rank >= batch_size
        self.epoch, self.batches_done = 0, 0
        if isinstance(sampler, BalancedSampler):  # its classes balanced over the draws that whole batches train
            sampler.trained = len(self) * batch_size * sampler.world_size if self.drop_last else sampler.num_samples

    def start(self, epoch: int, batches_done: int = 0) -> None:
        self.epoch, self.batches_done = epoch, batches_done

    def __len__(self) -> int:
        return self.per_rank // self.batch_size if self.drop_last else math.ceil(self.per_rank / self.batch_size)

    def __iter__(self):
        epoch, skip = self.epoch, self.batches_done
        while True:
            self.sampler.set_epoch(epoch, skip=skip * self.batch_size)
            draws = list(self.sampler)
            for begin in range(0, len(draws), self.batch_size):
                if begin + self.batch_size <= len(draws) or not self.drop_last:
                    yield draws[begin:begin + self.batch_size]
            epoch, skip = epoch + 1, 0


class Take:
    """The next `count` items of an iterator, with a len(): one epoch of an EpochBatches loader's stream."""

    def __init__(self, iterator, count: int):
        self.iterator, self.count = iterator, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        return itertools.islice(self.iterator, self.count)


class SeededDataset(torch.utils.data.Dataset):
    """Draws each sample's augmentation from its own seed, so the same (seed, epoch, index) gives
    the same image whatever the worker count, worker reuse or a resume in between."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        in_main_process = torch.utils.data.get_worker_info() is None
        if in_main_process:  # leave the main process's generators (dropout, mixup) as they were
            saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
        seed_everything(seed, gpus=False)
        try:
            return self.dataset[index]
        finally:
            if in_main_process:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


# --- The loaders ---

def build_train_loader(cfg, samples: list, img_size: int, rank: int = 0, world_size: int = 1):
    """(loader, its EpochBatches) of the training images: each epoch a fresh shuffle (or class-balanced
    draw) from (seed, epoch), this rank's share of it, uint8 crops made by cfg.workers processes; one
    iterator of the loader runs through every epoch."""
    transform = build_transform(img_size, train=True, recipe=cfg.recipe, decode=cfg.decode)
    train_set = SeededDataset(ImageDataset(samples, transform))
    sampler = (BalancedSampler([label for _, label in samples], cfg.seed, rank, world_size)
               if cfg.balance == "sampler" else EpochSampler(len(train_set), cfg.seed, rank, world_size))
    epoch_batches = EpochBatches(sampler, cfg.batch_size)
    held = batches_to_hold(cfg.workers, cfg.batch_size * 3 * img_size ** 2) if cfg.decode == "workers" else 0
    loader = build_loader(train_set, cfg.batch_size, train=True, num_workers=cfg.workers, batch_sampler=epoch_batches,
                          generator=torch.Generator().manual_seed(cfg.seed), held_batches=held)
    return loader, epoch_batches


def build_eval_loader(samples, transform, cfg, rank: int, world_size: int):
    """Every sample exactly once over all ranks (no padding), in order."""
    shard = list(range(rank, len(samples), world_size))
    return build_loader(ImageDataset(samples, transform), cfg.batch_size, train=False, num_workers=cfg.workers,
                        sampler=shard, generator=torch.Generator())


def training_batch_size(cfg, epoch_batches) -> int:
    """The images a training step's forward pass takes: a full batch, or where this process's share of the training
    set is smaller than one, that share (EpochBatches), one image fewer where mixup pairs an odd count
    (data.EvenBatchMixup). What CudaGraphed.capture_ahead captures for: another shape runs eagerly, unsaid."""
    size = cfg.batch_size if epoch_batches.drop_last else epoch_batches.per_rank
    return size - size % 2 if cfg.mixup > 0 or cfg.cutmix > 0 else size
