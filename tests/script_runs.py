"""Running train.py in the tests: in a process of its own as a user does (run_train), or in the test's
process (train_here), with the small settings most tests share (FAST); predict.py in the test's process
(run_predict) and its --json lines (json_lines)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import predict
import train

ROOT = Path(__file__).resolve().parents[1]


# Small and fast: the demo variant at 64 px, no worker processes unless a test wants them.
FAST = ["--model", "swin_micro_patch4_window4_128", "--img-size", "64", "--batch-size", "16", "--workers", "0",
        "--lr", "1e-3", "--warmup-epochs", "1", "--no-progress"]


def run_train(*args, check=True, **kwargs):
    result = subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def train_here(capsys, *args) -> str:
    """train.main in this process, without a process's start-up cost, for runs that take no signals (their
    loader workers start from this process and end with the run): what it printed on stdout (a UserError
    fails the test). Where the claim is about a process of its own (resuming from last.pth alone, a
    kill, a signal, the demo command), the tests run train.py as a user does: run_train."""
    capsys.readouterr()
    try:
        train.main([str(a) for a in args])
    except SystemExit as stopped:  # --stop-after-epochs ends the process, with status 0
        assert stopped.code == 0, capsys.readouterr()
    return capsys.readouterr().out


def metrics(run_dir: Path) -> list:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def run_predict(capsys, monkeypatch, cwd, *args):
    """predict.main in this process (no start-up cost): (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    code = 0
    try:
        predict.main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list:
    return [json.loads(line) for line in out.splitlines()]  # fails on anything but JSON on stdout
