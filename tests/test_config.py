"""config.py through train.py's parser: defaults < YAML < flags, values checked where they are read, and
the tutorial's flags as it types them."""
import re
from pathlib import Path

import pytest
import torch
import yaml

import config
import predict
import run_settings
import train
import utils
from script_runs import ROOT
from utils import UserError


def test_config_precedence_and_unknown_keys(tmp_path, monkeypatch):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 3\nlr: 1e-3\nmodel: swin_micro_patch4_window4_128\n")
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file), "--epochs", "5"])
    assert cfg.epochs == 5  # flag over YAML
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)  # YAML over default (and "1e-3" is a number)
    assert cfg.model == "swin_micro_patch4_window4_128" and cfg.batch_size == 8  # default
    yaml_file.write_text("epoch: 3\n")
    with pytest.raises(UserError, match="unknown config key 'epoch'.*did you mean 'epochs'"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    for typo, meant in (("lr_rate", "lr"), ("learning_rate", "lr"), ("balance_classes", "balance"),
                        ("batch-size", "batch_size"), ("batchsize", "batch_size"), ("EPOCHS", "epochs")):
        yaml_file.write_text(f"{typo}: 3\n")
        with pytest.raises(UserError, match=f"unknown config key '{typo}'.*did you mean '{meant}'"):
            config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    # a whole number written as a float, as a script may write it, is that number; 2.5 is refused (below)
    yaml_file.write_text("epochs: 2.0\n")
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert cfg.epochs == 2 and isinstance(cfg.epochs, int)
    # a name is text, as typed after its flag (an unknown model then says so); no key takes a list
    yaml_file.write_text("model: 5\n")
    assert config.parse_config(train.build_parser(), ["--config", str(yaml_file)]).model == "5"
    for value in ("[swin_micro_patch4_window4_128]", "{a: 1}"):
        yaml_file.write_text(f"model: {value}\n")
        with pytest.raises(UserError, match=r"c\.yaml: model: .* is not a single value"):
            config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    yaml_file.write_text("recipe: fancy\n")
    with pytest.raises(UserError, match="recipe"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    yaml_file.write_text("epochs: [3\nlr: 1e-3\n")
    with pytest.raises(UserError, match=r"c\.yaml is not valid YAML: .*line 2") as err:
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert "\n" not in str(err.value)
    # Windows Notepad's "Unicode" (UTF-16 with its byte-order mark) is read; a file that is no text (a checkpoint
    # given by mistake) is one line, not a UnicodeDecodeError's traceback
    yaml_file.write_text("epochs: 3\n", encoding="utf-16")
    assert config.parse_config(train.build_parser(), ["--config", str(yaml_file)]).epochs == 3
    yaml_file.write_bytes(b"PK\x03\x04\xff\xfe\x00archive/data.pkl")
    with pytest.raises(UserError, match=r"c\.yaml is not valid YAML: unacceptable character"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    # what YAML reads as other types: off as False, a GPU index or a run name as a number
    yaml_file.write_text("amp: off\nbalance: off\ndevice: 0\nname: 2024\n")
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert (cfg.amp, cfg.balance, cfg.device, cfg.name) == ("off", "off", "0", "2024")
    yaml_file.write_text("epochs: 3\nlr: 0.001\nepochs: 5\n")  # PyYAML took the last, without a word
    with pytest.raises(UserError, match=r"c\.yaml is not valid YAML: epochs is given twice, on lines 1 and 3: keep one"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    yaml_file.write_text("balance: true\n")  # said as typed, not as the 'on' YAML's true was turned into
    with pytest.raises(UserError, match=r"balance: 'true' is not one of \['off', 'sampler', 'loss'\]"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    # a key left empty (or ~) has no value: refused where one is needed, null kept where it is the default
    for line in ("epochs:", "data_path: ~", "amp:", "balance:", "ema:"):
        yaml_file.write_text(f"{line}\nnum_classes:\n")
        with pytest.raises(UserError, match=rf"c\.yaml: {line.split(':')[0]}: has no value: give one, or remove the "
                                            rf"line for its default \(\w+"):
            config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    yaml_file.write_text("num_classes:\nimg_size: ~\ncompile: null\nname: ''\n")
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert (cfg.num_classes, cfg.img_size, cfg.compile, cfg.name) == (None, None, None, None)
    # a path in a file: no shell has expanded its ~
    yaml_file.write_text("data_path: ~/photos\n")
    assert config.parse_config(train.build_parser(), ["--config", str(yaml_file)]).data_path == Path.home() / "photos"
    with pytest.raises(UserError, match=f"--config {tmp_path} is a folder: give a YAML file"):
        config.parse_config(train.build_parser(), ["--config", str(tmp_path)])
    # the demo's config typed from another folder: the project's own file named
    monkeypatch.chdir(tmp_path)
    own = ROOT / "configs" / "cpu_demo.yaml"
    with pytest.raises(UserError, match=re.escape(f"config file not found: configs/cpu_demo.yaml (looked for from "
                                                  f"{tmp_path}); the project's is {own}")):
        config.parse_config(train.build_parser(), ["--config", "configs/cpu_demo.yaml"])
    with pytest.raises(UserError, match=r"config file not found: nothing.yaml \(looked for from .*\)$"):
        config.parse_config(train.build_parser(), ["--config", "nothing.yaml"])
    with pytest.raises(UserError, match=r"--config is given 2 times \(configs/cpu_demo.yaml, .*c.yaml\): give one"):
        config.parse_config(train.build_parser(), ["--config", "configs/cpu_demo.yaml", "--config", str(yaml_file)])


def test_an_unknown_flag_is_refused_with_the_nearest_known_one(capsys):
    """A flag mistyped (another spelling, letters swapped) is refused as argparse refuses it, with the flag meant;
    one like none is refused alone."""
    for parser, args, said in (
            (predict.build_parser(), ["x.jpg", "--top-k", "3"], "--top-k 3 (--top-k: did you mean --topk?)"),
            (predict.build_parser(), ["x.jpg", "--Weigths=w.pth"],
             "--Weigths=w.pth (--Weigths: did you mean --weights?)"),
            (train.build_parser(), ["--data_path", "d", "--zzz"], "--data_path d --zzz (--data_path: did you mean "
                                                                   "--data-path?)"),
            (train.build_parser(), ["--zzz"], "--zzz")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(args)
        error = capsys.readouterr().err.splitlines()[-1]
        assert exit_info.value.code == 2 and error.endswith(f": error: unrecognized arguments: {said}"), error


def test_a_folder_whose_name_starts_with_a_dash_is_said_how_to_name(tmp_path, monkeypatch, capsys):
    """predict.py -photos, a folder of that name: argparse reads it as a flag and refuses it, and the line said
    nothing of the folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "-photos").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        predict.build_parser().parse_args(["-photos"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.splitlines()[-1].endswith(
        "error: unrecognized arguments: -photos (-photos is a folder here: write ./-photos, or put -- before it)")
    args = predict.build_parser().parse_args(["--", "-photos"])  # as it says
    assert args.images == ["-photos"]
    # a folder named as it is, without its flag (train.py photos): not a name read as a flag, no such hint
    (tmp_path / "photos").mkdir()
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["photos"])
    assert capsys.readouterr().err.splitlines()[-1].endswith("error: unrecognized arguments: photos")


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "must be >= 1, not 0"),
    ("--epochs", "-1", "must be >= 1"),
    ("--workers", "-1", "must be >= 0"),
    ("--lr", "-0.001", "must be > 0"),
    ("--lr", "nan", "must be > 0"),
    ("--label-smoothing", "1.5", "must be >= 0 and < 1"),
    ("--drop-path-rate", "1", "must be >= 0 and < 1"),
    ("--layer-decay", "0", "must be > 0 and <= 1"),
    ("--accum-steps", "2.5", "invalid int value"),
    ("--lr", "abc", "invalid float value"),
    ("--name", "../runs2", "must be a folder name, not '../runs2': --output says where runs go"),
])
def test_values_out_of_range_are_one_clear_error(tmp_path, capsys, flag, value, message):
    """As a flag: a one-line usage and the error line, status 2. In a YAML config: one line naming the file
    and key. Either way before anything runs, not a traceback from the optimizer or the loader."""
    parser = train.build_parser()
    with pytest.raises(SystemExit) as exit_info:
        config.parse_config(parser, [flag, value])
    assert exit_info.value.code == 2
    # the line that matters last, under a one-line usage, not argparse's usage of every flag above it
    prog = parser.prog  # train.py as run; here pytest's
    usage, error = capsys.readouterr().err.splitlines()
    assert usage == f"usage: {prog} [flags] ({prog} --help describes them)"
    assert error.startswith(f"{prog}: error: argument {flag}: {message}"), error
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(f"{flag[2:].replace('-', '_')}: {value}\n")
    key = flag[2:].replace('-', '_')
    said = {"invalid int value": f"{value} is not a whole number", "invalid float value": f"'{value}' is not a number"}
    with pytest.raises(UserError, match=re.escape(f"c.yaml: {key}: {said.get(message, '')}")):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    yaml_file.write_text("ema: 3\n")
    with pytest.raises(UserError, match="ema: 3 is not true or false"):
        config.parse_config(train.build_parser(), ["--config", str(yaml_file)])


def test_a_sha256_digest_of_the_wrong_length_is_refused_before_any_download():
    """Checked as typed: a digest cut short or too long could never match the hundreds of MB downloaded first."""
    import argparse
    assert config.sha256_digest(" " + "A" * 64 + "\n") == "a" * 64
    for wrong in ("a" * 63, "a" * 65, ""):
        with pytest.raises(argparse.ArgumentTypeError, match="64 hexadecimal digits"):
            config.sha256_digest(wrong)

def test_the_tutorials_flags_as_it_types_them():
    """The tutorial's train.py spells --num_classes with an underscore, takes --freeze-layers with a
    value (its type=bool read "False" as True), '' for no weights and --device cuda:0 or a GPU index."""
    cfg = config.parse_config(train.build_parser(), ["--num_classes", "5", "--freeze-layers", "False", "--weights", ""])
    assert (cfg.num_classes, cfg.freeze_layers, cfg.weights) == (5, False, "none")
    assert config.parse_config(train.build_parser(), ["--freeze-layers", "True"]).freeze_layers is True
    assert config.parse_config(train.build_parser(), ["--freeze-layers"]).freeze_layers is True
    assert config.parse_config(train.build_parser(), ["--no-freeze-layers"]).freeze_layers is False  # as --no-ema
    parser = train.build_parser()  # asking which flags were typed leaves each of the two actions' defaults as it was
    config.typed_flags(parser, ["--no-freeze-layers"])
    assert parser.parse_args([]).freeze_layers is False
    assert config.parse_config(train.build_parser(), []).freeze_layers is False
    with pytest.raises(SystemExit):
        config.parse_config(train.build_parser(), ["--freeze-layers", "maybe"])
    for device in ("0", "cuda:0"):  # both name the first GPU
        if torch.cuda.is_available():
            assert utils.select_device(device) == torch.device("cuda:0")
        else:
            with pytest.raises(UserError, match="no CUDA GPU"):
                utils.select_device(device)
    with pytest.raises(UserError, match="torchrun --nproc_per_node"):
        utils.select_device("0,1")
    with pytest.raises(UserError, match="'gpu' is not a device"):
        utils.select_device("gpu")
    assert utils.select_device("CPU") == torch.device("cpu")


@pytest.mark.parametrize("build, advice", [(None, "install a CUDA build of torch"),
                                           ("13.0", r"check that the GPU and its driver are seen here \(nvidia-smi")])
def test_no_gpu_seen_says_what_to_check_for_the_build_of_torch_installed(build, advice, monkeypatch):
    """A CPU build of torch needs a CUDA one; a CUDA build that sees no GPU needs the GPU or its driver checked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", build)
    with pytest.raises(UserError, match=f"--device cuda was asked for, but this PyTorch sees no CUDA GPU .*{advice}"):
        utils.select_device("cuda")


def test_an_apple_gpu_asked_for_where_there_is_none_is_one_line(monkeypatch):
    """--device mps on a machine without one (every Linux machine) was a RuntimeError's traceback from the model's
    .to()."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="--device mps was asked for, but this PyTorch sees no Apple GPU"):
        utils.select_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert utils.select_device("MPS") == torch.device("mps")


def test_an_empty_folder_path_is_refused_not_taken_for_here(capsys):
    """--data-path "$DATA" with DATA unset: Path("") is the folder the command runs in, which trained on whatever
    class folders were there, or wrote a split into it. Refused, as flag or config key."""
    import split_data
    for parse, flag in ((lambda args: config.parse_config(train.build_parser(), args), "--data-path"),
                        (lambda args: config.parse_config(train.build_parser(), args), "--output"),
                        (split_data.parse_args, "--data-path"), (split_data.parse_args, "--out")):
        with pytest.raises(SystemExit):
            parse([flag, ""])
        assert f"argument {flag}: is empty (an unset shell variable?): name the folder" in capsys.readouterr().err

def test_defaults_are_the_tutorials():
    cfg = config.parse_config(train.build_parser(), ["--data-path", "flower_photos", "--num-classes", "5"])
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.lr, cfg.weight_decay) == \
        ("swin_tiny_patch4_window7_224", 10, 8, 1e-4, 0.05)
    assert cfg.img_size is None  # the variant's own: 224 for swin_tiny


def test_configs_folder_is_valid():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = config.parse_config(train.build_parser(), ["--config", str(path)])
        assert cfg.model == yaml.safe_load(path.read_text())["model"], path  # the file's, not the default


def test_a_config_named_on_resuming_counts_as_typed(tmp_path):
    """A resumed run keeps its saved settings except those given now: flags, and a --config file's keys."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {}, "variant": "swin_micro_patch4_window4_128", "class_names": ["a", "b"], "optimizer": {},
                "scheduler": {}, "scaler": {}, "step": 5, "best_acc": 0.5, "rng": {},
                "epoch": 1, "batches_done": 0, "config": {"epochs": 10, "lr": 1e-4, "batch_size": 8, "workers": 3,
                                                          "device": "cuda:1", "stop_after_epochs": 1,
                                                          "progress": False}},
               run / "last.pth")
    (tmp_path / "longer.yaml").write_text("epochs: 40\n")
    argv = ["--resume", str(run), "--config", str(tmp_path / "longer.yaml"), "--batch-size", "4"]
    parser = train.build_parser()
    cfg, _ = run_settings.resume_config(parser, config.parse_config(parser, argv), argv)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (40, 4, 1e-4)  # the file's, the flag's, the run's own
    # the process's own settings, not the run's: the machine's device and workers, the job's time limit and log
    assert (cfg.workers, cfg.device, cfg.stop_after_epochs, cfg.progress) == (None, "auto", 0, True)
    cfg, _ = run_settings.resume_config(parser, config.parse_config(parser, argv + ["--stop-after-epochs", "2"]),
                                   argv + ["--stop-after-epochs", "2"])
    assert cfg.stop_after_epochs == 2
    assert config.explicit_flags(train.build_parser(), ["--resume", str(run)]) == {"resume"}


@pytest.mark.parametrize("argv", [[], ["--compile", "--data-path", "photos", "--lr", "3e-4", "--amp", "off"]])
def test_a_runs_own_config_yaml_given_as_config_makes_the_same_run(tmp_path, argv):
    """runs/<name>/config.yaml holds every setting, defaults included (--compile's None): fed back as --config
    (the command that starts again a run killed before its first checkpoint), it gives the same settings."""
    cfg = config.parse_config(train.build_parser(), argv)
    config.write_yaml(tmp_path / "config.yaml", vars(cfg))
    again = config.parse_config(train.build_parser(), ["--config", str(tmp_path / "config.yaml")])
    assert {**vars(again), "config": None} == vars(cfg)


def test_a_name_or_path_that_yaml_reads_as_a_number_is_kept_as_typed(tmp_path):
    """YAML 1.1 reads 1.10 as 1.1, 0755 as octal 493, 12:30 as 750 and no as false: a run name, a folder or a GPU
    index is the text typed, as its flag takes it; `weights: false` (or no) is from scratch, as `none` is."""
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("name: 1.10\ndata_path: 2024.10\noutput: 0755\ndevice: '0'\nmodel: 12:30\nweights: no\n")
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert (cfg.name, cfg.data_path, cfg.output, cfg.device, cfg.model, cfg.weights) == \
        ("1.10", Path("2024.10"), Path("0755"), "0", "12:30", "none")
    yaml_file.write_text("epochs: 10\nlr: 1e-4\n")  # numbers stay numbers
    cfg = config.parse_config(train.build_parser(), ["--config", str(yaml_file)])
    assert (cfg.epochs, cfg.lr) == (10, 1e-4)


def test_another_model_typed_over_a_finetune_config_takes_its_own_weights():
    """configs/finetune_swin_tiny.yaml names weights/swin_tiny_patch4_window7_224.pth: with --model
    swin_small_patch4_window7_224 typed, those were loaded into Swin-S (an architecture error) and --download-weights
    fetched nothing; the typed model's own file is used. --weights typed, or the config's own model, keep theirs."""
    tiny = str(ROOT / "configs" / "finetune_swin_tiny.yaml")
    for argv, weights in (([], Path("weights/swin_tiny_patch4_window7_224.pth")),
                          (["--model", "swin_small_patch4_window7_224"], None),
                          (["--model", "swin_tiny"], Path("weights/swin_tiny_patch4_window7_224.pth")),
                          (["--model", "swin_small_patch4_window7_224", "--weights", "w.pth"], Path("w.pth"))):
        parser = train.build_parser()
        cfg = config.parse_config(parser, ["--config", tiny, *argv])
        run_settings.weights_of_typed_model(cfg, parser, ["--config", tiny, *argv])
        assert cfg.weights == weights, argv
