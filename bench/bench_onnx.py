"""ONNX Runtime alone on exported programs: the attention path an export traces, fp32 and int8, side by side.

    python bench/bench_onnx.py                                         # swin_tiny, batch 32, 224 px
    python bench/bench_onnx.py --model swinv2_tiny_patch4_window8_256 --batch-size 8
    python bench/bench_onnx.py --attention plain --batch-size 8 --static-int8   # int8 calibrated beforehand too

Exports one randomly initialised model once per attention path (export.export_onnx's attention_kind:
`plain`, its default, export.ONNX_ATTENTION, adds the bias by broadcasting; `sdpa` expands it to every
window first), quantizes each to int8 as --export-int8 does, and times
ONNX Runtime's session.run (CPU, its default threads) on one batch of random uint8 images, the
programs alternating round after round. No decoding and no predict.py around it (bench_predict.py
times the whole pipeline). Figures are images per second, medians of the rounds; the programs' logits
are compared with the first one's. With --static-int8 a third program of each path has its matrix
products' inputs quantized with scales calibrated beforehand on 32 bundled photos (ONNX Runtime's static
quantization), the way --export-int8 does not go (docs/prediction.md: int8).
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common import alternating_rounds, print_header  # noqa: E402  (bench/ is on the path)
from config import POSITIVE_INT  # noqa: E402
import export  # noqa: E402
from data import build_transform  # noqa: E402
from images import BUNDLED_SAMPLE  # noqa: E402
from model import create_model  # noqa: E402
from weights import Classifier  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swin_tiny_patch4_window7_224")
    p.add_argument("--img-size", type=POSITIVE_INT, help="default: the variant's")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=32, help="default: 32, predict.py's")
    p.add_argument("--attention", nargs="+", choices=["plain", "sdpa"], default=["plain", "sdpa"])
    p.add_argument("--rounds", type=POSITIVE_INT, default=5, help="default: 5")
    p.add_argument("--static-int8", action="store_true", help="also an int8 program calibrated on bundled photos")
    return p.parse_args()


def static_int8(fp32: Path, path: Path, size: int) -> None:
    """The fp32 program's matrix products and convolution in int8, their inputs' scales calibrated on 32
    bundled photos cropped as predict.py crops them (ONNX Runtime's static quantization, QDQ operators)."""
    from onnxruntime import quantization
    crop = build_transform(size, train=False).transforms[0]
    photos = []
    for photo in sorted(BUNDLED_SAMPLE.glob("*/*.jpg"))[::3][:32]:
        with Image.open(photo) as image:
            photos.append(crop(image).numpy())
    calibration = np.stack(photos)

    class Photos(quantization.CalibrationDataReader):
        batches = iter([{"images": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.batches, None)
    logging.disable(logging.WARNING)  # its advice to pre-process first, as export.int8_program leaves it out
    try:
        quantization.quantize_static(fp32, path, Photos(), quant_format=quantization.QuantFormat.QDQ,
                                     op_types_to_quantize=["MatMul", "Conv", "Gemm"],
                                     activation_type=quantization.QuantType.QUInt8,
                                     weight_type=quantization.QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def main():
    args = parse_args()
    print_header()
    ort = export.onnx_packages(Path("model.onnx"))
    torch.manual_seed(0)
    model = create_model(args.model, num_classes=5, **({"img_size": args.img_size} if args.img_size else {})).eval()
    clf = Classifier(model, [f"class{i}" for i in range(5)], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875,
                     "center", "bilinear", Path("random.pth"))
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, 3, model.img_size, model.img_size),
                                               dtype=np.uint8)
    print(f"# {model.variant} at {model.img_size} px, random weights, batch {args.batch_size}", flush=True)
    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in args.attention:
            fp32, int8 = Path(scratch) / f"{kind}.onnx", Path(scratch) / f"{kind}_int8.onnx"
            export.export_onnx(clf, fp32, torch.device("cpu"), attention_kind=kind)
            int8.write_bytes(export.int8_program(fp32.read_bytes(), int8))
            programs = {f"{kind} fp32": fp32, f"{kind} int8": int8}
            if args.static_int8:
                programs[f"{kind} int8 static"] = Path(scratch) / f"{kind}_static.onnx"
                static_int8(fp32, programs[f"{kind} int8 static"], model.img_size)
            for name, path in programs.items():
                sessions[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def images_per_second(session) -> float:
        start = time.perf_counter()
        session.run(None, {"images": images})
        return args.batch_size / (time.perf_counter() - start)
    medians = alternating_rounds({name: lambda s=session: images_per_second(s) for name, session in sessions.items()},
                                 args.rounds, digits=2)
    first = next(iter(sessions))
    want = sessions[first].run(None, {"images": images})[0]
    for name, session in sessions.items():
        off = np.abs(session.run(None, {"images": images})[0] - want).max()
        print(f"{name}: {medians[name] / medians[first]:.2f}x {first}; logits within {off:.2g} of its")
    for precision in ("fp32", "int8") if set(args.attention) == {"plain", "sdpa"} else ():
        print(f"{precision}: plain / sdpa {medians[f'plain {precision}'] / medians[f'sdpa {precision}']:.3f}")


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
