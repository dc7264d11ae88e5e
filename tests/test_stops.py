"""How a train.py run ends when something stops it: Ctrl-C and SIGTERM (to it or its process group), a
crash, a loader worker killed, a full disk, a loss that is no longer finite, out
of GPU memory. Each saves what can be saved, says in one line what happened and how to go on, and
leaves no traceback and no process behind."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import checkpoints
import engine
import evaluation
import run_log
import stopping
import train
import utils
from script_runs import FAST, ROOT, metrics, run_train, train_here
from utils import UserError


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line_and_keeps_the_last(flowers, tmp_path, capsys):
    """A full disk, here a limit on file size, which fails a write as a full disk does: the resumed run stops
    with one line that says so, and the last.pth that was there stays whole, with no temporary file left."""
    import resource
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "full")
    last = tmp_path / "full" / "last.pth"
    limit = last.stat().st_size // 2  # the other files a run writes stay far smaller

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails instead of killing the process

    result = run_train("--resume", tmp_path / "full", "--epochs", "2", "--no-progress", check=False, preexec_fn=limited)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"error: could not save {tmp_path / 'full'}/") and result.stderr.count("\n") == 1
    assert "GB free on its disk); the " in result.stderr and f"--resume {tmp_path / 'full'}" in result.stderr
    assert checkpoints.load_checkpoint(last)["epoch"] == 1
    assert not list((tmp_path / "full").glob(".*.tmp"))


def test_a_run_folder_moved_away_while_training_is_said_so(flowers, tmp_path, monkeypatch, capsys):
    """The run folder moved (or deleted) as the run wrote to it: TensorBoard's writer failed first, and the run
    ended on a bare "error: b'runs/x/events.out...': No such file or directory". Said as what happened and how to go
    on; moved back, the run goes on from its last save."""
    real = run_log.log_epoch

    def then_moved(writer, run_dir, *args, **kwargs):
        real(writer, run_dir, *args, **kwargs)
        run_dir.rename(tmp_path / "moved")
    monkeypatch.setattr(run_log, "log_epoch", then_moved)
    args = ["--data-path", flowers, *FAST, "--epochs", "2", "--save-every-steps", "1", "--output", tmp_path, "--name",
            "away"]
    with pytest.raises(UserError, match=rf"^{tmp_path / 'away'} was moved or deleted while the run wrote to it "
                                        r"\(.*\): the run stopped\. Moved: put it back, then .*--resume "
                                        rf"{tmp_path / 'away'} goes on from its last save; deleted: its checkpoints "
                                        r"went with it, start the run again$"):
        train.main([str(a) for a in args])
    monkeypatch.undo()
    (tmp_path / "moved").rename(tmp_path / "away")
    train_here(capsys, "--resume", tmp_path / "away")
    assert checkpoints.load_checkpoint(tmp_path / "away" / "last.pth")["epoch"] == 2


def test_stop_signal_saves_last_and_resume_finishes(flowers, tmp_path, capsys):
    """A SIGTERM to the training process alone (a job scheduler's): last.pth saved, status 143, and the resumed
    run finishes. Ctrl-C takes the same path (the process group test below sends both signals)."""
    sig, status = signal.SIGTERM, 143
    args = [sys.executable, "train.py", "--data-path", str(flowers), *FAST, "--epochs", "50",
            "--save-every-steps", "1", "--output", str(tmp_path), "--name", "int"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "int" / "last.pth"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert "python train.py --resume" in out and "Traceback" not in err
    saved = torch.load(last, weights_only=True)
    assert saved["step"] >= 1 and saved["epoch"] < 50
    if not (tmp_path / "int" / "best.pth").exists():  # stopped before its first validation
        train.main(["--eval-only", "--resume", str(tmp_path / "int"), "--workers", "0", "--no-progress"])
        # saved midway: named by where in the run its weights are, not as the epoch before (epoch 0)
        assert capsys.readouterr().out.startswith(
            f"swin_micro_patch4_window4_128 from {last} (in epoch 1, batch {saved['batches_done']})")
    # finish the run, shortened to one more epoch than it had reached
    done = train_here(capsys, "--resume", tmp_path / "int", "--epochs", saved["epoch"] + 1)
    assert "resumed at epoch" in done
    assert ("(not validated yet)" in done) == (saved["epoch"] == 0), done  # no best top-1 of -1
    assert torch.load(last, weights_only=True)["epoch"] == saved["epoch"] + 1


def test_a_stop_saves_though_the_output_s_reader_has_gone(flowers, tmp_path):
    """`train.py 2>&1 | tee log` and a Ctrl-C to the process group: tee ends first, and the stop's own notice raised
    from inside the signal handler (a broken pipe), so that the run ended at once, status 141, its steps since the
    last save lost. Its output now goes nowhere, and the stop finishes its step and saves."""
    args = [sys.executable, "train.py", "--data-path", str(flowers), *FAST, "--workers", "0", "--epochs", "50",
            "--output", str(tmp_path), "--name", "piped"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    for line in proc.stdout:  # as tee reads it
        if line.startswith("epoch   1"):
            break
    last = tmp_path / "piped" / "last.pth"
    deadline = time.time() + 60
    while not last.exists() and time.time() < deadline:
        time.sleep(0.1)
    before = torch.load(last, weights_only=True)["step"]
    time.sleep(1)  # into the second epoch
    proc.stdout.close()  # the reader has gone
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    assert torch.load(last, weights_only=True)["step"] > before  # saved at the stop


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_a_signal_to_the_process_group_reaches_the_workers_too_and_one_stop_follows(signum, status, flowers,
                                                                                    tmp_path, capsys):
    """A terminal's Ctrl-C signals the whole process group, loader workers included, and so do `timeout`,
    SLURM and `docker stop` with SIGTERM: the workers leave the stop to the training process, which
    says so once, saves and exits; a second Ctrl-C that nothing handles is one line and status 130,
    not a traceback."""
    args = [sys.executable, "train.py", "--data-path", str(flowers), *FAST, "--workers", "2", "--epochs", "50",
            "--save-every-steps", "1", "--output", str(tmp_path), "--name", "group"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    last = tmp_path / "group" / "last.pth"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()
    time.sleep(1)  # the workers are running
    os.killpg(proc.pid, signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status and "python train.py --resume" in out, err
    assert err.count(f"{signum.name} received") == 1 and "Traceback" not in err, err

    def interrupted():
        raise KeyboardInterrupt
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(interrupted)
    assert exit_info.value.code == 130 and capsys.readouterr().err.strip() == "stopped at once by Ctrl-C"


CRASH = """
import sys
sys.path.insert(0, {root!r})
import engine, train
def crash(*args, **kwargs):
    raise RuntimeError("a bug in the step")
engine.train_step = crash
train.main({args!r})
"""


def test_a_crash_with_loader_workers_up_ends_the_process(tmp_path):
    """The workers ignore SIGTERM (they leave stopping to the training process): a process that ends on an
    error must still end them, not wait for them for ever at exit."""
    args = ["--data-path", str(ROOT / "samples" / "flowers"), *FAST, "--workers", "2", "--epochs", "1",
            "--output", str(tmp_path), "--no-progress"]
    script = CRASH.format(root=str(ROOT), args=args)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "a bug in the step" in result.stderr


def loader_workers(pid: int) -> list:
    """The loader workers under a process: its children (fork) or its forkserver's (Python 3.14's default on Linux),
    the processes with none of their own, not multiprocessing's resource tracker."""
    found = []
    for child in map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split()):
        if b"resource_tracker" in Path(f"/proc/{child}/cmdline").read_bytes():
            continue
        found += loader_workers(child) or [child]
    return found


def test_a_loader_worker_killed_stops_the_run_in_one_line_that_says_how_to_go_on(flowers, tmp_path):
    """The system's out-of-memory killer ends a loader worker: one line that says what happened, what to
    change and how to resume; no traceback, none either from the other workers ended at exit."""
    proc = subprocess.Popen([sys.executable, "train.py", "--data-path", str(flowers), *FAST, "--workers", "2",
                             "--epochs", "50", "--output", str(tmp_path), "--name", "oom"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "oom" / "last.pth"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), proc.communicate()
    os.kill(loader_workers(proc.pid)[0], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err and err.count("\n") == 1, err
    # PyTorch says "is killed by signal: Killed." or "(pid(s) N) exited unexpectedly", as the death is found
    assert err.startswith("error: DataLoader worker (pid") and ". A data loading process died" in err
    assert "--workers (now 2)" in err and f"python train.py --resume {tmp_path / 'oom'}" in err
    assert checkpoints.load_checkpoint(last)["epoch"] >= 1


@pytest.mark.parametrize("error, where", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU memory"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9000000000 bytes"), "memory")])
def test_out_of_memory_suggests_what_to_do(flowers, tmp_path, monkeypatch, error, where):
    def out_of_memory(*args, **kwargs):
        raise error
    monkeypatch.setattr(engine, "train_one_epoch", out_of_memory)
    with pytest.raises(UserError, match=f"^out of {where} at --batch-size 16, 64 px: try --batch-size 8 "
                                        "--accum-steps 2, or --grad-checkpointing"):
        train.main(["--data-path", str(flowers), *FAST, "--epochs", "1", "--output", str(tmp_path)])


def test_non_finite_loss_stops_without_writing_nan(flowers, tmp_path, monkeypatch):
    real_loss = engine.loss_fn
    calls = {"n": 0}

    def poisoned(logits, targets, smoothing, **kwargs):
        calls["n"] += 1
        loss = real_loss(logits, targets, smoothing, **kwargs)
        return loss * float("nan") if calls["n"] > 7 else loss  # epoch 1 has 6 batches

    monkeypatch.setattr(engine, "loss_fn", poisoned)
    handlers = [signal.getsignal(sig) for sig in stopping.STOP_SIGNALS]
    with pytest.raises(UserError, match=r"^training stopped: the loss became nan at epoch 2, step 7\. Try a lower "
                                        r"--lr, --clip-grad, or --amp off; .*nan/last.pth holds the run as of its last "
                                        r"save, before it went wrong: python train.py --resume .*nan goes on from it$"):
        train.main(["--data-path", str(flowers), *FAST, "--epochs", "3", "--output", str(tmp_path),
                    "--name", "nan"])
    # the signals given back: a run that failed left its settled handler, which swallowed every later Ctrl-C
    assert [signal.getsignal(sig) for sig in stopping.STOP_SIGNALS] == handlers
    saved = torch.load(tmp_path / "nan" / "last.pth", weights_only=True)
    assert saved["epoch"] == 1 and checkpoints.all_finite(saved["model"])
    # at the first step: nothing saved, said so (it said last.pth held the last good epoch), with how to start again
    calls["n"] = 7
    with pytest.raises(UserError, match=r"the loss became nan at epoch 1, step 0\. .*; nothing was saved: .*first "
                                        r"holds no checkpoint: the run stopped before its first epoch was saved\. To "
                                        r"start it again: python train.py --config .*first/config.yaml"):
        train.main(["--data-path", str(flowers), *FAST, "--epochs", "3", "--output", str(tmp_path),
                    "--name", "first"])


def test_a_model_whose_logits_are_not_finite_is_not_saved_as_best(flowers, tmp_path, monkeypatch, capsys):
    """Weights grown so large that the logits overflow, the training losses finite till then: NaN logits score as
    chance does, so the epoch became best.pth and last.pth, and the next epoch's NaN loss said last.pth held the last
    good epoch. Under fp16 an overflow of one image's logit is said, and the epoch not taken as best."""
    real = evaluation.evaluate

    def overflowing(*args, **kwargs):
        return {**real(*args, **kwargs), "loss": float("nan")}
    monkeypatch.setattr(evaluation, "evaluate", overflowing)
    with pytest.raises(UserError, match=r"^training stopped: the validation loss became nan after epoch 1: the "
                                        r"weights give logits that are no finite numbers; not saving them\. .*nothing "
                                        r"was saved"):
        train.main(["--data-path", str(flowers), *FAST, "--epochs", "2", "--output", str(tmp_path), "--name", "v"])
    assert not (tmp_path / "v" / "best.pth").exists() and not (tmp_path / "v" / "last.pth").exists()
    run_log.check_val_finite({"loss": float("inf")}, 0, torch.float16)
    assert "warning: the validation loss is inf after epoch 1: some logits are past fp16's range" in \
        capsys.readouterr().err


def test_a_kill_while_validating_resumes_into_the_validation_and_logs_no_made_up_figures(flowers, tmp_path, capsys,
                                                                                        monkeypatch):
    """--save-every-steps saved last.pth at epoch 1's last batch; the run died while validating it. The resumed
    run validates epoch 1 with no batch to train: its training figures are the checkpoint's, as an uninterrupted
    run's, and its speed is left empty, not written as zero."""
    real_evaluate = evaluation.evaluate

    def killed(*args, **kwargs):
        raise RuntimeError("killed while validating")
    monkeypatch.setattr(evaluation, "evaluate", killed)
    args = ["--data-path", flowers, *FAST, "--epochs", "2", "--save-every-steps", "1", "--output", tmp_path,
            "--name", "k"]
    with pytest.raises(RuntimeError, match="killed while validating"):
        train_here(capsys, *args)
    saved = torch.load(tmp_path / "k" / "last.pth", weights_only=True)
    assert saved["epoch"] == 0 and saved["batches_done"] == 5  # 80 training images in batches of 16
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    out = train_here(capsys, "--resume", tmp_path / "k")
    rows = metrics(tmp_path / "k")
    assert "epoch   1  train loss " in out and "trained before the resume" not in out, out
    [line] = [line for line in out.splitlines() if line.startswith("epoch   1")]  # no time of its own, not "0.0s"
    assert line.endswith("its steps taken before the resume") or line.endswith("its steps taken before the resume  "
                                                                               "* best"), line
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["throughput_images_per_second"] == "" and rows[0]["acc1_val"] != ""
    train_here(capsys, *args[:-1], "straight")
    straight = metrics(tmp_path / "straight")
    figures = [[r[key] for key in ("loss_train", "acc1_train", "lr")] for r in rows]
    assert figures == [[r[key] for key in ("loss_train", "acc1_train", "lr")] for r in straight]


def test_an_epoch_resumed_midway_reports_the_whole_epochs_figures(flowers, tmp_path, capsys, monkeypatch):
    """Stopped after some of epoch 1's batches and resumed, the epoch's training loss and top-1 are an uninterrupted
    run's: the checkpoint carries the sums of the batches trained before the stop. Its time is not: left empty
    (the part since the resume made a dip on the curve), the speed of that part said as such."""
    args = ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path]
    train_here(capsys, *args, "--name", "straight")
    monkeypatch.setattr(engine, "train_step", ctrl_c_at_batch(engine.train_step, 2))
    with pytest.raises(SystemExit) as stopped:
        train.main([str(a) for a in [*args, "--name", "stopped"]])
    assert stopped.value.code == 130 and 0 < torch.load(tmp_path / "stopped" / "last.pth")["batches_done"] < 5
    monkeypatch.undo()
    said = train_here(capsys, "--resume", tmp_path / "stopped")
    straight, resumed = metrics(tmp_path / "straight")[0], metrics(tmp_path / "stopped")[0]
    assert (resumed["loss_train"], resumed["acc1_train"]) == (straight["loss_train"], straight["acc1_train"])
    assert float(straight["time_epoch_seconds"]) > 0 and resumed["time_epoch_seconds"] == ""
    assert "s since the resume " in said and float(resumed["throughput_images_per_second"]) > 0


def test_an_epoch_stopped_midway_ends_at_the_stop_where_its_images_changed_since(flowers, tmp_path, capsys,
                                                                               monkeypatch):
    """A training photo that no longer decodes on resuming (or one removed or added) changes the epoch's order: it
    cannot go on as it ran, in any layout, so it ends at the stop, is validated, and the run goes on; the command the
    refusal gave (the epoch finished as it ran) could not work."""
    import json
    import shutil
    data = tmp_path / "photos"
    shutil.copytree(flowers, data)
    args = ["--data-path", data, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "s"]
    monkeypatch.setattr(engine, "train_step", ctrl_c_at_batch(engine.train_step, 2))
    with pytest.raises(SystemExit):
        train.main([str(a) for a in args])
    monkeypatch.undo()
    val = json.loads((tmp_path / "s" / "val_files.json").read_text())["val"]
    next(p for p in sorted((data / "tulips").iterdir()) if f"tulips/{p.name}" not in val).write_bytes(b"broken")
    out = train_here(capsys, "--resume", tmp_path / "s")
    assert "resumed at epoch 1, step 3 (not validated yet); the training images changed since the stop (80 then, 79 " \
           "now: files removed, added or no longer decoding), so epoch 1 cannot go on as it ran: it ends at the stop, " \
           "after 3 of its 5 batches, and is validated" in out, out
    rows = metrics(tmp_path / "s")
    # epoch 1's 3 steps; epoch 2's 4, the full batches of 79 images in 16s
    assert [r["epoch"] for r in rows] == ["1", "2"] and [r["step"] for r in rows] == ["3", "7"]


def test_a_second_ctrl_c_stops_at_once_saying_what_is_lost_and_how_to_go_on(flowers, tmp_path, capsys, monkeypatch):
    """The first Ctrl-C finishes the step and saves; a second one stops at once, from anywhere in the loop: one line
    with the resume command, as every other stop has, status 130; or, in a first step that takes long (a compiled
    one) with nothing saved yet, the command that starts the run again."""
    def second_ctrl_c_at(step):
        def train_step(state, *args, **kwargs):
            if state.step == step:
                os.kill(os.getpid(), signal.SIGINT)  # the first: finish the step and save
                os.kill(os.getpid(), signal.SIGINT)  # the second: at once
            return real(state, *args, **kwargs)
        return train_step
    real = engine.train_step
    for name, step, said in (("late", 3, "the steps since {run}/last.pth was saved are lost. To go on: python "
                                         "train.py --resume {run}\n"),
                             ("early", 0, "{run} holds no checkpoint: the run stopped before its first epoch was saved. "
                                          "To start it again: python train.py --config {run}/config.yaml --output "
                                          "{out} --name early\n")):
        monkeypatch.setattr(engine, "train_step", second_ctrl_c_at(step))
        with pytest.raises(SystemExit) as stopped:
            train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path,
                                         "--name", name, "--save-every-steps", "2"]])
        assert stopped.value.code == 130
        assert capsys.readouterr().err.endswith("\nstopped at once by a second Ctrl-C: " +
                                                said.format(run=tmp_path / name, out=tmp_path)), name


def test_a_second_ctrl_c_as_the_report_is_written_leaves_no_torn_file_and_says_the_training_is_done(
        flowers, tmp_path, capsys, monkeypatch):
    """Two Ctrl-Cs as a run's report is written: the training is done and saved, which the line says (not that steps
    were lost), with the command that writes the report; and the picture being written is not left torn."""
    import plots
    drawn = plots.confusion_matrix_image

    def interrupted_while_saved(*args, **kwargs):
        picture = drawn(*args, **kwargs)
        real_save = picture.save

        def save(path, *save_args, **save_kwargs):
            real_save(path, *save_args, **save_kwargs)
            with open(path, "r+b") as written:  # half written when the second Ctrl-C comes
                written.truncate(40)
            raise KeyboardInterrupt
        picture.save = save
        return picture
    monkeypatch.setattr(plots, "confusion_matrix_image", interrupted_while_saved)
    run = tmp_path / "r"
    with pytest.raises(SystemExit) as stopped:
        train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path,
                                     "--name", "r"]])
    assert stopped.value.code == 130
    assert capsys.readouterr().err.endswith(
        f"\nstopped at once by a second Ctrl-C as the report was written: the training is done and saved in {run}; "
        f"python train.py --eval-only --resume {run / 'best.pth'} writes the report, in {run / 'eval_val'}\n")
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 1
    assert not (run / "confusion_matrix.png").exists() and not list(run.glob(".*.tmp"))


def ctrl_c_at_batch(train_step, batch: int = 5):
    """train_step, and a Ctrl-C as it ends the epoch's batch `batch`, by default its last (80 training images in
    batches of 16: FAST's)."""
    def signalled(state, *args, **kwargs):
        result = train_step(state, *args, **kwargs)
        if state.batches_done == batch:
            os.kill(os.getpid(), signal.SIGINT)
        return result
    return signalled


def test_a_stop_at_the_epochs_last_step_saves_its_training_before_validating(flowers, tmp_path, capsys, monkeypatch):
    """Ctrl-C during an epoch's last step: the epoch is validated before the run stops, and validating may
    outlast what a kill waits (torchrun's --shutdown-timeout, 30 s): last.pth holds the epoch's training
    first, without --save-every-steps, and the run resumes into the validation."""
    def killed(*args, **kwargs):
        raise RuntimeError("killed while validating")
    monkeypatch.setattr(engine, "train_step", ctrl_c_at_batch(engine.train_step))
    monkeypatch.setattr(evaluation, "evaluate", killed)
    with pytest.raises(RuntimeError, match="killed while validating"):
        train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "2", "--output", tmp_path, "--name", "s")
    saved = torch.load(tmp_path / "s" / "last.pth", weights_only=True)
    assert saved["epoch"] == 0 and saved["batches_done"] == 5


def test_the_report_that_ends_a_run_waits_for_its_last_checkpoints(flowers, tmp_path, capsys, monkeypatch):
    """Checkpoints are written beside the training; the report, the hparams and the line that says the run is done
    come once the last epoch's are on disk: a kill after that line (or while the report is written) finds the run
    finished, not its last epoch to train or validate again."""
    import report
    save, seen = checkpoints.save_checkpoint, []

    def slow_save(obj, path):
        time.sleep(1.0)  # a large checkpoint on a slow disk
        save(obj, path)
    write_evaluation = report.write_evaluation

    def reporting(folder, *args, **kwargs):
        seen.append(torch.load(Path(folder) / "last.pth", weights_only=True)["epoch"])
        return write_evaluation(folder, *args, **kwargs)
    monkeypatch.setattr(checkpoints, "save_checkpoint", slow_save)
    monkeypatch.setattr(report, "write_evaluation", reporting)
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "w")
    assert seen == [1]


def test_a_stop_at_the_last_epochs_end_finishes_the_run_with_its_report(flowers, tmp_path, capsys, monkeypatch):
    """Ctrl-C (or a scheduler's SIGTERM) during the last step or the last validation finds the run done: it writes
    its report and ends as finished (status 0), rather than stopping with a resume that has nothing to do."""
    monkeypatch.setattr(engine, "train_step", ctrl_c_at_batch(engine.train_step))
    out = train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "f")
    assert "stopped by" not in out and f"open in a browser: {tmp_path / 'f' / 'report.html'}" in out
    assert (tmp_path / "f" / "report.html").is_file()


def trained_signalled_in(owner, name: str, flowers, tmp_path, run: str, capsys, monkeypatch) -> tuple:
    """A one-epoch run that meets a SIGTERM as `owner.name` is called: (stdout, stderr)."""
    real = getattr(owner, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, signalled)
    train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", run]])
    return capsys.readouterr()


def test_a_signal_as_the_report_is_written_says_the_training_is_done(flowers, tmp_path, capsys, monkeypatch):
    """A SIGTERM (or a first Ctrl-C) while the finished run writes its report: the run writes it and ends as
    finished; its notice said it was finishing a step and saving last.pth, then nothing more was said."""
    out, err = trained_signalled_in(run_log, "finish_run", flowers, tmp_path, "r", capsys, monkeypatch)
    assert f"open in a browser: {tmp_path / 'r' / 'report.html'}" in out and (tmp_path / "r" / "report.html").is_file()
    assert err.endswith("\nSIGTERM received: the training is done and saved; writing its report, then the run ends\n")


def test_a_signal_as_the_last_epoch_is_validated_says_the_run_ends_done(flowers, tmp_path, capsys, monkeypatch):
    """A SIGTERM during the last epoch's validation: the run validates, saves and reports as finished; its notice
    said it was finishing a step and saving last.pth, as if it stopped there."""
    out, err = trained_signalled_in(evaluation, "evaluate", flowers, tmp_path, "v", capsys, monkeypatch)
    assert f"open in a browser: {tmp_path / 'v' / 'report.html'}" in out and "stopped by" not in out
    assert "\nSIGTERM received: the last epoch is trained: validating and saving it, writing the report, then the " \
           "run ends\n" in err


def test_a_resumed_run_whose_best_came_before_reports_on_best_pth(flowers, tmp_path, capsys, monkeypatch):
    """The report at a run's end is of best.pth, also when best.pth was saved before a resume and the epochs since
    scored lower: its weights are evaluated again, not last.pth's."""
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "b")
    real_evaluate, calls = evaluation.evaluate, []

    def epoch_2_scored_lower(*args, **kwargs):
        calls.append(1)
        result = real_evaluate(*args, **kwargs)
        return dict(result, acc1=-1.0) if len(calls) == 1 else result
    monkeypatch.setattr(evaluation, "evaluate", epoch_2_scored_lower)
    train_here(capsys, "--resume", tmp_path / "b", "--epochs", "2")
    report_txt = (tmp_path / "b" / "report.txt").read_text()
    assert report_txt.startswith(f"swin_micro_patch4_window4_128 from {tmp_path / 'b' / 'best.pth'} (epoch 1)")
    epoch_1 = float(metrics(tmp_path / "b")[0]["acc1_val"])
    assert f"top-1 {epoch_1:.4f}" in report_txt and len(calls) == 2


def test_a_run_resumed_from_last_pth_alone_reports_on_it(flowers, tmp_path, capsys, monkeypatch):
    """Resumed from a copy of last.pth with no best.pth beside it, a run whose epochs since scored lower still
    writes its report, of the last epoch's weights, and says so, rather than failing at its very end."""
    import shutil
    train_here(capsys, "--data-path", flowers, *FAST, "--epochs", "1", "--output", tmp_path, "--name", "m")
    (tmp_path / "backup").mkdir()
    shutil.copy(tmp_path / "m" / "last.pth", tmp_path / "backup" / "last.pth")
    real_evaluate = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: dict(real_evaluate(*a, **k), acc1=-1.0))
    train_here(capsys, "--resume", tmp_path / "backup" / "last.pth", "--epochs", "2")
    assert (tmp_path / "backup" / "report.txt").read_text().startswith(
        f"swin_micro_patch4_window4_128 from {tmp_path / 'backup' / 'last.pth'} (epoch 2; no best.pth beside it)")


def test_a_runs_loader_workers_have_ended_before_it_gives_up_its_signal_handling(flowers, tmp_path, capsys,
                                                                                monkeypatch):
    """Left to the loaders' collection as the process exits, after the run's handlers are gone, a Ctrl-C in that
    second or two printed PyTorch's cleanup traceback (after a finished run's last line, or a stop's)."""
    import multiprocessing
    alive = []
    restore = stopping.StopSignal.restore

    def noting_the_workers(stop):
        alive.append(multiprocessing.active_children())
        restore(stop)
    monkeypatch.setattr(stopping.StopSignal, "restore", noting_the_workers)
    train_here(capsys, "--data-path", flowers, *FAST, "--workers", "2", "--epochs", "1", "--output", tmp_path,
               "--name", "w")
    assert alive == [[]]


def test_what_a_run_that_ended_at_once_lost_names_a_command_that_works(tmp_path):
    """Before its first save there is no last.pth to resume from: the command that starts it again."""
    run = tmp_path / "r"
    run.mkdir()
    assert run_log.lost_since_saved(run, "Try fewer --workers; ").startswith(f"try fewer --workers; {run} holds no "
                                                                           "checkpoint")
    (run / "last.pth").write_bytes(b"")
    assert run_log.lost_since_saved(run, "Try fewer --workers; ") == (
        f"the steps since {run / 'last.pth'} was saved are lost. Try fewer --workers; to go on: python train.py "
        f"--resume {run}")
    assert run_log.lost_since_saved(run).endswith(f"are lost. To go on: python train.py --resume {run}")


def test_a_full_disk_that_tensorboard_meets_first_is_one_line_that_says_how_to_go_on(flowers, tmp_path, capsys,
                                                                                      monkeypatch):
    """A disk filled by something else: TensorBoard's small writes meet it before the next checkpoint does, in its
    writer thread, whose error names no file. One line, as a checkpoint's failed write says it; no traceback (the
    thread's, or the flush's in the training process)."""
    import errno
    from tensorboard.summary.writer import record_writer
    written = record_writer.RecordWriter.write

    def full_after_the_first_epoch(self, data):
        if (tmp_path / "r" / "last.pth").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return written(self, data)
    monkeypatch.setattr(record_writer.RecordWriter, "write", full_after_the_first_epoch)
    with pytest.raises(UserError, match=r"^could not write to .*r: No space left on device \(.* GB free on its "
                                        r"disk\); the steps since .*last.pth was saved are lost. Make room, then to go "
                                        r"on: python train.py --resume .*r$"):
        train.main([str(a) for a in ["--data-path", flowers, *FAST, "--epochs", "3", "--output", tmp_path,
                                     "--name", "r"]])
    assert "Traceback" not in capsys.readouterr().err
