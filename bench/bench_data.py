"""Training-input throughput: our loader against torchvision's ImageFolder, same transforms, same workers.

    python bench/bench_data.py                     # the bundled sample: small photos, <= 192 px
    python bench/bench_data.py --upscale 4         # the same, 4x larger JPEGs
    python bench/bench_data.py flower_photos --workers 8 --rounds 7
    python bench/bench_data.py --upscale 3 --workers 15 --batch-size 128 --gpu-decode   # and nvJPEG on a GPU
    python bench/bench_data.py --upscale 21 --max-size 512   # phone-sized photos, and split_data.py's smaller copies

Both pipelines decode a JPEG and take a RandomResizedCrop to --img-size with a horizontal flip, in
a DataLoader with the same workers, batch size and sampler, over the same files. ImageFolder's
workers also normalise with the ImageNet mean and std; ours hand over uint8, which training
normalises once the batch is on its device (on a GPU at no cost): that is not counted here. The
two alternate for --rounds rounds of --images images each (warm file cache, persistent workers,
one warm-up pass each first); the figures are medians of decoded and augmented images per second,
counted from the start of each round to its last batch.
--upscale K benchmarks a copy of the folder enlarged K times (Lanczos, JPEG quality 90), made
before any timing, since the test photos are far smaller than most users' photos. --max-size N times
a third loader, ours over the copies that split_data.py --max-size N would write of those photos, in
the same rounds: what making smaller copies once saves every epoch.
"""
import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules sit at its root
from common import alternating_rounds, print_header  # noqa: E402  (bench/ is on the path)
from utils import counted  # noqa: E402
from config import COUNT, POSITIVE_INT  # noqa: E402
from data import IMAGENET_MEAN, IMAGENET_STD, build_transform  # noqa: E402
from loaders import ImageDataset, build_loader, collate_skipping_failures, pinning  # noqa: E402
from split_folders import place_image  # noqa: E402
from images import BUNDLED_SAMPLE, is_image_file  # noqa: E402
import workers  # noqa: E402
from workers import HELD_BATCHES  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=BUNDLED_SAMPLE,
                        help="class folders of photos (default: samples/flowers)")
    parser.add_argument("--img-size", type=POSITIVE_INT, default=224, help="default: 224")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="default: 32")
    parser.add_argument("--workers", type=COUNT, default=2, help="DataLoader worker processes, for both (default: 2)")
    parser.add_argument("--rounds", type=POSITIVE_INT, default=5,
                        help="timed rounds per pipeline, alternating (default: 5)")
    parser.add_argument("--images", type=POSITIVE_INT, default=640, help="images per round (default: 640)")
    parser.add_argument("--upscale", type=POSITIVE_INT, default=1,
                        help="benchmark a copy enlarged this many times (default: 1, the photos as they are)")
    parser.add_argument("--max-size", type=POSITIVE_INT, default=None,
                        help="also time ours over split_data.py --max-size copies of the photos (default: off)")
    parser.add_argument("--gpu-decode", action="store_true",
                        help="also time the GPU's side of train.py --decode device (batched nvJPEG decoding, crop, "
                             "resize) on batches read beforehand: what it adds to each training step (default: off)")
    return parser.parse_args()


def main():
    args = parse_args()
    print_header()
    with tempfile.TemporaryDirectory() as scratch:
        folder = upscaled_copy(args.folder, args.upscale, Path(scratch)) if args.upscale > 1 else args.folder
        reference = datasets.ImageFolder(folder, transform=transforms.Compose([
            transforms.RandomResizedCrop(args.img_size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        sizes = sorted(Image.open(path).size for path, _ in reference.samples)
        print(f"folder: {args.folder}{f', enlarged {args.upscale}x' if args.upscale > 1 else ''}: "
              f"{len(reference.samples)} images, median size {sizes[len(sizes) // 2][0]}x"
              f"{sizes[len(sizes) // 2][1]}, largest {max(sizes)[0]}x{max(sizes)[1]}")
        ours = ImageDataset(reference.samples, build_transform(args.img_size, train=True))
        if torch.cuda.is_available():  # as in a GPU run, whose model is there first: build_loader pins (pinning)
            torch.cuda.init()
        loaders = {
            "torchvision ImageFolder": DataLoader(
                reference, args.batch_size, sampler=RandomSampler(reference, num_samples=args.images),
                num_workers=args.workers, drop_last=True, persistent_workers=args.workers > 0,
                # as build_loader's: the same worker priority (workers.NICE) and pinning, or a loaded machine
                # starves ours' workers alone (nice 10) and the ratio measures the load
                pin_memory=pinning(),
                worker_init_fn=partial(workers.start_loader_worker, nice=workers.NICE)),
            "data.py": build_loader(ours, args.batch_size, train=True, num_workers=args.workers,
                                    sampler=RandomSampler(ours, num_samples=args.images)),
        }
        if args.max_size:
            copies = ImageDataset(smaller_copies(reference.samples, folder, args.max_size, Path(scratch) / "smaller"),
                                  build_transform(args.img_size, train=True))
            loaders[f"data.py, --max-size {args.max_size}"] = build_loader(
                copies, args.batch_size, train=True, num_workers=args.workers,
                sampler=RandomSampler(copies, num_samples=args.images))
        print(f"{args.img_size} px, batch {args.batch_size}, {counted(args.workers, 'worker')}, "
              f"{counted(args.rounds, 'round')} x {args.images} images, alternating")
        medians = alternating_rounds({name: partial(images_per_second, loader) for name, loader in loaders.items()},
                                     args.rounds)  # the warm-up pass starts the workers and fills the file cache
        print(f"ratio data.py / ImageFolder: {medians['data.py'] / medians['torchvision ImageFolder']:.2f}x")
        if args.max_size:
            print(f"ratio data.py over --max-size {args.max_size} copies / over the photos: "
                  f"{medians[f'data.py, --max-size {args.max_size}'] / medians['data.py']:.2f}x")
        # the hand-over: from the workers' shared memory to the training process, one batch taken before timing
        if args.workers == 0:
            print("no hand-over with --workers 0: the training process decodes the batches itself")
        elif args.images // args.batch_size < 2:
            print("the hand-over needs 2 batches a round or more: raise --images")
        for held in (0, HELD_BATCHES) if args.workers and args.images // args.batch_size >= 2 else ():
            loader = build_loader(ours, args.batch_size, train=True, num_workers=args.workers, held_batches=held,
                                  sampler=RandomSampler(ours, num_samples=args.images))
            total, freeing = hand_over_cpu(loader, args.images // args.batch_size)
            print(f"data.py, workers keeping their last {held} batches: each batch costs the training process "
                  f"{total:.1f} ms of CPU, taken from the workers and freed"
                  + (f" ({freeing:.1f} ms of it freeing)" if freeing is not None else ""))
        if args.gpu_decode:
            device = "cuda" if torch.cuda.is_available() else "cpu"  # without a GPU: the same code, as a check
            print(f"train.py --decode device, the device's side ({device}: batched decoding of {args.batch_size}, "
                  f"crop, resize): {gpu_decode_rate(args, reference.samples, device):.0f} images/s")


def gpu_decode_rate(args, samples, device: str = "cuda") -> float:
    """Images per second of the device's side of train.py --decode device (EncodedBatch.decode: batched
    JPEG decoding, then each image cropped, resized and mirrored) on batches that the workers' side
    (ReadForDevice, collated) made beforehand; device "cpu" runs the same code, to check it without a GPU."""
    read = ImageDataset(samples, build_transform(args.img_size, train=True, decode="device"))
    items = [read[i % len(read)] for i in range(args.images)]
    batches = [collate_skipping_failures(items[i:i + args.batch_size])[0]
               for i in range(0, args.images, args.batch_size)]

    def one_pass():
        for batch in batches:
            batch.decode(device)
        if device == "cuda":
            torch.cuda.synchronize()

    one_pass()  # warm-up: nvJPEG handles, allocator
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        one_pass()
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def hand_over_cpu(loader, batches: int) -> tuple:
    """Per batch, the CPU time (ms) of the training process's own threads (the main one; on a GPU machine also
    the loader's pinning thread) in taking a batch from the workers and freeing it: the worker's collated batch
    is shared memory, which the training process, its last holder, unmaps, and the kernel then frees its
    pages, while that process has the GPU's work to launch. Counted over a round of the loader with its
    workers' queues full (a pause first), so that it is not time spent waiting. Also the part of it that
    freeing takes, in the main thread, where the main thread is the last holder (no pinning thread)."""
    batch_iter = iter(loader)
    next(batch_iter)
    time.sleep(2.0)  # the workers fill their queues: what follows takes ready batches
    start, freeing, count = time.process_time(), [], 0
    for batch in batch_iter:
        freed_at = time.thread_time()
        del batch
        freeing.append(time.thread_time() - freed_at)
        count += 1
        if count == batches:
            break
    total = (time.process_time() - start) / max(count, 1) * 1e3
    return total, None if loader.pin_memory else statistics.median(freeing) * 1e3


def images_per_second(loader) -> float:
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch[1])
    return count / (time.perf_counter() - start)


def upscaled_copy(folder: Path, factor: int, scratch: Path) -> Path:
    """Each class folder's photos (any format train.py reads: a folder of .jpeg or .png too), `factor` times
    larger, as JPEGs: photo-sized files from the bundled small ones."""
    for path in sorted(path for path in folder.glob("*/*") if is_image_file(path)):
        with Image.open(path) as image:
            large = image.convert("RGB").resize((image.width * factor, image.height * factor), Image.LANCZOS)
        (scratch / path.parent.name).mkdir(exist_ok=True)
        large.save(scratch / path.parent.name / f"{path.stem}.jpg", quality=90)
    return scratch


def smaller_copies(samples: list, folder: Path, max_size: int, scratch: Path) -> list:
    """The samples as split_data.py --max-size writes them (split_folders.place_image), in `scratch`."""
    copied = []
    for path, label in samples:
        target = scratch / Path(path).relative_to(folder)
        place_image(Path(path), target, "copy", max_size)
        copied.append((str(target), label))
    return copied


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
