"""CPU speed with glibc's malloc as it comes against utils.reuse_freed_cpu_memory, which train.py and
predict.py call on a CPU: training steps (forward, backward, AdamW) and inference of one variant, each
way and each task in a fresh process of its own (the setting is the process's, and a process that
trained first would have raised glibc's mmap threshold for inference), alternating round after round.

    python bench/bench_heap.py                                          # swin_tiny: train batch 16, infer batch 32
    python bench/bench_heap.py --model swin_micro_patch4_window4_128 --train-batch 32

Per task and way: images/s, page faults per image (each a 4 KB page zeroed: what reuse saves) and the
peak resident memory (what it costs). Ratios are medians of per-round ratios (reuse / default).
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import print_header  # noqa: E402  (bench/ is on the path)
from config import POSITIVE_INT  # noqa: E402
import model as swin  # noqa: E402
from utils import UserError, reuse_freed_cpu_memory  # noqa: E402

WAYS = ("default", "reuse")
TASKS = ("train", "infer")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="swin_tiny_patch4_window7_224")
    p.add_argument("--train-batch", type=POSITIVE_INT, default=16, help="default: 16")
    p.add_argument("--infer-batch", type=POSITIVE_INT, default=32, help="default: 32, predict.py's")
    p.add_argument("--steps", type=POSITIVE_INT, default=4, help="timed training steps and inference batches a round "
                   "(default: 4)")
    p.add_argument("--rounds", type=POSITIVE_INT, default=3, help="default: 3")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="default: both")
    p.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one measurement, in its own process
    p.add_argument("--task", choices=TASKS, help=argparse.SUPPRESS)
    return p.parse_args()


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def measure(args) -> dict:
    """This process's images/s and page faults per image at its task, after a warm-up (the heap grows to
    a step's needs in the first steps), and its peak resident memory."""
    if args.way == "reuse":
        reuse_freed_cpu_memory()
    torch.manual_seed(0)
    net = swin.create_model(args.model, num_classes=5)
    optimizer = torch.optim.AdamW(net.parameters())
    size = net.img_size

    def train_step(x, y):
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()

    def infer(x, _):
        with torch.inference_mode():
            net(x)

    run, batch = (train_step, args.train_batch) if args.task == "train" else (infer, args.infer_batch)
    net.train(args.task == "train")
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 5, (batch,))
    for _ in range(3):
        run(x, y)
    before, start = faults(), time.perf_counter()
    for _ in range(args.steps):
        run(x, y)
    images = args.steps * batch
    return {"img/s": images / (time.perf_counter() - start), "faults": (faults() - before) / images,
            "peak MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
    args = parse_args()
    if args.way:
        print(json.dumps(measure(args)))
        return
    print_header()
    batches = {"train": f"training at batch {args.train_batch}", "infer": f"inference at batch {args.infer_batch}"}
    print(f"# {args.model}: {', '.join(batches[task] for task in args.tasks)}, fp32; {args.steps} steps a round",
          flush=True)
    runs = [(task, way) for task in args.tasks for way in WAYS]
    results = {run: [] for run in runs}
    for round_ in range(args.rounds):
        for task, way in runs if round_ % 2 == 0 else runs[::-1]:
            done = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--task", task, "--way", way],
                                  capture_output=True, text=True)
            if done.returncode:  # the child's own line (an unknown --model), not CalledProcessError's traceback
                said = done.stderr.strip().splitlines()
                raise UserError(said[-1].removeprefix("error: ") if said else
                                f"the {task} {way} measurement ended with status {done.returncode}")
            results[task, way].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"round {round_ + 1}: " + ", ".join(f"{task} {way} {results[task, way][-1]['img/s']:.1f}"
                                                  for task, way in runs) + " img/s", flush=True)
    for task, way in runs:
        median = {key: statistics.median(r[key] for r in results[task, way]) for key in results[task, way][0]}
        print(f"{task} {way:8s} {median['img/s']:6.1f} img/s, {median['faults']:6.0f} page faults an image, "
              f"peak {median['peak MB']:.0f} MB")
    for task in args.tasks:
        pairs = list(zip(results[task, "reuse"], results[task, "default"]))
        print(f"{task}, reuse / default: {statistics.median(r['img/s'] / d['img/s'] for r, d in pairs):.2f}x the "
              f"speed, {statistics.median(r['peak MB'] / d['peak MB'] for r, d in pairs):.2f}x the peak memory")


if __name__ == "__main__":
    from utils import run_cli  # a user's mistake (--device cuda without a GPU) in one line
    run_cli(main)
