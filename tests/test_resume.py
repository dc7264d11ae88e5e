"""A run that goes on: train.py --resume on a CPU, bit for bit as an uninterrupted run, with the settings, the
validation files and the TensorBoard points of the run it continues, and what a finished, stopped or killed run
says and keeps. How a run is stopped (signals, kills): test_stops.py; the settings a resume decides from its
checkpoint alone: test_run_settings.py; the rest of train.py: test_train.py."""
import json
import sys
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import data
import engine
import train
import utils
import runs
from model import create_model
from script_runs import FAST, metrics, run_train, train_here
from utils import UserError


def test_resume_is_bit_identical(flowers, tmp_path, capsys, monkeypatch):
    """2 epochs in one run == 1 epoch, stop, resume for 1 more; with worker processes, so the
    augmentation randomness must not depend on them, and the official recipe, whose RandAugment runs in
    the workers and random erasing, like mixup, on the batch in the training process. Its evaluation squashes the
    whole photo from 64 px here, as from 384 px (data.SQUASHED_FROM), where a 384 px run would take minutes."""
    monkeypatch.setattr(data, "SQUASHED_FROM", 64)  # in this process: the resume below runs in a process of its own
    common = ["--data-path", flowers, *FAST, "--workers", "2", "--epochs", "2", "--output", tmp_path,
              "--mixup", "0.2", "--drop-path-rate", "0.1", "--recipe", "official"]
    train_here(capsys, *common, "--name", "straight")
    train_here(capsys, *common, "--name", "split", "--stop-after-epochs", "1")
    first_half = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert first_half["epoch"] == 1
    torch.save(first_half, tmp_path / "split" / "epoch1.pth")
    out = run_train("--resume", tmp_path / "split")  # a process of its own: all it knows is in last.pth
    assert "resumed at epoch 2" in out.stdout
    # its config.yaml starts another run, not this one again: no --resume in it, no --name (its folder's, refused
    # as another run's), nor this start's stop
    assert not {"resume", "name", "stop_after_epochs"} & set(yaml.safe_load((tmp_path / "split" / "config.yaml")
                                                                           .read_text()))
    straight = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    resumed = torch.load(tmp_path / "split" / "last.pth", weights_only=True)
    assert resumed["epoch"] == straight["epoch"] == 2
    assert resumed["data_root"] == str(Path(flowers).resolve())  # where a resume from elsewhere finds the data
    # validated with the official recipe's resize, bicubic, the whole photo squashed, and recorded: the resume, in a
    # process where 64 px is center-cropped, validates as its checkpoint says; --eval-only (and predict.py) crop and
    # resize so, and give the figures of the run's own report
    for saved in (straight, resumed):
        assert (saved["crop_mode"], saved["crop_pct"], saved["interpolation"]) == ("squash", 1.0, "bicubic")
    monkeypatch.undo()  # 64 px center-cropped again: the evaluation below follows the checkpoint alone
    train_here(capsys, "--eval-only", "--resume", tmp_path / "straight" / "best.pth", "--workers", "0", "--no-progress")
    reports = [(tmp_path / "straight" / name / "report.txt").read_text().split("\n") for name in ("", "eval_val")]
    assert reports[0][1].startswith("val: 20 images") and reports[0][1:] == reports[1][1:]
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
    assert "val: 19 images" in out and f"1 of the run's 20 validation files is no longer in {data}" in err
    # and what its new name makes of it: one of the run's training photos (81 of them, resumed), said
    assert "if it was renamed or moved in the folder, it is a training photo now, under its new name: give it back " \
        "its name (the run folder's val_files.json lists the names) to validate on it again" in err
    (tmp_path / "v" / "val_files.json").write_text((tmp_path / "v" / "val_files.json").read_text()[:50])
    cut_short = train_here(capsys, *evaluate)
    assert "val_files.json is not the JSON a run writes: the validation files are drawn again" in cut_short
    (tmp_path / "v" / "val_files.json").write_text(json.dumps({"data_path": str(data.resolve()), "val_ratio": 0.2,
                                                                "val": val}))
    again = train_here(capsys, *evaluate, "--val-ratio", "0.3")
    assert "notice: the run drew its validation files from" in again and "from {} at 0.3 they are drawn again".format(
        data.resolve()) in again


def test_a_run_resumed_at_another_val_ratio_says_it_validates_on_photos_it_trained_on(flowers, tmp_path, capsys):
    """Its class folders drawn again at another --val-ratio: most of the new validation photos are ones the run
    trained on, and best.pth is chosen on another set; said as for split folders split again, not as a notice."""
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "q")
    train.main(["--resume", str(tmp_path / "q"), "--epochs", "2", "--val-ratio", "0.3", "--workers", "0",
                "--no-progress"])
    err = capsys.readouterr().err
    assert "validation images are photos the run trained on: its validation figures and best.pth no longer" in err


def test_a_run_on_split_folders_split_again_under_it_says_it_validates_on_photos_it_trained_on(flowers, tmp_path,
                                                                                                capsys):
    """split_data.py run again at another --val-ratio between a run's start and its resume: its val/ then holds
    photos the run trained on, and best.pth is chosen on another set; the run goes on, and says so."""
    import split_data
    split = ["--data-path", str(flowers), "--out", str(tmp_path / "data")]
    split_data.main(split)
    train_here(capsys, "--data-path", tmp_path / "data", *FAST, "--epochs", "1", "--output", tmp_path, "--name", "r")
    evaluate = ["--resume", str(tmp_path / "r"), "--eval-only", "--workers", "0", "--no-progress"]
    train.main(evaluate)
    assert "is not what this run validated on" not in capsys.readouterr().err
    split_data.main([*split, "--val-ratio", "0.1", "--seed", "3"])
    train.main(evaluate)
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'data'}/val is not what this run validated on at its start: " in err
    assert "split it again as it was (split_data.py with the run's --val-ratio and --seed), or start a new run" in err


def test_a_test_split_drawn_after_training_is_said_to_hold_photos_it_trained_on(flowers, tmp_path, capsys):
    """No test/ at the run's start: --split test refused with how to draw one before training (the message once
    said to run split_data.py --test-ratio 0.1, which into the same folder moves training photos into test/); a
    test/ split from its train/ since is evaluated, and said to hold photos the run may have trained on."""
    import split_data
    split = ["--data-path", str(flowers), "--out", str(tmp_path / "data")]
    split_data.main(split)
    train_here(capsys, "--data-path", tmp_path / "data", *FAST, "--epochs", "1", "--output", tmp_path, "--name", "t")
    evaluate = ["--resume", str(tmp_path / "t" / "best.pth"), "--eval-only", "--split", "test", "--workers", "0",
                "--no-progress"]
    with pytest.raises(UserError, match=r"draw one before training, from the class folders it was split from "
                                        r"\(PHOTOS\) into a new folder \(python split_data.py --data-path PHOTOS "
                                        r"--test-ratio 0.1 --out NEW_DIR\)"):
        train.main(evaluate)
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "f")
    with pytest.raises(UserError, match=rf"\(python split_data.py --data-path {flowers} --test-ratio 0.1 --out "
                                        r"NEW_DIR\)"):  # the photos it trained on, as typed: the command works
        train.main([*evaluate[:1], str(tmp_path / "f" / "best.pth"), *evaluate[2:]])
    split_data.main([*split, "--test-ratio", "0.1"])  # val/ unchanged: test/ drawn from the run's train/
    train.main(evaluate)
    err = capsys.readouterr().err
    assert f"warning: 10 of the 10 images in {tmp_path / 'data'}/test were not there when this run started" in err
    # a test/ there from the start is the run's own: nothing said
    train_here(capsys, "--data-path", tmp_path / "data", *FAST, "--epochs", "1", "--output", tmp_path, "--name", "u")
    train.main([*evaluate[:1], str(tmp_path / "u" / "best.pth"), *evaluate[2:]])
    assert "were not there when this run started" not in capsys.readouterr().err


def test_split_folders_split_again_are_said_at_every_resume_not_the_first_alone(flowers, tmp_path, capsys):
    """A resume once warned of a re-split must not take the new val/ for the one the run started with: the next
    resume and --eval-only say it again (val_files.json was rewritten at each resume, and they said nothing)."""
    import split_data
    split = ["--data-path", str(flowers), "--out", str(tmp_path / "data")]
    split_data.main(split)
    train_here(capsys, "--data-path", tmp_path / "data", *FAST, "--epochs", "1", "--output", tmp_path, "--name", "s")
    split_data.main([*split, "--val-ratio", "0.1", "--seed", "3"])
    said = "is not what this run validated on at its start"
    for epochs in ("2", "3"):
        train.main(["--resume", str(tmp_path / "s"), "--epochs", epochs, "--workers", "0", "--no-progress"])
        assert said in capsys.readouterr().err
    train.main(["--resume", str(tmp_path / "s"), "--eval-only", "--workers", "0", "--no-progress"])
    assert said in capsys.readouterr().err


@pytest.mark.parametrize("edit", [{"val_ratio": "0.2"}, {"val_ratio": None}, {"val": "abc"}, {"val": [1, 2]},
                                  {"data_path": 3}])
def test_a_split_record_edited_into_other_types_is_drawn_anew(tmp_path, capsys, edit):
    """Read on the first process while the others wait: any record but a run's is said and drawn again."""
    import json
    record = {"data_path": str(tmp_path.resolve()), "val_ratio": 0.2, "val": ["daisy/1.jpg"]}
    (tmp_path / "val_files.json").write_text(json.dumps(record))
    assert runs.read_recorded_split(tmp_path / "val_files.json", tmp_path, 0.2) == {"daisy/1.jpg"}
    (tmp_path / "val_files.json").write_text(json.dumps({**record, **edit}))
    assert runs.read_recorded_split(tmp_path / "val_files.json", tmp_path, 0.2) is None
    assert "is not the JSON a run writes" in capsys.readouterr().out
    (tmp_path / "split" / "train" / "daisy").mkdir(parents=True)  # split folders: their val/ is used as it is,
    (tmp_path / "split" / "val" / "daisy").mkdir(parents=True)  # nothing drawn, nothing said of drawing
    (tmp_path / "val_files.json").write_text(json.dumps(record))
    assert runs.read_recorded_split(tmp_path / "val_files.json", tmp_path / "split", 0.2) is None
    assert capsys.readouterr().out == ""


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
    # under torchrun every process writes it to its error file: torchrun's summary lists a process a signal stopped
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    run_log.say_stopped(state, "SIGUSR1", run, main_process=False)
    assert capsys.readouterr().out == ""
    assert json.loads((tmp_path / "error.json").read_text())["message"]["message"].startswith("stopped by SIGUSR1")


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


def test_metrics_csv_saved_again_by_a_spreadsheet_does_not_stop_the_run(tmp_path, capsys):
    """A metrics.csv opened and saved by a spreadsheet (a byte-order mark, an edited row) keeps its earlier rows;
    one saved with another separator is kept aside as .bak and a new one written. Either raised after the epoch had
    trained, before its checkpoint: the epoch lost, and every later resume stopped the same way."""
    import run_log
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,loss_train\n1,0.1\n,0.5\n2,0.2\n", encoding="utf-8-sig")
    run_log.write_metrics_row(path, {"epoch": 3, "loss_train": 0.3})
    assert metrics(tmp_path) == [{"epoch": "1", "loss_train": "0.1"}, {"epoch": "2", "loss_train": "0.2"},
                                 {"epoch": "3", "loss_train": "0.3"}]
    path.write_text("epoch;loss_train\n1;0.1\n", encoding="utf-8")
    run_log.write_metrics_row(path, {"epoch": 2, "loss_train": 0.2})
    assert metrics(tmp_path) == [{"epoch": "2", "loss_train": "0.2"}]
    assert (tmp_path / "metrics.csv.bak").read_text() == "epoch;loss_train\n1;0.1\n"
    assert "metrics.csv has no epoch column" in capsys.readouterr().err
    path.write_text("")  # emptied: written anew (reading its header after closing it raised)
    run_log.write_metrics_row(path, {"epoch": 3, "loss_train": 0.3})
    assert metrics(tmp_path) == [{"epoch": "3", "loss_train": "0.3"}]

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
    events = EventAccumulator(str(run / "steps"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [10]
    epochs = EventAccumulator(str(run), size_guidance={"scalars": 0, "images": 0})  # numbered by epoch: once too
    epochs.Reload()
    assert [e.step for e in epochs.Scalars("acc1/val")] == [1, 2]
    assert [e.step for e in epochs.Images("val/confusion_matrix")] == [1, 2]


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
    for written_at_its_end in ("report.html", "report.txt"):
        (run / written_at_its_end).unlink()
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
    events = EventAccumulator(str(tmp_path / "k" / "steps"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [10]


def test_a_run_without_loss_scaling_resumes_with_fp16(capsys):
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
    import run_log
    run_log.say_resumed(after, "acc1", train.build_parser().parse_args(["--balance", "sampler"]), "")
    assert capsys.readouterr().out == ("resumed at epoch 2, step 10 (best balanced accuracy not measured yet: "
                                       "--balance sampler chooses best.pth by it now)\n")  # not "not validated yet"


def test_a_run_whose_photos_moved_says_to_give_their_new_place(flowers, tmp_path, capsys):
    """The photos a run trained on, moved since: its resume said "data path not found" and offered the bundled
    sample, whose classes are not the run's; it says the run reads its own photos and how to give their place."""
    import shutil
    shutil.copytree(flowers, tmp_path / "photos")
    train_here(capsys, "--data-path", tmp_path / "photos", *FAST, "--epochs", "1", "--output", tmp_path, "--name", "m")
    (tmp_path / "photos").rename(tmp_path / "moved")
    for flags in ([], ["--eval-only"]):
        with pytest.raises(UserError, match=rf"^data path not found: {tmp_path / 'photos'}\. A resumed \(or "
                                            r"evaluated\) run reads the photos it was trained on: give where they "
                                            r"are now with --data-path DIR$"):
            train.main(["--resume", str(tmp_path / "m"), "--epochs", "2", *flags])
    resumed = train_here(capsys, "--resume", tmp_path / "m", "--epochs", "2", "--data-path", tmp_path / "moved")
    assert "epoch   2" in resumed


def test_a_damaged_best_pth_is_set_aside_on_resuming_not_found_at_the_runs_end(flowers, tmp_path, capsys):
    """best.pth cut short (a copy of the run that did not finish) was found only when the run, all its epochs
    trained, made its report: it failed there, and every resume after said the run had finished. Resuming moves it
    aside, says so, and the epochs trained from then on choose a best.pth that the report is of."""
    run = tmp_path / "cut"
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "cut")
    whole = (run / "best.pth").read_bytes()
    (run / "best.pth").unlink()  # a second name of last.pth: its own file, cut short
    (run / "best.pth").write_bytes(whole[:len(whole) // 2])
    last = torch.load(run / "last.pth", weights_only=True)
    torch.save({**last, "best_acc": 1.0}, run / "last.pth")  # a best that no epoch after it beats
    capsys.readouterr()
    train.main(["--resume", str(run), "--epochs", "2"])
    said = capsys.readouterr()
    assert f"warning: {run / 'best.pth'} is cut short or damaged (its end missing): kept as best.pth.damaged, and " \
           "the best of the epochs trained from now on is saved as best.pth" in said.err
    assert torch.load(run / "best.pth", weights_only=True)["epoch"] == 2
    assert (run / "best.pth.damaged").read_bytes() == whole[:len(whole) // 2]
    assert (run / "report.txt").read_text().startswith(f"swin_micro_patch4_window4_128 from {run / 'best.pth'} "
                                                         "(epoch 2), on ")
    # a resume killed before it saved again: best.pth set aside, last.pth's best as before. The next resume finds
    # no best.pth and chooses one anew all the same
    (run / "best.pth").unlink()
    last = torch.load(run / "last.pth", weights_only=True)
    torch.save({**last, "best_acc": 1.0}, run / "last.pth")
    train.main(["--resume", str(run), "--epochs", "3"])
    assert f"notice: {run} holds no best.pth: the best of the epochs trained from now on is saved as best.pth" in \
        capsys.readouterr().err
    assert torch.load(run / "best.pth", weights_only=True)["epoch"] == 3


def test_what_a_user_types_to_go_on_from_a_run_does_what_it_says(flowers, tmp_path, capsys, monkeypatch):
    """The run's own config.yaml given with --resume (its img_size: null was refused as another model), a drop path
    rate typed on resuming (ignored, though config.yaml then recorded it), a checkpoint copied beside another run's
    best.pth (the run took that folder and that best.pth for its own), --weights of a run's best.pth with no --model
    (swin_tiny was built, and refused the swin_micro weights), a --min-lr above --lr (the lr rose over the run)."""
    import shutil
    fast = [flag for flag in FAST if flag not in ("--model", "swin_micro_patch4_window4_128")]
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--stop-after-epochs", "1",
               "--drop-path-rate", "0.3", "--output", tmp_path, "--name", "r")
    run = tmp_path / "r"
    elsewhere = tmp_path / "ck"
    elsewhere.mkdir()
    shutil.copy(run / "last.pth", elsewhere / "mine.pth")
    shutil.copy(run / "last.pth", elsewhere / "best.pth")
    with pytest.raises(UserError, match=r"mine.pth is in a folder that holds a best.pth but no run config.yaml, .* "
                                        r"mkdir runs/NAME && cp .*mine.pth runs/NAME/last.pth, then "):
        train.main(["--resume", str(elsewhere / "mine.pth")])
    assert sorted(p.name for p in elsewhere.iterdir()) == ["best.pth", "mine.pth"]
    train_here(capsys, "--resume", run, "--config", run / "config.yaml", "--drop-path-rate", "0.1")
    last = torch.load(run / "last.pth", weights_only=True)
    assert last["epoch"] == 2 and last["model_overrides"]["drop_path_rate"] == 0.1
    said = train_here(capsys, "--data-path", flowers, *fast, "--epochs", "1", "--weights", run / "best.pth",
                      "--output", tmp_path, "--name", "new")
    assert f"notice: --weights {run / 'best.pth'} is a swin_micro_patch4_window4_128 run's: training that model" in said
    assert torch.load(tmp_path / "new" / "last.pth", weights_only=True)["variant"] == "swin_micro_patch4_window4_128"
    # its own variant named, the image size not: the run's size taken all the same (it trained on at 128 in silence)
    said = train_here(capsys, "--data-path", flowers, *[f for f in fast if f not in ("--img-size", "64")], "--epochs",
                      "1", "--weights", run / "best.pth", "--model", "swin_micro_patch4_window4_128", "--output", tmp_path,
                      "--name", "same")
    assert "(--img-size 64; --model NAME for another)" in said
    assert torch.load(tmp_path / "same" / "last.pth", weights_only=True)["img_size"] == 64
    with pytest.raises(UserError, match=r"--min-lr 1e-06 is above --lr 5e-07: the schedule would raise the lr"):
        train.main(["--data-path", str(flowers), *FAST, "--lr", "5e-7", "--output", str(tmp_path)])
    with pytest.raises(UserError, match=r"^--split test is for --eval-only \(training validates on val\)"):
        train.main(["--data-path", str(flowers), *FAST, "--split", "test", "--output", str(tmp_path)])
    # flags of another model given to an evaluation of a run's checkpoint, which is evaluated as it was trained
    said = train_here(capsys, "--eval-only", "--resume", run / "best.pth", "--img-size", "32", "--workers", "0",
                      "--no-progress")
    assert f"notice: --eval-only evaluates {run / 'best.pth'} as it was trained (swin_micro_patch4_window4_128 at " \
           "64 px): --img-size 32 not used" in said
    # a --model said not used is not resolved either (a misspelling was "unknown model" after the notice)
    said = train_here(capsys, "--eval-only", "--resume", run / "best.pth", "--model", "swin_tinyy", "--workers", "0",
                      "--no-progress")
    assert "--model swin_tinyy not used" in said
    # evaluated on a copy of its photos, drawn afresh there (at another ratio: a copy drawn at its own gives the same
    # files): photos it trained on are counted, and said
    shutil.copytree(flowers, tmp_path / "copy")
    train.main(["--eval-only", "--resume", str(run / "best.pth"), "--data-path", str(tmp_path / "copy"),
                "--val-ratio", "0.3", "--workers", "0", "--no-progress"])
    warned = re.search(r"warning: (\d+) of the 30 images evaluated are photos the run trained on \(the same class "
                       r"folder, name and size in (.*)\): its figures count them", capsys.readouterr().err)
    assert warned and int(warned[1]) > 0 and warned[2] == str(flowers.resolve())
    # and in what is shared, the report, above its figures (the page escapes the path's quotes alone)
    caveat = f"{warned[1]} of the 30 images evaluated are photos the run trained on"
    assert f"warning: {caveat}" in (run / "eval_val-copy" / "report.txt").read_text()
    page = (run / "eval_val-copy" / "report.html").read_text()
    assert f'<p class="caveat">Warning: {caveat}' in page and page.index(caveat) < page.index('class="cards"')
    train.main(["--eval-only", "--resume", str(run / "best.pth"), "--workers", "0", "--no-progress"])
    assert "photos the run trained on" not in capsys.readouterr().err  # its own folder: its own validation files
    assert 'class="caveat"' not in (run / "eval_val" / "report.html").read_text()
    # its own folder at another ratio: drawn again there, photos it trained on among them, said as for a copy
    train.main(["--eval-only", "--resume", str(run / "best.pth"), "--val-ratio", "0.3", "--workers", "0",
                "--no-progress"])
    warned = re.search(r"warning: (\d+) of the 30 images evaluated are photos the run trained on",
                       capsys.readouterr().err)
    assert warned and int(warned[1]) > 0


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


def test_a_run_begun_before_steps_keeps_its_step_loss_on_resuming(tmp_path, capsys, flowers):
    """A run begun before the per-step loss had its own steps/ folder logged it in the run folder; resumed, its
    folder is purged by step as it ran, not by epoch, which would drop its loss points from the epoch's number on
    (all of them, past the first epochs)."""
    import shutil
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "3", "--stop-after-epochs", "2", "--output",
               tmp_path, "--name", "old")
    run = tmp_path / "old"
    shutil.rmtree(run / "steps")  # the layout of before: the per-step loss in the run folder
    with SummaryWriter(run) as writer:
        writer.add_scalar("loss/train_step", 1.5, 10)
    train_here(capsys, "--resume", run)
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("loss/train_step")] == [10]
    assert [e.step for e in events.Scalars("loss/val")] == [1, 2, 3]


def test_the_resume_command_is_the_runs_own_quoted_for_a_shell(monkeypatch):
    from processes import resume_command
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resume_command("out dir/my run") == "python train.py --resume 'out dir/my run'"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resume_command("runs/a") == "torchrun --nproc_per_node 4 train.py --resume runs/a"
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert resume_command("runs/a").startswith("torchrun --nnodes 4 --node_rank N --master_addr HOST --nproc_per_node 4")


def test_the_resume_command_names_train_py_as_it_was_typed(monkeypatch):
    """Run from another folder (python "../my swin/train.py"), the command printed after a stop is one that works
    there: `python train.py` was not found."""
    from processes import resume_command
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(sys, "argv", ["../my swin/train.py", "--data-path", "photos"])
    assert resume_command("runs/a") == "python '../my swin/train.py' --resume runs/a"


def test_a_class_folder_added_before_resuming_says_what_to_do_and_its_command_keeps_each_class_row(flowers, tmp_path,
                                                                                                  capsys):
    """A class added (or gone, renamed) since the run: one line naming it, with the two ways on (its folders back, or
    a new run from its weights), and before the warnings of its validation files gone. The new run's command works
    as said, and each class's classifier row starts where that class now is (kept in place, a renamed class's
    row would start as the next class's)."""
    import shutil
    data = tmp_path / "photos"
    shutil.copytree(flowers, data)
    train_here(capsys, "--data-path", data, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "r",
               "--stop-after-epochs", "1")
    (data / "roses").rename(data / "Roses")  # sorts first: every label before it shifts
    shutil.copytree(flowers / "tulips", data / "lilies")
    with pytest.raises(UserError) as refused:
        train.main(["--resume", str(tmp_path / "r")])
    said = str(refused.value)
    assert said.endswith(f"(new: Roses, lilies; gone: roses): put the class folders back as they were to resume it, "
                         f"or train these classes in a new run from its weights: python train.py --data-path {data} "
                         f"--weights {tmp_path / 'r'} --name NEW_NAME"), said
    assert "no longer in" not in capsys.readouterr().err  # the classes said first, not the files they moved
    out = train_here(capsys, *said.split(": python train.py ")[1].replace("NEW_NAME", "new").split(), *FAST,
                     "--epochs", "1", "--output", tmp_path)
    assert "classifier rows put in place by class name: 4 of these 6 classes were trained in it" in out
    old = torch.load(tmp_path / "r" / "best.pth", weights_only=True)
    assert old["class_names"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    from weights import load_weights
    model = create_model("swin_micro_patch4_window4_128", num_classes=6, img_size=64)
    load_weights(model, tmp_path / "r" / "best.pth", verbose=False,
                 class_names=["Roses", "daisy", "dandelion", "lilies", "sunflowers", "tulips"])
    head = old["model"]["head.weight"]
    assert torch.equal(model.head.weight[1], head[0]) and torch.equal(model.head.weight[5], head[4])
    assert not model.head.weight[0].any() and not model.head.weight[3].any()  # Roses, lilies: new to it


def test_a_cpu_runs_random_state_leaves_a_gpu_machines_cuda_alone(monkeypatch):
    """A checkpoint's random state, saved and restored, takes the GPU's generator only where the process uses a GPU:
    asked in a --device cpu run on a GPU machine, CUDA would start a context on GPU 0 in every process (memory
    there for nothing). Here CUDA is seen but not started, as in that run; a GPU run's state is restored there."""
    def starts_cuda(*args):
        raise AssertionError("CUDA started")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state", starts_cuda)
    monkeypatch.setattr(torch.cuda, "set_rng_state", starts_cuda)
    state = utils.rng_state()
    assert state["cuda"] == []
    utils.set_rng_state({**state, "cuda": [torch.zeros(16, dtype=torch.uint8)]})  # a GPU run's, resumed on the CPU


def test_a_saved_random_state_gives_the_same_draws_again():
    """A run resumed midway (--save-every-steps) goes on with the draws (mixup, erasing, drop path) it would have
    made: torch's and NumPy's generators, NumPy's inside its block of keys too."""
    utils.seed_everything(3)
    np.random.rand(5)  # a position inside NumPy's key block
    saved = utils.rng_state()
    first = (torch.rand(4), np.random.rand(4))
    torch.rand(10), np.random.rand(10)
    utils.set_rng_state(saved)
    again = (torch.rand(4), np.random.rand(4))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
