"""export.py: ONNX and torch.export programs against the model they come from, a small V1 (the trained run
of conftest.py, whose programs predict.py --export wrote) and V2 model at 64 px; and the model's own
torch.export, which its stage layouts once blocked."""
import contextlib
import io
import json
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attention
import export
from data import Normalize, build_transform
from export import (ONNX_OPSET, TOLERANCES, Deployable, as_input, check_program, export_onnx, export_pt2,
                    fp16_program, int8_program)
from model import SwinLayer, create_model
from utils import UserError
from weights import Classifier, load_classifier

SIZE = 64
CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
V2_CLASSES = ["tulips", "roses", "daisy", "sunflowers", "dandelion"]  # unsorted: a program keeps the model's order
MEAN, STD = (0.5, 0.45, 0.4), (0.2, 0.25, 0.3)
pytestmark = pytest.mark.xdist_group("programs")  # conftest.py says why


@pytest.fixture(scope="module", params=["v1", "v2"])
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def clf(version, request) -> Classifier:
    """V1: the trained run whose programs tests/test_predict_programs.py checks (conftest.py), center-cropped 87.5%
    and resized bilinear; V2: a random model with another mean and std, the whole photo squashed and resized bicubic
    (as the official recipe's checkpoints are at 384 px)."""
    if version == "v1":
        clf = load_classifier(request.getfixturevalue("trained") / "runs" / "r")
        clf.model.eval()
        return clf
    torch.manual_seed(2)
    model = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=SIZE, version=2).eval()
    with torch.no_grad():  # off the init, where every V2 block is the identity (its post-norms are zero)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return Classifier(model, V2_CLASSES, MEAN, STD, 1.0, "squash", "bicubic", Path("ckpt.pth"))


@pytest.fixture(scope="module")
def crops(flowers) -> torch.Tensor:
    """(3, 3, 64, 64) uint8: three photos center-cropped to the model's size, as predict.py crops them."""
    decode_crop = build_transform(SIZE, train=False).transforms[0]
    images = []
    for photo in sorted(flowers.glob("*/*.jpg"))[::40]:
        with Image.open(photo) as image:
            images.append(decode_crop(image))
    return torch.stack(images)


@pytest.fixture(scope="module")
def onnx_file(version, clf, export_packages, request, tmp_path_factory) -> Path:
    if version == "v1":
        return request.getfixturevalue("onnx_program")  # predict.py --export wrote it from clf's checkpoint
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(clf, path, torch.device("cpu"))
    return path


@pytest.fixture(scope="module")
def pt2_file(version, clf, request, tmp_path_factory) -> Path:
    if version == "v1":
        return request.getfixturevalue("pt2_program")
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    export_pt2(clf, path, torch.device("cpu"))
    return path


def model_logits(clf, images: torch.Tensor) -> torch.Tensor:
    mean, std = torch.tensor(clf.mean).view(1, 3, 1, 1), torch.tensor(clf.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return clf.model((images / 255 - mean) / std)


def test_onnx_program_gives_the_model_logits(clf, crops, onnx_file, export_packages):
    onnx, _, ort = export_packages
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (crops[:1], crops):
        got = torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])
        torch.testing.assert_close(got, model_logits(clf, batch), rtol=1e-4, atol=1e-4)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == clf.class_names and int(meta["img_size"]) == SIZE
    assert [d if isinstance(d, int) else "symbol" for d in session.get_inputs()[0].shape] == ["symbol", 3] + [
        "symbol"] * 2  # batch, height and width are free

    proto = onnx.load(onnx_file)
    assert [(o.domain, o.version >= 17) for o in proto.opset_import] == [("", True)]
    sizes = [[d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
             for value in (proto.graph.input[0], proto.graph.output[0])]
    assert sizes == [["batch", 3, "height", "width"], ["batch", len(CLASSES)]]  # named for shape profiles
    nodes = onnx_nodes(proto)
    assert {node.domain for node in nodes} == {""} and not proto.functions  # standard operators only
    assert ONNX_OPSET >= 17 and {"Resize", "If", "MatMul", "Softmax"} <= {node.op_type for node in nodes}


def onnx_nodes(proto) -> list:
    """Every node of an ONNX model, with those of the branches of its If nodes."""
    import onnx
    nodes, graphs = [], [proto.graph]
    while graphs:
        graph = graphs.pop()
        nodes += graph.node
        graphs += [a.g for node in graph.node for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    return nodes


def test_onnx_exports_trace_the_plain_attention_path(clf, export_packages, monkeypatch, tmp_path):
    """The trace an .onnx comes from takes the plain attention path (export.ONNX_ATTENTION), which ONNX
    Runtime runs faster than sdpa's (docs/prediction.md, bench/bench_onnx.py), whatever a CPU's inference would choose;
    and the choice is as it was after."""
    chosen = []

    class Traced(Exception):  # enough: the export stops there
        pass

    def trace(*args):
        chosen.append(attention.choose_attention(torch.zeros(8, 16, 32), 0.0))  # inference on a CPU
        raise Traced
    monkeypatch.setattr(export, "torch_export", trace)
    with pytest.raises(Traced):
        export_onnx(clf, tmp_path / "model.onnx", torch.device("cpu"))
    assert chosen == ["plain"] and attention.choose_attention(torch.zeros(8, 16, 32), 0.0) == "sdpa"


def test_onnx_runtime_runs_the_gelu_as_one_kernel(onnx_file, export_packages, tmp_path):
    """The exported GELU is in the order of operators that ONNX Runtime fuses when it loads a program."""
    onnx, _, ort = export_packages
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "as_loaded.onnx")  # the graph ONNX Runtime runs
    ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    exported = {node.op_type for node in onnx_nodes(onnx.load(onnx_file))}
    loaded = [node.op_type for node in onnx_nodes(onnx.load(tmp_path / "as_loaded.onnx"))]
    assert "Erf" in exported and "Erf" not in loaded and loaded.count("BiasGelu") == 5  # swin_micro: 5 blocks


def test_int8_onnx_program_is_close_to_the_model(clf, crops, onnx_file, export_packages, tmp_path):
    """--export-int8's quantization (export_onnx's last step; tests/test_predict_programs.py runs the whole of it):
    int8 weights in standard operators, a fraction of the size, probabilities near the model's."""
    onnx, _, ort = export_packages
    path = tmp_path / "int8.onnx"
    path.write_bytes(int8_program(onnx_file.read_bytes(), path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": crops.numpy()})[0]).softmax(-1)
    want = model_logits(clf, crops).softmax(-1)
    off = (got - want).abs().max().item()
    assert 1e-5 < off < TOLERANCES["int8"]  # quantized: near the model, not equal to it
    proto = onnx.load(path)
    assert [(o.domain, o.version >= 17) for o in proto.opset_import] == [("", True)]
    ops = {node.op_type for node in onnx_nodes(proto)}
    assert {node.domain for node in onnx_nodes(proto)} == {""} and {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert path.stat().st_size < 0.4 * onnx_file.stat().st_size


def test_fp16_onnx_program_is_close_to_the_model(clf, crops, onnx_file, export_packages, tmp_path, capfd):
    """--export-fp16's conversion (export_onnx's last step; tests/test_predict_programs.py runs the whole of it): fp16
    weights, the input and output types kept, half the size, probabilities within fp16's rounding of the
    model's; loaded as predict.py loads it, without ONNX Runtime's warnings about constants it cannot fold."""
    onnx, _, ort = export_packages
    path = tmp_path / "fp16.onnx"
    path.write_bytes(fp16_program(onnx_file.read_bytes(), path))
    capfd.readouterr()
    program = export.OnnxClassifier(path)
    assert program.session.get_inputs()[0].type == "tensor(uint8)" and "onnxruntime" not in capfd.readouterr().err
    logits = program(crops)
    assert logits.dtype == torch.float32
    got, want = logits.softmax(-1), model_logits(clf, crops).softmax(-1)
    assert 1e-7 < (got - want).abs().max().item() < TOLERANCES["fp16"] / 10  # rounded: near the model, not equal
    proto = onnx.load(path)
    floats = {onnx.helper.tensor_dtype_to_np_dtype(t.data_type) for t in proto.graph.initializer if t.dims}
    assert np.dtype(np.float16) in floats and np.dtype(np.float32) not in floats  # every weight
    assert path.stat().st_size < 0.6 * onnx_file.stat().st_size


def test_an_fp16_program_of_float_input_has_its_nodes_in_order(export_packages, tmp_path):
    """--export-fp16 --export-input float32: the conversion appended the input's Cast after the nodes that read it;
    ONNX Runtime sorts a graph as it loads it, ONNX's checker and other runtimes refused it."""
    onnx = export_packages[0]
    helper = onnx.helper
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["r"]), helper.make_node("MatMul", ["r", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])],
        [onnx.numpy_helper.from_array(np.ones((3, 2), np.float32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    converted = onnx.load_from_string(fp16_program(proto.SerializeToString(), tmp_path / "f.onnx"))
    onnx.checker.check_model(converted, full_check=True)
    assert converted.graph.node[0].op_type == "Cast"


def test_int8_check_refuses_a_program_off_the_model(clf):
    """The int8 check is looser than the fp32 one, and still refuses probabilities off by more than its tolerance."""
    reference = Deployable(clf.model, clf)
    nudged = lambda x: reference(x) + 0.01 * torch.arange(5.0)  # noqa: E731  probabilities off by about 0.005
    check_program(nudged, clf, torch.device("cpu"), "uint8", TOLERANCES["int8"])
    with pytest.raises(RuntimeError, match="logits are off the model's by 0.04"):
        check_program(nudged, clf, torch.device("cpu"), "uint8")
    favoured = lambda x: reference(x) + torch.tensor([0.5, 0, 0, 0, 0])  # noqa: E731  about 0.1 to daisy
    with pytest.raises(RuntimeError, match=r"probabilities are off the model's by 0\.\d+ on 64 x 64 images; not saved"):
        check_program(favoured, clf, torch.device("cpu"), "uint8", TOLERANCES["int8"])


def test_export_of_a_program_off_the_model_is_one_line(clf, onnx_file, export_packages, monkeypatch, tmp_path):
    """A model whose int8 program moves its probabilities past the tolerance (no fault: how this model quantizes) is
    one line that says to export in fp32, not a traceback; nothing is written."""
    monkeypatch.setattr(export, "traced_onnx", lambda *args: onnx_file.read_bytes())  # the trace, made before
    monkeypatch.setitem(TOLERANCES, "int8", 1e-9)
    path = tmp_path / "int8.onnx"
    with pytest.raises(UserError, match=r"^--export-int8: the exported program's probabilities are off the model's "
                                        r"by .*past the 1e-09 allowed.*drop --export-int8\)$"):
        export_onnx(clf, path, torch.device("cpu"), weights="int8")
    assert not path.exists()


def test_pt2_program_gives_the_model_logits(version, clf, crops, pt2_file):
    extra = {"classifier.json": ""}
    program = torch.export.load(pt2_file, extra_files=extra).module()
    info = json.loads(extra["classifier.json"])
    for batch in (crops[:1], crops):
        torch.testing.assert_close(program(as_input(batch, info["input_type"])), model_logits(clf, batch), rtol=1e-4,
                                   atol=1e-4)
    assert info["class_names"] == clf.class_names and info["img_size"] == SIZE and info["mean"] == list(clf.mean)
    assert info["input_type"] == {"v1": "float32", "v2": "uint8"}[version]  # v1: conftest.py's pt2_program


def test_programs_crop_and_resize_any_size(version, clf, flowers, onnx_file, pt2_file, export_packages, tmp_path):
    """Whole photos of other sizes, cropped and resized inside the programs as predict.py does it: with the
    classifier's crop and interpolation (V1 center 87.5% and bilinear, V2 the whole photo squashed and bicubic), which
    each program carries and predict.py reads back."""
    assert (clf.crop_mode, clf.interpolation) == {"v1": ("center", "bilinear"), "v2": ("squash", "bicubic")}[version]
    session = export_packages[2].InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    extra = {"classifier.json": ""}
    program = torch.export.load(pt2_file, extra_files=extra).module()
    input_type = json.loads(extra["classifier.json"])["input_type"]
    for read in (load_classifier(onnx_file), load_classifier(pt2_file)):
        assert (read.crop_pct, read.crop_mode, read.interpolation) == (clf.crop_pct, clf.crop_mode, clf.interpolation)
    transform = build_transform(SIZE, train=False, crop_pct=clf.crop_pct, crop_mode=clf.crop_mode,
                                interpolation=clf.interpolation)
    normalize = Normalize(clf.mean, clf.std)
    others = [replace(clf, interpolation={"bilinear": "bicubic", "bicubic": "bilinear"}[clf.interpolation]),
              replace(clf, crop_mode={"center": "squash", "squash": "center"}[clf.crop_mode])]
    photos = [sorted(flowers.glob("*/*.jpg"))[i] for i in (7, 55)]
    for photo in photos:  # as PNG: predict.py decodes a JPEG at a reduced scale, which pixels fed to a program skip
        Image.open(photo).save(tmp_path / "photo.png")
        with Image.open(tmp_path / "photo.png") as image:
            pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
            seen = normalize(transform(image)[None])  # predict.py's input
            want = clf.model(seen).detach()
        assert pixels.shape[-2:] != (SIZE, SIZE) and pixels.shape[-2] != pixels.shape[-1]
        reference = Deployable(clf.model, clf)(pixels)  # the module itself, in eager mode
        torch.testing.assert_close(reference, want, rtol=0, atol=0.01)  # predict.py rounds its resize to uint8
        # the program's crop is predict.py's, to its rounding to uint8; the other interpolation's and crop's are not
        off, *off_others = ((Deployable(clf.model, c).preprocess(pixels) - seen).abs().max() for c in (clf, *others))
        assert off < 0.1 < min(off_others), (off, off_others)
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"images": pixels.numpy()})[0]), reference,
                                   rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(program(as_input(pixels.expand(2, -1, -1, -1), input_type)),
                                   reference.expand(2, -1), rtol=1e-4, atol=1e-4)


def test_model_exports_as_it_is():
    """torch.export of a fresh model, a symbolic batch size: its layouts are built inside the trace,
    where a mask decided by the values of a tensor, or gather indices cached per batch size, would stop it."""
    torch.manual_seed(0)
    model = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=72).eval()  # pads stage 1
    example, other = torch.randn(2, 3, 72, 72), torch.randn(3, 3, 72, 72)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    with torch.no_grad():
        want = model(other)
        torch.testing.assert_close(program(other), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(program(other[:1]), want[:1], rtol=1e-5, atol=1e-5)
        fresh = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=72).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(model(other), fresh(other), rtol=0, atol=0)  # the export left the model as it was


@pytest.mark.parametrize("layer_version", [1, 2])
def test_a_swin_layer_exports_to_onnx_with_a_dynamic_height_and_width(layer_version, export_packages):
    """A backbone with a SwinLayer (README: A stage as a layer) to ONNX as a user exports one, torch.onnx.export with
    dynamo=True and a symbolic batch, height and width: ONNX Runtime gives its outputs at other sizes, feature maps
    not whole windows among them. A feature map's side must be larger than the window (windows.py), hence the
    Dims' min."""
    _, _, ort = export_packages
    torch.manual_seed(0)
    window, stride = 8, 16
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, stride, stride=stride),
                              SwinLayer(16, depth=2, num_heads=2, window_size=window, version=layer_version),
                              torch.nn.Conv2d(16, 5, 1)).eval()
    with torch.no_grad():  # off the init, where every V2 block is the identity
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=stride * (window + 1)),
            3: torch.export.Dim("width", min=stride * (window + 1))}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (torch.randn(2, 3, 480, 640),), dynamo=True, opset_version=ONNX_OPSET,
                                    input_names=["images"], dynamic_shapes=(dims,))
    session = ort.InferenceSession(program.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for size in [(600, 800), (150, 150), (300, 470), (1000, 333)]:  # maps 37 x 50, 9 x 9, 18 x 29, 62 x 20
        for batch in (1, 3):
            images = torch.randn(batch, 3, *size)
            with torch.no_grad():
                want = net(images)
            got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_onnx_cuda_provider_that_does_not_start_runs_on_the_cpu_said(onnx_file, export_packages, monkeypatch, capsys):
    """An onnxruntime that lists the CUDA provider but cannot start it (onnxruntime-gpu built for another CUDA, its
    cuDNN missing) falls back to the CPU: the program says it runs there, not on the GPU asked for, and its logits
    come back on the device of the images it was given (train.py --eval-only sums them there with the labels)."""
    from export import load_program
    _, _, ort = export_packages
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    program = load_program(onnx_file).to(torch.device("cuda:0"))
    assert program.device == torch.device("cpu")
    assert program.session.get_providers() == ["CPUExecutionProvider"]
    assert "runs on the CPU" in capsys.readouterr().err
    images = torch.randint(0, 256, (1, 3, program.img_size, program.img_size), dtype=torch.uint8)
    assert program(images).device == images.device


def test_a_program_from_before_interpolation_and_crop_mode_were_carried_is_read_as_bilinear_and_center():
    """Programs written before they carried their interpolation and crop mode resized bilinear and center-cropped:
    predict.py and --eval-only crop the photos they hand such a program so."""
    info = {"class_names": '["a", "b"]', "variant": "swin_micro_patch4_window4_128", "img_size": "64",
            "crop_pct": "0.875", "mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]"}
    old = export.ExportedClassifier(Path("old.onnx"), info)
    assert (old.interpolation, old.crop_mode) == ("bilinear", "center")
    new = export.ExportedClassifier(Path("new.onnx"), info | {"interpolation": "bicubic", "crop_mode": "squash"})
    assert (new.interpolation, new.crop_mode) == ("bicubic", "squash")


@pytest.mark.parametrize("crop_pct, crop_mode", [(0.875, "center"), (1.0, "squash"), (0.875, "squash")])
def test_preprocessing_crops_as_the_transform_eagerly_and_scripted(flowers, tmp_path, crop_pct, crop_mode):
    """Preprocess, which every program runs, takes the box of data.evaluation_box for either crop mode, on photos
    wider and taller than square: its input is predict.py's to the rounding of predict.py's resize to uint8, and its
    TorchScript (the .pt's) gives the same."""
    preprocess = export.Preprocess(SIZE, crop_pct, crop_mode, MEAN, STD, "bicubic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice
        scripted = torch.jit.script(preprocess)
    transform = build_transform(SIZE, train=False, crop_pct=crop_pct, crop_mode=crop_mode, interpolation="bicubic")
    for photo in [sorted(flowers.glob("*/*.jpg"))[i] for i in (7, 55)]:
        for turned in (False, True):  # landscape and portrait
            with Image.open(photo) as image:
                (image.transpose(Image.Transpose.ROTATE_90) if turned else image).save(tmp_path / "photo.png")
            with Image.open(tmp_path / "photo.png") as image:
                pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
                seen = Normalize(MEAN, STD)(transform(image)[None])
            assert pixels.shape[-2] != pixels.shape[-1]
            got = preprocess(pixels)
            assert (got - seen).abs().max() < 0.1, (photo, turned)
            torch.testing.assert_close(scripted(pixels), got)


def test_preprocess_crops_the_box_rounded_half_up_and_never_squashes_a_side_at_size():
    """A 4 x 7 image at img_size 4, crop_pct 1: the center box's left edge is at 1.5 px, rounded half up to 2, so the
    program sees columns 2-5 (as data.evaluation_box's box, rounded half up). Its height already 4 px does not make
    it 'at size': it is cropped, not squashed."""
    preprocess = export.Preprocess(4, 1.0, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear")
    columns = (torch.arange(7) * 30).to(torch.uint8).view(1, 1, 1, 7).expand(1, 3, 4, 7).contiguous()
    got = preprocess(columns) * 255
    torch.testing.assert_close(got[0, 0, 0], torch.tensor([60.0, 90.0, 120.0, 150.0]))
