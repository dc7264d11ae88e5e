"""train.py --eval-only (eval_only.py): the report and the misclassified files of a run's checkpoint or of other
weights; what it refuses (torchrun, weights without these classes' classifier) and what it does not do (fetch
photos, write into a file); an official file evaluated as the official code does."""
import csv
import re
import shutil
from pathlib import Path

import pytest
import torch

import eval_only
import train
from model import create_model
from script_runs import FAST, train_here
from utils import UserError


def test_an_evaluation_without_its_images_fetches_none_and_a_file_is_no_output_folder(flowers, tmp_path,
                                                                                    monkeypatch):
    """--eval-only of weights without --data-path (flower_photos by default, not here): one line asking for the
    images, not a 218 MB download; --output or --name naming a file: one line, not mkdir's "File exists"."""
    weights_file = tmp_path / "weights.pth"
    torch.save(create_model("swin_micro_patch4_window4_128", num_classes=5).state_dict(), weights_file)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"--eval-only evaluates the images in --data-path, and flower_photos is not "
                                        r"here \(or empty\): give --data-path DIR"):
        train.main(["--eval-only", "--weights", str(weights_file), "--model", "swin_micro_patch4_window4_128"])
    assert not (tmp_path / "flower_photos.tgz").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="--output .*afile is a file, not a folder"):
        train.main(["--data-path", str(flowers), *FAST, "--output", str(tmp_path / "afile")])
    with pytest.raises(UserError, match="^--name afile: .*afile is a file, not a run folder: choose another --name$"):
        train.main(["--data-path", str(flowers), *FAST, "--output", str(tmp_path), "--name", "afile"])


def test_eval_only_reports_and_lists_mistakes(flowers, tmp_path, capsys, monkeypatch):
    trained = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "e")
    assert re.search(rf"^best: {re.escape(str(tmp_path / 'e' / 'best.pth'))} \(epoch \d\), validation top-1 "
                     rf"\d+\.\d%, balanced accuracy \d+\.\d%\. What it gets wrong, to open in a browser: "
                     rf"{re.escape(str(tmp_path / 'e' / 'report.html'))}; to classify photos with it: python predict.py "
                     rf"--weights {re.escape(str(tmp_path / 'e'))} PHOTO \.\.\.$", trained, re.M), trained
    assert (tmp_path / "e" / "misclassified.csv").is_file()
    # the run's own data and split, as saved in its checkpoint: no --data-path to type again
    out = train_here(capsys, "--eval-only", "--resume", tmp_path / "e" / "best.pth", "--workers", "0", "--no-progress")
    assert "top-1" in out and "precision" in out and "daisy" in out
    folder = tmp_path / "e" / "eval_val"
    rows = list(csv.DictReader(open(folder / "misclassified.csv")))
    top1 = float(out.split("top-1 ")[1].split()[0])
    assert len(rows) == round((1 - top1) * 20)  # 20 validation images
    assert all(Path(r["path"]).is_file() and r["true"] != r["predicted"] for r in rows)
    # the run's own report, at its end, is of the same best.pth on the same images
    assert f"top-1 {top1:.4f}" in (tmp_path / "e" / "report.txt").read_text()
    assert all(1 >= float(r["probability"]) >= float(r["second_probability"]) >= float(r["third_probability"])
               for r in rows)
    from PIL import Image
    assert Image.open(folder / "confusion_matrix.png").size[0] > 100
    # the same evaluation as a page: figures, curves from the run's metrics.csv, one thumbnail a mistake
    page = (folder / "report.html").read_text()
    assert f"{top1:.1%}" in page and "best.pth" in page and page.count("<figure>") == len(rows)
    assert page.count('<img class="picture"') == 4  # the confusion matrix and three training curves
    # the run folder means its best.pth here (as --resume, and as --weights, as predict.py takes it), and
    # train.py's checkpoint given as --weights is taken as --resume: its own model, classes and data, and the
    # report in its run folder
    for given in (["--resume", tmp_path / "e"], ["--weights", tmp_path / "e" / "best.pth"],
                  ["--weights", tmp_path / "e"]):
        again = train_here(capsys, "--eval-only", *given, "--workers", "0", "--no-progress")
        assert again.startswith(f"swin_micro_patch4_window4_128 from {tmp_path / 'e' / 'best.pth'} (epoch ")
        assert f"top-1 {top1:.4f}" in again and f"open in a browser: {folder / 'report.html'}" in again
    # on a split whose val/ lacks a class: said, as training says it (the page shows its recall as n/a)
    split = tmp_path / "split"
    for name in sorted(p.name for p in Path(flowers).iterdir()):
        for part in ("train", "val")[:1 if name == "tulips" else 2]:
            (split / part / name).mkdir(parents=True)
            shutil.copy(next(Path(flowers, name).glob("*.jpg")), split / part / name)
    capsys.readouterr()
    train.main(["--eval-only", "--resume", str(tmp_path / "e"), "--data-path", str(split), "--workers", "0",
                "--no-progress"])
    out, err = capsys.readouterr()
    assert "warning: 1 of the 5 classes has no validation image (tulips)" in err
    # another folder's evaluation in a folder of its own: the run's own evaluation is kept
    assert f"open in a browser: {tmp_path / 'e' / 'eval_val-split' / 'report.html'}" in out
    assert f"top-1 {top1:.4f}" in (folder / "report.txt").read_text()
    # and so is another checkpoint's of the run, on its own data and on the other folder
    for data, name in (([], "eval_val_last"), (["--data-path", str(split)], "eval_val_last-split")):
        train.main(["--eval-only", "--resume", str(tmp_path / "e" / "last.pth"), *data, "--workers", "0",
                    "--no-progress"])
        assert f"open in a browser: {tmp_path / 'e' / name / 'report.html'}" in capsys.readouterr()[0]
        assert "last.pth" in (tmp_path / "e" / name / "report.txt").read_text()
    assert "best.pth" in (folder / "report.txt").read_text()
    assert "best.pth" in (tmp_path / "e" / "eval_val-split" / "report.txt").read_text()
    # where its report cannot be written (here a file in the way; a read-only run folder alike): said before the
    # evaluation, not after it, its work lost
    shutil.copytree(split, tmp_path / "other")
    (tmp_path / "e" / "eval_val-other").write_text("")
    evaluated = []
    monkeypatch.setattr(train.evaluation, "evaluate", lambda *args, **kwargs: evaluated.append(1))
    with pytest.raises(UserError, match=r"cannot write .*e/eval_val-other/report.txt: .*eval_val-other is a file"):
        train.main(["--eval-only", "--resume", str(tmp_path / "e"), "--data-path", str(tmp_path / "other")])
    assert not evaluated


def test_eval_only_under_torchrun_is_refused(flowers, tmp_path, monkeypatch):
    """--eval-only runs in one process: under torchrun every process refuses it before they join the group (the line
    said once: processes.said_by_another_process)."""
    args = ["--eval-only", "--weights", str(tmp_path / "model.pth"), "--data-path", str(flowers), "--output",
            str(tmp_path)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        with pytest.raises(UserError, match="^--eval-only runs in one process: start it with python, not torchrun$"):
            train.main(args)


def test_eval_only_of_weights_without_these_classes_classifier_is_refused(flowers, tmp_path):
    """--eval-only --weights of a file whose classifier is another's (1000 ImageNet classes) or none: it would
    score a random classifier, report and all."""
    other = tmp_path / "imagenet.pth"
    torch.save(create_model("swin_micro_patch4_window4_128").state_dict(), other)
    with pytest.raises(UserError, match=rf"^--eval-only: {other} holds no classifier of these 5 classes \(head\."
                                        r"weight .*Evaluate a checkpoint trained on them"):
        train.main(["--eval-only", "--weights", str(other), "--data-path", str(flowers), "--model",
                    "swin_micro_patch4_window4_128", "--output", str(tmp_path), "--no-progress", "--workers", "0"])


def test_eval_only_of_an_official_file_of_384_px_squashes_it_reading_the_file_once(flowers, tmp_path, capsys,
                                                                                   monkeypatch):
    """--eval-only --weights of the official code's file at 384 px evaluates as the official configs of 384 px do,
    the whole photo squashed to the square, bicubic; the file is read whole once (what it is, mapped, aside), for
    both the model and how it is evaluated."""
    torch.manual_seed(0)
    state = create_model("swin_micro_patch4_window4_128", num_classes=5, img_size=384).state_dict()
    official = tmp_path / "official.pth"  # as the official code saves: with its index buffers and shift masks
    buffers = {"layers.0.blocks.0.attn.relative_position_index": torch.zeros(16, 16, dtype=torch.long),
               "layers.0.blocks.1.attn_mask": torch.zeros(576, 16, 16)}
    torch.save({"model": {**state, **buffers}}, official)
    reads, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda f, *args, **kwargs: reads.append((Path(f), kwargs.get("mmap"))) or
                        load(f, *args, **kwargs))
    transforms, build = [], eval_only.build_transform
    monkeypatch.setattr(eval_only, "build_transform", lambda *args, **kwargs: transforms.append(kwargs) or
                        build(*args, **kwargs))
    out = train_here(capsys, "--eval-only", "--weights", official, "--model", "swin_micro_patch4_window4_128",
                     "--img-size", "384", "--data-path", flowers, "--output", tmp_path, "--workers", "0",
                     "--no-progress")
    assert f"weights from {official}: loaded " in out  # the load report names the file, though read before
    assert [mapped for path, mapped in reads if path == official].count(False) == 1, reads
    assert transforms == [{"train": False, "crop_pct": 1.0, "crop_mode": "squash", "interpolation": "bicubic"}]
