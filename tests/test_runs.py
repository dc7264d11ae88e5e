"""Where a run writes (runs.py): its folder, unique or named, locked while it trains, refused where a run or its
records are (a new run would write over them), and never among the folders training reads as classes. The rest of
train.py: test_train.py."""
import argparse
import os
import re
import shutil

import pytest

import runs
import run_settings
import train
from script_runs import FAST, ROOT
from utils import UserError


def test_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    stamped = tmp_path / "runs" / "swin_micro-20261129-101347"
    made = [runs.make_run_folder(stamped, named=False) for _ in range(3)]
    assert [p.name for p, _ in made] == [stamped.name, f"{stamped.name}-2", f"{stamped.name}-3"]
    for folder, lock in made:  # each locked by this process, as its run trains in it
        assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(UserError, match="is in use"):
            runs.lock_run_folder(folder, hold=False)
        lock.close()
    folder, lock = runs.make_run_folder(stamped, named=True)  # --name's, or a resumed run's own
    assert folder == stamped
    lock.close()


def test_a_folder_that_a_run_is_training_in_is_refused(flowers, tmp_path):
    """Two starts with one --name, or two resumes of one run, at once: they wrote into one folder, each over the
    other's checkpoints, metrics and config.yaml. The run holds its folder's lock while it trains; another start
    there is refused, before its model is built (or, in a race, as it makes the folder), with nothing written;
    a resume of a run still in its first epoch (no last.pth yet) is told it is in use, not that it stopped.
    Asking takes a shared lock, so that processes that ask at once do not refuse one another."""
    import argparse
    folder = tmp_path / "same"
    folder.mkdir()
    held = runs.lock_run_folder(folder)  # as a run in another process holds it (flock: per open file)
    in_use = rf"^{folder} is in use: a train.py run \(process {os.getpid()}\) is training in it now, and two "
    elsewhere = in_use + "would .*Wait for it to end, or start this one under another --name$"
    built = train.model_for_run
    train.model_for_run = lambda *args, **kwargs: pytest.fail("the model was built")
    try:
        with pytest.raises(UserError, match=elsewhere):
            train.main(["--data-path", str(flowers), *FAST, "--epochs", "1", "--output", str(tmp_path), "--name",
                        "same"])
    finally:
        train.model_for_run = built
    with pytest.raises(UserError, match=in_use + ".*Wait for it to end$"):  # a resume of it
        runs.run_folder(argparse.Namespace(resume=folder), {"epoch": 1}, "swin_micro_patch4_window4_128")
    with pytest.raises(UserError, match=in_use + ".*Wait for it to end$"):  # in its first epoch: no last.pth yet
        train.main(["--resume", str(folder)])
    for resumed, advice in ((False, elsewhere), (True, in_use + ".*Wait for it to end$")):  # the race: free when
        with pytest.raises(UserError, match=advice):  # checked, locked when made
            runs.make_run_folder(folder, named=True, resumed=resumed)
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]
    held.close()
    asking = [runs.lock_run_folder(folder, hold=False) for _ in range(2)]  # asked, let go: no bar
    assert asking == [None, None]
    (tmp_path / "never").mkdir()  # asking writes nothing (a folder may be read-only to the one who asks)
    assert runs.lock_run_folder(tmp_path / "never", hold=False) is None
    assert not any((tmp_path / "never").iterdir())
    folder, lock = runs.make_run_folder(folder, named=True)
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    lock.close()


def test_a_new_run_refuses_a_folder_of_a_runs_records_whose_checkpoints_are_gone(tmp_path):
    """A finished run's checkpoints deleted to save room: its metrics.csv and report were written over by a new run
    under its --name, without a word. One stopped before its first epoch (its config.yaml alone) starts again."""
    import argparse
    cfg = argparse.Namespace(resume=None, name="exp", output=tmp_path)
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "config.yaml").write_text("epochs: 2\n")
    assert runs.run_folder(cfg, None, "swin_micro_patch4_window4_128") == tmp_path / "exp"
    # its first epoch's row written, its checkpoint not (killed, or a full disk): started again, as it is told to
    (tmp_path / "exp" / "metrics.csv").write_text("epoch,loss_train\n1,1.5\n")
    assert runs.run_folder(cfg, None, "swin_micro_patch4_window4_128") == tmp_path / "exp"
    (tmp_path / "exp" / "metrics.csv").write_text("epoch,loss_train\n1,1.5\n2,1.2\n")
    (tmp_path / "exp" / "report.html").write_text("kept\n")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'exp'} holds a run's metrics.csv and report.html \(its "
                                        r"checkpoints gone\), which a new run there would write over: start it "
                                        r"under another --name, or move them away first$"):
        runs.run_folder(cfg, None, "swin_micro_patch4_window4_128")
    (tmp_path / "exp" / "metrics.csv").unlink()  # a one-epoch run's report alone
    with pytest.raises(UserError, match=r"holds a run's report.html \(its checkpoints gone\)"):
        runs.run_folder(cfg, None, "swin_micro_patch4_window4_128")
    assert (tmp_path / "exp" / "report.html").read_text() == "kept\n"
    # --resume of it: nothing to resume, and not the command that starts it again (refused above)
    assert run_settings.nothing_to_resume(tmp_path / "exp") == f"{tmp_path / 'exp'} holds no checkpoint, only its run's " \
        "report.html (its checkpoints gone): nothing to resume; a new run goes under another --name"


def test_runs_are_not_written_where_training_reads_classes(tmp_path, monkeypatch):
    """`cd photos; python train.py --data-path .` put runs/ among the class folders: from the next run on a class of
    its own (its pictures that class's photos), and the first run no longer resumed (other classes). Refused before
    any work, with a folder outside; a split root's own folder holds runs/ beside train/ and val/, read by no one."""
    photos = tmp_path / "photos"
    for name in ("daisy", "roses"):
        (photos / name).mkdir(parents=True)
        for i in range(3):
            shutil.copy(next((ROOT / "samples" / "flowers" / name).glob("*.jpg")), photos / name / f"{i}.jpg")
    monkeypatch.chdir(photos)
    with pytest.raises(UserError, match=r"^--output runs is inside --data-path \., whose folders are read as classes: "
                                        rf"the runs would become a class of their own\. .*--output {tmp_path}/runs$"):
        train.main(["--data-path", ".", *FAST])
    assert not (photos / "runs").exists()
    split = tmp_path / "split"
    for part in ("train", "val"):
        shutil.copytree(photos, split / part)
    with pytest.raises(UserError, match="--output .*train/runs is inside --data-path"):
        runs.check_output(split / "train" / "runs", split)
    runs.check_output(split / "runs", split)  # beside the splits: fine
    runs.check_output(photos / ".runs", photos)  # a hidden folder, which training passes over: fine too


def test_an_unnamed_run_is_named_by_its_variant_and_start_time(tmp_path):
    cfg = argparse.Namespace(resume=None, name=None, output=tmp_path)
    folder = runs.run_folder(cfg, None, "swin_micro_patch4_window4_128")
    assert folder.parent == tmp_path
    assert re.fullmatch(r"swin_micro_patch4_window4_128-\d{8}-\d{6}", folder.name), folder.name


def test_a_new_run_refuses_a_folder_that_holds_only_best_pth(tmp_path):
    """A run stopped while it saved its first epoch left best.pth alone: a new run under its --name goes elsewhere."""
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "best.pth").write_bytes(b"x")
    cfg = argparse.Namespace(resume=None, name="exp", output=tmp_path)
    with pytest.raises(UserError, match="holds a run already"):
        runs.run_folder(cfg, None, "swin_micro_patch4_window4_128")
