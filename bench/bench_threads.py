"""CPU training beside other work: the demo's images/s with torch's threads spinning while they wait for each other
(OpenMP's default, some 3 ms each time) and sleeping (what train.py and predict.py set), alone and beside another
process at work on the same cores.

    python bench/bench_threads.py                 # configs/cpu_demo.yaml, 4 epochs a run, 2 rounds
    python bench/bench_threads.py --rounds 3 --epochs 6

Each run is `python train.py --config configs/cpu_demo.yaml --epochs 4` (--epochs) in a process of its own
(OpenMP reads its settings as torch loads it), its figure the median images/s of its epochs after the first
(metrics.csv). The other work is a torch program of its own (matrix products and softmaxes in a loop, torch's
default threads, spinning), as a second run, a notebook or a test suite would be. Settings alternate within each
round, so that all see the same machine.
"""
import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import print_header  # bench/ is on the path when this script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's modules sit at its root
from config import POSITIVE_INT  # noqa: E402

# OpenMP's default, spelled out: GOMP_SPINCOUNT set by hand is kept by train.py (utils.threads_sleep_while_waiting)
SETTINGS = {"spinning (torch's default)": {"GOMP_SPINCOUNT": "300000"},
            "sleeping (train.py's)": {},
            "one thread": {"OMP_NUM_THREADS": "1"}}
OTHER_WORK = """
import torch
a = torch.randn(256, 256)
while True:
    for _ in range(100):
        a @ a
    torch.randn(64, 64, 64).softmax(-1)
"""


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=POSITIVE_INT, default=4, help="epochs a run, the first not timed (default: 4)")
    parser.add_argument("--rounds", type=POSITIVE_INT, default=2, help="runs of each setting (default: 2)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs: 2 or more (the first epoch is not timed)")
    return args


def demo_rate(env: dict, epochs: int, work: Path) -> float:
    """The demo's median images/s over its epochs after the first, trained in a process of its own with `env`."""
    name = f"run{len(list(work.iterdir()))}"
    clean = {key: value for key, value in os.environ.items()
             if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "cpu_demo.yaml"),
                    "--epochs", str(epochs), "--output", str(work), "--name", name, "--no-progress"],
                   cwd=ROOT, env={**clean, **env}, check=True, stdout=subprocess.DEVNULL)
    with open(work / name / "metrics.csv", newline="") as f:
        rates = [float(row["throughput_images_per_second"]) for row in csv.DictReader(f)]
    return statistics.median(rates[1:])


def main() -> None:
    args = parse_args()
    print_header()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for beside in (False, True):
            other = subprocess.Popen([sys.executable, "-c", OTHER_WORK]) if beside else None
            try:
                rates = {name: [] for name in SETTINGS}
                for round_ in range(args.rounds):
                    for name in list(SETTINGS) if round_ % 2 == 0 else list(SETTINGS)[::-1]:
                        rates[name].append(demo_rate(SETTINGS[name], args.epochs, work))
            finally:
                if other is not None:
                    other.kill()
                    other.wait()
            where = "beside another torch process" if beside else "alone"
            print(f"\n{where}:")
            for name, values in rates.items():
                print(f"  {name:28s} {statistics.median(values):6.1f} images/s  "
                      f"(runs: {', '.join(f'{v:.1f}' for v in values)})")
            spinning, sleeping = (statistics.median(rates[name]) for name in list(SETTINGS)[:2])
            print(f"  sleeping / spinning: {sleeping / spinning:.2f}x")


if __name__ == "__main__":
    main()
