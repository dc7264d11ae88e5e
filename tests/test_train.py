"""train.py on a CPU: the small variant on the real test photos, what a run writes (TensorBoard,
checkpoints, the report), resume, weights, loaders and the errors a user can cause. How a stopped run
ends: test_stops.py; configs and flags: test_config.py."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import config
import engine
import train
import utils
import weights
from images import DataSplits
from model import create_model
from runs import FAST, ROOT, metrics, run_train, train_here
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


def test_tensorboard_holds_scalars_and_pictures(flowers, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--ema", "--output", tmp_path, "--name", "tb")
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("loss/train", "loss/val", "acc1/train", "acc5/train", "acc1/val", "balanced_acc/val", "acc5/val",
                "acc1/val_ema", "lr",
                "time/epoch_seconds", "throughput/images_per_second", "loss/train_step", "class_recall/daisy"):
        assert tag in scalars, tag
    assert [e.step for e in events.Scalars("acc1/val")] == [1, 2]
    assert [e.step for e in events.Scalars("hparam/best_acc1")] == [10]  # at the run's last step, 2 x 5
    steps = [e.step for e in events.Scalars("loss/train_step")]  # every 10th, written a step later
    assert steps and all(step % 10 == 0 for step in steps), steps
    images = set(events.Tags()["images"])
    assert {"train/augmented_images", "confusion_matrix/val", "val/where_it_looks"} <= images
    grid = events.Images("train/augmented_images")[0]
    assert grid.width > 64 and grid.height > 64
    # the first validation photo of each class (64 px crops, shown at 160), tinted where the model saw its choice
    looks = events.Images("val/where_it_looks")
    assert [e.step for e in looks] == [1, 2] and (looks[0].width, looks[0].height) == (5 * 164 + 4, 164 + 18 + 4)


def test_resume_is_bit_identical(flowers, tmp_path, capsys):
    """2 epochs in one run == 1 epoch, stop, resume for 1 more; with worker processes, so the
    augmentation randomness must not depend on them, and the official recipe, whose RandAugment runs in
    the workers and random erasing, like mixup, on the batch in the training process."""
    common = ["--data-path", flowers, *FAST, "--workers", "2", "--epochs", "2", "--output", tmp_path,
              "--mixup", "0.2", "--drop-path-rate", "0.1", "--recipe", "official"]
    train_here(capsys, *common, "--name", "straight")
    train_here(capsys, *common, "--name", "split", "--stop-after-epochs", "1")
    first_half = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert first_half["epoch"] == 1
    torch.save(first_half, tmp_path / "split" / "epoch1.pth")
    out = run_train("--resume", tmp_path / "split")  # a process of its own: all it knows is in last.pth
    assert "resumed at epoch 2" in out.stdout
    straight = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 2
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert [r["loss_train"] for r in metrics(tmp_path / "straight")] == \
        [r["loss_train"] for r in metrics(tmp_path / "split")]
    # resuming a finished run (a job that resumes until done) trains nothing and says how to go on
    saved_at = (tmp_path / "split" / "last.pth").stat().st_mtime_ns
    again = train_here(capsys, "--resume", tmp_path / "split")
    assert "has finished its 2 epochs" in again and "--epochs N, N above 2" in again
    assert "report.html was not written" not in again
    (tmp_path / "split" / "report.html").unlink()  # as a kill while the report was written leaves the run
    again = train_here(capsys, "--resume", tmp_path / "split")
    assert f"report.html was not written: python train.py --eval-only --resume {tmp_path / 'split' / 'best.pth'}" \
        in again
    fewer = train_here(capsys, "--resume", tmp_path / "split", "--epochs", "1")
    assert "has trained 2 epochs, more than --epochs 1 (best" in fewer and "--epochs N, N above 2" in fewer
    # training on from an older checkpoint of the run would write over last.pth's epochs; a new run under the
    # run's --name would write over the run: each refused, saying how to go on, the run untouched
    with pytest.raises(UserError, match=rf"epoch1.pth is from epoch 1, but .*last.pth has 2 epochs: .* To go on "
                                        rf"from there: python train.py --resume {tmp_path / 'split'}\. .*mv "):
        train.main(["--resume", str(tmp_path / "split" / "epoch1.pth")])
    with pytest.raises(UserError, match=rf"{tmp_path / 'split'} holds a run already: python train.py --resume"):
        train.main([*map(str, common), "--name", "split"])
    assert (tmp_path / "split" / "last.pth").stat().st_mtime_ns == saved_at
    assert len(metrics(tmp_path / "split")) == 2
    # a batch size typed on resuming divides an epoch otherwise: the schedule goes on from the epochs done
    relaid = train_here(capsys, "--resume", tmp_path / "split", "--epochs", "3", "--batch-size", "8")
    assert "resumed at epoch 3, step 10 (best" in relaid and "10 steps an epoch here, 5 before" in relaid, relaid
    # the step count goes on as it was (TensorBoard's points of the steps before stay), 10 steps more
    assert [row["step"] for row in metrics(tmp_path / "split")] == ["5", "10", "20"]


def test_a_resumed_run_validates_on_the_files_it_drew_at_its_start(flowers, tmp_path, capsys):
    """A training photo that fails to decode on resuming would shift its class's split drawn again (4 of 19
    validate, not 4 of 20), putting trained photos into validation: the run's val_files.json keeps the split."""
    import json
    import shutil
    data = tmp_path / "photos"
    shutil.copytree(flowers, data)
    train_here(capsys, "--data-path", data, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "v")
    val = json.loads((tmp_path / "v" / "val_files.json").read_text())["val"]
    assert len(val) == 20 and all((data / name).is_file() for name in val)
    (next(path for path in sorted((data / "daisy").iterdir()) if f"daisy/{path.name}" not in val)
     .write_bytes(b"no longer a photo"))
    resumed = train_here(capsys, "--resume", tmp_path / "v", "--epochs", "2")
    assert "79 training and 20 validation images" in resumed
    # a validation photo renamed since is said to be gone; another --val-ratio draws the split again, said too
    (data / val[0]).rename(data / val[0].replace(".jpg", "_renamed.jpg"))
    evaluate = ["--eval-only", "--resume", tmp_path / "v", "--workers", "0", "--no-progress"]
    train.main(list(map(str, evaluate)))
    out, err = capsys.readouterr()
    assert "val: 19 images" in out and f"1 of the run's 20 validation files are no longer in {data}" in err
    (tmp_path / "v" / "val_files.json").write_text((tmp_path / "v" / "val_files.json").read_text()[:50])
    cut_short = train_here(capsys, *evaluate)
    assert "val_files.json is not the JSON a run writes: the validation files are drawn again" in cut_short
    (tmp_path / "v" / "val_files.json").write_text(json.dumps({"data_path": str(data.resolve()), "val_ratio": 0.2,
                                                                "val": val}))
    again = train_here(capsys, *evaluate, "--val-ratio", "0.3")
    assert "notice: the run drew its validation files from" in again and "from {} at 0.3 they are drawn again".format(
        data.resolve()) in again


@pytest.mark.parametrize("edit", [{"val_ratio": "0.2"}, {"val_ratio": None}, {"val": "abc"}, {"val": [1, 2]},
                                  {"data_path": 3}])
def test_a_split_record_edited_into_other_types_is_drawn_anew(tmp_path, capsys, edit):
    """Read on the first process while the others wait: any record but a run's is said and drawn again."""
    import json
    import run_log
    record = {"data_path": str(tmp_path.resolve()), "val_ratio": 0.2, "val": ["daisy/1.jpg"]}
    (tmp_path / "val_files.json").write_text(json.dumps(record))
    assert run_log.read_recorded_split(tmp_path / "val_files.json", tmp_path, 0.2) == {"daisy/1.jpg"}
    (tmp_path / "val_files.json").write_text(json.dumps({**record, **edit}))
    assert run_log.read_recorded_split(tmp_path / "val_files.json", tmp_path, 0.2) is None
    assert "is not the JSON a run writes" in capsys.readouterr().out


def test_what_a_finished_or_stopped_run_says_gives_commands_that_work(tmp_path, capsys, monkeypatch):
    """The commands printed are quoted for a shell; a finished run's missing report is said until one is
    written (by the --eval-only it names), and only of a run folder; a stop by --stop-after-epochs is
    repeated in its resume command, as the job that resumes it has the same time limit."""
    import shlex
    import types
    import run_log
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = tmp_path / "my run"
    run.mkdir()
    cfg = types.SimpleNamespace(epochs=2, resume=run)
    finished = {"epoch": 2, "best_acc": 0.5}
    run_log.say_finished(cfg, finished, run)
    assert capsys.readouterr().out.count("\n") == 1  # not a run folder (no config.yaml): no word of a report
    (run / "config.yaml").write_text("epochs: 2\n")
    run_log.say_finished(cfg, finished, run)
    said = capsys.readouterr().out.splitlines()[1]
    command = shlex.split(said.split(" was not written: ")[1].split(" writes the report")[0])
    assert command == ["python", "train.py", "--eval-only", "--resume", str(run / "best.pth")]
    (run / "eval_val").mkdir()
    (run / "eval_val" / "report.html").write_text("")
    run_log.say_finished(cfg, finished, run)
    assert "was not written" not in capsys.readouterr().out
    state = types.SimpleNamespace(epoch=1, batches_done=0, step=5)
    run_log.say_stopped(state, "--stop-after-epochs 1", run)
    assert shlex.split(capsys.readouterr().out.splitlines()[1]) == \
        ["python", "train.py", "--resume", str(run), "--stop-after-epochs", "1"]
    run_log.say_stopped(state, "SIGINT", run)
    assert shlex.split(capsys.readouterr().out.splitlines()[1]) == ["python", "train.py", "--resume", str(run)]


def test_metrics_csv_holds_an_epoch_once_its_latest_training(tmp_path):
    """A run killed after an epoch's row but before its last.pth trains that epoch again on resuming: its row
    replaces the old one and any later ones; a column new since (EMA's, turned on when resuming) gets a header."""
    import run_log
    path = tmp_path / "metrics.csv"
    for epoch in (1, 2, 3):
        run_log.write_metrics_row(path, {"epoch": epoch, "loss_train": epoch / 10})
    run_log.write_metrics_row(path, {"epoch": 2, "loss_train": 0.25, "acc1_val_ema": 0.5})
    assert metrics(tmp_path) == [{"epoch": "1", "loss_train": "0.1", "acc1_val_ema": ""},
                                 {"epoch": "2", "loss_train": "0.25", "acc1_val_ema": "0.5"}]


def test_steps_logged_after_the_checkpoint_a_resume_starts_from_are_not_shown_twice(flowers, tmp_path, capsys):
    """A run killed after logging steps that its last.pth does not hold logs them again on resuming:
    TensorBoard shows each step once, the later run's."""
    import shutil
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "p"
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "p")
    shutil.copy(run / "last.pth", tmp_path / "epoch1.pth")  # step 5
    train_here(capsys, "--resume", run, "--epochs", "2")  # logs the loss at step 10
    (run / "last.pth").unlink()
    shutil.copy(tmp_path / "epoch1.pth", run / "last.pth")  # as if killed before epoch 2's last.pth
    train_here(capsys, "--resume", run, "--epochs", "2")
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [10]


def test_a_run_killed_before_its_first_checkpoint_starts_again_in_its_folder(flowers, tmp_path, capsys):
    """Killed after its first epoch line and metrics.csv row but before best.pth and last.pth: --resume says
    there is nothing to resume and gives the command that starts the run again, which runs there, with
    metrics.csv and TensorBoard holding the new run's epoch once; one killed between best.pth and last.pth
    is pointed at best.pth."""
    import shlex
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "k"
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "k")
    (run / "best.pth").rename(tmp_path / "best.pth")
    (run / "last.pth").unlink()
    with pytest.raises(UserError, match="holds no checkpoint: the run stopped before its first epoch was saved") as err:
        train.main(["--resume", str(run)])
    command = shlex.split(str(err.value).split("To start it again: ")[1])
    assert command[:2] == ["python", "train.py"]
    train_here(capsys, *command[2:])
    assert len(metrics(run)) == 1 and (run / "last.pth").is_file()
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("acc1/val")] == [1]  # the first run's point hidden (purge_step 0)
    (run / "last.pth").unlink()
    with pytest.raises(UserError, match=rf"no last.pth, only best.pth \(stopped while saving\): python train.py "
                                        rf"--resume {run / 'best.pth'} goes on from it"):
        train.main(["--resume", str(run)])


def test_a_kill_after_last_pth_loses_no_point_logged_up_to_its_step(flowers, tmp_path, capsys, monkeypatch):
    """The loss of every 10th step is written a step late (engine.HostCopy); a kill right after an epoch's
    last.pth, at step 10, must not lose that point, since the resume drops the points after step 10 only: it is
    on disk before last.pth is written (SummaryWriter queues what it is given, and a killed process closes
    nothing, which the writer's close made a no-op here stands for, the writer kept from the garbage collector,
    which would flush its file)."""
    import engine
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    unclosed = []
    monkeypatch.setattr(SummaryWriter, "close", lambda self: unclosed.append(self))
    real, calls = engine.stop_agreed, []

    def killed_after_epoch_2s_save(stop, device):
        calls.append(1)
        if len(calls) == 4:  # after epoch 1's two and epoch 2's first: its last.pth is saved
            raise RuntimeError("killed")
        return real(stop, device)
    monkeypatch.setattr(engine, "stop_agreed", killed_after_epoch_2s_save)
    with pytest.raises(RuntimeError, match="killed"):
        train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "3", "--output", tmp_path, "--name", "k")
    monkeypatch.setattr(engine, "stop_agreed", real)
    monkeypatch.undo()
    train_here(capsys, "--resume", tmp_path / "k")
    events = EventAccumulator(str(tmp_path / "k"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [10]


def test_torchrun_on_a_cpu_starts_gloo_and_python_no_group(monkeypatch):
    """torchrun ... --device cpu (a GPU machine too: NCCL cannot reduce CPU tensors): gloo; plain python: no
    process group at all (tests/test_cuda.py checks NCCL for the GPU)."""
    started = []
    monkeypatch.setattr(torch.distributed, "init_process_group", started.append)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert utils.init_distributed("cpu") == (0, 1, 0, torch.device("cpu")) and started == []
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    assert utils.init_distributed("cpu") == (1, 2, 1, torch.device("cpu")) and started == ["gloo"]


def test_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    import run_log
    stamped = tmp_path / "runs" / "swin_micro-20261129-101347"
    made = [run_log.make_run_folder(stamped, named=False) for _ in range(3)]
    assert [p.name for p in made] == [stamped.name, f"{stamped.name}-2", f"{stamped.name}-3"]
    assert run_log.make_run_folder(stamped, named=True) == stamped  # --name's, or a resumed run's own


def test_a_run_without_loss_scaling_resumes_with_fp16():
    """A checkpoint from a bf16, fp32 or CPU run holds an empty scaler state; resumed with fp16 (--amp
    fp16, or an older GPU), the run starts its own loss scale instead of failing to load it."""
    cfg = train.build_parser().parse_args(["--warmup-epochs", "0", "--epochs", "2"])
    net = create_model("swin_micro_patch4_window4_128", num_classes=5)
    before = engine.build_train_state(cfg, net, net, torch.device("cpu"), torch.bfloat16, 10, [1] * 5)
    checkpoint = {"optimizer": before.optimizer.state_dict(), "scheduler": before.scheduler.state_dict(),
                  "scaler": before.scaler.state_dict(), "epoch": 1, "step": 10, "batches_done": 0, "best_acc": 0.5,
                  "rng": utils.rng_state()}
    assert checkpoint["scaler"] == {}
    after = engine.build_train_state(cfg, net, net, torch.device("cpu"), torch.float16, 10, [1] * 5)
    after.resume_from(checkpoint)
    assert after.step == 10 and after.scaler.is_enabled() and after.scaler.get_scale() == 2.0 ** 16
    assert after.best_acc == 0.5
    # resumed with --balance, best.pth is chosen by another figure: the top-1 so far is no bar to it
    after.resume_from(checkpoint, "balanced_acc")
    assert after.best_acc == -1.0


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_cpu_runs_take_big_tensors_from_the_heap_again():
    """utils.reuse_freed_cpu_memory (train.py and predict.py on a CPU): a 64 MB tensor made and freed step
    after step comes from the heap without a page fault once the heap has grown to the steps' needs (a few
    steps); without it glibc maps it afresh every time, 16,384 pages zeroed one by one."""
    code = """if True:
        import resource, sys, torch, utils
        if sys.argv[1] == "reuse":
            utils.reuse_freed_cpu_memory()
        for step in range(10):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            x, y = torch.ones(2**24), torch.ones(256)  # 64 MB, and a small tensor made after it, as a step makes
            del x
        print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"""
    faults = {how: int(subprocess.run([sys.executable, "-c", code, how], cwd=ROOT, capture_output=True, text=True,
                                      check=True).stdout) for how in ("glibc", "reuse")}
    assert faults["glibc"] > 10_000 and faults["reuse"] < 1_000, faults


def test_a_resumed_run_keeps_its_settings_but_not_the_old_machines_worker_count(tmp_path):
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, "epoch": 1,
                "config": {"lr": 0.003, "epochs": 9, "workers": 15, "data_path": "photos", "output": "runs"}},
               tmp_path / "last.pth")
    parser = train.build_parser()
    for argv, lr in ((["--resume", str(tmp_path)], 0.003), (["--resume", str(tmp_path), "--lr", "0.01"], 0.01)):
        cfg, checkpoint = weights.resume_config(parser, config.parse_config(parser, argv), argv)
        assert (cfg.lr, cfg.epochs, cfg.workers, checkpoint["epoch"]) == (lr, 9, None, 1)  # None: this machine's


def test_a_resume_that_names_another_model_is_refused_not_ignored(tmp_path):
    """The checkpoint's model goes on: another --model or --img-size typed with --resume was dropped in silence
    (and written to config.yaml as if used). The same one typed again, or by its short name, goes on."""
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, "epoch": 1,
                "config": {"model": "swin_micro_patch4_window4_128", "img_size": 64, "data_path": "photos",
                           "output": "runs"}}, tmp_path / "last.pth")
    parser = train.build_parser()
    for typed in (["--model", "swin_tiny_patch4_window7_224"], ["--img-size", "96"]):
        argv = ["--resume", str(tmp_path), *typed]
        with pytest.raises(UserError, match=f"goes on with its own model: {typed[0]} {typed[1]} .the run's: "):
            weights.resume_config(parser, config.parse_config(parser, argv), argv)
    argv = ["--resume", str(tmp_path), "--model", "swin_micro_patch4_window4_128", "--img-size", "64"]
    assert weights.resume_config(parser, config.parse_config(parser, argv), argv)[0].img_size == 64


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


def test_files_that_do_not_decode_are_left_out_and_named(tmp_path):
    from image_factory import write_broken_files, write_class_tree
    write_class_tree(tmp_path / "photos", {"cats": 6, "dogs": 6})
    broken = write_broken_files(tmp_path / "photos" / "cats")
    result = run_train("--data-path", tmp_path / "photos", *FAST, "--batch-size", "4", "--epochs", "1",
                       "--output", tmp_path, "--name", "r")
    assert "10 training and 2 validation images, 2 classes" in result.stdout  # the 12 good ones
    left_out = [line for line in result.stderr.splitlines() if line.startswith("warning: left out ")]
    assert sorted(line.split()[3].rstrip(":") for line in left_out) == sorted(map(str, broken)), result.stderr


@pytest.mark.parametrize("args, message", [
    (["--data-path", "no/such/folder"], "data path not found: no/such/folder"),
    (["--data-path", ROOT / "README.md"], "data path is a file, not a folder: .*README.md"),
    (["--model", "swin_tiny_patch4_window9"], "unknown model"),
    (["--model", "swin_tinyy"], "unknown model 'swin_tinyy'. Did you mean swin_tiny_patch4_window7_224, "),
    (["--weights", "no/such.pth"], "^error: checkpoint not found: no/such.pth$"),
    (["--device", "cuda"], "CUDA"),
    (["--cuda-graphs"], "--cuda-graphs needs a CUDA GPU, and this run is on cpu: run without it"),
    (["--num-classes", "3"], "--num-classes 3 was given, but .* has 5 class folders: daisy, dandelion"),
    (["--val-ratio", "0"], "gives no validation images, which choose best.pth: use --val-ratio above 0"),
    (["--decode", "device", "--recipe", "official"], "--decode device works with --recipe tutorial"),
    (["--output", "/dev/null/runs"], "^error: /dev/null/runs.*: Not a directory"),  # the run folder, or its folder
])
def test_user_errors_are_one_line_without_traceback(flowers, tmp_path, capsys, args, message):
    """In this process, through run_cli as the script runs main (another exception than its exit would
    fail the test); test_folder_without_images_is_an_error runs one such error in a process of its own."""
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
            train_here(capsys, *common, "--name", method)
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


def test_a_val_ratio_that_a_split_root_leaves_unused_is_said(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    parser = train.build_parser()
    splits = DataSplits(tmp_path, ["a", "b"], [("x.jpg", 0)], [("y.jpg", 1)])
    for ratio, said in ((0.3, True), (parser.get_default("val_ratio"), False)):
        cfg = parser.parse_args(["--data-path", str(tmp_path), "--val-ratio", str(ratio)])
        train.check_splits(splits, cfg, parser.get_default("val_ratio"), notify=True)
        assert ("notice: --val-ratio 0.3 is not used" in capsys.readouterr().out) == said


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "data" / "cats").mkdir(parents=True)
    (tmp_path / "data" / "dogs").mkdir()
    (tmp_path / "data" / "dogs" / "notes.txt").write_text("no photos here")
    result = run_train("--data-path", tmp_path / "data", *FAST, "--output", tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cats" in result.stderr or "dogs" in result.stderr


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
    assert ("notice: --warmup-epochs 1 spans the whole run of 1 epoch(s), 5 step(s): the lr rises from --warmup-lr "
            "1.0e-07 to 8.0e-04 at the last step (--lr 1.0e-03 is never reached)") in fresh
    assert "  lr 8.00e-04  " in fresh  # the epoch line's: its last step's lr, not the schedule's next
    assert float(metrics(tmp_path / "x")[-1]["lr"]) == pytest.approx(1e-7 + (1e-3 - 1e-7) * 4 / 5, rel=1e-5)
    import model
    torch.save({"model": model.create_model("swin_micro_patch4_window4_128").state_dict()}, tmp_path / "w.pth")
    loaded = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "y",
                        "--weights", tmp_path / "w.pth", "--freeze-layers")
    assert "loaded" in loaded and "skipped (2): head.weight" in loaded
    assert "--freeze-layers with" not in loaded and "--warmup-epochs" not in loaded


def test_an_evaluation_without_its_images_fetches_none_and_a_file_is_no_output_folder(flowers, tmp_path,
                                                                                    monkeypatch):
    """--eval-only of weights without --data-path (flower_photos by default, not here): one line asking for the
    images, not a 218 MB download; --output naming a file: one line, not mkdir's "File exists"."""
    weights_file = tmp_path / "weights.pth"
    torch.save(create_model("swin_micro_patch4_window4_128", num_classes=5).state_dict(), weights_file)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="--eval-only evaluates the images in --data-path, and flower_photos is not "
                                        "here: give --data-path DIR"):
        train.main(["--eval-only", "--weights", str(weights_file), "--model", "swin_micro_patch4_window4_128"])
    assert not (tmp_path / "flower_photos.tgz").exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(UserError, match="--output .*afile is a file, not a folder"):
        train.main(["--data-path", str(flowers), *FAST, "--output", str(tmp_path / "afile")])


def test_eval_only_reports_and_lists_mistakes(flowers, tmp_path, capsys):
    trained = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "e")
    assert f"gets wrong, to open in a browser: {tmp_path / 'e' / 'report.html'}" in trained
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
    # the run folder means its best.pth here, and train.py's checkpoint given as --weights is taken as
    # --resume: its own model, classes and data, and the report in its run folder
    for given in (["--resume", tmp_path / "e"], ["--weights", tmp_path / "e" / "best.pth"]):
        again = train_here(capsys, "--eval-only", *given, "--workers", "0", "--no-progress")
        assert again.startswith(f"swin_micro_patch4_window4_128 from {tmp_path / 'e' / 'best.pth'} (epoch ")
        assert f"top-1 {top1:.4f}" in again and f"open in a browser: {folder / 'report.html'}" in again


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


def test_compile_then_resume_without(flowers, tmp_path, monkeypatch):
    """--compile trains through torch.compile (here with dynamo's eager backend: the wiring, not the code
    generation, which tests/test_cuda.py checks on a GPU). Checkpoints hold the bare model's keys, and the
    run resumes without compiling."""
    compile_, compiled = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda module, **options: compiled.append(module) or
                        compile_(module, **{**options, "backend": "eager"}))
    args = ["--data-path", str(flowers), *FAST, "--epochs", "2", "--output", str(tmp_path), "--name", "c"]
    with pytest.raises(SystemExit) as stopped:
        train.main(args + ["--compile", "--stop-after-epochs", "1"])
    assert stopped.value.code == 0 and len(compiled) == 1
    ckpt = torch.load(tmp_path / "c" / "last.pth", weights_only=True)
    assert ckpt["config"]["compile"] and not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    train.main(["--resume", str(tmp_path / "c"), "--no-compile"])
    assert len(compiled) == 1 and len(metrics(tmp_path / "c")) == 2
    torch._dynamo.reset()
