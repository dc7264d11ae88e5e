"""Prediction throughput: predict.py's pipeline against the tutorial's one-image-at-a-time loop, same model;
with --onnx also predict.py running the model exported to ONNX (ONNX Runtime) against the checkpoint.

    python bench/bench_predict.py                          # the bundled sample x3 = 300 photos, swin_micro, 128 px
    python bench/bench_predict.py --model swin_tiny_patch4_window7_224 --copies 1
    python bench/bench_predict.py --model swin_tiny_patch4_window7_224 --copies 1 --onnx
    python bench/bench_predict.py flower_photos --copies 1 --weights runs/<name>/best.pth

The folder's photos are copied --copies times into a temporary folder (the bundled sample has 100; the
copies are byte-identical, and every file is read once per round either way). Both pipelines take
the file list to class probabilities with the same model in eval mode:
  tutorial: for each file, Image.open().convert("RGB"), Resize(int(size * 1.143)) + CenterCrop +
            ToTensor + Normalize, then softmax(model(img.unsqueeze(0))) under torch.no_grad();
  predict.py: list_images + classify (decoding at reduced JPEG scale, batches, loader processes,
            inference mode), with its default --batch-size and --workers unless given here;
  predict.py .onnx (--onnx): the same with `--weights model.onnx`, the checkpoint exported by
            `predict.py --export model.onnx` into the temporary folder (not timed), run by ONNX Runtime;
            and its int8 and fp16 programs, as `--export-int8` and `--export-fp16` convert it; each program's
            file size is printed beside its ratio.
Without --weights the model has random weights (written as a train.py checkpoint): speed does not
depend on them. The pipelines alternate for --rounds rounds after one warm-up pass each; the
figures are medians of images per second.
"""
import argparse
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project's modules sit at its root
sys.path.insert(0, str(Path(__file__).resolve().parent))
import predict  # noqa: E402
from images import BUNDLED_SAMPLE, list_images  # noqa: E402
from common import alternating_rounds, print_header  # noqa: E402
from config import COUNT, POSITIVE_INT  # noqa: E402
from data import IMAGENET_MEAN, IMAGENET_STD, Normalize, build_transform, recipe_preprocessing  # noqa: E402
from evaluation import classify  # noqa: E402
from export import ExportedClassifier, OnnxClassifier, export_onnx, fp16_program, int8_program  # noqa: E402
from precision import amp_dtype  # noqa: E402
from utils import tune_for  # noqa: E402
from model import create_model  # noqa: E402
from weights import describe_for_checkpoint, load_classifier  # noqa: E402


def images_per_second(run) -> float:
    start = time.perf_counter()
    done = len(run())
    return done / (time.perf_counter() - start)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=BUNDLED_SAMPLE,
                        help="a folder of photos, any depth (default: samples/flowers)")
    parser.add_argument("--copies", type=POSITIVE_INT, default=3,
                        help="copies of the folder's photos to classify (default: 3)")
    parser.add_argument("--model", default="swin_micro_patch4_window4_128",
                        help="default: swin_micro_patch4_window4_128")
    parser.add_argument("--img-size", type=POSITIVE_INT, help="default: the variant's")
    parser.add_argument("--weights", type=Path, help="a train.py checkpoint (default: random weights)")
    parser.add_argument("--batch-size", type=POSITIVE_INT, help="predict.py's (default: its default)")
    parser.add_argument("--workers", type=COUNT, help="predict.py's (default: its default)")
    parser.add_argument("--amp", help="predict.py's --amp (default: its default, off on a CPU)")
    parser.add_argument("--rounds", type=POSITIVE_INT, default=2, help="timed rounds per pipeline, alternating (default: 2)")
    parser.add_argument("--onnx", action="store_true", help="also time predict.py with the model exported to "
                        "ONNX (needs requirements-export.txt; default: off)")
    return parser.parse_args()


def main():
    args = parse_args()
    print_header()
    tune_for(torch.device("cpu"))  # as predict.py does (the tutorial's loop, one image at a time, gains nothing)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = scratch / "photos"
        sources = list_images([str(args.folder)])
        for copy in range(args.copies):
            for i, source in enumerate(sources):
                target = folder / f"copy{copy}" / Path(source).parent.name / f"{i:05d}{Path(source).suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        weights = args.weights or random_checkpoint(args.model, args.img_size, scratch / "random.pth")
        cli = ["--weights", str(weights)] + (["--img-size", str(args.img_size)] if args.img_size else [])
        cli += [f"--{flag.replace('_', '-')}={value}" for flag, value in vars(args).items()
                if flag in ("batch_size", "workers", "amp") and value is not None]
        options = predict.build_parser().parse_args([str(folder), "--no-progress", *cli])
        clf = load_classifier(options.weights, img_size=options.img_size)
        model, size = clf.model.eval(), clf.model.img_size
        count = len(list_images([str(folder)]))
        print(f"{count} photos ({len(sources)} from {args.folder}, x{args.copies}); {model.variant} at {size} px, "
              f"{'random weights' if args.weights is None else args.weights}; predict.py: batch "
              f"{options.batch_size}, {options.workers or 0} workers, amp {options.amp}")

        def ours(model=model, normalize=True) -> list:
            """The class probabilities of each photo read."""
            paths = list_images([str(folder)])
            transform = build_transform(size, train=False, crop_pct=clf.crop_pct, crop_mode=clf.crop_mode,
                                        interpolation=clf.interpolation)
            normalizer = Normalize(clf.mean, clf.std) if normalize else None  # an .onnx takes the uint8 crop
            amp = None if isinstance(model, ExportedClassifier) else amp_dtype(options.amp, torch.device("cpu"))
            return [probs for _, probs, _ in
                    classify(model, paths, transform, normalizer, torch.device("cpu"), amp, options.batch_size,
                             options.workers or 0, progress=False)  # as predict.py runs on a CPU
                    if probs is not None]

        tutorial_transform = transforms.Compose([
            transforms.Resize(int(size * 1.143)), transforms.CenterCrop(size), transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

        def tutorial() -> list:
            probs = []
            for path in sorted(folder.glob("*/*/*")):
                image = tutorial_transform(Image.open(path).convert("RGB"))
                with torch.no_grad():
                    probs.append(torch.softmax(model(image.unsqueeze(0)).squeeze(0), dim=0))
            return probs

        pipelines = {"tutorial loop": tutorial, "predict.py": ours}
        programs = {}
        if args.onnx:  # exported once: the int8 and fp16 programs convert the fp32 one, as --export-int8 does
            fp32, int8, fp16 = scratch / "fp32.onnx", scratch / "int8.onnx", scratch / "fp16.onnx"
            export_onnx(clf, fp32, torch.device("cpu"))
            int8.write_bytes(int8_program(fp32.read_bytes(), int8))
            fp16.write_bytes(fp16_program(fp32.read_bytes(), fp16))
            programs = {"predict.py .onnx": fp32, "predict.py int8 .onnx": int8, "predict.py fp16 .onnx": fp16}
        for name, path in programs.items():
            pipelines[name] = partial(ours, OnnxClassifier(path), normalize=False)
        medians = alternating_rounds({name: partial(images_per_second, run) for name, run in pipelines.items()},
                                     args.rounds, digits=1)  # the warm-up pass builds layouts and thread pools
        want = torch.stack(pipelines["predict.py"]())  # photos x classes
        got = {name: torch.stack(pipelines[name]()) for name in programs}
        sizes = {name: path.stat().st_size / 1e6 for name, path in programs.items()}
    print(f"ratio predict.py / tutorial loop: {medians['predict.py'] / medians['tutorial loop']:.2f}x")
    for name, probs in got.items():
        same, off = (probs.argmax(1) == want.argmax(1)).sum(), (probs - want).abs()
        print(f"ratio {name} / predict.py checkpoint: {medians[name] / medians['predict.py']:.2f}x; the same top "
              f"class as the checkpoint for {same} of {len(want)} photos, probabilities within "
              f"{off.max():.2g} of its ({off.mean():.2g} on average); {sizes[name]:.1f} MB")


def random_checkpoint(variant: str, img_size, path: Path) -> Path:
    """A train.py-style checkpoint of a randomly initialised model."""
    model = create_model(variant, num_classes=5, **({"img_size": img_size} if img_size else {}))
    classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    preprocessing = recipe_preprocessing("tutorial", model.img_size)
    torch.save({**describe_for_checkpoint(model, classes, preprocessing), "model": model.state_dict()}, path)
    return path


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
