"""run_settings.py: the checkpoint and settings a resumed (or evaluated) run goes on with, decided from the
checkpoint alone (no training here: the checkpoints hold what resume_config reads), and what it refuses. Runs that
go on: test_resume.py."""
from pathlib import Path

import pytest
import torch

import config
import run_settings
import train
from utils import UserError

# the training state beside the model that a checkpoint needs to be resumed (checkpoints.TRAINING_STATE): values never
# read by resume_config
STATE = {"optimizer": {}, "scheduler": {}, "scaler": {}, "step": 0, "batches_done": 0, "best_acc": -1.0, "rng": {}}


def test_a_resumed_run_keeps_its_settings_but_not_the_old_machines_worker_count(tmp_path):
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "config": {"lr": 0.003, "epochs": 9, "workers": 15, "data_path": "photos", "output": "runs"}},
               tmp_path / "last.pth")
    parser = train.build_parser()
    for argv, lr in ((["--resume", str(tmp_path)], 0.003), (["--resume", str(tmp_path), "--lr", "0.01"], 0.01)):
        cfg, checkpoint = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
        assert (cfg.lr, cfg.epochs, cfg.workers, checkpoint["epoch"]) == (lr, 9, None, 1)  # None: this machine's


def test_an_evaluation_of_a_run_draws_its_validation_at_the_runs_ratio(tmp_path):
    """--eval-only --resume of a run trained at --val-ratio 0.3 draws its validation files at 0.3 (another ratio would
    count photos it trained on), unless another is typed; nothing else of its training settings is taken."""
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "config": {"val_ratio": 0.3, "data_path": "photos", "lr": 0.003}}, tmp_path / "best.pth")
    parser = train.build_parser()
    for typed, ratio in (([], 0.3), (["--val-ratio", "0.25"], 0.25)):
        argv = ["--eval-only", "--resume", str(tmp_path / "best.pth"), *typed]
        cfg, _ = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
        assert (cfg.val_ratio, str(cfg.data_path), cfg.lr) == (ratio, "photos", parser.get_default("lr"))


def test_going_back_to_a_checkpoint_older_than_last_pth_within_its_epoch_is_refused(tmp_path):
    """best.pth of epoch 1 and a last.pth saved 5 batches into epoch 2 (--save-every-steps): training on from best.pth
    would write over those batches, refused as an older epoch's is; the same point goes on."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: swin_micro_patch4_window4_128\n")
    saved = {"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE,
             "config": {"data_path": "photos", "output": str(tmp_path), "name": "run"}}
    torch.save({**saved, "epoch": 1, "batches_done": 0}, run / "best.pth")
    torch.save({**saved, "epoch": 1, "batches_done": 5, "step": 15}, run / "last.pth")
    parser = train.build_parser()
    argv = ["--resume", str(run / "best.pth")]
    with pytest.raises(UserError, match=r"best.pth is from epoch 1, but .*last.pth has 1 epochs and 5 batches: "
                                        r"training on from best.pth would write over them"):
        run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    torch.save({**saved, "epoch": 1, "batches_done": 0}, run / "last.pth")
    assert run_settings.resume_config(parser, config.parse_config(parser, argv), argv)[1]["epoch"] == 1


def test_a_resume_that_names_another_model_is_refused_not_ignored(tmp_path):
    """The checkpoint's model goes on: another --model or --img-size typed with --resume was dropped in silence
    (and written to config.yaml as if used). The same one typed again, or by its short name, goes on."""
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "config": {"model": "swin_micro_patch4_window4_128", "img_size": 64, "data_path": "photos",
                           "output": "runs"}}, tmp_path / "last.pth")
    parser = train.build_parser()
    for typed in (["--model", "swin_tiny_patch4_window7_224"], ["--img-size", "96"]):
        argv = ["--resume", str(tmp_path), *typed]
        with pytest.raises(UserError, match=f"goes on with its own model: {typed[0]} {typed[1]} .the run's: .*start a "
                                            f"new run: --weights {tmp_path / 'last.pth'} --name NEW$"):
            run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    argv = ["--resume", str(tmp_path), "--model", "swin_micro_patch4_window4_128", "--img-size", "64"]
    assert run_settings.resume_config(parser, config.parse_config(parser, argv), argv)[0].img_size == 64
    # a run that took the variant's own sizes (none typed): those typed now are its, and go on; others are refused
    # with the sizes the run has, not None
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "model_overrides": {"num_classes": 2}, "config": {"model": "swin_micro", "img_size": None,
                                                                  "window_size": None, "weights": None,
                                                                  "data_path": "photos", "output": "runs"}},
               tmp_path / "last.pth")
    for typed in (["--img-size", "128"], ["--window-size", "4"], ["--weights", "none"]):
        argv = ["--resume", str(tmp_path), *typed]
        run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    for typed, theirs in ((["--img-size", "96"], "128"), (["--window-size", "7"], "4"),
                          (["--weights", "w.pth"], "none given")):
        argv = ["--resume", str(tmp_path), *typed]
        with pytest.raises(UserError, match=f"{typed[0]} {typed[1]} .the run's: {theirs}.. To train another"):
            run_settings.resume_config(parser, config.parse_config(parser, argv), argv)


def test_a_run_resumed_from_another_folder_finds_its_data(tmp_path, monkeypatch):
    """data_path is saved as typed, relative to where the run started: resumed from another folder, the run
    takes the data where it was (the checkpoint's data_root); a --data-path typed still wins."""
    (tmp_path / "project" / "photos").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "data_root": str(tmp_path / "project" / "photos"),
                "config": {"data_path": "photos", "output": "runs", "name": "r"}}, tmp_path / "last.pth")
    parser = train.build_parser()
    for where, typed, found in (("project", [], Path("photos")), ("elsewhere", [], tmp_path / "project" / "photos"),
                                ("elsewhere", ["--data-path", "photos"], Path("photos"))):
        monkeypatch.chdir(tmp_path / where)
        argv = ["--resume", str(tmp_path / "last.pth"), *typed]
        assert run_settings.resume_config(parser, config.parse_config(parser, argv), argv)[0].data_path == found


def test_a_damaged_last_pth_points_to_best_pth_and_does_not_block_it(tmp_path, capsys):
    """A last.pth that no longer loads (a disk's fault, a copy cut short): resuming the folder says so and gives
    the command that goes on from best.pth; that command goes on, the damaged file no bar to it."""
    run = tmp_path / "c"
    run.mkdir()
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "batches_done": 0, "config": {"data_path": "photos", "output": str(tmp_path), "name": "c"}},
               run / "best.pth")
    (run / "last.pth").write_bytes((run / "best.pth").read_bytes()[:1000])
    parser = train.build_parser()
    argv = ["--resume", str(run)]
    with pytest.raises(UserError, match=rf"^{run / 'last.pth'} is cut short or damaged .*\. To go on from the "
                                        rf"run's best epoch instead: python train.py --resume {run / 'best.pth'}$"):
        run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    argv = ["--resume", str(run / "best.pth")]
    cfg, checkpoint = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    assert checkpoint["epoch"] == 1 and cfg.resume == run / "best.pth"
    assert f"notice: {run / 'last.pth'} is cut short or damaged" in capsys.readouterr().out
    # --eval-only of the folder reads its best.pth: damaged, it is said without a hint that names it again
    (run / "best.pth").write_bytes((run / "best.pth").read_bytes()[:1000])
    argv = ["--eval-only", "--resume", str(run)]
    with pytest.raises(UserError, match=r"best.pth is cut short or damaged \(its end missing\): a copy or download "
                                        r"that did not finish\? Copy or download it again$"):
        run_settings.resume_config(parser, config.parse_config(parser, argv), argv)


def test_a_checkpoint_cut_to_its_model_is_evaluated_but_not_resumed(tmp_path):
    """A checkpoint made smaller by hand (its optimizer state dropped, or all but the model and its classes): a
    resume is one line that names what is missing and how to train on from its weights, where it was a KeyError's
    traceback from deep in the resume; --eval-only evaluates it."""
    run = tmp_path / "r"
    run.mkdir()
    full = {"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
            "config": {"data_path": "photos", "output": str(tmp_path), "name": "r"}}
    parser = train.build_parser()
    for cut in (["optimizer"], ["config", "optimizer", "scheduler", "scaler", "epoch", "step", "batches_done",
                                "best_acc", "rng"]):
        torch.save({key: value for key, value in full.items() if key not in cut}, run / "slim.pth")
        argv = ["--resume", str(run / "slim.pth")]
        with pytest.raises(UserError, match=rf"slim.pth holds a model but not its training state \({', '.join(cut)} "
                                            rf"cut from it\), so its run cannot go on from it; to train on from its "
                                            rf"weights, start a new run: --weights {run / 'slim.pth'} --name NEW$"):
            run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
        for flag in ("--resume", "--weights"):  # train.py's checkpoint as --weights is taken as --resume
            argv = ["--eval-only", flag, str(run / "slim.pth")]
            cfg, checkpoint = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
            assert checkpoint["class_names"] == ["a", "b"] and cfg.resume == run / "slim.pth"


def test_a_resume_that_names_another_folder_is_refused_not_ignored(tmp_path, monkeypatch):
    """A resumed run goes on in its own folder: --name or --output typed to put it elsewhere was dropped in silence
    (and written to its config.yaml as if used). Its own folder named again, however spelt, goes on."""
    run = tmp_path / "runs" / "sig"
    run.mkdir(parents=True)
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE, "epoch": 1,
                "config": {"name": "sig", "data_path": "photos", "output": "runs"}}, run / "last.pth")
    monkeypatch.chdir(tmp_path)
    parser = train.build_parser()
    for typed in (["--name", "other"], ["--output", "elsewhere"], ["--name", "sig", "--output", "elsewhere"]):
        argv = ["--resume", "runs/sig", *typed]
        with pytest.raises(UserError, match=f"goes on in its own folder, runs/sig, not in another: {typed[-2]} "
                                            f"{typed[-1]}. To train a new run from its weights: --weights "
                                            "runs/sig/last.pth --name NEW$"):  # no best.pth: not validated yet
            run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    # a copy of its checkpoint elsewhere: the new run starts from that very file
    (tmp_path / "copy.pth").write_bytes((run / "last.pth").read_bytes())
    argv = ["--resume", "copy.pth", "--output", "elsewhere"]
    with pytest.raises(UserError, match="To train a new run from its weights: --weights copy.pth --name NEW$"):
        run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    argv = ["--resume", "runs/sig/last.pth", "--name", "sig", "--output", str(tmp_path / "runs")]
    assert run_settings.resume_config(parser, config.parse_config(parser, argv), argv)[0].name == "sig"
    # its own folder however named: from inside it; its config.yaml given again (no name in it: the run was named by
    # its date, and an output relative to where it started)
    (run / "config.yaml").write_text("name:\noutput: somewhere/else\n")
    monkeypatch.chdir(run)
    for argv in (["--resume", ".", "--name", "sig"], ["--resume", "last.pth", "--output", ".."],
                 ["--resume", ".", "--config", "config.yaml"]):
        cfg, checkpoint = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
        assert checkpoint["epoch"] == 1 and (cfg.name, cfg.output) == ("sig", Path("runs"))  # as its config.yaml says


def test_a_run_resumed_past_its_warmup_may_lower_its_lr_below_warmup_lr():
    """An --lr under --warmup-lr is a schedule that climbs down, refused at the start; past the warmup it is not."""
    parser = train.build_parser()
    argv = ["--lr", "1e-5", "--warmup-lr", "1e-4", "--min-lr", "1e-6", "--warmup-epochs", "1"]
    cfg = config.parse_config(parser, argv)
    run_settings.check_flags(cfg, {"epoch": 3})
    with pytest.raises(UserError, match="--warmup-lr"):
        run_settings.check_flags(cfg, None)


def test_weights_of_a_run_take_its_model_and_sizes_unless_typed(tmp_path):
    """--weights of a run's checkpoint: its variant and image size, where --model and --img-size are not typed."""
    torch.save({"class_names": ["a", "b"], "variant": "swin_micro_patch4_window4_128", "model": {}, **STATE,
                "epoch": 1, "model_overrides": {"num_classes": 2, "img_size": 64},
                "config": {"data_path": "photos", "output": "runs"}}, tmp_path / "best.pth")
    parser = train.build_parser()
    for typed, want in (([], ("swin_micro_patch4_window4_128", 64)),
                        (["--img-size", "96"], ("swin_micro_patch4_window4_128", 96)),
                        (["--model", "swin_micro_patch4_window4_128"], ("swin_micro_patch4_window4_128", 64))):
        argv = ["--weights", str(tmp_path / "best.pth"), *typed]
        cfg = config.parse_config(parser, argv)
        run_settings.model_of_weights(cfg, parser, argv)
        assert (cfg.model, cfg.img_size) == want, typed


def test_a_resume_that_names_the_runs_model_by_an_alias_goes_on(tmp_path):
    """The run's own model typed by another of its names (the official file's, timm's) is not another model."""
    torch.save({"class_names": ["a", "b"], "variant": "swin_tiny_patch4_window7_224", "model": {}, **STATE,
                "epoch": 1, "config": {"model": "swin_tiny_patch4_window7_224", "data_path": "photos",
                                       "output": "runs"}}, tmp_path / "last.pth")
    parser = train.build_parser()
    for typed in ("swin_tiny_patch4_window7_224_22kto1k", "swin_tiny_patch4_window7_224.ms_in1k"):
        argv = ["--resume", str(tmp_path), "--model", typed]
        cfg, checkpoint = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
        assert checkpoint["epoch"] == 1
