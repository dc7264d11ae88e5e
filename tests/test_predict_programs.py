"""predict.py's programs on a CPU: the checkpoint of tests/conftest.py's trained run exported (.onnx, .pt2, .pt)
and classifying as that checkpoint does, through predict.py --weights and train.py --eval-only; what a
program cannot do, or a machine without its packages, said in one line. How the exporter traces and checks
the model: test_export.py; predict.py with a checkpoint: test_predict.py."""
import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import export
import train
from data import Normalize, build_transform
from export import load_program
from model import create_model
from script_runs import ROOT, json_lines, run_predict, train_here
from utils import UserError

CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
pytestmark = pytest.mark.xdist_group("programs")  # conftest.py says why


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_gives_the_checkpoint_logits(trained, checkpoint, photos, tmp_path, capsys, monkeypatch):
    code, _, _ = run_predict(capsys, monkeypatch, trained, "--export", tmp_path / "flowers.pt")
    assert code == 0
    program = torch.jit.load(tmp_path / "flowers.pt")
    assert list(program.class_names) == CLASSES and program.img_size == 64
    assert not any(n.kind() == "prim::PythonOp" for n in program.net.inlined_graph.nodes())  # standard ops only
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    transform = build_transform(64, train=False)
    decode_crop, normalize = transform.transforms[0], Normalize(checkpoint["mean"], checkpoint["std"])
    crops = []  # uint8 (3, 64, 64): what a deployer feeds
    for photo in photos[:3]:  # 3 images: another batch size than the trace's 2
        with Image.open(photo) as image:
            crops.append(decode_crop(image))
    crops = torch.stack(crops)
    with torch.no_grad():
        want = model(torch.stack([normalize(c) for c in crops]))
    torch.testing.assert_close(program(crops), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(program(crops.float() / 255), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(torch.jit.Error, match=r"uint8 \(0-255\) or float \(0-1\)"):  # not misread as [0, 1] floats
        program(crops.long())
    torch.testing.assert_close(program.probabilities(crops[:1]), want[:1].softmax(-1), rtol=1e-4, atol=1e-5)
    # A whole photo of any size is cropped and resized inside the program as predict.py does it. As a
    # PNG, since predict.py decodes a JPEG at a reduced scale where it can, which a program fed pixels cannot.
    Image.open(photos[0]).save(tmp_path / "photo.png")
    with Image.open(tmp_path / "photo.png") as image:
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        assert pixels.shape[1:] != (64, 64)
        with torch.no_grad():
            want = model(normalize(transform(image)[None]))
    torch.testing.assert_close(program(pixels[None]), want, rtol=0, atol=0.01)  # uint8 rounding in predict.py


def table_entries(out: str) -> list:
    """(path, label, rank, probability) for each line of the printed table."""
    rows, path = [], None
    for line in out.splitlines():
        if not line.startswith(" "):
            path = line
            continue
        rank, label, percent = line.split()
        rows.append((path, label, rank, float(percent.rstrip("%")) / 100))
    return rows


def result_entries(results: list) -> list:
    """(path, label, index, probability) for each entry of --json results."""
    return [(r["path"], e["label"], e["index"], e["prob"]) for r in results for e in r["topk"]]


def csv_results(path: Path) -> list:
    with open(path) as f:
        return [{"path": row["path"], "topk": [{"label": row[f"label_{r}"], "index": int(row[f"index_{r}"]),
                                                "prob": float(row[f"prob_{r}"])} for r in range(1, 6)]}
                for row in csv.DictReader(f)]


def assert_same(got: list, want: list, last_digit: float) -> None:
    """Equal, but for a probability's last printed digit: ONNX Runtime and PyTorch add up fp32 in other orders."""
    assert len(got) == len(want) > 4 and [row[:3] for row in got] == [row[:3] for row in want]
    assert [row[3] for row in got] == pytest.approx([row[3] for row in want], abs=last_digit * 1.01)


def test_onnx_weights_print_what_the_checkpoint_prints(trained, photos, onnx_program, tmp_path, capsys,
                                                       monkeypatch):
    chosen, onnx = [photos[0], photos[33], photos[66], photos[99]], ["--weights", onnx_program]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen)
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, *onnx)
    assert "flowers.onnx: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (ONNX Runtime)" in err
    assert_same(table_entries(got), table_entries(want), last_digit=1e-4)  # percent with 2 decimals
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json", *onnx)
    assert_same(result_entries(json_lines(got)), result_entries(json_lines(want)), last_digit=1e-6)
    for name in ("p.json", "p.csv"):
        run_predict(capsys, monkeypatch, trained, *chosen, "--output", tmp_path / f"want_{name}")
        run_predict(capsys, monkeypatch, trained, *chosen, "--output", tmp_path / name, *onnx)
        want, got = (result_entries(csv_results(f) if f.suffix == ".csv" else json.loads(f.read_text()))
                     for f in (tmp_path / f"want_{name}", tmp_path / name))
        assert_same(got, want, last_digit=1e-6)


def test_eval_only_evaluates_a_program_as_it_evaluates_its_checkpoint(trained, flowers, onnx_program, tmp_path,
                                                                       capsys):
    """train.py --eval-only --weights flowers.onnx: the validation split through the program, in the report that
    the checkpoint gets; training from a program, or evaluating it on other classes, is one clear error."""
    # in float32, as the program computes (--amp auto may take bf16 on this CPU, as its run validated)
    train_here(capsys, "--eval-only", "--resume", trained / "runs" / "r", "--workers", "0", "--no-progress",
               "--amp", "off")
    out = train_here(capsys, "--eval-only", "--weights", onnx_program, "--data-path", flowers, "--workers", "0",
                     "--no-progress", "--output", tmp_path)
    folders = tmp_path / "eval-flowers.onnx" / "eval_val", trained / "runs" / "r" / "eval_val"
    assert f"open in a browser: {folders[0] / 'report.html'}" in out and (folders[0] / "report.html").is_file()
    got, want = ((folder / "report.txt").read_text().split("\n") for folder in folders)
    # the program's kind and the data evaluated named (an int8 program's figures are told from the fp32 one's)
    assert got[0] == f"swin_micro_patch4_window4_128 from {onnx_program} (ONNX Runtime), on {flowers}"
    assert got[1].startswith("val: 20 images") and f"data <b class=\"data\"><bdi>{flowers}</bdi></b>" in \
        (folders[0] / "report.html").read_text()
    assert got[1].split("loss")[0] == want[1].split("loss")[0] and got[2:] == want[2:]  # figures, classes, confusion
    mistakes = [list(csv.DictReader(open(folder / "misclassified.csv"))) for folder in folders]
    assert [r["path"] for r in mistakes[0]] == [r["path"] for r in mistakes[1]]
    assert [float(r["probability"]) for r in mistakes[0]] == pytest.approx(
        [float(r["probability"]) for r in mistakes[1]], abs=1e-5)
    with pytest.raises(UserError, match=r"flowers\.onnx is a program that predict\.py --export wrote: predict\.py "
                       r"runs it and train\.py --eval-only evaluates it, but its weights do not train"):
        train.main(["--weights", str(onnx_program), "--data-path", str(flowers), "--epochs", "1", "--workers", "0"])
    for name in ("daisy", "roses"):
        shutil.copytree(flowers / name, tmp_path / "two" / name)
    for weights in (["--weights", onnx_program], ["--resume", trained / "runs" / "r"]):  # a program, a checkpoint
        with pytest.raises(UserError, match=rf"{re.escape(str(weights[1]))} was trained on classes \['daisy', "
                           r"'dandelion', 'roses', 'sunflowers', 'tulips'\], but .*two has \['daisy', 'roses'\] "
                           r"\(gone: dandelion, sunflowers, tulips\): evaluate it on a folder with the class folders "
                           r"it was trained on$"):
            train.main(["--eval-only", *map(str, weights), "--data-path", str(tmp_path / "two")])


@pytest.mark.parametrize("weights, tolerance, input_type", [("int8", 0.05, "float32"), ("fp16", 0.01, "uint8")])
def test_int8_and_fp16_onnx_classify_as_the_checkpoint_does(weights, tolerance, input_type, trained, photos,
                                                            export_packages, tmp_path, capsys, monkeypatch, request):
    """The int8 program also takes [0, 1] floats (--export-input float32; an export is some 20 s here): it refuses
    uint8 rather than misread it, and predict.py hands it floats. On the way, export_onnx checked the fp32
    program's logits within 1e-4 of the checkpoint's, as it checks every export's. The fp16 one converts the
    onnx_program fixture's trace, which is the one its export would make (the same checkpoint, input type
    and attention path): one export's time spared, the rest of --export run as it is."""
    if input_type == "uint8":
        traced = request.getfixturevalue("onnx_program").read_bytes()
        monkeypatch.setattr(export, "traced_onnx", lambda clf, device, input_type, attention_kind: traced)
    path = tmp_path / "f.onnx"
    code, _, err = run_predict(capsys, monkeypatch, trained, "--export", path, f"--export-{weights}",
                               "--export-input", input_type)
    assert code == 0 and f"(ONNX opset 18 with {weights} weights, probabilities within {tolerance} of the " \
        "checkpoint's;" in err
    program = load_program(path)
    assert program.input_type == input_type
    if input_type == "float32":
        with pytest.raises(Exception, match="Unexpected input data type"):  # ONNX Runtime's words
            program.session.run(None, {"images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8).numpy()})
    chosen = [photos[0], photos[33], photos[66], photos[99]]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--weights", path)
    assert f"f.onnx: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (ONNX Runtime, {weights} weights)" in err
    got, want = ([{e["label"]: e["prob"] for e in r["topk"]} for r in json_lines(out)] for out in (got, want))
    assert len(got) == len(want) == 4
    for got_probs, want_probs in zip(got, want):  # near the checkpoint's, not equal: rounded
        assert got_probs == pytest.approx(want_probs, abs=tolerance) and got_probs != want_probs


def test_pt2_export_gives_the_checkpoint_logits(trained, checkpoint, photos, pt2_program, capsys, monkeypatch):
    """pt2_program takes [0, 1] floats (--export-input float32: conftest.py): it says so, refuses uint8 rather than
    misread it, and predict.py hands it floats, printing what it prints for the checkpoint."""
    extra = {"classifier.json": ""}
    program = torch.export.load(pt2_program, extra_files=extra).module()
    assert json.loads(extra["classifier.json"])["class_names"] == CLASSES
    assert load_program(pt2_program).input_type == "float32"
    decode_crop = build_transform(64, train=False).transforms[0]
    normalize = Normalize(checkpoint["mean"], checkpoint["std"])
    with Image.open(photos[10]) as image:
        crop = decode_crop(image)
    model = create_model(checkpoint["variant"], **checkpoint["model_overrides"]).eval()
    model.load_state_dict(checkpoint["model"])
    with torch.no_grad():
        torch.testing.assert_close(program(crop[None].float() / 255), model(normalize(crop)[None]), rtol=1e-4,
                                   atol=1e-4)
    with pytest.raises(RuntimeError, match="(?i)dtype"):  # its input type is fixed: uint8 is refused, not misread
        program(crop[None])
    # predict.py runs the program as it runs the checkpoint, and prints the same
    chosen = [photos[0], photos[50], photos[99]]
    _, want, _ = run_predict(capsys, monkeypatch, trained, *chosen, "--json")
    _, got, err = run_predict(capsys, monkeypatch, trained, *chosen, "--json", "--weights", pt2_program)
    assert "flowers.pt2: swin_micro_patch4_window4_128, 5 classes, 64 px, on cpu (torch.export)" in err
    assert_same(result_entries(json_lines(got)), result_entries(json_lines(want)), last_digit=1e-6)


def test_a_pt2_exported_on_a_gpu_says_so_where_there_is_none(trained, photos, pt2_program, tmp_path, capsys,
                                                             monkeypatch):
    """The archive's tensor descriptions name the device; rewritten to cuda, as a GPU export writes them."""
    import re
    import zipfile
    with zipfile.ZipFile(pt2_program) as source, zipfile.ZipFile(tmp_path / "gpu.pt2", "w") as target:
        for member in source.infolist():
            data = source.read(member.filename)
            if member.filename.endswith("_config.json"):
                data = re.sub(rb'"device": \{"type": "cpu"[^}]*\}', b'"device": {"type": "cuda", "index": 0}', data)
            target.writestr(member, data)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"gpu\.pt2 was exported on a GPU and runs on one only"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", tmp_path / "gpu.pt2")


def test_a_broken_pt2_is_one_line_with_its_cause(photos, tmp_path):
    """torch.export logs a failed load as a traceback on stderr: in a fresh process, as a user runs it."""
    (tmp_path / "broken.pt2").write_bytes(b"PK\x03\x04 not a whole archive")
    done = subprocess.run([sys.executable, "predict.py", photos[0], "--weights", tmp_path / "broken.pt2"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "broken.pt2 does not load as a torch.export program (RuntimeError: " in done.stderr


def test_a_torchscript_program_to_weights_says_how_to_run_it(trained, photos, tmp_path, capsys, monkeypatch):
    run_predict(capsys, monkeypatch, trained, "--export", tmp_path / "flowers.pt")
    with pytest.raises(UserError, match=r"flowers\.pt is a TorchScript program, not a checkpoint: torch\.jit\.load"):
        run_predict(capsys, monkeypatch, trained, photos[0], "--weights", tmp_path / "flowers.pt")


@pytest.mark.parametrize("args", ["--export x.onnx", "img.jpg --weights x.onnx"])
def test_onnx_without_its_packages_says_what_to_install(args, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed: importing it fails
    monkeypatch.setitem(sys.modules, "onnx", None)
    (tmp_path / "img.jpg").write_bytes(b"")
    with pytest.raises(UserError) as error:
        run_predict(capsys, monkeypatch, tmp_path, *args.split())
    message = str(error.value)
    assert "\n" not in message and "is not installed: pip install -r requirements-export.txt" in message
    assert message.startswith(args.split()[-2] + " x.onnx needs onnx")


def test_export_suffix_picks_the_format(tmp_path, capsys, monkeypatch):
    with pytest.raises(UserError, match=r"--export flowers\.pth: the name must end in \.onnx \(ONNX\), \.pt2 "
                       r"\(torch\.export\) or \.pt \(TorchScript\)"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "flowers.pth")
    for weights in ("int8", "fp16"):
        with pytest.raises(UserError, match=rf"--export-{weights} is for ONNX programs only: name the file "
                           r"flowers\.onnx"):
            run_predict(capsys, monkeypatch, tmp_path, "--export", "flowers.pt2", f"--export-{weights}")
        with pytest.raises(UserError, match=rf"--export-{weights} goes with --export FILE\.onnx"):
            run_predict(capsys, monkeypatch, tmp_path, "img.jpg", f"--export-{weights}")
    with pytest.raises(UserError, match=r"--export-int8 and --export-fp16: choose one"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "f.onnx", "--export-int8", "--export-fp16")
    # flags for the images classified, with none named: an empty results file and folder were written without a word
    with pytest.raises(UserError, match=r"^--output and --save-vis are for the images classified, and none are "
                                        r"named: name them after --export FILE, or drop the flag$"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "f.pt", "--output", "o.csv", "--save-vis", "vis")
    with pytest.raises(UserError, match=r"^--tta is for the images classified"):
        run_predict(capsys, monkeypatch, tmp_path, "--export", "f.pt", "--tta")
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "vis").exists()


def test_an_earlier_program_is_one_an_export_may_replace(trained, onnx_program, pt2_program, tmp_path):
    """--export replaces a program it wrote before (of the name's kind) and refuses any other file there: the
    earlier .onnx and .pt2 pass, the same bytes under the other suffix do not."""
    source = trained / "runs" / "r" / "best.pth"
    for program in (onnx_program, pt2_program):
        assert export.exported_program(program)
        export.check_target(program, source)
    for program, other in ((onnx_program, ".pt2"), (pt2_program, ".onnx")):
        shutil.copy(program, tmp_path / f"swapped{other}")
        assert not export.exported_program(tmp_path / f"swapped{other}")


def test_a_pt2_of_torch_2_7s_layout_is_a_program_too(tmp_path):
    """torch 2.7 (requirements.txt's lowest) keeps a .pt2's extra files in extra_files/ at the archive's top, later
    versions in <archive>/extra/: a program written by either may be replaced by a new export, other zips not."""
    import zipfile
    for names, ours in ((["extra_files/classifier.json", "archive/models/m.json"], True),
                        (["archive/extra/classifier.json"], True), (["archive/data.pkl"], False)):
        with zipfile.ZipFile(tmp_path / "p.pt2", "w") as archive:
            for name in names:
                archive.writestr(name, "{}")
        assert export.exported_program(tmp_path / "p.pt2") is ours, names


def test_a_program_is_evaluated_on_its_runs_validation_files(trained, flowers, pt2_program, tmp_path, capsys):
    """A run trained at another --val-ratio: --eval-only of its program draws the split that run drew, as
    --eval-only --resume does (at the default 0.2 it would count photos the run trained on), unless --val-ratio
    is given."""
    assert load_program(pt2_program).val_ratio == 0.2  # the trained run's, carried in classifier.json
    extra = {"classifier.json": ""}
    program = torch.export.load(str(pt2_program), extra_files=extra)
    info = json.loads(extra["classifier.json"]) | {"val_ratio": 0.3}
    moved = tmp_path / "flowers.pt2"
    torch.export.save(program, str(moved), extra_files={"classifier.json": json.dumps(info)})
    out = train_here(capsys, "--eval-only", "--weights", moved, "--data-path", flowers, "--workers", "0",
                     "--no-progress", "--output", tmp_path)
    assert "was trained at --val-ratio 0.3" in out and "val: 30 images" in out
    out = train_here(capsys, "--eval-only", "--weights", moved, "--data-path", flowers, "--workers", "0",
                     "--no-progress", "--output", tmp_path, "--val-ratio", "0.2")
    assert "val: 20 images" in out
