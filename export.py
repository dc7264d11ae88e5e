"""Export a trained classifier for deployment, its preprocessing inside: ONNX, torch.export or TorchScript.

    python predict.py --export flowers.onnx --weights runs/<name>/best.pth   # ONNX Runtime, TensorRT, OpenVINO
    python predict.py --export flowers.onnx --export-int8                    # int8 weights, for CPUs (or --export-fp16)
    python predict.py --export flowers.pt2                                   # a torch.export program
    python predict.py --export flowers.pt                                    # TorchScript (deprecated by PyTorch)
    python predict.py photos/ --weights flowers.onnx                         # predict.py runs an .onnx or .pt2 too

    session = onnxruntime.InferenceSession("flowers.onnx")
    logits = session.run(None, {"images": images})[0]      # (B, 3, H, W) uint8 RGB, any H x W
    labels = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])

    extra = {"classifier.json": ""}
    program = torch.export.load("flowers.pt2", extra_files=extra).module()
    logits = program(images)                                # (B, 3, H, W) uint8 RGB, any H x W
    labels = json.loads(extra["classifier.json"])["class_names"]

    program = torch.jit.load("flowers.pt")
    probs = program.probabilities(images)   # (B, 3, H, W) uint8 or [0, 1] floats, any H x W
    labels = program.class_names

The deployer needs no mean, std, crop or resize rules: they travel in the file. ONNX and torch.export
programs take one input type: uint8 (what image decoders give), or with --export-input float32
floats in [0, 1] (what a pipeline that has already converted its images holds); the TorchScript
one takes both.
"""
import contextlib
import functools
import importlib
import io
import json
import logging
import logging.handlers
import math
import re
import shlex
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F

import attention
from checkpoints import is_torchscript
from files import put_in_place
from model import create_model
from utils import UserError

ONNX_OPSET = 18  # the first with an antialiased Resize, the resize predict.py does
# the attention path an .onnx is traced with: ONNX Runtime runs the plain path, its bias added by broadcasting,
# 2 to 6% faster than sdpa's, whose bias the program expands to every window first (bench/bench_onnx.py)
ONNX_ATTENTION = "plain"
INPUT_TYPES = ("uint8", "float32")  # what an ONNX or torch.export program takes: 0-255, or 0-1
INSTALL = "pip install -r requirements-export.txt"
# how far the probabilities of a program with int8 or fp16 weights may be from the checkpoint's; measured on
# photos: int8 within 0.012, fp16 within 0.0018 (docs/prediction.md: int8 and fp16)
TOLERANCES = {"int8": 0.05, "fp16": 0.01}


# --- The program: preprocessing and model, one module for every format ---

def _sym_min(a: int, b: int) -> int:
    """min() that stays a formula of the input's size under torch.export (the builtin would fix the
    size the program was traced at) and compiles under TorchScript."""
    if torch.jit.is_scripting():
        return min(a, b)
    return torch.sym_min(a, b)


def _sym_max(a: int, b: int) -> int:
    if torch.jit.is_scripting():
        return max(a, b)
    return torch.sym_max(a, b)


class Preprocess(torch.nn.Module):
    """(B, 3, H, W) uint8 0-255 or float 0-1, any H x W -> (B, 3, S, S) normalised, as predict.py prepares a photo.

    An image already S x S is taken as cropped; another size is cropped to the box data.evaluation_box
    gives (`crop_mode` "center": the square that resizing the shorter side to S / crop_pct and cropping S would
    keep; "squash": crop_pct of each side, the whole image at 1.0; its sides rounded half up, in integers) and
    resized to S x S: `interpolation` (bilinear or bicubic, the classifier's), antialiased, in float (ONNX: Resize
    with antialias, which opset 18 has for both).
    """

    def __init__(self, img_size: int, crop_pct: float, crop_mode: str, mean, std, interpolation: str):
        super().__init__()
        self.img_size, self.resize_to = int(img_size), math.floor(img_size / crop_pct)
        self.squash, self.interpolation = crop_mode == "squash", interpolation
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            x = images.float() / 255
        elif images.is_floating_point():
            x = images.float()
        else:  # int64/int32 pixels (torch.tensor of a list, an int array) would be read as floats in [0, 1]
            raise TypeError("images must be uint8 (0-255) or float (0-1)")
        size = self.img_size
        at_size = (x.shape[-2] == size) & (x.shape[-1] == size)
        if torch.jit.is_scripting():
            x = self.resize(x) if at_size else self.crop_and_resize(x)
        else:  # under torch.export at_size is symbolic and the program keeps both branches; eagerly, a plain if
            x = torch.cond(at_size, self.resize, self.crop_and_resize, (x,))
        return (x - self.mean) / self.std

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        """To S x S; an identity for an image of that size, where it only fixes the size for torch.cond. Clamped to
        [0, 1], as predict.py's resize of uint8 pixels is (and Pillow's): bicubic overshoots at edges."""
        return F.interpolate(x, size=[self.img_size, self.img_size], mode=self.interpolation, antialias=True,
                             align_corners=False).clamp(0, 1)

    def crop_and_resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]
        big = self.resize_to  # the box's sides are box_h / big and box_w / big
        if self.squash:  # decided as the program is made: it keeps one of the two
            box_h, box_w = h * self.img_size, w * self.img_size
        else:
            box_h = box_w = _sym_min(h, w) * self.img_size
        top, left = (h * big - box_h + big) // (2 * big), (w * big - box_w + big) // (2 * big)
        bottom = _sym_max((h * big + box_h + big) // (2 * big), top + 1)
        right = _sym_max((w * big + box_w + big) // (2 * big), left + 1)
        # index_select, not slicing: a slice of a symbolic size makes torch.export fix whether it is whole. At
        # least 2 indices, the last repeated for a box 1 px across (a 1 x N image), which resizes as that one
        # does: torch.export takes a symbolic size to be 2 or more and would fail such an image
        rows = torch.arange(top, _sym_max(bottom, top + 2), device=x.device).clamp(max=bottom - 1)
        columns = torch.arange(left, _sym_max(right, left + 2), device=x.device).clamp(max=right - 1)
        return self.resize(x.index_select(2, rows).index_select(3, columns))


class Deployable(torch.nn.Module):
    """What --export writes: (B, 3, H, W) images -> (B, classes) logits, the preprocessing of Preprocess first.

    `class_names` and `img_size` are attributes; `probabilities(images)` gives the softmax. The net's
    parameters are frozen (requires_grad False): a deployed model is not trained, so it keeps no autograd
    bookkeeping in any grad mode and the model takes its inference path. That, rather than torch.no_grad()
    inside forward, also keeps torch.export from lowering scaled_dot_product_attention to a CPU kernel
    that the ONNX exporter cannot translate.
    """

    def __init__(self, net, clf):
        super().__init__()
        self.net, self.class_names, self.img_size = net, list(clf.class_names), int(clf.model.img_size)
        device = next(net.parameters()).device
        self.preprocess = Preprocess(self.img_size, clf.crop_pct, clf.crop_mode, clf.mean, clf.std,
                                     clf.interpolation).to(device)
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(images))

    @torch.jit.export
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).softmax(-1)


def describe(clf, input_type: str) -> dict:
    """What a program carries beside its graph: ONNX metadata_props, the .pt2's classifier.json."""
    pixels = "uint8 RGB, 0-255" if input_type == "uint8" else "float32 RGB, 0-1"
    crop = "squashed to a square" if clf.crop_mode == "squash" else "center-cropped and resized"
    return {"class_names": list(clf.class_names), "variant": clf.model.variant, "img_size": int(clf.model.img_size),
            "crop_pct": clf.crop_pct, "crop_mode": clf.crop_mode, "interpolation": clf.interpolation,
            "mean": list(clf.mean), "std": list(clf.std), "input_type": input_type,
            "input": f"(B, 3, H, W) {pixels}, any H x W: {crop} inside"} | \
        ({"val_ratio": clf.val_ratio} if getattr(clf, "val_ratio", None) is not None else {})


def as_input(images: torch.Tensor, input_type: str) -> torch.Tensor:
    """uint8 images as a program of this input type takes them."""
    return images.float() / 255 if input_type == "float32" else images


# --- The formats ---

def add_arguments(group) -> None:
    """predict.py's --export flags, beside the exporters they choose (`chosen_exporter`)."""
    group.add_argument("--export", type=Path, metavar="FILE", help="write the model with its preprocessing, in the "
                       "format of the suffix: .onnx (ONNX), .pt2 (torch.export), .pt (TorchScript); images of any "
                       "size in, logits out (see export.py; default: none)")
    group.add_argument("--export-input", choices=INPUT_TYPES, default="uint8",
                       help="what an .onnx or .pt2 program takes: uint8 0-255, or float32 0-1 (the .pt takes both; "
                            "default: uint8)")
    group.add_argument("--export-int8", action="store_true", help="an .onnx with int8 weights: a quarter of the "
                       f"size and faster on a CPU, probabilities within {TOLERANCES['int8']} of the checkpoint's "
                       "(default: fp32)")
    group.add_argument("--export-fp16", action="store_true", help="an .onnx in fp16: half the size, for GPUs (a CPU "
                       f"runs it slower), probabilities within {TOLERANCES['fp16']} of the checkpoint's "
                       "(default: fp32)")


def chosen_exporter(args):
    """The export function that the flags of `add_arguments` ask for, None without --export; a UserError for
    flags that do not go together, another suffix, or a missing package."""
    if args.export_int8 and args.export_fp16:
        raise UserError("--export-int8 and --export-fp16: choose one")
    weights = "int8" if args.export_int8 else "fp16" if args.export_fp16 else "fp32"
    if args.export is None:
        if weights != "fp32":
            raise UserError(f"--export-{weights} goes with --export FILE.onnx")
        if args.export_input != "uint8":
            raise UserError(f"--export-input {args.export_input} goes with --export FILE")
        return None
    return choose_exporter(args.export, weights)


EXPORT_AGAIN = "export again"  # what a write that failed for want of room says to do once there is room


def check_target(path: Path, source: Path) -> None:
    """A program must not take the place of the checkpoint it is made from, nor of any file that is no program of
    --export's kind for that name (a checkpoint named .pt or .pt2, notes.onnx): refused, both kept. An earlier
    program there is replaced."""
    if not path.exists():
        return
    if path.resolve() == Path(source).resolve():
        raise UserError(f"--export {path} is the checkpoint the program is made from: name another file")
    if not exported_program(path):
        kind = {".pt": "TorchScript", ".pt2": "torch.export", ".onnx": "ONNX"}[path.suffix.lower()]
        raise UserError(f"--export {path}: the file there is no {kind} program that --export wrote (a checkpoint?), "
                        "and is kept: name another file, or move it away first")


def exported_program(path: Path) -> bool:
    """Whether the file at `path` is a program --export wrote, of its suffix's kind: one a new export may replace."""
    suffix = path.suffix.lower()
    if suffix == ".pt":
        return is_torchscript(path)
    if suffix == ".pt2":  # torch.export's archive, with the extra file this project puts in it
        with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
            names = archive.namelist()  # torch 2.7 keeps extra files in extra_files/, later ones in <archive>/extra/
            return "extra_files/classifier.json" in names or any(n.endswith("/extra/classifier.json") for n in names)
        return False
    onnx = require("onnx", f"--export {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx's parse errors have no common base: anything that does not parse is no program
        return False
    return any(prop.key == "class_names" for prop in model.metadata_props)


def choose_exporter(path: Path, weights: str = "fp32"):
    """The export function for the file name's suffix and the program's weights (fp32, or an .onnx's int8 or
    fp16); a UserError for another suffix or a missing package."""
    exporters = {".onnx": export_onnx, ".pt2": export_pt2, ".pt": export_torchscript}
    suffix = path.suffix.lower()
    if suffix not in exporters:
        raise UserError(f"--export {path}: the name must end in .onnx (ONNX), .pt2 (torch.export) or .pt "
                        "(TorchScript)")
    if weights != "fp32" and suffix != ".onnx":
        raise UserError(f"--export-{weights} is for ONNX programs only: name the file {path.with_suffix('.onnx')}")
    if suffix == ".onnx":  # before the model is loaded: a missing package fails at once
        onnx_packages(path)
    return functools.partial(export_onnx, weights=weights) if weights != "fp32" else exporters[suffix]


def onnx_packages(path: Path):
    """onnxruntime, once onnx and onnxscript (the exporter's) are found too."""
    for module in ("onnx", "onnxscript"):
        require(module, f"--export {path}")
    return require("onnxruntime", f"--export {path}")  # runs the program before it is saved


def require(module: str, what: str):
    """Import an optional package of requirements-export.txt, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs {module}, which is not installed: {INSTALL}") from None


def export_onnx(clf, path: Path, device, input_type: str = "uint8", weights: str = "fp32",
                attention_kind: str = ONNX_ATTENTION) -> str:
    """ONNX (opset ONNX_OPSET, standard operators only) through torch.export; dynamic batch and image size.
    With int8 or fp16 `weights`, the checked program is then converted (int8_program, fp16_program) and
    checked again, its probabilities within TOLERANCES of the model's. The model is traced with
    `attention_kind` (bench/bench_onnx.py times the programs of each)."""
    ort = onnx_packages(path)
    proto = traced_onnx(clf, device, input_type, attention_kind)

    def check(program: bytes, tolerance: float = None) -> None:
        session = ort.InferenceSession(program, quiet_session(ort), providers=["CPUExecutionProvider"])
        check_program(lambda x: torch.from_numpy(session.run(None, {"images": x.cpu().numpy()})[0]), clf, device,
                      input_type, tolerance)
    check(proto)
    if weights != "fp32":
        proto = {"int8": int8_program, "fp16": fp16_program}[weights](proto, path)
        try:
            check(proto, TOLERANCES[weights])
        except ProgramOffTheModel as off:  # not a fault: this model's results move that much with such weights
            raise UserError(f"--export-{weights}: {off}, past the {TOLERANCES[weights]} allowed: {weights} weights "
                            f"change this model's results too much. Export it in fp32 (drop --export-{weights})") \
                from None
    proto = with_metadata(proto, describe(clf, input_type) | ({"weights": weights} if weights != "fp32" else {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: a program over another stays good
    put_in_place(path, lambda tmp: tmp.write_bytes(proto), EXPORT_AGAIN)
    said = f" with {weights} weights, probabilities within {TOLERANCES[weights]} of the checkpoint's" \
        if weights != "fp32" else ""
    return f"ONNX opset {ONNX_OPSET}{said}; run with onnxruntime.InferenceSession, or predict.py --weights " \
        f"{shlex.quote(str(path))}"


def traced_onnx(clf, device, input_type: str, attention_kind: str) -> bytes:
    """The fp32 ONNX program of clf, without its metadata: torch.export's trace, then the ONNX exporter's."""
    with attention.forced(attention_kind):
        program = torch_export(clf, device, input_type)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # its progress lines: not results
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(program, input_names=["images"], output_names=["logits"],
                                         opset_version=ONNX_OPSET, dynamo=True, verbose=False,
                                         custom_translation_table=gelu_as_onnx_runtime_fuses_it())
    model = onnx_program.model_proto
    name_sizes(model, ("batch", None, "height", "width"))
    return model.SerializeToString()


def name_sizes(model, names: tuple) -> None:
    """The input's free sizes named, wherever the graph gives them (the exporter numbers them, s34, s14): what
    deployers' shape profiles (TensorRT's, Triton's) and a reader of the graph go by."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    named = {dim.dim_param: name for dim, name in zip(dims, names) if name and dim.dim_param}
    if not named:
        return
    symbol = re.compile("|".join(rf"\b{re.escape(s)}\b" for s in named))  # also inside expressions: 64*s34
    for value in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = symbol.sub(lambda found: named[found.group(0)], dim.dim_param)


def with_metadata(proto: bytes, info: dict) -> bytes:
    """The program with `info` as its metadata_props (what it had there replaced), values not text in JSON."""
    import onnx  # onnx_packages found it
    model = onnx.load_from_string(proto)
    onnx.helper.set_model_props(model, {key: value if isinstance(value, str) else json.dumps(value)
                                        for key, value in info.items()})
    return model.SerializeToString()


def quiet_session(ort):
    """ONNX Runtime's session options, its warnings left out: an fp16 program loads with one for every
    constant it cannot fold ahead on a CPU, which says nothing about the results."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors
    return options


def gelu_as_onnx_runtime_fuses_it() -> dict:
    """The model's GELU (the exact one, with erf) in ONNX as x * (1 + erf(x / sqrt 2)) * 0.5: ONNX Runtime
    recognises that order of the five operators when it loads a program and runs them as one kernel (with
    the linear's bias: BiasGelu); the exporter's own order, 0.5 * (1 + erf(...)) before the product with x,
    it runs as five passes over the MLP's widest activations (docs/prediction.md: GELU)."""
    from onnxscript import opset18 as op

    def gelu(x, approximate: str = "none"):  # traced by the exporter: the ONNX nodes these calls make
        return op.Mul(op.Mul(x, op.Add(op.Erf(op.Div(x, math.sqrt(2))), 1.0)), 0.5)
    return {torch.ops.aten.gelu.default: gelu}


def int8_program(proto: bytes, path: Path) -> bytes:
    """The program with the weights of its matrix products in int8, quantized per tensor, and their inputs
    quantized as they arrive (ONNX Runtime's dynamic quantization; DynamicQuantizeLinear and MatMulInteger are
    standard operators). On a CPU some 1.4x faster than the fp32 program, a quarter of its size; per-channel
    scales measured no closer to the checkpoint (docs/prediction.md: int8). The patch embedding's convolution, a
    hundredth of the work, stays fp32: ONNX Runtime before 1.32 (the last for Python 3.10 is 1.23) has no CPU
    kernel for the ConvInteger it would become."""
    onnx = require("onnx", f"--export {path} --export-int8")
    quantization = require("onnxruntime.quantization", f"--export {path} --export-int8")
    model = onnx.load_from_string(proto)
    # the exporter's inferred shapes, which quantization before ONNX Runtime 1.32 contradicts in its own
    # inference (ShapeInferenceError): optional in a program, and inferred again where needed
    del model.graph.value_info[:]
    with tempfile.TemporaryDirectory() as scratch:  # its API reads and writes files
        fp32, quantized = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        fp32.write_bytes(model.SerializeToString())
        logging.disable(logging.WARNING)  # its advice to run its pre-processing first, which measured no faster
        try:
            quantization.quantize_dynamic(fp32, quantized, weight_type=quantization.QuantType.QInt8,
                                          op_types_to_quantize=["MatMul", "Gemm"])
        finally:
            logging.disable(logging.NOTSET)
        return quantized.read_bytes()


def fp16_program(proto: bytes, path: Path) -> bytes:
    """The program in fp16: its weights and its arithmetic, input and output types kept (uint8 or float32 in,
    float32 logits out). Half the size, for GPUs (ONNX Runtime's CUDA provider, TensorRT); a CPU runs it
    slower than the fp32 program (docs/prediction.md: int8 and fp16)."""
    onnx = require("onnx", f"--export {path} --export-fp16")
    float16 = require("onnxruntime.transformers.float16", f"--export {path} --export-fp16")
    with warnings.catch_warnings():  # its notes on values it clamps to fp16's range: the check below decides
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16(onnx.load_from_string(proto), keep_io_types=True)
    # the Casts of a float32 input it appends after the nodes that read them: first, as ONNX's checker and runtimes
    # that do not sort a graph (ONNX Runtime does) need the nodes in order
    inputs = {value.name for value in model.graph.input}
    ahead = [node for node in model.graph.node if node.input and set(node.input) <= inputs]
    after = [node for node in model.graph.node if not (node.input and set(node.input) <= inputs)]
    del model.graph.node[:]
    model.graph.node.extend(ahead + after)
    return model.SerializeToString()


def export_pt2(clf, path: Path, device, input_type: str = "uint8") -> str:
    """A torch.export program; the class names and the rest of describe() in its extra file classifier.json."""
    program = torch_export(clf, device, input_type)
    check_program(program.module(), clf, device, input_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"classifier.json": json.dumps(describe(clf, input_type))}
    made = io.BytesIO()  # written from Python: torch's C++ writer aborts the process on a full disk
    torch.export.save(program, made, extra_files=extra)
    put_in_place(path, lambda tmp: tmp.write_bytes(made.getvalue()), EXPORT_AGAIN)
    return "torch.export; load with torch.export.load(..., extra_files={'classifier.json': ''}).module()"


def torch_export(clf, device, input_type: str) -> torch.export.ExportedProgram:
    """The Deployable around clf.model, traced with a symbolic batch size, height and width, for inputs
    of `input_type` (the type is fixed in the program: Preprocess's test of it is decided while tracing).

    The model runs once at img_size first, so that its window layouts are cached and enter the
    program as constants, rather than as the operations that build them (which it would also trace).
    """
    size = clf.model.img_size
    example = as_input(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, device=device), input_type)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            clf.model(torch.zeros(1, 3, size, size, device=device))
        return torch.export.export(Deployable(clf.model, clf).eval(), (example,), dynamic_shapes=(dims,))


def export_torchscript(clf, path: Path, device, input_type: str = "uint8") -> str:
    """Trace the model, script the preprocessing around it, check the result, save it. The program takes
    either input type (the script tests it at run time); it is checked on `input_type`.

    While tracing, the input's sizes are traced values, so the row numbers of the gathers are
    recorded as operations on the batch size (checked below at another batch size), but which
    windows need a mask is decided for img_size, which is why Deployable resizes to it. The trace is
    made from a fresh model, since it leaves layouts keyed by those traced values in the stages' caches.
    """
    fresh = create_model(clf.model.variant, **clf.model.overrides).to(device).eval()
    fresh.load_state_dict(clf.model.state_dict())
    size = fresh.img_size
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracer notes on the layout's numbers
        program = torch.jit.script(Deployable(torch.jit.trace(fresh, torch.randn(2, 3, size, size, device=device),
                                                              check_trace=False), clf))
        check_program(program, clf, device, input_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        made = io.BytesIO()  # written from Python: torch's C++ writer aborts the process on a full disk
        torch.jit.save(program, made)
        put_in_place(path, lambda tmp: tmp.write_bytes(made.getvalue()), EXPORT_AGAIN)
    return "TorchScript; load with torch.jit.load"


class ProgramOffTheModel(RuntimeError):
    """check_program's refusal: the program's results are not the model's."""


def check_program(run, clf, device, input_type: str, tolerance: float = None) -> None:
    """The program against the model on images at img_size, at another batch size than the trace's, and
    against Deployable run eagerly on images of other sizes (one a single row of pixels); a RuntimeError,
    nothing saved, if they differ: logits by more than 1e-4 of their scale, or with a `tolerance` (an int8 or
    fp16 program), probabilities by more than it."""
    size = clf.model.img_size
    images = torch.randint(0, 256, (3, 3, size, size), dtype=torch.uint8, device=device)
    other = torch.randint(0, 256, (1, 3, size + 45, 2 * size - 3), dtype=torch.uint8, device=device)
    thin = torch.randint(0, 256, (1, 3, 1, size + 7), dtype=torch.uint8, device=device)  # a box 1 px across
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (clf.mean, clf.std))
    with torch.no_grad():
        deployable = Deployable(clf.model, clf)
        for x, want in ((images, clf.model((images / 255 - mean) / std)), (other, deployable(other)),
                        (thin, deployable(thin))):
            got = run(as_input(x, input_type)).to(device)
            if tolerance is not None:
                got, want = got.softmax(-1), want.softmax(-1)
            close = (got - want).abs().max() <= tolerance if tolerance is not None else \
                torch.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))
            if not close:
                what = "logits" if tolerance is None else "probabilities"
                raise ProgramOffTheModel(f"the exported program's {what} are off the model's by "
                                         f"{(got - want).abs().max():.3g} on {x.shape[-2]} x {x.shape[-1]} images; "
                                         "not saved")


# --- Running a program in predict.py ---

class ExportedClassifier:
    """A program that --export wrote, called like the model on uint8 images of img_size.

    `variant`, `img_size`, `class_names`, `crop_pct`, `crop_mode`, `interpolation`, `mean`, `std` and `input_type`
    come from what it carries (describe()), so that predict.py crops a photo as it does for the checkpoint and hands
    the program the type it takes (uint8 in programs written before input_type was, bilinear in those written before
    interpolation was, center in those written before crop_mode was: they resized and cropped so). It runs on the CPU
    unless `to(device)` finds a way onto the GPU; `device` says where it runs.
    """
    kind = "program"

    def __init__(self, path: Path, info: dict):
        if "class_names" not in info:
            raise UserError(f"{path} was not written by predict.py --export: it does not name its classes or "
                            "its preprocessing")
        self.path, self.device = path, torch.device("cpu")
        self.class_names = json.loads(info["class_names"]) if isinstance(info["class_names"], str) \
            else list(info["class_names"])
        self.variant, self.img_size, self.crop_pct = info["variant"], int(info["img_size"]), float(info["crop_pct"])
        self.crop_mode, self.interpolation = info.get("crop_mode", "center"), info.get("interpolation", "bilinear")
        self.mean, self.std = (tuple(json.loads(v) if isinstance(v, str) else v) for v in (info["mean"], info["std"]))
        self.num_classes = len(self.class_names)
        self.input_type = info.get("input_type", "uint8")
        self.val_ratio = float(info["val_ratio"]) if "val_ratio" in info else None  # the run's, for --eval-only

    def to(self, device):
        return self

    def eval(self):
        return self


def is_program(path) -> bool:
    """Whether a --weights value names a program that --export writes and that runs as it is (.onnx, .pt2)."""
    return isinstance(path, Path) and path.suffix.lower() in (".onnx", ".pt2")


def load_program(path: Path) -> ExportedClassifier:
    """The .onnx or .pt2 at `path`, ready for predict.py (an .onnx without onnxruntime says what to install)."""
    runner = OnnxClassifier if path.suffix.lower() == ".onnx" else Pt2Classifier
    if runner is OnnxClassifier:
        require("onnxruntime", f"--weights {path}")
    if not path.is_file():
        raise UserError(f"program not found: {path}")
    return runner(path)


class OnnxClassifier(ExportedClassifier):
    """An .onnx run by ONNX Runtime; `to(device)` picks the CUDA provider where this onnxruntime has one."""
    kind = "ONNX Runtime"

    def __init__(self, path: Path):
        self.ort = require("onnxruntime", f"--weights {path}")
        try:
            self.session = self.ort.InferenceSession(str(path), quiet_session(self.ort),
                                                     providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise UserError(f"{path} does not load in ONNX Runtime ({error}); export it again with "
                            "predict.py --export") from None
        info = self.session.get_modelmeta().custom_metadata_map
        super().__init__(path, info)
        if info.get("weights") in TOLERANCES:
            self.kind = f"ONNX Runtime, {info['weights']} weights"

    def to(self, device):
        if device.type == "cuda" and "CUDAExecutionProvider" in self.ort.get_available_providers():
            cuda = ("CUDAExecutionProvider", {"device_id": device.index or 0})
            session = self.ort.InferenceSession(str(self.path), quiet_session(self.ort),
                                                providers=[cuda, "CPUExecutionProvider"])
            # listed is not started: an onnxruntime-gpu built for another CUDA or without its cuDNN falls back to
            # the CPU, which predict.py would then have called the GPU
            if "CUDAExecutionProvider" in session.get_providers():
                self.session, self.device = session, device
            else:
                print(f"notice: ONNX Runtime's CUDA provider did not start here (its CUDA and cuDNN libraries: "
                      f"onnxruntime-gpu's install guide); {self.path} runs on the CPU", file=sys.stderr)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, classes) float32 logits, on the images' device (as a module gives them:
        train.py --eval-only sums them there with the labels)."""
        logits = self.session.run(None, {"images": as_input(images, self.input_type).cpu().numpy()})[0]
        return torch.from_numpy(logits).to(images.device)


def exported_on_gpu(path: Path) -> bool:
    """Whether a .pt2's tensors were saved from a GPU, read from its archive's tensor descriptions."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(b'"type": "cuda"' in archive.read(name) for name in archive.namelist()
                   if name.endswith("_config.json"))


class Pt2Classifier(ExportedClassifier):
    """A .pt2 (torch.export) run where it was exported, the CPU or a GPU: its graph keeps that device."""
    kind = "torch.export"

    def __init__(self, path: Path):
        if exported_on_gpu(path) and not torch.cuda.is_available():  # loading would try to put it there
            raise UserError(f"{path} was exported on a GPU and runs on one only; on this machine, export it "
                            "on the CPU (predict.py --export FILE.pt2 --device cpu)")
        extra = {"classifier.json": ""}
        # torch.export logs the cause of a failure with its traceback and raises a general error: the
        # cause is kept from the log and said in the one line below, the traceback left out
        logger, told = logging.getLogger("torch.export"), logging.handlers.BufferingHandler(100)
        handlers, logger.handlers = logger.handlers, [told]
        try:
            self.program = torch.export.load(path, extra_files=extra).module()
        except Exception as error:
            causes = [record.exc_info[1] for record in told.buffer if record.exc_info] or [error]
            cause = str(causes[-1]).strip().split(". ")[0]
            raise UserError(f"{path} does not load as a torch.export program ({type(causes[-1]).__name__}: "
                            f"{cause})") from None
        finally:
            logger.handlers = handlers
        super().__init__(path, json.loads(extra["classifier.json"] or "{}"))
        self.device = next(self.program.parameters()).device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.program(as_input(images.to(self.device), self.input_type))
