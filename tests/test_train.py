"""train.py on a CPU: the small variant on the real test photos, what a run writes (TensorBoard,
checkpoints, the report), weights, loaders and the errors a user can cause. A run that goes on:
test_resume.py; how a stopped run ends: test_stops.py (under torchrun: test_processes.py); where a run writes:
test_runs.py; configs and flags: test_config.py; --eval-only: test_eval_only.py."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import config
import download
import processes
import run_log
import runs
import train
import utils
from splits import DataSplits
from model import create_model
from script_runs import FAST, ROOT, metrics, run_train, train_here
from utils import UserError


def test_learns_on_real_photos(flowers, tmp_path, capsys):
    train_here(capsys, "--data-path", flowers, "--num-classes", "5", *FAST, "--epochs", "12",
              "--output", tmp_path, "--name", "run")
    run_dir = tmp_path / "run"
    rows = metrics(run_dir)
    assert len(rows) == 12
    first = float(rows[0]["loss_train"])
    last = sum(float(r["loss_train"]) for r in rows[-3:]) / 3
    assert last < first * 0.85, (first, last)
    best = max(float(r["acc1_val"]) for r in rows)
    assert best > 0.35, best  # 5 classes: chance is 0.2
    for name in ("last.pth", "best.pth", "class_indices.json", "config.yaml"):
        assert (run_dir / name).is_file(), name
    ckpt = torch.load(run_dir / "best.pth", weights_only=True)  # plain data only
    assert ckpt["class_names"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert ckpt["variant"] == "swin_micro_patch4_window4_128" and ckpt["img_size"] == 64
    assert ckpt["model_overrides"]["num_classes"] == 5
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    accs = [float(r["acc1_val"]) for r in rows]
    assert ckpt["epoch"] == accs.index(max(accs)) + 1  # the first epoch with the best top-1
    # the best epoch's last.pth is best.pth's file (a second name), until last.pth is written again
    assert os.path.samefile(run_dir / "best.pth", run_dir / "last.pth") == (ckpt["epoch"] == 12)
    import yaml
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # the resolved config, flags and defaults
    assert saved["epochs"] == 12 and saved["model"] == "swin_micro_patch4_window4_128" and saved["lr"] == 1e-3
    assert saved["compile"] is None  # neither flag: decided by the run's length at each start (a CPU: eager)


def test_on_a_cpu_that_computes_in_bf16_a_run_trains_and_evaluates_in_it(flowers, tmp_path, capsys, monkeypatch):
    """--amp auto (precision.amp_dtype): the run in bf16 (said as it starts), and --eval-only of its checkpoint, whose
    report is then the run's own; --amp off as typed."""
    import precision
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    chosen = []
    monkeypatch.setattr(train, "amp_dtype", lambda *a, **k: chosen.append(precision.amp_dtype(*a, **k)) or chosen[-1])
    out = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "run")
    assert "amp bf16" in out and chosen == [torch.bfloat16]
    train_here(capsys, "--eval-only", "--resume", tmp_path / "run", "--no-progress")
    train_here(capsys, "--eval-only", "--resume", tmp_path / "run", "--no-progress", "--amp", "off")
    assert chosen == [torch.bfloat16, torch.bfloat16, None]


def test_tensorboard_holds_scalars_and_pictures(flowers, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--ema", "--output", tmp_path,
                     "--name", "tb")
    # the epoch line gives the EMA's balanced accuracy too: under --balance it is what may choose best.pth
    assert re.search(r"ema top-1 [0-9.]+ balanced [0-9.]+", out), out
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("loss/train", "loss/val", "acc1/train", "acc5/train", "acc1/val", "balanced_acc/val", "acc5/val",
                "acc1/val_ema", "lr",
                "time/epoch_seconds", "throughput/images_per_second", "class_recall/daisy"):
        assert tag in scalars, tag
    steps = EventAccumulator(str(tmp_path / "tb" / "steps"), size_guidance={"scalars": 0})  # numbered by step
    steps.Reload()
    assert [e.step for e in steps.Scalars("loss/train_step")] == [10]
    assert [e.step for e in events.Scalars("acc1/val")] == [1, 2]
    for tag in ("balanced_acc/val_ema", "loss/val_ema"):  # each that may choose best.pth
        assert tag in scalars, tag
    # HPARAMS: the same figures and settings in every run (the tab takes its columns from one), in a folder of their
    # own written anew at each end, at the run's last step (2 x 5)
    hparams = EventAccumulator(str(tmp_path / "tb" / "hparams"), size_guidance={"scalars": 0})
    hparams.Reload()
    best = max(float(row[key]) for row in metrics(tmp_path / "tb") for key in ("acc1_val", "acc1_val_ema"))
    assert [(e.step, e.value) for e in hparams.Scalars("hparam/best_acc1")] == [(10, pytest.approx(best, abs=1e-5))]
    assert {"hparam/best_balanced_acc", "hparam/last_val_loss"} <= set(hparams.Tags()["scalars"])
    # its columns: settings as the run resolved them (each of one type across runs: img_size was "" where the
    # variant's, a number where typed), not where the run was written or how it was started
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2
    [started] = [plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info
                 for file in (tmp_path / "tb" / "hparams").glob("events.out.tfevents.*")
                 for event in EventFileLoader(str(file)).Load() for value in event.summary.value
                 if value.tag == "_hparams_/session_start_info"]
    settings = {key: getattr(value, value.WhichOneof("kind")) for key, value in started.hparams.items()}
    assert (settings["img_size"], settings["window_size"], settings["num_classes"]) == (64, 4, 5)
    assert settings["drop_path_rate"] == 0.0 and settings["compile"] == 0 and settings["model"] == \
        "swin_micro_patch4_window4_128"
    assert not {"output", "name", "resume", "config", "progress"} & set(settings)
    images = set(events.Tags()["images"])
    assert {"train/augmented_images", "val/confusion_matrix", "val/where_it_looks"} <= images
    grid = events.Images("train/augmented_images")[0]
    assert grid.width > 64 and grid.height > 64
    # the first validation photo of each class (64 px crops, shown at 160), tinted where the model saw its choice
    looks = events.Images("val/where_it_looks")
    assert [e.step for e in looks] == [1, 2] and (looks[0].width, looks[0].height) == (5 * 164 + 4, 164 + 32 + 4)


def test_torchrun_on_a_cpu_starts_gloo_and_python_no_group(monkeypatch):
    """torchrun ... --device cpu (a GPU machine too: NCCL cannot reduce CPU tensors): gloo; plain python: no
    process group at all (tests/test_cuda.py checks NCCL for the GPU)."""
    import datetime
    started = []
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, timeout: started.append((backend, timeout)))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert processes.init_distributed("cpu") == (0, 1, 0, torch.device("cpu")) and started == []
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    assert processes.init_distributed("cpu") == (1, 2, 1, torch.device("cpu"))
    # 30 minutes for NCCL too (its default, 10, ended the others while the first downloaded flower_photos)
    assert started == [("gloo", datetime.timedelta(minutes=30))]


def test_a_runs_own_config_yaml_is_a_config_to_start_from(tmp_path):
    """config.yaml, the resolved config a run writes, names the --config it was given: fed back, that key is
    the file itself, not an unknown key."""
    (tmp_path / "config.yaml").write_text("config: null\nepochs: 3\nmodel: swin_micro_patch4_window4_128\n")
    parser = train.build_parser()
    cfg = config.parse_config(parser, ["--config", str(tmp_path / "config.yaml")])
    assert cfg.epochs == 3 and cfg.model == "swin_micro_patch4_window4_128"


def test_the_demo_config_trains_on_the_bundled_sample_with_no_other_flag(tmp_path):
    result = run_train("--config", "configs/cpu_demo.yaml", "--epochs", "1", "--output", tmp_path, "--name", "demo")
    assert "80 training and 20 validation images, 5 classes, swin_micro_patch4_window4_128" in result.stdout
    assert (tmp_path / "demo" / "best.pth").is_file()


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_config_trains_with_its_recipe(config, flowers, tmp_path, capsys):
    """Each config's recipe (augmentation, mixup, EMA, layer decay, schedule) runs an epoch, on the small variant at
    64 px without its weights: a setting that parses but does not train is found here, not by its user."""
    out = train_here(capsys, "--config", ROOT / "configs" / config, "--model", "swin_micro_patch4_window4_128",
                     "--img-size", "64", "--batch-size", "8", "--epochs", "1", "--weights", "none", "--data-path",
                     flowers, "--workers", "0", "--no-progress", "--output", tmp_path, "--name", "r")
    assert "epoch   1  train loss" in out and (tmp_path / "r" / "best.pth").is_file(), out
    assert ", 0 loader workers" in out  # the first line's settings


def test_files_that_do_not_decode_are_left_out_and_named(tmp_path, capsys, monkeypatch):
    import run_log
    from image_factory import write_broken_files, write_class_tree
    write_class_tree(tmp_path / "photos", {"cats": 6, "dogs": 6})
    broken = write_broken_files(tmp_path / "photos" / "cats")
    monkeypatch.setattr(run_log, "FILES_NAMED", 3)  # the others counted, and where to find them said
    train.main([str(a) for a in ["--data-path", tmp_path / "photos", *FAST, "--batch-size", "4", "--epochs", "1",
                                 "--output", tmp_path, "--name", "r"]])
    out, err = capsys.readouterr()
    assert "10 training and 2 validation images, 2 classes" in out  # the 12 good ones
    left_out = [line for line in err.splitlines() if line.startswith("warning: left out ")]
    assert len(left_out) == 3 and {line.split()[3].rstrip(":") for line in left_out} <= set(map(str, broken)), err
    # not split_data.py, which refuses split folders and writes a split: the run's own report lists them
    assert "warning: and 2 more files left out (the report.txt this run writes lists every one)" in err, err
    # the report says so too, for whoever reads it later: report.txt lists them all
    listed = (tmp_path / "r" / "report.txt").read_text().split("5 files in the data folder left out of the run:\n")[1]
    assert sorted(line.split(": ")[0] for line in listed.splitlines()) == sorted(map(str, broken))
    assert "5 files in the data folder were left out of the run, such as " in (tmp_path / "r" / "report.html").read_text()


def run_losing_the_photos(tmp_path, monkeypatch, capsys, losing, match) -> tuple:
    """A 3-epoch run on 12 photos, engine.train_one_epoch wrapped by `losing` (given the real one) to move the photos
    away at some point; it must stop with a UserError matching `match`. Returns (its last.pth, a function that puts
    the photos back and resumes the run with the real train_one_epoch)."""
    import engine
    from image_factory import write_class_tree
    write_class_tree(tmp_path / "photos", {"cats": 6, "dogs": 6})
    trained = engine.train_one_epoch
    monkeypatch.setattr(engine, "train_one_epoch", losing(trained))
    with pytest.raises(UserError, match=match):
        train.main([str(a) for a in ["--data-path", tmp_path / "photos", *FAST, "--batch-size", "4", "--epochs", "3",
                                     "--output", tmp_path, "--name", "r"]])

    def resume():
        monkeypatch.setattr(engine, "train_one_epoch", trained)
        (tmp_path / "away").rename(tmp_path / "photos")
        train_here(capsys, "--resume", tmp_path / "r")
    return torch.load(tmp_path / "r" / "last.pth", weights_only=True), resume


@pytest.mark.parametrize("gone_in", ["training", "validation"])
def test_a_data_folder_gone_midway_stops_the_run_with_what_was_kept(tmp_path, capsys, monkeypatch, gone_in):
    """The photos removed (a drive unmounted) in the second epoch: a run that went on would train on nothing,
    score 0% and finish as done. It stops with one line: what happened, what is saved, how to go on; gone in
    validation, that epoch's training is saved first."""
    def losing(trained):
        def losing_the_photos(state, *args, **kwargs):
            if state.epoch == 1 and gone_in == "training":
                (tmp_path / "photos").rename(tmp_path / "away")
            result = trained(state, *args, **kwargs)
            if state.epoch == 1 and gone_in == "validation":
                (tmp_path / "photos").rename(tmp_path / "away")
            return result
        return losing_the_photos
    kept = (r"this epoch's training is saved in .*r/last.pth" if gone_in == "validation" else
            r".*r/last.pth holds the run as of its last save")
    saved, resume = run_losing_the_photos(
        tmp_path, monkeypatch, capsys, losing,
        rf"^none of this epoch's \d+ {gone_in} images loaded \(the first, .*photos/.*: cannot be read .*No such "
        rf"file.*\): has .*photos moved, been unmounted or become unreadable\? {kept}; once the photos are back: "
        rf"python train.py --resume .*r$")
    assert saved["epoch"] == 1  # gone in validation: epoch 2 saved as trained, not validated
    assert saved["batches_done"] == (saved["layout"]["batches_per_epoch"] if gone_in == "validation" else 0)
    assert len(metrics(tmp_path / "r")) == 1 and not (tmp_path / "r" / "report.html").exists()
    # the photos back, the resume validates epoch 2 (a row of its own) and goes on: no epoch left out
    resume()
    assert [row["epoch"] for row in metrics(tmp_path / "r")] == ["1", "2", "3"]


def test_a_data_folder_gone_midway_through_training_does_not_save_that_epoch_as_trained(tmp_path, capsys,
                                                                                        monkeypatch):
    """The photos gone after the epoch's first batch: validation then finds none. The epoch trained on a part of its
    photos is not saved as trained (it was, unsaid, its metrics.csv row counting it whole): the message says how
    many training images failed too, and the resume trains the epoch again."""
    from loaders import Take

    def losing(trained):
        def losing_the_photos_midway(state, batches, *args, **kwargs):
            def batches_then_gone():
                for number, batch in enumerate(batches):
                    yield batch
                    if state.epoch == 1 and number == 0:
                        (tmp_path / "photos").rename(tmp_path / "away")
            return trained(state, Take(batches_then_gone(), len(batches)), *args, **kwargs)
        return losing_the_photos_midway
    saved, resume = run_losing_the_photos(
        tmp_path, monkeypatch, capsys, losing,
        r"^none of this epoch's \d+ validation images loaded .*become unreadable\? 4 of its 8 training images failed "
        r"too: the epoch is not saved, and trains again on resuming; .*r/last.pth holds the run as of its last save; "
        r"once the photos are back: python train.py --resume .*r$")
    assert saved["epoch"] == 1 and saved["batches_done"] == 0  # the first epoch's end: the second trains again
    resume()
    assert [row["data_failed_images"] for row in metrics(tmp_path / "r")] == ["0", "0", "0"]


@pytest.mark.parametrize("args, message", [
    (["--data-path", "no/such/folder"], "data path not found: no/such/folder"),
    (["--data-path", ROOT / "README.md"], "data path is a file, not a folder: .*README.md"),
    (["--model", "swin_tiny_patch4_window9"], "unknown model"),
    (["--model", "swin_tinyy"], "unknown model 'swin_tinyy'. Did you mean swin_tiny_patch4_window7_224, "),
    (["--weights", "no/such.pth"], "^error: checkpoint not found: no/such.pth$"),
    (["--weights", "no/such.onnx"], "^error: checkpoint not found: no/such.onnx$"),  # not "is a program"
    (["--device", "cuda"], "CUDA"),
    (["--cuda-graphs"], "--cuda-graphs needs a CUDA GPU, and this run is on cpu: run without it"),
    (["--num-classes", "3"], "--num-classes 3 was given, but .* has 5 class folders: daisy, dandelion"),
    (["--val-ratio", "0"], "gives no validation images, which choose best.pth: use --val-ratio above 0"),
    (["--decode", "device", "--recipe", "official"], "--decode device works with --recipe tutorial"),
    (["--output", "/dev/null/runs"], "^error: /dev/null/runs.*: Not a directory"),  # the run folder, or its folder
])
def test_user_errors_are_one_line_without_traceback(flowers, tmp_path, capsys, args, message):
    """In this process, through run_cli as the script runs main (another exception than its exit would
    fail the test); tests/test_stops.py sees such an error in a process of its own (a checkpoint that
    cannot be written: one line, status 2)."""
    if torch.cuda.is_available() and ("cuda" in args or "--cuda-graphs" in args):
        pytest.skip("this machine has a GPU")
    base = ["--data-path", str(flowers), *FAST, "--epochs", "1", "--output", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        utils.run_cli(lambda: train.main([*base, *map(str, args)]))
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "weights from" not in out  # said once the weights are loaded, not before an error
    import re
    assert re.search(message, err, re.MULTILINE), err


@pytest.mark.parametrize("args, message", [
    (["--mixup", "0.8", "--batch-size", "7"], r"^--batch-size 7 is odd, and mixup and cutmix mix the images"),
    (["--cutmix", "1.0", "--batch-size", "3"], r"^--batch-size 3 is odd"),
    (["--decode", "device", "--recipe", "official"], r"^--decode device works with --recipe tutorial"),
    (["--warmup-lr", "1e-3"], r"^--warmup-lr 0.001 is above --lr 0.0001: the warmup would lower the lr"),
])
def test_flags_that_cannot_train_together_are_refused_before_any_photo_is_fetched(tmp_path, monkeypatch, args,
                                                                                   message):
    """Said as the run starts, as --min-lr above --lr is: not after flower_photos (218 MB, the default --data-path)
    was fetched, the official weights downloaded and the model built (an odd batch with mixup and --decode device
    with the official recipe were found by the loader and the mixup; a --warmup-lr above --lr trained, its notice
    saying the lr "rises" as it fell)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(download, "fetch_tutorial_photos", lambda *_: pytest.fail("the photos fetched first"))
    with pytest.raises(UserError, match=message):
        train.main(args)


def test_loader_workers_started_afresh_train_as_forked_ones(flowers, tmp_path, capsys):
    """Loader workers that start a fresh interpreter (spawn: macOS and Windows; forkserver: Linux from
    Python 3.14) get the dataset, its transforms and their seeds by pickling, not by a copy of the
    training process: the run works and gives the forked workers' results."""
    import multiprocessing
    common = ["--data-path", flowers, *FAST, "--workers", "2", "--epochs", "1", "--output", tmp_path]
    before = multiprocessing.get_start_method(allow_none=True)
    losses = {}
    try:
        for method in ("fork", "spawn"):
            multiprocessing.set_start_method(method, force=True)
            assert ", 2 loader workers" in train_here(capsys, *common, "--name", method)
            losses[method] = metrics(tmp_path / method)[0]["loss_train"]
    finally:
        multiprocessing.set_start_method(before, force=True)
    assert losses["spawn"] == losses["fork"]


def test_decoding_on_the_device_trains_as_decoding_in_the_workers(flowers, tmp_path, capsys, monkeypatch):
    """--decode device on the CPU (the code nvJPEG runs on a GPU, but for the decoder itself): the same crops,
    so the same training within the decoders' grey level or so; the training process decodes them."""
    import data
    real, decoded = data.decode_jpegs, []
    monkeypatch.setattr(data, "decode_jpegs", lambda files, device: decoded.extend(files) or real(files, device))
    common = ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--workers", "2"]
    train_here(capsys, *common, "--name", "workers")
    assert not decoded
    train_here(capsys, *common, "--name", "device", "--decode", "device")
    assert len(decoded) >= 40  # most of the epoch's 80 (crops of small photos the workers decode whole)
    (on_workers,), (on_device,) = metrics(tmp_path / "workers"), metrics(tmp_path / "device")
    assert abs(float(on_workers["loss_train"]) - float(on_device["loss_train"])) < 0.01
    assert on_device["data_failed_images"] == "0"


def test_large_photos_are_said_with_the_command_that_makes_smaller_copies(tmp_path, capsys):
    """A phone's 12 MP photos cost their decoding every epoch: said at the start, judged on a median. (Headers only:
    the sizes are all that is read.)"""
    from image_factory import png_bytes
    for name, (width, height) in {"a.png": (4000, 3000), "b.png": (4032, 3024), "c.png": (640, 480)}.items():
        (tmp_path / name).write_bytes(png_bytes(width, height))
    photos = [(str(tmp_path / name), 0) for name in ("a.png", "b.png", "c.png")]
    run_log.notice_large_photos(DataSplits(tmp_path, ["x"], photos, [], [], [], drawn=True), 224, Path("my photos"),
                                0.2)
    assert capsys.readouterr().out == (
        "notice: the training photos are large, some 4000x3000 (12 MP, the median of 3): decoding them is most of "
        "each epoch's loading; smaller copies, made once, load many times faster: python split_data.py --data-path "
        "'my photos' --max-size 512 --val-ratio 0.2, then --data-path data\n")
    run_log.notice_large_photos(DataSplits(tmp_path, ["x"], photos[:2], [], [], [], drawn=False), 384, tmp_path, 0.2)
    assert "split_data.py --max-size 768 writes them from a folder of class folders" in capsys.readouterr().out
    run_log.notice_large_photos(DataSplits(tmp_path, ["x"], photos[::2], [], [], [], drawn=True), 224, tmp_path, 0.2)
    assert capsys.readouterr().out == ""  # the median of two is the smaller: 640x480


def test_a_gpu_that_waits_for_data_is_told_once_what_to_do(capsys, monkeypatch):
    """On a GPU, an epoch whose training waited for the loader for over a fifth of its time is said once, with
    what would feed it faster; not on a process's first epoch (its workers start), nor on a CPU."""
    import argparse
    monkeypatch.setattr(run_log, "usable_cores", lambda: 16)
    cfg = argparse.Namespace(decode="workers", workers=15)
    epoch = {"images": 1280, "seconds": 10.0, "data_seconds": 3.0}
    waits = run_log.DataWaits(cfg, torch.device("cuda"))
    waits.check(epoch, 1, True)  # the first epoch of the process
    waits.check({**epoch, "data_seconds": 2.0}, 2, False)  # 20%: not over
    assert capsys.readouterr().out == ""
    waits.check(epoch, 3, False)
    waits.check(epoch, 4, False)
    assert capsys.readouterr().out == (
        "notice: training waited for data 30% of epoch 3 (the GPU idle for up to that long): the loader gives fewer "
        "images a second than the GPU trains on. To train faster, decode the JPEGs on the GPU (--decode device), or "
        "give the loader more workers (--workers N, now 15 on 16 CPU cores).\n")
    cfg.decode = "device"
    run_log.DataWaits(cfg, torch.device("cuda:0")).check(epoch, 2, False)
    assert "more workers (--workers N, now 15 on 16 CPU cores), or put the photos on a faster disk" in \
        capsys.readouterr().out
    run_log.DataWaits(cfg, torch.device("cpu")).check(epoch, 2, False)
    run_log.DataWaits(cfg, torch.device("cuda")).check({**epoch, "images": 0, "seconds": 0.0, "data_seconds": 0.0},
                                                      2, False)  # resumed after its last batch: nothing trained
    assert capsys.readouterr().out == ""


def test_train_py_checks_each_epoch_for_data_waits(flowers, tmp_path, capsys, monkeypatch):
    """train.py asks after each epoch but a process's first (here on a CPU, as a GPU would be asked)."""
    asked = []
    monkeypatch.setattr(run_log.DataWaits, "check", lambda self, train, epoch, first: asked.append((epoch, first)))
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "3", "--stop-after-epochs", "2", "--output",
               tmp_path, "--name", "w")
    train_here(capsys, "--resume", tmp_path / "w", "--no-progress")
    assert asked == [(1, True), (2, False), (3, True)]


def test_a_configs_num_classes_that_the_data_lacks_names_the_configs_key(tmp_path, monkeypatch):
    """num_classes set in a --config file was answered "Drop --num-classes", a flag the user may never have typed."""
    from image_factory import write_class_tree
    write_class_tree(tmp_path / "data", {"a": 2, "b": 2})
    config = tmp_path / "run.yaml"
    config.write_text(f"data_path: {tmp_path / 'data'}\nnum_classes: 3\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=rf"^--num-classes 3 \(typed, or num_classes in {config}\) was given, but "
                                        r".*data has 2 class folders: a, b\. Drop it or fix the folders\.$"):
        train.main(["--config", str(config), "--device", "cpu"])


def test_folder_without_images_is_an_error(tmp_path, capsys):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    (tmp_path / "data" / "dogs" / "notes.txt").write_text("no photos here")
    with pytest.raises(SystemExit) as exited:
        utils.run_cli(lambda: train.main([str(a) for a in ["--data-path", tmp_path / "data", *FAST, "--output",
                                                           tmp_path]]))
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "cats" in err or "dogs" in err


def test_freeze_layers_trains_only_the_head(flowers, tmp_path, capsys):
    first = create_model("swin_micro_patch4_window4_128", num_classes=5).state_dict()
    torch.save(first, tmp_path / "start.pth")
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "b",
              "--weights", tmp_path / "start.pth", "--freeze-layers")
    after = torch.load(tmp_path / "b" / "last.pth", weights_only=True)["model"]
    changed = {k for k in first if not torch.equal(first[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    # resumed, it freezes again: its optimizer holds the head's state only, as the checkpoint's does
    train_here(capsys, "--resume", tmp_path / "b", "--epochs", "2")
    resumed = torch.load(tmp_path / "b" / "last.pth", weights_only=True)
    assert resumed["epoch"] == 2 and all(torch.equal(first[k], resumed["model"][k]) for k in first
                                         if not k.startswith("head."))


def test_weights_report_and_from_scratch_notice(flowers, tmp_path, capsys):
    """Where the weights come from is said, and so are settings that defeat themselves: freezing a random
    backbone, a warmup as long as the run."""
    fresh = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "x",
                       "--freeze-layers")
    assert "notice: no pretrained weights" in fresh
    assert "notice: --freeze-layers with no pretrained weights trains a classifier on random features" in fresh
    # 80 training photos in batches of 16: five steps, the last at 1e-7 + (1e-3 - 1e-7) * 4 / 5
    assert ("notice: --warmup-epochs 1 spans the whole run of 1 epoch, 5 steps: the lr rises from --warmup-lr "
            "1.0e-07 to 8.0e-04 at the last step (--lr 1.0e-03 is never reached)") in fresh
    assert "  lr 8.00e-04  " in fresh  # the epoch line's: its last step's lr, not the schedule's next
    assert float(metrics(tmp_path / "x")[-1]["lr"]) == pytest.approx(1e-7 + (1e-3 - 1e-7) * 4 / 5, rel=1e-5)
    import model
    torch.save({"model": model.create_model("swin_micro_patch4_window4_128").state_dict()}, tmp_path / "w.pth")
    loaded = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "y",
                        "--weights", tmp_path / "w.pth", "--freeze-layers")
    assert "loaded" in loaded and "skipped (2): head.weight" in loaded
    assert "--freeze-layers with" not in loaded and "--warmup-epochs" not in loaded


def test_two_processes_with_torchrun(flowers, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "train.py", "--data-path", str(flowers), *FAST, "--epochs", "2", "--output", str(tmp_path),
         "--name", "ddp"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder") == 1  # only rank 0 speaks
    rows = metrics(tmp_path / "ddp")
    assert len(rows) == 2
    best = max(rows, key=lambda r: float(r["acc1_val"]))  # the report shows best.pth's mistakes from both ranks
    assert (tmp_path / "ddp" / "report.html").read_text().count("<figure>") == round((1 - float(best["acc1_val"])) * 20)
    ckpt = torch.load(tmp_path / "ddp" / "last.pth", weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["model"])
    # its resume while a run trains in the folder (a lock held here): the first process decides, and the line is
    # said once, in torchrun's summary by every process (the others said the run had stopped, or went on to train)
    held = runs.lock_run_folder(tmp_path / "ddp")
    again = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "train.py", "--resume", str(tmp_path / "ddp"), "--epochs", "3"], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    held.close()
    said = [line for line in again.stderr.splitlines() if line.startswith(f"error: {tmp_path / 'ddp'} is in use")]
    assert again.returncode != 0 and len(said) == 1 and "holds" not in again.stderr, again.stderr
    assert again.stderr.count(f"traceback : error: {tmp_path / 'ddp'} is in use") == 2
    assert len(metrics(tmp_path / "ddp")) == 2


def test_download_weights_then_train_from_them(flowers, tmp_path, served, monkeypatch, capsys):
    import download
    import model
    folder, url = served
    torch.save({"model": model.create_model("swin_micro_patch4_window4_128").state_dict()}, folder / "micro.pth")
    monkeypatch.setitem(download.OFFICIAL_WEIGHTS, "swin_micro_patch4_window4_128", "micro.pth")
    monkeypatch.setattr(download, "OFFICIAL_WEIGHTS_URL", url)
    monkeypatch.chdir(tmp_path)  # weights/ is looked for where train.py runs
    # a config's weights: line that names the official file (configs/finetune_*.yaml) downloads it too
    named = ["--weights", "weights/swin_micro_patch4_window4_128.pth"]
    with pytest.raises(UserError, match=r"weights not found: weights/swin_micro_patch4_window4_128\.pth\. "
                                        "--download-weights fetches them"):
        train.main(["--data-path", str(flowers), *FAST, "--epochs", "1", "--output", str(tmp_path), *named])
    train.main(["--data-path", str(flowers), *FAST, "--epochs", "1", "--output", str(tmp_path),
                "--name", "dl", *named, "--download-weights"])
    out = capsys.readouterr().out
    assert (tmp_path / "weights" / "swin_micro_patch4_window4_128.pth").is_file()
    assert "downloading the official weights" in out and "skipped (2): head.weight" in out


def test_an_epoch_that_leaves_out_many_images_says_so(capsys):
    """Whole batches only, in every process: 80 images in 2 processes' batches of 16 train 64 an epoch."""
    run_log.notice_left_out(80, 2, 16, 2)
    assert capsys.readouterr().out == ("notice: an epoch trains 64 of the 80 training images, in 2 processes x whole "
                                       "batches of 16 (each epoch leaves out others); a smaller --batch-size trains "
                                       "more of them\n")
    run_log.notice_left_out(80, 5, 16, 1)  # the demo: all of them
    run_log.notice_left_out(85, 21, 4, 1)  # 84 of 85
    assert capsys.readouterr().out == ""


def test_the_pretrained_file_where_the_tutorial_keeps_it_is_found(flowers, tmp_path, capsys, monkeypatch):
    """The tutorial's train.py reads ./swin_tiny_patch4_window7_224.pth: a file there, with none in weights/, was
    passed over and the run trained from scratch."""
    monkeypatch.chdir(tmp_path)
    torch.save(create_model("swin_micro_patch4_window4_128").state_dict(), "swin_micro_patch4_window4_128.pth")
    said = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path / "runs")
    assert "using swin_micro_patch4_window4_128.pth, where the tutorial keeps it" in said
    assert "from scratch" not in said


@pytest.mark.parametrize("flags", [["--download-weights"], ["--weights", "weights/swin_micro_patch4_window4_128.pth"]],
                         ids=["download-weights", "config-names-weights"])
def test_the_tutorials_pretrained_file_is_found_by_download_weights_and_a_finetune_config(
        flowers, tmp_path, capsys, monkeypatch, flags):
    """README's `--download-weights` command and configs/finetune_*.yaml (weights: weights/<variant>.pth) with the
    file where the tutorial keeps it: the first fetched it again (offline: an error), the second said not found."""
    import download
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(download, "download", lambda *a, **k: pytest.fail("downloaded a file that is here"))
    torch.save(create_model("swin_micro_patch4_window4_128").state_dict(), "swin_micro_patch4_window4_128.pth")
    said = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path / "runs", *flags)
    assert "using swin_micro_patch4_window4_128.pth, where the tutorial keeps it" in said


def test_the_tutorials_weights_flag_as_typed_is_the_official_file(flowers, tmp_path, capsys, monkeypatch):
    """The tutorial's --weights ./<variant>.pth, the file not there: --download-weights fetched nothing and the run
    ended 'checkpoint not found'."""
    monkeypatch.chdir(tmp_path)
    typed = ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path / "runs",
             "--weights", "./swin_micro_patch4_window4_128.pth"]
    with pytest.raises(UserError, match="not found: swin_micro_patch4_window4_128.pth"):
        train_here(capsys, *typed)

    def fetch(variant, *args, **kwargs):
        Path("weights").mkdir(exist_ok=True)
        torch.save(create_model(variant).state_dict(), f"weights/{variant}.pth")
    monkeypatch.setattr(download, "fetch_official_weights", fetch)
    said = train_here(capsys, *typed, "--download-weights")
    assert "weights from weights/swin_micro_patch4_window4_128.pth: loaded" in said
