"""loaders.py: the order of training, exact to resume, and the loaders that serve it."""
import time

import torch

import loaders
from loaders import build_loader


def test_epoch_sampler_is_deterministic_sharded_and_resumable():
    def take(sampler):
        return [i for i, _ in sampler]

    a = loaders.EpochSampler(10, seed=3, rank=0, world_size=2)
    b = loaders.EpochSampler(10, seed=3, rank=1, world_size=2)
    first = take(a)
    assert first == take(loaders.EpochSampler(10, seed=3, rank=0, world_size=2))  # same seed, same order
    assert sorted(first + take(b)) == list(range(10))  # ranks split the epoch
    a.set_epoch(1)
    assert take(a) != first  # a new shuffle every epoch
    full = loaders.EpochSampler(10, seed=3)
    full.set_epoch(1)
    rest = loaders.EpochSampler(10, seed=3)
    rest.set_epoch(1, skip=4)
    assert list(rest) == list(full)[4:] and len(rest) == 6  # a mid-epoch resume sees the rest, with the same seeds
    # and under torchrun, each process its own share's rest (a skip counts its own samples, not the epoch's)
    for rank in (0, 1):
        whole = loaders.EpochSampler(10, seed=3, rank=rank, world_size=2)
        whole.set_epoch(1)
        resumed = loaders.EpochSampler(10, seed=3, rank=rank, world_size=2)
        resumed.set_epoch(1, skip=2)
        assert list(resumed) == list(whole)[2:] and len(resumed) == 3
    past = loaders.EpochSampler(3, seed=0)
    past.set_epoch(0, skip=4)  # past this process's share (a tiny epoch resumed after its only batch): none left
    assert len(past) == 0 and list(past) == []


def test_evaluation_shards_take_every_image_once_over_the_processes():
    """Under DDP each process evaluates its share: together every image once, none twice (no padding), none
    left out, whatever the count over the processes (10 over 3 here)."""
    import argparse
    samples = [(f"{i}.jpg", i % 2) for i in range(10)]
    cfg = argparse.Namespace(batch_size=4, workers=0)
    shards = [list(loaders.build_eval_loader(samples, None, cfg, rank, 3).sampler) for rank in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))
    assert [len(shard) for shard in shards] == [4, 3, 3]


def epoch_batches_of(images: int, epoch: int, size: int) -> list:
    """An epoch's full batches of an EpochSampler of `images` (seed 3)."""
    sampler = loaders.EpochSampler(images, seed=3)
    sampler.set_epoch(epoch)
    draws = list(sampler)
    return [draws[i:i + size] for i in range(0, len(draws) - size + 1, size)]


def test_epoch_batches_run_epoch_after_epoch_from_any_start():
    def epoch_batches(epoch, size):
        return epoch_batches_of(10, epoch, size)

    batches = loaders.EpochBatches(loaders.EpochSampler(10, seed=3), 4)
    assert len(batches) == 2 and batches.drop_last  # 10 images: two full batches an epoch, the rest dropped
    stream = iter(batches)
    assert [next(stream) for _ in range(6)] == epoch_batches(0, 4) + epoch_batches(1, 4) + epoch_batches(2, 4)
    batches.start(epoch=1, batches_done=1)  # a resume in epoch 2, after its first batch
    stream = iter(batches)
    assert [next(stream) for _ in range(3)] == epoch_batches(1, 4)[1:] + epoch_batches(2, 4)
    small = loaders.EpochBatches(loaders.EpochSampler(3, seed=0), 4)  # cannot fill a batch: keeps what it has
    assert len(small) == 1 and len(next(iter(small))) == 3
    small.start(epoch=0, batches_done=1)  # resumed after that epoch's only batch: the next epoch's
    sampler = loaders.EpochSampler(3, seed=0)
    sampler.set_epoch(1)
    assert next(iter(small)) == list(sampler)
    even = loaders.EpochBatches(loaders.EpochSampler(8, seed=3), 4)  # the images fill whole batches: none dropped
    stream = iter(even)
    assert len(even) == 2 and [next(stream) for _ in range(4)] == [
        batch for epoch in (0, 1) for batch in epoch_batches_of(8, epoch, 4)]
    taken = loaders.Take(iter(batches), 2)
    assert len(taken) == 2 and len(list(taken)) == 2


class LoggedLoads(torch.utils.data.Dataset):
    """Writes a file per item a worker loads, so that the test sees what the workers have done."""

    def __init__(self, folder):
        self.folder = folder

    def __len__(self):
        return 12

    def __getitem__(self, key):
        index, seed = key
        (self.folder / f"{seed}").touch()
        return torch.zeros(1, dtype=torch.uint8), 0, str(index)


def test_the_workers_go_on_to_the_next_epoch_before_it_starts(tmp_path):
    """With one iterator for all epochs, the next epoch's first images are loading while this epoch's
    last batches train (and while the model is evaluated), not after."""
    batches = loaders.EpochBatches(loaders.EpochSampler(12, seed=0), 4)
    loader = build_loader(LoggedLoads(tmp_path), 4, train=True, num_workers=2, batch_sampler=batches)
    stream = iter(loader)
    first_epoch = list(loaders.Take(stream, len(loader)))
    assert len(first_epoch) == 3
    for _ in range(100):  # the workers are separate processes: give them up to 5 s
        if len(list(tmp_path.iterdir())) > 12:
            break
        time.sleep(0.05)
    assert len(list(tmp_path.iterdir())) > 12  # second-epoch draws (each its own seed) loaded already
    assert len(list(loaders.Take(stream, len(loader)))) == 3


def test_seeded_dataset_gives_the_same_sample_for_the_same_seed():
    class Noise(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.rand(3)

    data = loaders.SeededDataset(Noise())
    torch.manual_seed(0)
    outside = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(data[(2, 123)], data[(2, 123)])
    assert not torch.equal(data[(2, 123)], data[(2, 124)])
    assert torch.equal(torch.rand(1), outside)  # the main process's generator is left as it was
